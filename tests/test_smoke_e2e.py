"""A whole turn over each transport against a real server on embedded defaults."""

from __future__ import annotations

from persona.demo import compose_answer
from testkit.clients import WsClient, assert_well_formed, joined_text, negotiate, post_message, read_sse
from testkit.server import RunningServer


async def test_a_websocket_turn_streams_the_offline_answer_and_done_text_equals_the_deltas(
    server: RunningServer,
) -> None:
    n = await negotiate(server.base_url)
    question = "How long does shipping take?"
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.send({"type": "send", "client_message_id": "m1", "text": question})
        accepted = await client.recv()
        assert accepted["type"] == "accepted" and accepted["client_message_id"] == "m1"
        events = await client.stream(accepted["stream_id"])
    assert_well_formed(events)
    expected = compose_answer(server.runtime.brands["demo"], question)
    assert joined_text(events) == events[-1]["text"] == expected
    assert events[-1]["finish_reason"] == "stop"


async def test_an_sse_turn_streams_the_same_events_with_ids(server: RunningServer) -> None:
    n = await negotiate(server.base_url)
    r = await post_message(server.base_url, n, "Do you have decaf beans?")
    assert r.status_code == 202
    body = r.json()
    assert body["events_url"] == f"/v1/streams/{body['stream_id']}/events"
    reader = await read_sse(server.base_url, body["stream_id"], n["token"])
    assert reader.headers["cache-control"] == "no-cache"
    assert reader.headers["x-accel-buffering"] == "no"
    assert reader.headers["content-type"].startswith("text/event-stream")
    events = [e.data for e in reader.events]
    assert [e.id for e in reader.events] == [e["seq"] for e in events]
    assert [e.event for e in reader.events] == [e["type"] for e in events]
    assert_well_formed(events)
    assert (
        joined_text(events)
        == events[-1]["text"]
        == compose_answer(server.runtime.brands["demo"], "Do you have decaf beans?")
    )
