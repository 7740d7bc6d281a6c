"""HTTP routes: negotiate, SSE send/follow/cancel, history, revoke, health (docs/protocol.md §2, §5, §6, §8)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Grant, issue_token, require_conversation
from api.exceptions import BadRequest, Forbidden, PayloadTooLarge, Unauthorized
from api.frames import MAX_ID_CHARS, MAX_TOKEN_CHARS
from api.identity import LOCALE, MAX_LOCALE_CHARS, UserClaim, VerifiedUser, bind_conversation, verify_user
from api.openai_compat import OpenAIError, brands_for_key
from api.runtime import Runtime
from api.sse import EventStreamResponse
from streaming.contract import AssistantTurn, ReplyStatus, StreamInfo, turn_to_dict
from streaming.exceptions import StreamExpired
from streaming.ids import new_id
from streaming.log import fold_text

router = APIRouter()

TRANSPORTS = ("websocket", "sse")


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _address(runtime: Runtime, request: Request) -> str:
    return runtime.limits.address(request.client.host if request.client else None, request.headers)


async def _grant(runtime: Runtime, request: Request, authorization: str | None, token: str | None = None) -> Grant:
    """The token's grant, from a page the token's brand allows (docs/security.md, "Origins"), of a
    conversation neither too old nor revoked."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("use 'Authorization: Bearer <token>'")
        token = value.strip()
    if not token:
        raise Unauthorized("a token is required (Authorization: Bearer <token>)")
    grant = runtime.verify(token)
    runtime.check_origin(runtime.brand(grant.brand), request.headers.get("origin"))
    await runtime.revocations.check(grant)
    return grant


# --- negotiate -------------------------------------------------------------------------------------


class NegotiateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    brand: str = Field(min_length=1, max_length=64)
    conversation_id: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    token: str | None = Field(default=None, max_length=MAX_TOKEN_CHARS)
    failed: list[str] = Field(default_factory=list, max_length=8)
    # Additive (docs/protocol.md §2): a signed-in user proven by the brand backend's HMAC, and the
    # page's locale. A client that sends neither is a 1.0 client and gets what it always got.
    user: UserClaim | None = None
    locale: str | None = Field(default=None, max_length=MAX_LOCALE_CHARS, pattern=LOCALE)


@router.post("/v1/negotiate")
async def negotiate(request: Request, body: NegotiateRequest) -> dict[str, Any]:
    runtime = _runtime(request)
    await runtime.limits.negotiate(_address(runtime, request))
    brand = runtime.brand(body.brand)
    runtime.check_origin(brand, request.headers.get("origin"))
    settings = runtime.settings
    max_age_s = settings.max_conversation_age_s
    now = int(time.time())
    # An identity is verified before anything else, and refused (401 identity_invalid) when it is
    # unsigned or wrongly signed: never trusted, never silently dropped (api/identity.py).
    user = None
    if body.user is not None:
        user = verify_user(settings.identity_keys.get(brand.id, ()), brand.id, body.user)
    locale = body.locale
    if body.conversation_id is not None:
        if not body.token:
            raise Forbidden("continuing a conversation needs its token")
        try:
            grant = await runtime.authorize(body.token)
        except Unauthorized as exc:
            raise Forbidden(f"cannot continue this conversation: {exc.message}") from None
        require_conversation(grant, body.conversation_id)
        if grant.brand != brand.id:
            raise Forbidden("this conversation belongs to another brand")
        conversation_id = body.conversation_id
        # A refresh keeps the conversation's start. A token from before the field existed: its
        # conversation started no later than that token was issued (docs/security.md).
        started = grant.started_at if grant.started_at is not None else grant.expires_at - settings.token_ttl_s
        if now >= started + max_age_s:
            raise Forbidden("cannot continue this conversation: it is too old to continue; start a new one")
        if grant.user_id is not None:
            if user is None:
                # The token's holder refreshes without identifying again: the binding stays.
                user = VerifiedUser(grant.user_id, grant.user_name)
            elif user.id != grant.user_id:
                raise Forbidden("cannot continue this conversation: it belongs to another user; start a new one")
        locale = locale or grant.locale
    else:
        conversation_id = new_id("c")
        started = now
    if user is not None:
        # Also refuses a token of before the binding (no `u` claim) used to take the conversation
        # over as someone else.
        await bind_conversation(runtime.limits.store, brand.id, conversation_id, user.id, max_age_s)
        logger.bind(conversation_id=conversation_id, brand=brand.id, user_id=user.id).info(
            "identified user {}", user.id
        )
    token = issue_token(
        settings.secret_bytes,
        conversation_id,
        brand.id,
        settings.token_ttl_s,
        now=now,
        started_at=started,
        max_age_s=max_age_s,
        user_id=user.id if user else None,
        user_name=user.name if user else None,
        locale=locale,
    )
    failed = {f for f in body.failed if f in TRANSPORTS}
    order = [t for t in TRANSPORTS if t not in failed] + [t for t in TRANSPORTS if t in failed]
    urls = {"websocket": "/v1/ws", "sse": f"/v1/conversations/{conversation_id}/messages"}
    for transport in sorted(failed):
        logger.bind(conversation_id=conversation_id, transport=transport).info("downgrade report: {} failed", transport)
        runtime.hooks.emit("downgrade", transport=transport, reason="client_reported", brand=brand.id)
    answer: dict[str, Any] = {
        "conversation_id": conversation_id,
        "token": token,
        "expires_in_s": min(settings.token_ttl_s, started + max_age_s - now),
        "transports": [{"transport": t, "url": urls[t]} for t in order],
        "heartbeat_ms": runtime.settings.heartbeat_ms,
        "resume_window_s": runtime.settings.resume_window_s,
        "brand": {
            "id": brand.id,
            "name": brand.name,
            "persona_name": brand.persona_name,
            "theme": brand.theme.model_dump(),
            "provider": runtime.provider.name,
        },
    }
    if user is not None:
        answer["user"] = user.as_dict()  # the verified user, as the server will use it
    if locale:
        answer["locale"] = locale
    return answer


