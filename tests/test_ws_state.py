"""The WebSocket connection rules (api/ws_state.py), without a socket or an event loop."""

from __future__ import annotations

import json

import pytest

from api.exceptions import Forbidden
from api.frames import HelloFrame, PingFrame, RequestErrorFrame, SendFrame
from api.ws_state import CloseConnection, TokenBucket, WsOptions, WsProtocol, check_stream_owner
from streaming.codes import Close
from streaming.contract import StreamInfo
from streaming.exceptions import StreamExpired

OPTIONS = WsOptions(max_message_chars=20, max_frame_bytes=200, max_bad_frames=2, rate_per_s=10.0, rate_burst=3)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def frame(**fields: object) -> str:
    return json.dumps(fields)


def opened(clock: Clock | None = None, options: WsOptions = OPTIONS) -> WsProtocol:
    protocol = WsProtocol(options, clock=clock or Clock())
    protocol.accept_hello("c_1")
    return protocol


def test_before_hello_any_other_frame_is_a_bad_frame_and_hello_is_handed_over() -> None:
    protocol = WsProtocol(OPTIONS, clock=Clock())
    answer = protocol.receive(frame(type="ping"), None)
    assert isinstance(answer, RequestErrorFrame) and answer.message == "the first frame must be hello"
    assert isinstance(protocol.receive(frame(type="hello", token="t"), None), HelloFrame)


def test_a_second_hello_is_a_bad_frame() -> None:
    answer = opened().receive(frame(type="hello", token="t"), None)
    assert isinstance(answer, RequestErrorFrame) and "already accepted" in answer.message


def test_frames_after_hello_are_handed_over_and_a_pong_needs_nothing() -> None:
    protocol = opened()
    assert isinstance(protocol.receive(frame(type="ping"), None), PingFrame)
    sent = protocol.receive(frame(type="send", client_message_id="m1", text="hi"), None)
    assert isinstance(sent, SendFrame) and sent.text == "hi"
    assert protocol.receive(frame(type="pong"), None) is None


def test_a_refused_send_echoes_its_client_message_id() -> None:
    answer = opened().receive(frame(type="send", client_message_id="m7", text="x" * 21), None)
    assert isinstance(answer, RequestErrorFrame)
    assert (answer.code, answer.client_message_id) == ("bad_request", "m7")
    assert "too long" in answer.message


def test_the_bad_frame_budget_closes_with_4400_after_the_last_allowed_one() -> None:
    protocol = opened(options=WsOptions(**{**OPTIONS.__dict__, "rate_burst": 100}))
    for _ in range(OPTIONS.max_bad_frames):
        assert isinstance(protocol.receive("{nope", None), RequestErrorFrame)
    with pytest.raises(CloseConnection) as closed:
        protocol.receive("{nope", None)
    assert closed.value.code == Close.BAD_FRAMES


def test_a_frame_over_the_size_limit_closes_with_1009_text_or_binary() -> None:
    for text, data in (("x" * 201, None), ("é" * 101, None), (None, b"x" * 201)):
        with pytest.raises(CloseConnection) as closed:
            opened().receive(text, data)
        assert closed.value.code == Close.PAYLOAD_TOO_LARGE


def test_a_small_binary_frame_is_a_bad_frame_not_a_close() -> None:
    assert isinstance(opened().receive(None, b'{"type": "ping"}'), RequestErrorFrame)


def test_flooding_past_the_burst_closes_with_4429_but_the_same_pace_with_pauses_does_not() -> None:
    clock = Clock()
    protocol = opened(clock)
    for _ in range(OPTIONS.rate_burst):
        protocol.receive(frame(type="ping"), None)
    clock.now += 1 / OPTIONS.rate_per_s
    assert isinstance(protocol.receive(frame(type="ping"), None), PingFrame)
    with pytest.raises(CloseConnection) as closed:
        protocol.receive(frame(type="ping"), None)
    assert closed.value.code == Close.FLOOD


def test_the_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=2, clock=clock)
    assert [bucket.take(), bucket.take(), bucket.take()] == [True, True, False]
    clock.now += 0.5
    assert [bucket.take(), bucket.take()] == [True, False]
    clock.now += 100
    assert [bucket.take(), bucket.take(), bucket.take()] == [True, True, False]


def test_a_stream_may_be_followed_only_by_its_own_conversation() -> None:
    info = StreamInfo("s_1", "c_1", created_at=0.0, terminal=False)
    check_stream_owner(info, "s_1", "c_1")
    with pytest.raises(Forbidden):
        check_stream_owner(info, "s_1", "c_2")
    with pytest.raises(StreamExpired):
        check_stream_owner(None, "s_1", "c_1")
