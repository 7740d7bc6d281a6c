"""Everything one app instance owns, built from :class:`Settings` and torn down in order."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from loguru import logger

from api.hooks import HookRegistry, load_hook, log_hook
from api.metrics import DatadogMetrics, TimedBuffer
from api.settings import Settings
from llm.base import ChatProvider
from persona.brand import Brand, load_brands
from persona.guard import brand_guard
from persona.tokens import count_tokens
from streaming.buffer import StreamBuffer, make_buffer
from streaming.events import StoredEvent
from streaming.exceptions import NotFound
from streaming.follow import follow
from streaming.jobs import Deadlines, GenerationManager

# Every live runtime in this process, so the uvicorn shutdown hook can find its own.
RUNTIMES: weakref.WeakSet[Runtime] = weakref.WeakSet()


def make_provider(settings: Settings) -> ChatProvider:
    if settings.provider_name == "openai":
        if not settings.openai_api_key:
            raise ValueError("LLM_PROVIDER=openai needs OPENAI_API_KEY")
        from llm.openai_provider import OpenAIProvider

        return OpenAIProvider(
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            model=settings.openai_model,
            connect_timeout_s=settings.upstream_connect_timeout_s,
            # Only a backstop: the job's own deadlines fire first.
            read_timeout_s=settings.upstream_total_deadline_s + 5,
        )
    if settings.provider_name == "offline":
        from llm.offline import OfflineProvider

        return OfflineProvider(token_delay_ms=settings.offline_token_delay_ms)
    raise ValueError(f"LLM_PROVIDER {settings.provider_name!r} is not one of auto, openai, offline")


@dataclass(eq=False)
class Runtime:
    settings: Settings
    brands: dict[str, Brand]
    buffer: StreamBuffer
    provider: ChatProvider
    manager: GenerationManager
    app: Any = None
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
            conversation_ttl_s=settings.conversation_ttl_s,
            resume_window_s=settings.resume_window_s,
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
            buffer = cast(StreamBuffer, TimedBuffer(buffer, metrics.buffer_timer(backend)))
        for path in settings.hooks:
            hooks.add(load_hook(path))
        provider = make_provider(settings)
        manager = GenerationManager(
            buffer=buffer,
            provider=provider,
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
            hooks=hooks,
            guard_factory=brand_guard,
        )
        return cls(settings, brands, buffer, provider, manager, hooks=hooks, metrics=metrics)

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
        # Load the tokenizer's tables now, not inside the first request (it blocks for ~0.5 s).
        await asyncio.to_thread(count_tokens, "warm up")
        RUNTIMES.add(self)
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
        # 1. No new replies; connections were told to go (the uvicorn hook, or now at the latest).
        self.begin_shutdown()
        # 2. Let running replies finish within the grace period; the rest end with a retryable error.
        await self.manager.drain(self.settings.shutdown_grace_s)
        # 3. Release the provider and the buffer.
        with contextlib.suppress(Exception):
            await self.provider.close()
        await self.buffer.close()
        if self.metrics is not None:
            self.metrics.close()
        RUNTIMES.discard(self)

    async def readiness(self) -> str | None:
        """``None`` when ready, else the reason. Provider checks are cached for 10 s."""
        try:
            async with asyncio.timeout(2.0):
                await self.buffer.ping()
        except Exception as exc:
            return f"buffer unavailable: {type(exc).__name__}: {exc}"
        if self.shutting_down.is_set():
            return "shutting down"
        checked_at, reason = self._ready_cache
        if time.monotonic() - checked_at > 10.0:
            try:
                async with asyncio.timeout(5.0):
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
            idle_poll_s=max(0.2, min(5.0, self.heartbeat_s)),
            # A live job always ends by its total deadline; this much later, its instance is gone.
            lost_after_s=self.settings.upstream_total_deadline_s + self.settings.shutdown_grace_s + 30,
            on_replay=on_replay,
        )


def install_uvicorn_shutdown_hook() -> None:
    """Make uvicorn tell our app *before* it waits for open connections to finish.

    Uvicorn's ``Server.shutdown`` closes WebSockets (1012) but waits for streaming HTTP
    responses to end before running the lifespan shutdown, and an SSE stream never ends by
    itself, so shutdown would hang until ``timeout_graceful_shutdown``. sse-starlette patches
    ``Server.handle_exit`` for the same reason; we wrap ``Server.shutdown`` instead, which also
    covers ``server.should_exit = True`` (used by tests and embedding code)."""
    import uvicorn.server

    original: Callable[..., Coroutine[Any, Any, None]] = uvicorn.server.Server.shutdown
    if getattr(original, "_brandchat_hook", False):
        return

    async def shutdown(self: Any, sockets: Any = None) -> None:
        app = self.config.app
        targets = [rt for rt in RUNTIMES if rt.app is app]
        if not targets and isinstance(app, str):
            targets = list(RUNTIMES)  # CLI: one app per process, known only by its import string
        for rt in targets:
            rt.begin_shutdown()
        if targets:
            await asyncio.sleep(0.05)  # let handlers send their close frames first
        await original(self, sockets)

    shutdown._brandchat_hook = True  # type: ignore[attr-defined]
    uvicorn.server.Server.shutdown = shutdown  # type: ignore[method-assign]
