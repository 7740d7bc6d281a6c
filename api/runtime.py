"""The composition root: everything one app instance owns, built from :class:`Settings` and torn
down in order. This is the only place that reads settings into the option objects the lower
layers take (``BufferOptions``, ``ReplyOptions``, ``WsOptions``); none of them has defaults of its own."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from api.auth import Grant, verify_token
from api.ephemeral import EphemeralConversations
from api.exceptions import Forbidden, NotFound, PayloadTooLarge
from api.hooks import HookRegistry, load_hook, log_hook
from api.limit_store import make_limit_store
from api.limits import CONNECTION_LEASE_MARGIN_S, REPLY_LEASE_MARGIN_S, LimitOptions, Limits, parse_networks
from api.metrics import DatadogMetrics, TimedBuffer
from api.revocations import Revocations
from api.settings import Settings
from api.ws_state import WsOptions
from llm.base import ChatProvider
from persona import language, semantic
from persona.brand import Brand
from persona.demo import compose_reply
from persona.guard import brand_guard, pass_through
from persona.loader import load_brands
from persona.tokens import count_tokens
from reply.jobs import GenerationManager, Submission
from reply.options import Deadlines, ReplyOptions
from reply.reviewers import ModelReview, Reviewers, warm_semantic
from streaming.buffer import StreamBuffer, make_buffer
from streaming.contract import BufferOptions, Turn, turn_record
from streaming.events import StoredEvent
from streaming.follow import follow

# /readyz: how long each check may take, and how long a provider check is trusted (it may cost
# the provider a request, e.g. OpenAI's GET /models).
READY_BUFFER_TIMEOUT_S = 2.0
READY_PROVIDER_TIMEOUT_S = 5.0
READY_PROVIDER_CACHE_S = 10.0
# A follower re-reads the log after this much silence (bounded by the heartbeat), so a lost live
# message costs at most one idle poll.
FOLLOW_IDLE_POLL_MIN_S = 0.2
FOLLOW_IDLE_POLL_MAX_S = 5.0
# A live job always ends by its total deadline (plus the shutdown grace); a stream still open this
# much later has lost its instance and is ended with generation_lost.
GENERATION_LOST_MARGIN_S = 30.0
# Streams whose producer died are looked for twice per lease TTL (so a takeover happens within
# about 1.5 times LEASE_TTL_S), but not more often than this.
TAKEOVER_SWEEP_MIN_S = 0.2
# The provider's own read timeout is only a backstop: the job's deadlines fire first.
PROVIDER_READ_TIMEOUT_MARGIN_S = 5.0


def make_provider(settings: Settings, brands: dict[str, Brand]) -> ChatProvider:
    if settings.provider_name == "openai":
        if not settings.openai_api_key or not settings.openai_api_key.get_secret_value():
            raise ValueError("LLM_PROVIDER=openai needs OPENAI_API_KEY")
        from llm.openai_provider import OpenAIProvider

        return OpenAIProvider(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            model=settings.openai_model,
            connect_timeout_s=settings.upstream_connect_timeout_s,
            read_timeout_s=settings.upstream_total_deadline_s + PROVIDER_READ_TIMEOUT_MARGIN_S,
            stream_parser=settings.openai_stream_parser,
        )
    if settings.provider_name == "offline":
        from llm.offline import OfflineProvider

        def compose(brand_id: str, messages: Sequence[dict[str, Any]]) -> str:
            return compose_reply(brands[brand_id], messages)

        return OfflineProvider(compose=compose, token_delay_ms=settings.offline_token_delay_ms)
    raise ValueError(f"LLM_PROVIDER {settings.provider_name!r} is not one of auto, openai, offline")


def make_reviewers(settings: Settings, brands: dict[str, Brand]) -> Reviewers | None:
    """The sentence reviewers (reply/review.py), or None when no brand gets any. A brand that turned
    ``guard.semantic`` on without the extra installed stops start-up here (fail closed)."""
    semantic.require(brands.values())
    model: ModelReview | None = None
    key = settings.review_key
    if key is not None:
        from llm.openai_provider import OpenAIProvider

        provider = OpenAIProvider(
            api_key=key,
            base_url=settings.guard_review_base_url or settings.openai_base_url,
            model=settings.guard_review_model,
            connect_timeout_s=min(settings.upstream_connect_timeout_s, settings.guard_review_timeout_s),
            read_timeout_s=settings.guard_review_timeout_s + PROVIDER_READ_TIMEOUT_MARGIN_S,
            stream_parser=settings.openai_stream_parser,
        )
        model = ModelReview(provider, settings.guard_review_model, settings.guard_review_timeout_s)
    reviewers = Reviewers(model=model, semantic_timeout_s=settings.guard_semantic_timeout_s)
    if not any(reviewers.enabled_for(b) for b in brands.values()):
        return None
    return reviewers


@dataclass(eq=False)
class Runtime:
    settings: Settings
    brands: dict[str, Brand]
    buffer: StreamBuffer
    provider: ChatProvider
    manager: GenerationManager
    ws_options: WsOptions
    limits: Limits
    revocations: Revocations
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)
    hooks: HookRegistry = field(default_factory=HookRegistry)
    metrics: DatadogMetrics | None = None
    reviewers: Reviewers | None = None
    connections: int = 0
    _ready_cache: tuple[float, str | None] = (0.0, None)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        settings.check_secrets()
        # Brand dev keys (api.dev_key) are published: they open the compatible endpoint in dev mode only.
        brands = load_brands(settings.brands_dir, dev_keys=settings.dev_mode)
        if any(brand.guard.language.action != "off" for brand in brands.values()):
            # The language detector, once per process and before serving: it takes seconds and holds the
            # GIL while it loads, which would stall every stream in the first judged reply.
            language.warm_up()
        buffer = make_buffer(
            settings.buffer_url,
            BufferOptions(
                conversation_ttl_s=settings.conversation_ttl_s,
                resume_window_s=settings.resume_window_s,
                subscription_maxsize=settings.follower_queue_max_events,
                lease_ttl_s=settings.lease_ttl_s,
                outage_deadline_s=settings.buffer_outage_deadline_s,
                write_gather_s=settings.redis_write_gather_ms / 1000,
            ),
        )
        hooks = HookRegistry()
        hooks.add(log_hook)
        metrics = None
        if settings.metrics_on:
            metrics = DatadogMetrics(
                host=settings.dd_agent_host or "127.0.0.1",
                port=settings.dd_dogstatsd_port,
                instance=settings.instance_id,
            )
            hooks.add(metrics)
            backend = settings.buffer_url.split(":", 1)[0]
            buffer = TimedBuffer(buffer, metrics.buffer_timer(backend))
        for path in settings.hooks:
            hooks.add(load_hook(path))
        limits = Limits(
            make_limit_store(settings.buffer_url),
            LimitOptions(
                replies_per_min=settings.rate_replies_per_min,
                negotiates_per_min=settings.rate_negotiates_per_min,
                running_per_brand=settings.max_running_replies_per_brand,
                running_per_instance=settings.max_running_replies,
                connections_per_address=settings.max_connections_per_address,
                reply_lease_s=settings.upstream_total_deadline_s + settings.shutdown_grace_s + REPLY_LEASE_MARGIN_S,
                connection_lease_s=settings.token_ttl_s + settings.hello_timeout_s + CONNECTION_LEASE_MARGIN_S,
                trusted_proxies=parse_networks(settings.trusted_proxies),
            ),
        )
        hooks.add(limits.on_hook)  # a stream that ended gives back its places
        provider = make_provider(settings, brands)
        reviewers = make_reviewers(settings, brands)
        manager = GenerationManager(
            # The compatible endpoint's conversations keep no turns (api/ephemeral.py).
            buffer=EphemeralConversations(buffer),
            provider=provider,
            brands=brands,
            options=ReplyOptions(
                deadlines=Deadlines(
                    connect_s=settings.upstream_connect_timeout_s,
                    first_token_s=settings.upstream_first_token_timeout_s,
                    stall_s=settings.upstream_stall_timeout_s,
                    total_s=settings.upstream_total_deadline_s,
                    retry_max_wait_s=settings.upstream_retry_max_wait_s,
                ),
                resume_window_s=settings.resume_window_s,
                max_reply_tokens=settings.max_reply_tokens,
                stream_max_events=settings.stream_max_events,
                stream_max_chars=settings.stream_max_chars,
                takeover_sweep_s=max(TAKEOVER_SWEEP_MIN_S, settings.lease_ttl_s / 2),
                buffer_outage_deadline_s=settings.buffer_outage_deadline_s,
            ),
            hooks=hooks.emit,
            before_end=limits.end_stream,  # the conversation is free once a client can read `done`
            guard_factory=brand_guard if settings.guard_enabled else pass_through,
            reviewers=reviewers if settings.guard_enabled else None,
        )
        ws_options = WsOptions(
            max_message_chars=settings.max_message_chars,
            max_frame_bytes=settings.max_frame_bytes,
            max_bad_frames=settings.ws_max_bad_frames,
            rate_per_s=settings.ws_rate_per_s,
            rate_burst=settings.ws_rate_burst,
        )
        # Revocations live in the limits' store (Redis across instances, else in process).
        revocations = Revocations(limits.store, settings.token_ttl_s)
        return cls(
            settings,
            brands,
            buffer,
            provider,
            manager,
            ws_options,
            limits,
            revocations,
            hooks=hooks,
            metrics=metrics,
            reviewers=reviewers,
        )

    @property
    def heartbeat_s(self) -> float:
        return self.settings.heartbeat_ms / 1000

    def verify(self, token: str) -> Grant:
        """A token's grant: signed with ``SESSION_SECRET``, not expired, its conversation not past
        ``CONVERSATION_MAX_AGE_S`` (revocation is the async :meth:`authorize`)."""
        return verify_token(self.settings.secret_bytes, token, max_age_s=self.settings.max_conversation_age_s)

    async def authorize(self, token: str) -> Grant:
        """:meth:`verify`, then refused when its conversation was revoked (``api/revocations.py``)."""
        grant = self.verify(token)
        await self.revocations.check(grant)
        return grant

    def brand(self, brand_id: str) -> Brand:
        brand = self.brands.get(brand_id)
        if brand is None:
            raise NotFound(f"unknown brand {brand_id!r}")
        return brand

    def check_origin(self, brand: Brand, origin: str | None) -> None:
        """A page may use a brand's chat only from an origin both ``ALLOWED_ORIGINS`` and the brand
        file's ``allowed_origins`` allow. No ``Origin`` header: not a page in a browser (browsers send
        it on every cross-origin request and WebSocket) but a server-side caller with a token or key,
        which the origin rule does not concern."""
        if not origin:
            return
        allowed = self.settings.allowed_origins
        if ("*" not in allowed and origin not in allowed) or not brand.origin_allowed(origin):
            raise Forbidden(f"origin {origin[:100]!r} is not allowed for brand {brand.id!r}")

    async def start_reply(
        self,
        *,
        address: str,
        conversation_id: str,
        brand: Brand,
        client_message_id: str,
        text: str,
        history: list[dict[str, Any]] | None = None,
        ephemeral: bool = False,
        locale: str | None = None,
    ) -> Submission:
        """A send, within the limits (``api/limits.py``): raises ``ConversationBusy``, ``RateLimited``,
        ``PayloadTooLarge`` (the conversation is too long) or what ``GenerationManager.submit`` raises.
        ``ephemeral``: a conversation nobody else can send to (the compatible endpoint's). ``locale``: the
        page's locale hint from the token (negotiate's ``locale``), for the guard's language check."""
        places = await self.limits.begin_reply(
            address=address,
            brand=brand.id,
            conversation_id=None if ephemeral else conversation_id,
            client_message_id=None if ephemeral else client_message_id,
        )
        try:
            if history is None:
                history = self._bounded_history(await self.buffer.history(conversation_id))
            submission = await self.manager.submit(
                conversation_id=conversation_id,
                brand=brand,
                client_message_id=client_message_id,
                text=text,
                history=history,
                locale=locale,
            )
        except BaseException:
            await self.limits.release(places)
            raise
        self.limits.started(places, submission.stream_id, created=submission.created)
        return submission

    def _bounded_history(self, turns: list[Turn]) -> list[dict[str, Any]]:
        """The stored turns a prompt may read: refused past HISTORY_MAX_TURNS (the conversation is
        full: start a new one), and only the newest HISTORY_MAX_CHARS of text, in whole turns."""
        if len(turns) >= self.settings.history_max_turns:
            raise PayloadTooLarge("this conversation is too long; start a new one")
        return self.newest_history([turn_record(t) for t in turns])

    def newest_history(self, turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The newest whole turns whose text fits HISTORY_MAX_CHARS: what a prompt may tokenise
        (on the event loop, in ``GenerationManager.submit``), whatever the conversation's length."""
        budget = self.settings.history_max_chars
        kept: list[dict[str, Any]] = []
        for turn in reversed(turns):
            budget -= len(str(turn.get("text") or ""))
            if budget < 0:
                break
            kept.append(turn)
        kept.reverse()
        return kept

    async def start(self) -> None:
        if not self.settings.session_secret.get_secret_value():
            logger.warning(
                "SESSION_SECRET is not set: tokens are signed with a random per-process key and will not "
                "verify on other instances or after a restart"
            )
        await self.buffer.start()
        self.manager.start()
        # Load the tokenizer's tables now, not inside the first request (it blocks for ~0.5 s).
        await asyncio.to_thread(count_tokens, "warm up")
        # Load the sentence-embedding model and the brands' embeddings now (seconds), not in a reply.
        if semantic.semantic_brands(self.brands.values()):
            await asyncio.to_thread(warm_semantic, list(self.brands.values()))
        logger.info(
            "ready: instance={} buffer={} provider={} brands={}",
            self.settings.instance_id,
            self.settings.buffer_url.split("@")[-1],
            self.provider.name,
            ",".join(self.brands),
        )

    def begin_shutdown(self) -> None:
        """Stop taking new replies and tell every connection to close (1012) so clients resume elsewhere."""
        if not self.shutting_down.is_set():
            logger.info("shutdown begins: closing connections, {} replies still running", self.manager.running)
            self.shutting_down.set()
            self.manager.stop_accepting()

    async def stop(self) -> None:
        # 1. No new replies; connections were told to go (api.server.Server, or now at the latest).
        self.begin_shutdown()
        # 2. Let running replies finish within the grace period; the rest end with a retryable error.
        await self.manager.drain(self.settings.shutdown_grace_s)
        await self.manager.stop()
        # 3. Release the provider and the buffer.
        with contextlib.suppress(Exception):
            await self.provider.close()
        if self.reviewers is not None:
            with contextlib.suppress(Exception):
                await self.reviewers.close()
        await self.buffer.close()
        await self.limits.close()
        if self.metrics is not None:
            self.metrics.close()

    async def readiness(self) -> str | None:
        """``None`` when ready, else the reason. Provider checks are cached for READY_PROVIDER_CACHE_S."""
        try:
            async with asyncio.timeout(READY_BUFFER_TIMEOUT_S):
                await self.buffer.ping()
        except Exception as exc:
            # The reason is public (/readyz); the details (addresses, hosts) go to the log only.
            logger.warning("readiness: buffer unavailable: {!r}", exc)
            return "buffer unavailable"
        if self.shutting_down.is_set():
            return "shutting down"
        checked_at, reason = self._ready_cache
        if time.monotonic() - checked_at > READY_PROVIDER_CACHE_S:
            try:
                async with asyncio.timeout(READY_PROVIDER_TIMEOUT_S):
                    await self.provider.check()
                reason = None
            except Exception as exc:
                logger.warning("readiness: provider unavailable: {!r}", exc)
                reason = "provider unavailable"
            self._ready_cache = (time.monotonic(), reason)
        return reason

    def follow(self, stream_id: str, after_seq: int, transport: str) -> AsyncIterator[StoredEvent]:
        """Replay-then-follow a stream for a connection (see ``streaming/follow.py``).

        A follow from ``after_seq > 0`` is a resume: logged and counted with the events replayed."""

        def on_replay(count: int) -> None:
            if after_seq > 0:
                logger.bind(stream_id=stream_id, transport=transport, seq=after_seq).info(
                    "resume after seq {}: {} events replayed", after_seq, count
                )
                self.hooks.emit("resume", transport=transport, stream_id=stream_id, after_seq=after_seq, replayed=count)

        return follow(
            self.buffer,
            stream_id,
            after_seq,
            idle_poll_s=max(FOLLOW_IDLE_POLL_MIN_S, min(FOLLOW_IDLE_POLL_MAX_S, self.heartbeat_s)),
            unavailable_after_s=self.settings.buffer_outage_deadline_s,
            lost_after_s=self.settings.upstream_total_deadline_s
            + self.settings.shutdown_grace_s
            + GENERATION_LOST_MARGIN_S,
            on_replay=on_replay,
        )
