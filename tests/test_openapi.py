"""The API's OpenAPI document (issue 13, part 3): valid for ``openapi-spec-validator``, a row in
``api/openapi.py`` for every route, and real answers of a real server are what it says — the status
is documented for the route and a JSON body matches the documented schema."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from api.openapi import ROUTES
from testkit import T
from testkit.clients import negotiate
from testkit.server import RunningServer

pytestmark = pytest.mark.timeout(30)

KEY = "dev-demo-key-not-secret"
DOC_URI = "urn:brandchat:openapi"


async def openapi_of(server: RunningServer) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def assert_documented(doc: dict[str, Any], method: str, path: str, response: httpx.Response) -> None:
    """``response`` is an answer ``doc`` describes for ``method path``: its status, its media type, and
    (for JSON) a body valid against the documented schema."""
    documented = doc["paths"][path][method]["responses"]
    status = str(response.status_code)
    assert status in documented, f"{method.upper()} {path} answered {status}, not in {sorted(documented)}"
    content = documented[status].get("content")
    if content is None:
        assert not response.content
        return
    media = response.headers["content-type"].split(";")[0]
    assert media in content, f"{method.upper()} {path} {status} answered {media}, documented {list(content)}"
    if media == "application/json":
        registry = Registry().with_resource(DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012))
        schema = dict(content[media]["schema"])
        if "$ref" in schema:
            schema = {"$ref": DOC_URI + schema["$ref"]}
        Draft202012Validator(schema, registry=registry).validate(response.json())


async def test_the_served_document_is_valid_openapi(server: RunningServer) -> None:
    validate(await openapi_of(server))


async def test_every_route_has_its_row_and_every_row_a_route(server: RunningServer) -> None:
    doc = await openapi_of(server)
    served = {(method, path) for path, operations in doc["paths"].items() for method in operations}
    assert served == set(ROUTES)


async def test_the_document_names_the_security_schemes_the_error_body_and_the_event_stream(
    server: RunningServer,
) -> None:
    doc = await openapi_of(server)
    assert set(doc["components"]["securitySchemes"]) == {
        "conversationToken",
        "conversationTokenQuery",
        "brandApiKey",
    }
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    events = doc["paths"]["/v1/streams/{stream_id}/events"]["get"]["responses"]
    assert list(events["200"]["content"]) == ["text/event-stream"] and "204" in events
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletionRequest")
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    send = doc["paths"]["/v1/conversations/{conversation_id}/messages"]["post"]["responses"]
    assert {"401", "403", "409", "413", "429"} <= set(send)


async def test_real_answers_of_every_protocol_route_are_documented(server: RunningServer) -> None:
    doc = await openapi_of(server)
    negotiated = await negotiate(server.base_url)
    conversation, token = negotiated["conversation_id"], negotiated["token"]
    auth = {"Authorization": f"Bearer {token}"}
    messages = f"/v1/conversations/{conversation}/messages"
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        checks: list[tuple[str, str, httpx.Response]] = [
            ("post", "/v1/negotiate", await http.post("/v1/negotiate", json={"brand": "demo"})),
            ("post", "/v1/negotiate", await http.post("/v1/negotiate", json={})),
            ("post", "/v1/negotiate", await http.post("/v1/negotiate", json={"brand": "no-such-brand"})),
            (
                "post",
                "/v1/negotiate",
                await http.post("/v1/negotiate", json={"brand": "demo", "user": {"id": "u1", "hash": "0" * 64}}),
            ),
            (
                "post",
                "/v1/negotiate",
                await http.post("/v1/negotiate", json={"brand": "demo", "locale": "es", "user": {"id": "u1"}}),
            ),
            (
                "post",
                "/v1/conversations/{conversation_id}/messages",
                await http.post(messages, json={"client_message_id": "m1", "text": "hi"}),
            ),
            (
                "post",
                "/v1/conversations/{conversation_id}/messages",
                await http.post(messages, json={"client_message_id": "m1", "text": " "}, headers=auth),
            ),
        ]
        sent = await http.post(messages, json={"client_message_id": "m2", "text": "Hello?"}, headers=auth)
        checks.append(("post", "/v1/conversations/{conversation_id}/messages", sent))
        stream_id = sent.json()["stream_id"]
        async with http.stream("GET", f"/v1/streams/{stream_id}/events", headers=auth) as events:
            await events.aread()
        checks += [
            ("get", "/v1/streams/{stream_id}/events", events),
            ("get", "/v1/streams/{stream_id}/events", await http.get(f"/v1/streams/{stream_id}/events")),
            (
                "get",
                "/v1/streams/{stream_id}/events",
                await http.get(f"/v1/streams/{stream_id}/events", headers={**auth, "Last-Event-ID": "x"}),
            ),
            (
                "get",
                "/v1/streams/{stream_id}/events",
                await http.get(f"/v1/streams/{stream_id}/events", headers={**auth, "Last-Event-ID": "100000"}),
            ),
            ("post", "/v1/streams/{stream_id}/cancel", await http.post("/v1/streams/s_gone/cancel", headers=auth)),
            ("get", "/v1/conversations/{conversation_id}", await http.get(f"/v1/conversations/{conversation}")),
            (
                "get",
                "/v1/conversations/{conversation_id}",
                await http.get(f"/v1/conversations/{conversation}", headers=auth),
            ),
            ("get", "/healthz", await http.get("/healthz")),
            ("get", "/readyz", await http.get("/readyz")),
        ]
        revoke = "/v1/conversations/{conversation_id}/revoke"
        key = {"Authorization": "Bearer dev-demo-key-not-secret"}
        checks += [
            ("post", revoke, await http.post(f"/v1/conversations/{conversation}/revoke")),
            ("post", revoke, await http.post("/v1/conversations/c:x/revoke", headers=key)),
            ("post", revoke, await http.post(f"/v1/conversations/{conversation}/revoke", headers=key)),
        ]
    statuses = [r.status_code for _, _, r in checks]
    assert statuses == [
        200,
        422,
        404,
        401,
        401,
        401,
        400,
        202,
        200,
        401,
        400,
        204,
        410,
        401,
        200,
        200,
        200,
        401,
        404,
        200,
    ]
    for method, path, response in checks:
        assert_documented(doc, method, path, response)


async def test_real_answers_of_the_openai_compatible_routes_are_documented(server: RunningServer) -> None:
    doc = await openapi_of(server)
    key = {"Authorization": f"Bearer {KEY}"}
    user = [{"role": "user", "content": "Hello?"}]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        checks = [
            ("get", "/v1/models", await http.get("/v1/models", headers=key)),
            ("get", "/v1/models", await http.get("/v1/models")),
            ("get", "/v1/models/{model_id}", await http.get("/v1/models/demo", headers=key)),
            ("get", "/v1/models/{model_id}", await http.get("/v1/models/meridian", headers=key)),
            (
                "post",
                "/v1/chat/completions",
                await http.post("/v1/chat/completions", json={"model": "demo", "messages": user}, headers=key),
            ),
            (
                "post",
                "/v1/chat/completions",
                await http.post("/v1/chat/completions", json={"model": "demo", "messages": user, "n": 3}, headers=key),
            ),
            (
                "post",
                "/v1/chat/completions",
                await http.post(
                    "/v1/chat/completions", json={"model": "demo", "messages": user, "stream": True}, headers=key
                ),
            ),
            (
                "post",
                "/v1/responses",
                await http.post("/v1/responses", json={"model": "demo", "input": "Hi"}, headers=key),
            ),
            ("post", "/v1/responses", await http.post("/v1/responses", json={"model": "demo"}, headers=key)),
            (
                "post",
                "/v1/responses",
                await http.post("/v1/responses", json={"model": "demo", "input": "Hi", "stream": True}, headers=key),
            ),
        ]
    assert [r.status_code for _, _, r in checks] == [200, 401, 200, 404, 200, 400, 200, 200, 400, 200]
    for method, path, response in checks:
        assert_documented(doc, method, path, response)
