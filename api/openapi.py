"""The app's OpenAPI document (``GET /openapi.json``), completed with what FastAPI cannot see.

FastAPI derives paths, parameters and the pydantic request bodies. This module adds, from one table
(:data:`ROUTES`) per route: the security scheme (a conversation's bearer token, or a brand's API key),
every error status the route answers with the body the server really sends (``ErrorBody``, or
OpenAI's ``OpenAIErrorBody`` on the compatible routes; statuses and codes from ``streaming/codes.py``),
``text/event-stream`` for the streaming answers, and the schemas of the OpenAI-compatible requests
and responses, which those routes read by hand. ``tests/test_openapi.py`` validates the document with
``openapi-spec-validator``, checks every route is in the table, and validates real answers against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from streaming.codes import ERROR_CODES

CONVERSATION = "conversationToken"
STREAM_QUERY_TOKEN = "conversationTokenQuery"
BRAND_KEY = "brandApiKey"


@dataclass(frozen=True)
class RouteDoc:
    """What one operation answers besides its success: error codes (of ``streaming/codes.py``, or
    ``validation`` for FastAPI's 422), its security, and extra success statuses or bodies."""

    errors: tuple[str, ...]
    security: tuple[str, ...] = ()
    openai: bool = False  # errors in OpenAI's body
    success: dict[str, Any] = field(default_factory=dict)  # status → OpenAPI response object
    request: str | None = None  # a component schema for a body read by hand


_ORIGIN = "forbidden"  # every route that carries a token or a key checks the page's origin

_SSE_EVENTS = {
    "description": "The stream's events as SSE (`id:` = seq, `event:` = type, `data:` = the event's JSON); "
    "a comment line every heartbeat. Event shapes: docs/asyncapi.yaml.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}

ROUTES: dict[tuple[str, str], RouteDoc] = {
    ("post", "/v1/negotiate"): RouteDoc(
        (
            "validation",
            "identity_invalid",
            _ORIGIN,
            "not_found",
            "payload_too_large",
            "rate_limited",
            "buffer_unavailable",
        )
    ),
    ("post", "/v1/conversations/{conversation_id}/messages"): RouteDoc(
        (
            "bad_request",
            "validation",
            "unauthorized",
            _ORIGIN,
            "not_found",
            "conversation_busy",
            "payload_too_large",
            "rate_limited",
            "buffer_unavailable",
            "shutting_down",
        ),
        security=(CONVERSATION,),
    ),
    ("get", "/v1/streams/{stream_id}/events"): RouteDoc(
        ("bad_request", "validation", "unauthorized", _ORIGIN, "not_found", "rate_limited", "buffer_unavailable"),
        security=(CONVERSATION, STREAM_QUERY_TOKEN),
        success={
            "200": _SSE_EVENTS,
            "204": {"description": "`Last-Event-ID` / `after_seq` is at or after the terminal event: nothing follows"},
        },
    ),
    ("post", "/v1/streams/{stream_id}/cancel"): RouteDoc(
        ("unauthorized", _ORIGIN, "not_found", "stream_expired", "buffer_unavailable"),
        security=(CONVERSATION,),
    ),
    ("get", "/v1/conversations/{conversation_id}"): RouteDoc(
        ("unauthorized", _ORIGIN, "not_found", "buffer_unavailable"), security=(CONVERSATION,)
    ),
    ("post", "/v1/conversations/{conversation_id}/revoke"): RouteDoc(
        ("unauthorized", _ORIGIN, "not_found", "buffer_unavailable"), security=(BRAND_KEY,)
    ),
    ("get", "/healthz"): RouteDoc(()),
    ("get", "/readyz"): RouteDoc(
        (),
        success={
            "503": {
                "description": "Not ready: the buffer backend or the model provider cannot be used",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NotReady"}}},
            }
        },
    ),
    ("get", "/v1/models"): RouteDoc(("unauthorized",), security=(BRAND_KEY,), openai=True),
    ("get", "/v1/models/{model_id}"): RouteDoc(("unauthorized", "not_found"), security=(BRAND_KEY,), openai=True),
    ("post", "/v1/chat/completions"): RouteDoc(
        (
            "bad_request",
            "unauthorized",
            _ORIGIN,
            "not_found",
            "payload_too_large",
            "rate_limited",
            "internal",
            "upstream_error",
            "buffer_unavailable",
            "upstream_timeout",
        ),
        security=(BRAND_KEY,),
        openai=True,
        request="ChatCompletionRequest",
        success={
            "200": {
                "description": "One `chat.completion`, or with `stream: true` `chat.completion.chunk` objects as SSE "
                "`data:` lines ending with `data: [DONE]`",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            }
        },
    ),
    ("post", "/v1/responses"): RouteDoc(
        (
            "bad_request",
            "unauthorized",
            _ORIGIN,
            "not_found",
            "payload_too_large",
            "rate_limited",
            "internal",
            "upstream_error",
            "buffer_unavailable",
            "upstream_timeout",
        ),
        security=(BRAND_KEY,),
        openai=True,
        request="ResponsesRequest",
        success={
            "200": {
                "description": "One `response`, or with `stream: true` the Responses API's events as SSE "
                "(`event:` = the event's `type`)",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Response"}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            }
        },
    ),
}

_STRING = {"type": "string"}
_NULLABLE_STRING = {"anyOf": [{"type": "string"}, {"type": "null"}]}

SCHEMAS: dict[str, dict[str, Any]] = {
    "ErrorBody": {
        "type": "object",
        "description": "Every error of the protocol's routes (docs/protocol.md §9).",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": sorted(ERROR_CODES)},
                    "message": _STRING,
                    "retry_after_ms": {"type": "integer", "description": "with `rate_limited`"},
                },
                "additionalProperties": False,
            }
        },
        "additionalProperties": False,
    },
    "OpenAIErrorBody": {
        "type": "object",
        "description": "OpenAI's error body (the OpenAI-compatible routes, and any unknown `/v1/` path).",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": _STRING,
                    "type": _STRING,
                    "param": _NULLABLE_STRING,
                    "code": _NULLABLE_STRING,
                },
                "additionalProperties": False,
            }
        },
        "additionalProperties": False,
    },
    "NotReady": {
        "type": "object",
        "required": ["status", "reason"],
        "properties": {"status": {"const": "unavailable"}, "reason": _STRING},
    },
    "ChatMessage": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string", "description": "`system` / `developer` messages are ignored"},
            "content": {
                "anyOf": [
                    _STRING,
                    {"type": "array", "items": {"type": "object", "properties": {"type": {"const": "text"}}}},
                    {"type": "null"},
                ]
            },
            "name": _STRING,
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "description": "Other OpenAI parameters are accepted and ignored, except those a text-only brand cannot "
        "honour (`tools`, `functions`, `response_format` other than text, `n > 1`, `logprobs`, `audio`, …): 400.",
        "properties": {
            "model": {"type": "string", "description": "the brand id", "minLength": 1, "maxLength": 64},
            "messages": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/ChatMessage"},
                "minItems": 1,
                "maxItems": 500,
            },
            "stream": {"type": "boolean", "default": False},
            "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        },
    },
    "ChatCompletionUsage": {
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {n: {"type": "integer"} for n in ("prompt_tokens", "completion_tokens", "total_tokens")},
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": _STRING,
            "object": {"const": "chat.completion"},
            "created": {"type": "integer"},
            "model": _STRING,
            "system_fingerprint": _STRING,
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "message", "finish_reason"],
                    "properties": {
                        "index": {"type": "integer"},
                        "message": {
                            "type": "object",
                            "required": ["role", "content"],
                            "properties": {
                                "role": {"const": "assistant"},
                                "content": _STRING,
                                "refusal": {"type": "null"},
                            },
                        },
                        "logprobs": {"type": "null"},
                        "finish_reason": {"enum": ["stop", "length", "content_filter"]},
                    },
                },
            },
            "usage": {"$ref": "#/components/schemas/ChatCompletionUsage"},
        },
    },
    "ResponsesRequest": {
        "type": "object",
        "required": ["model", "input"],
        "description": "Text only. `instructions` and system/developer messages are ignored; `tools`, `text.format` "
        "other than text, `previous_response_id`, `conversation`, `background`, `prompt`, non-message items and "
        "non-text parts are refused with 400.",
        "properties": {
            "model": {"type": "string", "description": "the brand id", "minLength": 1, "maxLength": 64},
            "input": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["role", "content"],
                            "properties": {
                                "type": {"const": "message"},
                                "role": _STRING,
                                "content": {"anyOf": [_STRING, {"type": "array", "items": {"type": "object"}}]},
                            },
                        },
                    },
                ]
            },
            "stream": {"type": "boolean", "default": False},
        },
    },
    "Response": {
        "type": "object",
        "required": ["id", "object", "created_at", "status", "model", "output"],
        "properties": {
            "id": _STRING,
            "object": {"const": "response"},
            "created_at": {"type": "integer"},
            "status": {"enum": ["completed", "incomplete", "failed", "in_progress"]},
            "error": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            "incomplete_details": {
                "anyOf": [
                    {"type": "object", "properties": {"reason": {"enum": ["max_output_tokens", "content_filter"]}}},
                    {"type": "null"},
                ]
            },
            "model": _STRING,
            "output": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type", "id", "status", "role", "content"],
                    "properties": {
                        "type": {"const": "message"},
                        "id": _STRING,
                        "status": _STRING,
                        "role": {"const": "assistant"},
                        "content": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["type", "text"],
                                "properties": {"type": {"const": "output_text"}, "text": _STRING},
                            },
                        },
                    },
                },
            },
            "usage": {
                "anyOf": [
                    {
                        "type": "object",
                        "required": ["input_tokens", "output_tokens", "total_tokens"],
                        "properties": {
                            n: {"type": "integer"} for n in ("input_tokens", "output_tokens", "total_tokens")
                        },
                    },
                    {"type": "null"},
                ]
            },
        },
    },
}

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    CONVERSATION: {
        "type": "http",
        "scheme": "bearer",
        "description": "The conversation's token from `POST /v1/negotiate` (signed; expires after TOKEN_TTL_S).",
    },
    STREAM_QUERY_TOKEN: {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The same token as a query parameter, for `EventSource`, which cannot set headers.",
    },
    BRAND_KEY: {
        "type": "http",
        "scheme": "bearer",
        "description": "A brand's API key (its file names the environment variable); `model` is the brand id.",
    },
}


