"""Datadog metrics over DogStatsD, fed by the monitoring hooks (:mod:`api.hooks`).

On when ``DD_AGENT_HOST`` is set (Datadog's own convention; ``DD_DOGSTATSD_PORT`` defaults to
8125) or ``METRICS_ENABLED=true``. Off means no DogStatsD client, no socket, no buffer timing
wrapper: nothing is measured. Every metric carries ``instance:<INSTANCE_ID>``; the others' tags are
listed in :data:`METRICS`. ``deploy/datadog/`` holds a dashboard and monitors built from these
names, and a test checks that they use only names listed here.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from datadog.dogstatsd.base import DogStatsd

NAMESPACE = "brandchat"

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
    "connection.slow_consumer": ("count", ("transport",)),
    "buffer.latency_ms": ("histogram", ("op", "backend")),
}


def full_name(name: str) -> str:
    return f"{NAMESPACE}.{name}"


class DatadogMetrics:
    """A hook (``metrics(event, fields)``) that emits DogStatsD metrics."""

    def __init__(self, *, host: str, port: int, instance: str, flush_interval_s: float = 0.3) -> None:
        # Buffered: metrics leave in batches every flush_interval_s from a background thread, so the
        # per-token histogram costs a list append on the event loop, not a syscall.
        self.statsd = DogStatsd(
            host=host,
            port=port,
            namespace=NAMESPACE,
            constant_tags=[f"instance:{instance}"],
            disable_telemetry=True,
            disable_buffering=False,
            flush_interval=flush_interval_s,
            origin_detection_enabled=False,
        )
        self._active: Counter[tuple[str, str]] = Counter()

    def close(self) -> None:
        self.statsd.flush()
        self.statsd.close_socket()

    def _count(self, name: str, **tags: Any) -> None:
        self.statsd.increment(name, tags=_tags(tags))

    def _histogram(self, name: str, value: float, **tags: Any) -> None:
        self.statsd.histogram(name, value, tags=_tags(tags))

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{event}", None)
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
        self._histogram("stream.token_gap_ms", f["seconds"] * 1000, brand=f["brand"])

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

    def _on_stream_ended(self, f: dict[str, Any]) -> None:
        brand, outcome = f["brand"], f["outcome"]
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


class TimedBuffer:
    """Wraps a buffer backend and reports how long each operation took. Used only with metrics on."""

    TIMED = frozenset(
        {"create_stream", "append", "read_after", "stream_info", "claim_message", "add_turn", "finish_reply", "history"}
    )

    def __init__(self, inner: Any, record: Callable[[str, float], None]) -> None:
        self._inner = inner
        self._record = record

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self.TIMED:
            return attr

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                result = attr(*args, **kwargs)
                return await result if isinstance(result, Awaitable) else result
            finally:
                self._record(name, time.perf_counter() - started)

        return timed
