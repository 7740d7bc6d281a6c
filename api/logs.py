"""Structured logs with loguru: JSON when not on a terminal, pretty when on one.

* stdlib ``logging`` (uvicorn, redis, openai, httpx) is routed into loguru by
  :class:`InterceptHandler`, so there is one stream of records and one format.
* Every record carries ``instance``; connection and stream code binds ``conversation_id``,
  ``stream_id``, ``transport`` and ``seq`` (``logger.bind``), so one grep on a stream id follows a
  reply across instances.
* User message text is never logged at INFO (it is personal data); DEBUG may include lengths only.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
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


def _json_sink(stream: TextIO) -> Any:
    """A compact JSON line per record: time, level, message, and the bound context flat."""

    def sink(message: Any) -> None:
        record = message.record
        line: dict[str, Any] = {
            "time": record["time"].isoformat(),
            "level": record["level"].name,
            "message": record["message"],
            "logger": record["extra"].get("logger", record["name"]),
        }
        line.update({k: v for k, v in record["extra"].items() if k != "logger"})
        if record["exception"] is not None:
            exc = record["exception"]
            line["exception"] = f"{exc.type.__name__ if exc.type else ''}: {exc.value}"
        stream.write(json.dumps(line, default=str) + "\n")
        stream.flush()

    return sink


def setup_logging(*, instance: str, level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure loguru once per process (idempotent: re-running replaces the sinks)."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    logger.remove()
    logger.configure(extra={"instance": instance})
    if use_json:
        logger.add(_json_sink(stream), level=level, backtrace=False, diagnose=False)
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