def _error_response(code: str, openai: bool) -> tuple[str, dict[str, Any]]:
    if code == "validation":
        status, description = "422", "The request's parameters or JSON body do not match the schema (`bad_request`)"
    else:
        status, description = str(ERROR_CODES[code].http_status), f"`{code}`"
    body = "OpenAIErrorBody" if openai else "ErrorBody"
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
    }
    if code == "rate_limited":
        response["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
    return status, response


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document for ``app`` with :data:`ROUTES`, :data:`SCHEMAS` and the security schemes."""
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body, which we never send
        schemas.pop(name, None)
    schemas.update(SCHEMAS)
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            route = ROUTES.get((method, path))
            if route is None:
                raise KeyError(f"{method.upper()} {path} has no entry in api/openapi.py ROUTES")
            responses: dict[str, Any] = operation.setdefault("responses", {})
            responses.pop("422", None)
            for code in route.errors:
                status, response = _error_response(code, route.openai)
                existing = responses.get(status)
                if existing is not None and existing["description"] != response["description"]:
                    existing["description"] += f", {response['description']}"
                else:
                    responses[status] = response
            responses.update(route.success)
            if route.security:
                operation["security"] = [{name: []} for name in route.security]
                # The Authorization header is the security scheme; as a parameter it would say it twice.
                params = [p for p in operation.get("parameters", []) if p["name"] not in ("authorization", "token")]
                if params:
                    operation["parameters"] = params
                else:
                    operation.pop("parameters", None)
            if route.request is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.request}"}}},
                }
    return doc


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`build_openapi`'s document at ``/openapi.json`` (built once, on first request)."""
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not cache:
            cache.update(build_openapi(app))
        return cache

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise it