# --- SSE: send, follow, cancel ---------------------------------------------------------------------


class SendMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_message_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    text: str = Field(min_length=1)


@router.post("/v1/conversations/{conversation_id}/messages", status_code=202)
async def post_message(
    request: Request,
    conversation_id: str,
    body: Annotated[SendMessage, Body()],
    authorization: Annotated[str | None, Header()] = None,
) -> dict[str, str]:
    runtime = _runtime(request)
    grant = await _grant(runtime, request, authorization)
    require_conversation(grant, conversation_id)
    limit = runtime.settings.max_message_chars
    if len(body.text) > limit:
        raise PayloadTooLarge(f"text is too long ({len(body.text)} characters, the limit is {limit})")
    if not body.text.strip():
        raise BadRequest("text is empty")
    submission = await runtime.start_reply(
        address=_address(runtime, request),
        conversation_id=conversation_id,
        brand=runtime.brand(grant.brand),
        client_message_id=body.client_message_id,
        text=body.text,
        locale=grant.locale,
    )
    log = logger.bind(conversation_id=conversation_id, stream_id=submission.stream_id, transport="sse")
    if grant.user_id is not None:
        log = log.bind(user_id=grant.user_id)
    log.info("send accepted (new={})", submission.created)
    return {"stream_id": submission.stream_id, "events_url": f"/v1/streams/{submission.stream_id}/events"}


async def _stream_of_grant(runtime: Runtime, grant: Grant, stream_id: str) -> StreamInfo | None:
    """The stream's info when it exists and is the grant's; ``None`` when the buffer lacks it."""
    info = await runtime.buffer.stream_info(stream_id)
    if info is not None and info.conversation_id != grant.conversation_id:
        raise Forbidden("this stream belongs to another conversation", stream_id=stream_id)
    return info


@router.get("/v1/streams/{stream_id}/events")
async def stream_events(
    request: Request,
    stream_id: str,
    authorization: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query(max_length=MAX_TOKEN_CHARS)] = None,
    after_seq: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    runtime = _runtime(request)
    grant = await _grant(runtime, request, authorization, token)
    start = after_seq or 0
    if last_event_id:
        # EventSource sends the last id it saw on reconnect; it wins over the query string.
        try:
            start = int(last_event_id)
        except ValueError:
            raise BadRequest("Last-Event-ID must be a sequence number") from None
        if start < 0:
            raise BadRequest("Last-Event-ID must not be negative")
    log = logger.bind(stream_id=stream_id, conversation_id=grant.conversation_id, transport="sse")
    info = await _stream_of_grant(runtime, grant, stream_id)
    if info is not None and info.ended_by(start):
        # At or past the terminal event: nothing will ever come. 204 makes a standard EventSource
        # stop reconnecting (HTML standard), instead of coming back every second.
        return Response(status_code=204)
    address = _address(runtime, request)
    place = await runtime.limits.open_connection(address)
    events = _expired(stream_id) if info is None else runtime.follow(stream_id, start, transport="sse")
    log.info("connect")
    runtime.connections += 1
    runtime.hooks.emit("connection_opened", transport="sse", conversation_id=grant.conversation_id, brand=grant.brand)

    def on_close(outcome: str) -> None:
        runtime.connections -= 1
        runtime.limits.close_connection_soon(address, place)
        log.info("disconnect: {}", outcome)
        if outcome == "slow_consumer":
            runtime.hooks.emit("slow_consumer", transport="sse", stream_id=stream_id)
        runtime.hooks.emit(
            "connection_closed",
            transport="sse",
            conversation_id=grant.conversation_id,
            brand=grant.brand,
            code=None,
            reason=outcome,
        )

    return EventStreamResponse(
        events,
        stream_id=stream_id,
        heartbeat_s=runtime.heartbeat_s,
        send_timeout_s=runtime.settings.send_timeout_s,
        shutting_down=runtime.shutting_down,
        on_close=on_close,
    )


