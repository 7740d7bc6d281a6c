"""docs/asyncapi.yaml, the WebSocket and SSE protocol as AsyncAPI 3 (issue 13, part 3): a valid
AsyncAPI 3.0.0 document (the official JSON Schema, vendored from the npm package ``@asyncapi/specs``
6.11.1, Apache-2.0, in tests/schemas/), checked against the one schema module — every frame and
event type of api/frames.py and streaming/events.py is a message with exactly its fields — and
real frames of a real server are valid against it."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from pydantic import BaseModel
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from api import frames
from streaming import events
from testkit.clients import WsClient, negotiate, post_message, read_sse
from testkit.server import RunningServer

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent
DOC = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text(encoding="utf-8"))
DOC_URI = "urn:brandchat:asyncapi"

# Every model of the schema module → its message in the document.
MESSAGES: dict[type[BaseModel], str] = {
    frames.HelloFrame: "hello",
    frames.SendFrame: "send",
    frames.ResumeFrame: "resume",
    frames.CancelFrame: "cancel",
    frames.PingFrame: "clientPing",
    frames.PongFrame: "clientPong",
    frames.Welcome: "welcome",
    frames.Accepted: "accepted",
    frames.Ping: "serverPing",
    frames.Pong: "serverPong",
    frames.RequestErrorFrame: "requestError",
    frames.Ended: "ended",
    events.StartEvent: "start",
    events.DeltaEvent: "delta",
    events.RetractEvent: "retract",
    events.DoneEvent: "done",
    events.ErrorEvent: "streamError",
}


def union_members(union: Any) -> set[type[BaseModel]]:
    if typing.get_origin(union) is typing.Annotated:
        union = typing.get_args(union)[0]
    return set(typing.get_args(union))


def payload(message: str) -> dict[str, Any]:
    result: dict[str, Any] = DOC["components"]["messages"][message]["payload"]
    return result


def always_sent(model: type[BaseModel]) -> set[str]:
    """Fields a frame always carries: required ones, and those with a non-null default (server frames are
    encoded without ``None`` fields)."""
    return {name for name, f in model.model_fields.items() if f.is_required() or f.default is not None}


def test_the_document_is_valid_asyncapi_3() -> None:
    schema = json.loads((ROOT / "tests" / "schemas" / "asyncapi-3.0.0.json").read_text(encoding="utf-8"))
    errors = [f"{e.json_path}: {e.message[:200]}" for e in Draft7Validator(schema).iter_errors(DOC)]
    assert DOC["asyncapi"] == "3.0.0" and errors == []


def test_every_reference_resolves_and_operations_use_their_channels_messages() -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(DOC):
        node: Any = DOC
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]
    for name, operation in DOC["operations"].items():
        channel = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel + "/messages/"), (name, message)


def test_every_frame_and_event_model_is_a_message_and_every_message_a_model() -> None:
    models = union_members(frames.ClientFrame) | union_members(frames.ServerFrame) | union_members(events.StreamEvent)
    assert models == set(MESSAGES)
    assert set(DOC["components"]["messages"]) == set(MESSAGES.values())


@pytest.mark.parametrize("model", list(MESSAGES), ids=lambda m: m.__name__)
def test_a_message_has_exactly_its_models_fields(model: type[BaseModel]) -> None:
    schema = payload(MESSAGES[model])
    assert set(schema["properties"]) == set(model.model_fields), "fields differ from the model"
    assert set(schema["required"]) == always_sent(model), "required fields differ from the model"
    (tag,) = typing.get_args(model.model_fields["type"].annotation)
    assert schema["properties"]["type"] == {"const": tag}
    assert DOC["components"]["messages"][MESSAGES[model]]["name"] == tag


def test_the_sse_channel_carries_the_stream_events_and_the_seqless_error() -> None:
    stream = {MESSAGES[m] for m in union_members(events.StreamEvent)}
    assert set(DOC["channels"]["sseEvents"]["messages"]) == stream | {"requestError"}


def validator_for(message: str) -> Draft7Validator:
    registry = Registry().with_resource(DOC_URI, Resource.from_contents(DOC, default_specification=DRAFT7))
    return Draft7Validator({"$ref": f"{DOC_URI}#/components/messages/{message}/payload"}, registry=registry)


def message_of(frame: dict[str, Any]) -> str:
    kind = frame["type"]
    if kind == "error":
        return "streamError" if "seq" in frame else "requestError"
    return {"ping": "serverPing", "pong": "serverPong"}.get(kind, kind)


async def test_real_frames_on_the_websocket_and_sse_are_valid_against_the_document(server: RunningServer) -> None:
    negotiated = await negotiate(server.base_url)
    async with WsClient.connect(server.ws_url, negotiated["token"]) as client:
        await client.send({"type": "ping"})
        await client.send({"type": "send", "client_message_id": "m1", "text": "How long does shipping take?"})
        await client.send({"type": "send", "text": "no id"})
        accepted = await client.recv_until(lambda f: f["type"] == "accepted")
        stream_id = accepted[-1]["stream_id"]
        await client.stream(stream_id)
        await client.send({"type": "resume", "stream_id": stream_id, "after_seq": 10_000})
        await client.recv_until(lambda f: f["type"] == "ended")
        received = list(client.frames)
    sent = await post_message(server.base_url, negotiated, "Do you have decaf?", cmid="m2")
    sse = await read_sse(server.base_url, sent.json()["stream_id"], negotiated["token"])
    assert sse.status == 200 and sse.events[-1].event == "done"
    received += [e.data for e in sse.events]
    kinds = {message_of(f) for f in received}
    assert {"welcome", "serverPong", "accepted", "requestError", "start", "delta", "done", "ended"} <= kinds
    for frame in received:
        errors = [e.message for e in validator_for(message_of(frame)).iter_errors(frame)]
        assert errors == [], (frame, errors)
