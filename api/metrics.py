"""Datadog metrics over DogStatsD, fed by the monitoring hooks (:mod:`api.hooks`).

On when ``DD_AGENT_HOST`` is set (Datadog's own convention; ``DD_DOGSTATSD_PORT`` defaults to
8125) or ``METRICS_ENABLED=true``. Off means no DogStatsD client, no socket, no buffer timing
wrapper: nothing is measured. Every metric carries ``instance:<INSTANCE_ID>``; the others' tags are
listed in :data:`METRICS`. ``deploy/datadog/`` holds a dashboard and monitors built from these
names, and a test checks that they use only names listed here.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from datadog.dogstatsd.base import DogStatsd

from streaming.buffer import BufferWrapper, StreamBuffer
from streaming.contract import ReplyStatus, StreamInfo, StreamOrigin, Turn
from streaming.events import StoredEvent

NAMESPACE = "brandchat"
# Short enough that a dashboard is live, long enough that a busy instance sends few packets.
FLUSH_INTERVAL_S = 0.3
# token_gap comes once per upstream token: gaps are collected per brand and sent in batches (at the
# end of each stream, or every TOKEN_GAP_BATCH gaps), one value per TOKEN_GAP_STRIDE gaps: the largest
# of each group of the sorted batch, so the dashboard's 95th percentile and max keep their meaning
# while the histogram's count is a quarter of the gaps.
TOKEN_GAP_BATCH = 256
TOKEN_GAP_STRIDE = 4

# name (without namespace) → (type, tags)
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "connections.active": ("gauge", ("transport", "brand")),
    "stream.started": ("count", ("brand",)),
    "stream.done": ("count", ("brand", "finish_reason")),
    "stream.error": ("count", ("brand", "code")),
    "stream.cancelled": ("count", ("brand",)),
    "stream.fallback": ("count", ("brand",)),
    "stream.time_to_first_token_ms": ("histogram", ("brand",)),
    "stream.token_gap_ms": ("histogram", ("brand",)),
    "stream.duration_ms": ("histogram", ("brand", "terminal")),
    "upstream.error": ("count", ("brand", "code", "status")),
    "upstream.stall": ("count", ("brand",)),
    "upstream.retry": ("count", ("brand", "code")),
    "resume.count": ("count", ("transport",)),
    "resume.events_replayed": ("histogram", ("transport",)),
    "transport.downgrade": ("count", ("transport", "reason", "brand")),
    "guard.fallback": ("count", ("brand", "rule")),
    "guard.off_topic": ("count", ("brand", "action")),
    "guard.review": ("count", ("brand", "reviewer", "outcome")),
    "connection.slow_consumer": ("count", ("transport",)),
    "buffer.latency_ms": ("histogram", ("op", "backend")),
}


def full_name(name: str) -> str:
    return f"{NAMESPACE}.{name}"


class DatadogMetrics:
    """A hook (``metrics(event, fields)``) that emits DogStatsD metrics."""

    def __init__(self, *, host: str, port: int, instance: str) -> None:
        # Buffered: metrics leave in batches every FLUSH_INTERVAL_S from a background thread, so the
        # per-token histogram costs a list append on the event loop, not a syscall.
        self.statsd = DogStatsd(
            host=host,
            port=port,
            namespace=NAMESPACE,
            constant_tags=[f"instance:{instance}"],
            disable_telemetry=True,
            disable_buffering=False,
            flush_interval=FLUSH_INTERVAL_S,
            origin_detection_enabled=False,
        )
        self._active: Counter[tuple[str, str]] = Counter()
        self._gaps: dict[str, list[float]] = {}  # brand → token gaps (ms) not yet sent
        # event → handler, looked up once; the registry calls this hook for these events only.
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            name.removeprefix("_on_"): getattr(self, name) for name in dir(self) if name.startswith("_on_")
        }
        self.events = frozenset(self._handlers)

    def close(self) -> None:
        for brand in list(self._gaps):
            self._flush_gaps(brand)
        self.statsd.flush()
        self.statsd.close_socket()

    def _count(self, name: str, **tags: Any) -> None:
        self.statsd.increment(name, tags=_tags(tags))

    def _histogram(self, name: str, value: float, **tags: Any) -> None:
        self.statsd.histogram(name, value, tags=_tags(tags))

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        handler = self._handlers.get(event)
        if handler is not None:
            handler(fields)

    # --- connections ------------------------------------------------------------------------------
    def _on_connection_opened(self, f: dict[str, Any]) -> None:
        key = (f["transport"], f.get("brand") or "unknown")
        self._active[key] += 1
        self.statsd.gauge("connections.active", self._active[key], tags=_tags({"transport": key[0], "brand": key[1]}))

    def _on_connection_closed(self, f: dict[str, Any]) -> None:
        key = (f["transport"], f.get("brand") or "unknown")
        self._active[key] = max(0, self._active[key] - 1)
        self.statsd.gauge("connections.active", self._active[key], tags=_tags({"transport": key[0], "brand": key[1]}))

    def _on_resume(self, f: dict[str, Any]) -> None:
        self._count("resume.count", transport=f["transport"])
        self._histogram("resume.events_replayed", f["replayed"], transport=f["transport"])

    def _on_slow_consumer(self, f: dict[str, Any]) -> None:
        self._count("connection.slow_consumer", transport=f["transport"])

    def _on_downgrade(self, f: dict[str, Any]) -> None:
        self._count("transport.downgrade", transport=f["transport"], reason=f["reason"], brand=f.get("brand"))

    # --- streams ------------------------------------------------------------------------------
    def _on_stream_started(self, f: dict[str, Any]) -> None:
        self._count("stream.started", brand=f["brand"])

    def _on_first_token(self, f: dict[str, Any]) -> None:
        self._histogram("stream.time_to_first_token_ms", f["seconds"] * 1000, brand=f["brand"])

    def _on_token_gap(self, f: dict[str, Any]) -> None:
        brand = f["brand"]
        gaps = self._gaps.get(brand)
        if gaps is None:
            gaps = self._gaps[brand] = []
        gaps.append(f["seconds"] * 1000)
        if len(gaps) >= TOKEN_GAP_BATCH:
            self._flush_gaps(brand)

    def _flush_gaps(self, brand: str) -> None:
        gaps = self._gaps.pop(brand, None)
        if not gaps:
            return
        gaps.sort()
        last = len(gaps) - 1
        for i in range(TOKEN_GAP_STRIDE - 1, last + TOKEN_GAP_STRIDE, TOKEN_GAP_STRIDE):
            self._histogram("stream.token_gap_ms", gaps[min(i, last)], brand=brand)

    def _on_upstream_error(self, f: dict[str, Any]) -> None:
        self._count("upstream.error", brand=f["brand"], code=f["code"], status=f.get("status") or "none")
        if f["code"] == "upstream_timeout":
            self._count("upstream.stall", brand=f["brand"])

    def _on_upstream_retry(self, f: dict[str, Any]) -> None:
        self._count("upstream.retry", brand=f["brand"], code=f["code"])

    def _on_guard_fallback(self, f: dict[str, Any]) -> None:
        self._count("guard.fallback", brand=f["brand"], rule=f["rule"])

    def _on_off_topic(self, f: dict[str, Any]) -> None:
        self._count("guard.off_topic", brand=f["brand"], action=f.get("action") or "log")

    def _on_guard_review(self, f: dict[str, Any]) -> None:
        self._count("guard.review", brand=f["brand"], reviewer=f["reviewer"], outcome=f["outcome"])

    def _on_stream_ended(self, f: dict[str, Any]) -> None:
        brand, outcome = f["brand"], f["outcome"]
        self._flush_gaps(brand)
        if f["terminal"] == "error":
            self._count("stream.error", brand=brand, code=outcome)
        elif outcome == "cancelled":
            self._count("stream.cancelled", brand=brand)
        elif outcome == "fallback":
            self._count("stream.fallback", brand=brand)
        else:
            self._count("stream.done", brand=brand, finish_reason=outcome)
        if "seconds" in f:
            self._histogram("stream.duration_ms", f["seconds"] * 1000, brand=brand, terminal=f["terminal"])

    # --- buffer -------------------------------------------------------------------------------
    def buffer_timer(self, backend: str) -> Callable[[str, float], None]:
        def record(op: str, seconds: float) -> None:
            self._histogram("buffer.latency_ms", seconds * 1000, op=op, backend=backend)

        return record


def _tags(tags: dict[str, Any]) -> list[str]:
    return [f"{k}:{v}" for k, v in tags.items() if v is not None]


class TimedBuffer(BufferWrapper):
    """A :class:`StreamBuffer` that reports how long each data operation of the backend it wraps
    took (``buffer.latency_ms`` by op). Used only with metrics on; lifecycle and control calls pass
    straight through."""

    def __init__(self, inner: StreamBuffer, record: Callable[[str, float], None]) -> None:
        super().__init__(inner)
        self._record = record

    @contextlib.contextmanager
    def _timed(self, op: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._record(op, time.perf_counter() - started)

    async def start_production(self, stream_id: str, origin: StreamOrigin, first: Sequence[StoredEvent]) -> None:
        with self._timed("append"):
            await self._inner.start_production(stream_id, origin, first)

    # --- stream log ------------------------------------------------------------------------
    async def create_stream(
        self, stream_id: str, conversation_id: str, ttl_s: int, client_message_id: str | None = None
    ) -> str:
        with self._timed("create_stream"):
            return await self._inner.create_stream(stream_id, conversation_id, ttl_s, client_message_id)

    async def append(self, stream_id: str, events: Sequence[StoredEvent], *, expire_after_s: int | None = None) -> None:
        with self._timed("append"):
            await self._inner.append(stream_id, events, expire_after_s=expire_after_s)

    async def read_after(self, stream_id: str, after_seq: int) -> list[StoredEvent]:
        with self._timed("read_after"):
            return await self._inner.read_after(stream_id, after_seq)

    async def stream_info(self, stream_id: str) -> StreamInfo | None:
        with self._timed("stream_info"):
            return await self._inner.stream_info(stream_id)

    # --- conversations ---------------------------------------------------------------------
    async def claim_message(self, conversation_id: str, client_message_id: str, stream_id: str) -> str:
        with self._timed("claim_message"):
            return await self._inner.claim_message(conversation_id, client_message_id, stream_id)

    async def add_turn(self, conversation_id: str, *turns: Turn) -> None:
        with self._timed("add_turn"):
            await self._inner.add_turn(conversation_id, *turns)

    async def finish_reply(
        self, conversation_id: str, stream_id: str, text: str, status: ReplyStatus, *, tokens: int | None = None
    ) -> None:
        with self._timed("finish_reply"):
            await self._inner.finish_reply(conversation_id, stream_id, text, status, tokens=tokens)

    async def history(self, conversation_id: str) -> list[Turn]:
        with self._timed("history"):
            return await self._inner.history(conversation_id)