async def _expired(stream_id: str) -> Any:
    raise StreamExpired(f"stream {stream_id} is not in the buffer (expired or unknown)", stream_id=stream_id)
    yield  # pragma: no cover - makes this an async generator


@router.post("/v1/streams/{stream_id}/cancel", status_code=202)
async def cancel_stream(
    request: Request, stream_id: str, authorization: Annotated[str | None, Header()] = None
) -> dict[str, str]:
    runtime = _runtime(request)
    grant = await _grant(runtime, request, authorization)
    if await _stream_of_grant(runtime, grant, stream_id) is None:
        raise StreamExpired(f"stream {stream_id} is not in the buffer (expired or unknown)", stream_id=stream_id)
    await runtime.manager.cancel(stream_id)
    return {"stream_id": stream_id, "status": "cancelling"}


# --- history ---------------------------------------------------------------------------------------


@router.get("/v1/conversations/{conversation_id}")
async def conversation_history(
    request: Request, conversation_id: str, authorization: Annotated[str | None, Header()] = None
) -> dict[str, Any]:
    runtime = _runtime(request)
    grant = await _grant(runtime, request, authorization)
    require_conversation(grant, conversation_id)
    turns: list[dict[str, Any]] = []
    for turn in await runtime.buffer.history(conversation_id):
        if isinstance(turn, AssistantTurn) and turn.status is None:
            turn = await _reply_so_far(runtime, turn)
        turns.append(turn_to_dict(turn))
    answer: dict[str, Any] = {"conversation_id": conversation_id, "turns": turns}
    if grant.user_id is not None:  # additive: whose conversation this is (a verified user)
        answer["user"] = VerifiedUser(grant.user_id, grant.user_name).as_dict()
    if grant.locale:
        answer["locale"] = grant.locale
    return answer


async def _reply_so_far(runtime: Runtime, turn: AssistantTurn) -> AssistantTurn:
    """A reply still streaming (or whose instance died): its text so far, from the log."""
    try:
        events = await runtime.buffer.read_after(turn.stream_id, 0)
    except StreamExpired:
        return replace(turn, text="", status="error")
    status: ReplyStatus = "streaming"
    if events and events[-1].terminal:
        status = "error" if events[-1].type == "error" else "done"
    return replace(turn, text=fold_text(events), status=status)


# --- revoke (the brand's backend) ------------------------------------------------------------------


@router.post("/v1/conversations/{conversation_id}/revoke")
async def revoke_conversation(
    request: Request, conversation_id: str, authorization: Annotated[str | None, Header()] = None
) -> dict[str, Any]:
    """Refuse every token of a conversation from now on, on every instance; an open WebSocket of it
    is closed with 4401 within a heartbeat (``api/revocations.py``). The brand's API key authorises it
    and scopes it: a key revokes its own brand's conversations only. Idempotent."""
    runtime = _runtime(request)
    try:
        brands = brands_for_key(runtime, authorization)
    except OpenAIError as exc:
        raise Unauthorized(str(exc)) from None
    for brand in brands:
        runtime.check_origin(brand, request.headers.get("origin"))
    for brand in brands:
        await runtime.revocations.revoke(brand.id, conversation_id)
        logger.bind(conversation_id=conversation_id, brand=brand.id).info("conversation revoked")
    return {"conversation_id": conversation_id, "revoked": True}


# --- operations ------------------------------------------------------------------------------------


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, str]:
    return {"status": "ok", "instance": _runtime(request).settings.instance_id}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    runtime = _runtime(request)
    reason = await runtime.readiness()
    if reason is None:
        return JSONResponse({"status": "ready", "instance": runtime.settings.instance_id})
    return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
