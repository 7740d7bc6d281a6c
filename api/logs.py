"""Structured logs with loguru: JSON when not on a terminal, pretty when on one.

* stdlib ``logging`` (uvicorn, redis, openai, httpx) is routed into loguru by
  :class:`InterceptHandler`, so there is one stream of records and one format.
* Every record carries ``instance``; connection and stream code binds ``conversation_id``,
  ``stream_id``, ``transport`` and ``seq`` (``logger.bind``), so one grep on a stream id follows a
  reply across instances.
* User message text is never logged at INFO (it is personal data); DEBUG may include lengths only.
* A JSON line has the attributes Datadog reads without a remapper: ``timestamp`` (ISO 8601 with
  its offset), ``status`` (``debug`` / ``info`` / ``warning`` / ``error`` / ``critical``),
  ``message``, ``logger``, the unified service tags ``service``, ``env``, ``version``
  (``DD_SERVICE``, ``DD_ENV``, ``DD_VERSION``), and — when the process runs under ``ddtrace``
  and a span is active — ``dd.trace_id`` / ``dd.span_id``, so a log line links to its trace.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from loguru import logger

PRETTY_FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[instance]}</cyan> {message} <dim>{extra}</dim>"
)


class InterceptHandler(logging.Handler):
    """Send stdlib ``logging`` records to loguru, keeping level and caller."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = inspect.currentframe(), 0
        while frame is not None and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).bind(logger=record.name).log(level, record.getMessage())


# loguru's level → Datadog's status word.
STATUS = {"TRACE": "debug", "DEBUG": "debug", "INFO": "info", "SUCCESS": "info", "WARNING": "warning"}


def _trace_ids() -> dict[str, str]:
    """``dd.trace_id`` / ``dd.span_id`` of the active span when ddtrace runs (``ddtrace-run``);
    nothing otherwise. ddtrace is never imported here: without it loaded, it is off."""
    if "ddtrace" not in sys.modules:
        return {}
    try:
        from ddtrace.trace import tracer

        context = tracer.get_log_correlation_context()
    except Exception:  # an old or broken ddtrace must never break logging
        return {}
    if context.get("dd.trace_id", "0") == "0":
        return {}
    return {"dd.trace_id": str(context["dd.trace_id"]), "dd.span_id": str(context["dd.span_id"])}


def _json_sink(stream: TextIO, tags: Mapping[str, str]) -> Any:
    """A compact JSON line per record: Datadog's attributes (above), then the bound context flat."""
    service_tags = dict(tags)

    def sink(message: Any) -> None:
        record = message.record
        line: dict[str, Any] = {
            "timestamp": record["time"].isoformat(),
            "status": STATUS.get(record["level"].name, record["level"].name.lower()),
            "message": record["message"],
            "logger": record["extra"].get("logger", record["name"]),
            **service_tags,
            **_trace_ids(),
        }
        line.update({k: v for k, v in record["extra"].items() if k != "logger"})
        if record["exception"] is not None:
            exc = record["exception"]
            line["exception"] = f"{exc.type.__name__ if exc.type else ''}: {exc.value}"
        stream.write(json.dumps(line, default=str) + "\n")
        stream.flush()

    return sink


def setup_logging(
    *,
    instance: str,
    level: str = "INFO",
    fmt: str = "auto",
    stream: TextIO | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Configure loguru once per process (idempotent: re-running replaces the sinks). ``tags``:
    ``service``, ``env``, ``version`` for every JSON line (``Settings.log_tags``)."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    logger.remove()
    logger.configure(extra={"instance": instance})
    if use_json:
        logger.add(_json_sink(stream, tags or {}), level=level, backtrace=False, diagnose=False)
    else:
        logger.add(stream, level=level, format=PRETTY_FORMAT, backtrace=False, diagnose=False)
    # The stdlib level must be the real one, not 0: uvicorn wraps the app in its (costly)
    # per-message trace middleware when the effective level of its logger is TRACE (5) or lower.
    std_level = logging.getLevelName(level.upper())
    std_level = std_level if isinstance(std_level, int) else logging.INFO
    logging.basicConfig(handlers=[InterceptHandler()], level=std_level, force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "redis", "openai", "httpx", "httpx2"):
        std = logging.getLogger(name)
        std.handlers = [InterceptHandler()]
        std.propagate = False
        std.setLevel(std_level)
    # Per-request access lines duplicate our lifecycle events; keep them at WARNING+.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
