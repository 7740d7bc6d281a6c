"""The rules of a stream, without an event loop (streaming/log.py, streaming/events.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import PydanticSerializationError

from api.frames import BadFrame, parse_client_frame
from streaming.events import STREAM_EVENT_ADAPTER, DeltaEvent, StoredEvent, encode
from streaming.exceptions import StreamExpired
from streaming.log import (
    Cursor,
    StreamClosed,
    StreamFull,
    StreamWriter,
    Verdict,
    check_replay,
    delta_json,
    fold_text,
)

CAPS = {"max_events": 5_000, "max_chars": 40_000}


def started(**kw: int) -> StreamWriter:
    writer = StreamWriter("s_1", **{**CAPS, **kw})
    writer.start("c_1", "m_1")
    return writer


def test_events_are_numbered_from_one_without_gaps_and_start_comes_first() -> None:
    writer = StreamWriter("s_1", **CAPS)
    events = [writer.start("c_1", "m_1"), writer.delta("Hel"), writer.delta("lo"), writer.done("stop")]
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [e.type for e in events] == ["start", "delta", "delta", "done"]
    for event in events:
        parsed = STREAM_EVENT_ADAPTER.validate_json(event.data)
        assert parsed.seq == event.seq and parsed.stream_id == "s_1"


def test_done_text_equals_the_deltas_joined() -> None:
    writer = started()
    deltas = [writer.delta(t) for t in ["One ", "two ", "three."]]
    done = writer.done("stop")
    assert done.payload()["text"] == "One two three." == fold_text([*deltas, done])


def test_after_a_retract_done_text_is_the_retract_text_plus_later_deltas() -> None:
    writer = started()
    events = [writer.delta("off-brand words"), writer.retract("off_brand", "Fallback."), writer.delta(" More.")]
    done = writer.done("fallback")
    assert done.payload()["text"] == "Fallback. More." == fold_text(events)


def test_nothing_can_be_written_after_the_terminal_event() -> None:
    writer = started()
    writer.error("upstream_timeout", "slow", retryable=True)
    with pytest.raises(StreamClosed):
        writer.delta("late")
    with pytest.raises(StreamClosed):
        writer.done("stop")


def test_nothing_can_be_written_before_start() -> None:
    with pytest.raises(StreamClosed):
        StreamWriter("s_1", **CAPS).delta("x")


def test_the_size_cap_keeps_one_event_for_the_terminal() -> None:
    writer = started(max_events=4, max_chars=100)
    writer.delta("a")
    writer.delta("b")
    assert writer.room() == 0
    with pytest.raises(StreamFull):
        writer.delta("c")
    assert writer.done("length").seq == 4


def test_the_character_cap_refuses_a_delta_that_does_not_fit() -> None:
    writer = started(max_chars=5)
    writer.delta("abc")
    with pytest.raises(StreamFull):
        writer.delta("def")
    assert writer.text == "abc"


def ev(seq: int, kind: str = "delta") -> StoredEvent:
    return StoredEvent(seq, kind, json.dumps({"seq": seq, "type": kind}))


def test_a_cursor_drops_duplicates_and_reports_gaps() -> None:
    cursor = Cursor(2)
    assert cursor.judge(ev(2)) is Verdict.DUPLICATE
    assert cursor.judge(ev(4)) is Verdict.GAP
    assert cursor.judge(ev(3)) is Verdict.DELIVER
    cursor.advance(ev(3))
    assert cursor.after_seq == 3


def test_a_cursor_is_finished_after_the_terminal_event() -> None:
    cursor = Cursor(0)
    assert [e.seq for e in cursor.take([ev(1, "start"), ev(2, "done"), ev(3)])] == [1, 2]
    assert cursor.finished


def test_a_replay_that_does_not_continue_at_the_cursor_is_refused_as_expired() -> None:
    check_replay("s", 3, [ev(4), ev(5)])
    check_replay("s", 3, [])
    with pytest.raises(StreamExpired):
        check_replay("s", 3, [ev(6)])


@given(
    total=st.integers(min_value=1, max_value=40),
    start=st.integers(min_value=0, max_value=40),
    deliveries=st.lists(st.tuples(st.integers(min_value=1, max_value=40), st.booleans()), max_size=120),
)
def test_a_follower_fed_replays_and_live_events_in_any_order_delivers_each_seq_once_in_order(
    total: int, start: int, deliveries: list[tuple[int, bool]]
) -> None:
    """Model of follow(): live events arrive duplicated, late or early; a gap triggers a log read."""
    start = min(start, total)
    log = [ev(i, "done" if i == total else "delta") for i in range(1, total + 1)]
    cursor = Cursor(start)
    delivered: list[int] = []
    for seq, reread in deliveries:
        if seq > total:
            continue
        verdict = cursor.judge(log[seq - 1])
        if verdict is Verdict.DELIVER:
            cursor.advance(log[seq - 1])
            delivered.append(seq)
        elif verdict is Verdict.GAP or reread:
            delivered += [e.seq for e in cursor.take(log[cursor.after_seq :])]
    delivered += [e.seq for e in cursor.take(log[cursor.after_seq :])]  # the idle re-read
    assert delivered == list(range(start + 1, total + 1))
    assert cursor.finished or start == total


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"text": "hi"}', "no 'type'"),
        ('{"type": "launch"}', "unknown frame type"),
        ('{"type": "send", "text": "hi"}', "client_message_id"),
        ('{"type": "resume", "stream_id": "s", "after_seq": -1}', "after_seq"),
        ('{"type": "send", "client_message_id": "m", "text": "   "}', "empty"),
        ('{"type": "send", "client_message_id": "m", "text": "' + "x" * 11 + '"}', "too long"),
    ],
)
def test_bad_client_frames_are_refused_with_a_readable_reason(raw: str, fragment: str) -> None:
    with pytest.raises(BadFrame) as info:
        parse_client_frame(raw, max_text_chars=10)
    assert fragment in info.value.message


@given(
    st.text(min_size=1, max_size=40),
    st.integers(min_value=1, max_value=10**9),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=80),
)
def test_a_delta_encoded_without_its_model_is_byte_for_byte_the_models_json(
    stream_id: str, seq: int, text: str
) -> None:
    assert delta_json(stream_id, seq, text) == encode(DeltaEvent(stream_id=stream_id, seq=seq, text=text)).data


def test_a_delta_orjson_cannot_encode_fails_as_the_models_json_does() -> None:
    """A lone surrogate (which the property test's UTF-8 alphabet never draws) is refused by orjson: the
    fallback asks the model, so the error is the model's own."""
    with pytest.raises(PydanticSerializationError) as ours:
        delta_json("s_1", 1, "a\ud800b")
    with pytest.raises(PydanticSerializationError) as models:
        encode(DeltaEvent(stream_id="s_1", seq=1, text="a\ud800b"))
    assert str(ours.value) == str(models.value)
