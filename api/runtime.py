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

from api.exceptions import NotFound
from api.hooks import HookRegistry, load_hook, log_hook
from api.metrics import DatadogMetrics, TimedBuffer
from api.settings import Settings
from api.ws_state import WsOptions
from llm.base import ChatProvider
from persona.brand import Brand
from persona.demo import compose_reply
from persona.guard import brand_guard, pass_through
from persona.loader import load_brands
from persona.tokens import count_tokens
from reply.jobs import GenerationManager
from reply.options import Deadlines, ReplyOptions
from streaming.buffer import StreamBuffer, make_buffer
from streaming.contract import BufferOptions
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
        if not settings.openai_api_key:
            raise ValueError("LLM_PROVIDER=openai needs OPENAI_API_KEY")
        from llm.openai_provider import OpenAIProvider

        return OpenAIProvider(
            api_key=settings.openai_api_key,
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


@dataclass(eq=False)
class Runtime:
    settings: Settings
    brands: dict[str, Brand]
    buffer: StreamBuffer
    provider: ChatProvider
    manager: GenerationManager
    ws_options: WsOptions
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)
    hooks: HookRegistry = field(default_factory=HookRegistry)
    metrics: DatadogMetrics | None = None
    connections: int = 0
    _ready_cache: tuple[float, str | None] = (0.0, None)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        brands = load_brands(settings.brands_dir)
        buffer = make_buffer(
            settings.buffer_url,
            BufferOptions(
                conversation_ttl_s=settings.conversation_ttl_s,
                resume_window_s=settings.resume_window_s,
                subscription_maxsize=settings.follower_queue_max_events,
                lease_ttl_s=settings.lease_ttl_s,
                outage_deadline_s=settings.buffer_outage_deadline_s,
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
        provider = make_provider(settings, brands)
        manager = GenerationManager(
            buffer=buffer,
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
            guard_factory=brand_guard if settings.guard_enabled else pass_through,
        )
        ws_options = WsOptions(
            max_message_chars=settings.max_message_chars,
            max_frame_bytes=settings.max_frame_bytes,
            max_bad_frames=settings.ws_max_bad_frames,
            rate_per_s=settings.ws_rate_per_s,
            rate_burst=settings.ws_rate_burst,
        )
        return cls(settings, brands, buffer, provider, manager, ws_options, hooks=hooks, metrics=metrics)

    @property
    def heartbeat_s(self) -> float:
        return self.settings.heartbeat_ms / 1000

    def brand(self, brand_id: str) -> Brand:
        brand = self.brands.get(brand_id)
        if brand is None:
            raise NotFound(f"unknown brand {brand_id!r}")
        return brand

    async def start(self) -> None:
        if not self.settings.session_secret:
            logger.warning(
                "SESSION_SECRET is not set: tokens are signed with a random per-process key and will not "
                "verify on other instances or after a restart"
            )
        await self.buffer.start()
        self.manager.start()
        # Load the tokenizer's tables now, not inside the first request (it blocks for ~0.5 s).
        await asyncio.to_thread(count_tokens, "warm up")
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
        await self.buffer.close()
        if self.metrics is not None:
            self.metrics.close()

    async def readiness(self) -> str | None:
        """``None`` when ready, else the reason. Provider checks are cached for READY_PROVIDER_CACHE_S."""
        try:
            async with asyncio.timeout(READY_BUFFER_TIMEOUT_S):
                await self.buffer.ping()
        except Exception as exc:
            return f"buffer unavailable: {type(exc).__name__}: {exc}"
        if self.shutting_down.is_set():
            return "shutting down"
        checked_at, reason = self._ready_cache
        if time.monotonic() - checked_at > READY_PROVIDER_CACHE_S:
            try:
                async with asyncio.timeout(READY_PROVIDER_TIMEOUT_S):
                    await self.provider.check()
                reason = None
            except Exception as exc:
                reason = f"provider unavailable: {type(exc).__name__}: {exc}"
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
