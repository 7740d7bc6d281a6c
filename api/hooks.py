"""Monitoring hooks: plug Sentry, tracing or your own counters into stream lifecycle events.

A hook is any callable ``hook(event: str, fields: dict) -> None``. It is called synchronously on
the event loop, so it must be cheap and must not block (hand heavy work to a queue). A hook that
raises is logged and ignored: monitoring never breaks a reply.

Register hooks in code (``runtime.hooks.add(my_hook)``) or by configuration:
``HOOKS="mypkg.monitoring:sentry_hook,mypkg.tracing:hook"`` (import paths, loaded at start-up).

A hook may say which events it wants with an ``events`` attribute (a set of names); it is then
called for those only. ``token_gap`` comes once per upstream token, so the registry keeps one list
of hooks per event and a token costs nothing for hooks that did not ask for it (the built-in log
hook and the Datadog metrics declare theirs; a hook without ``events`` gets everything).

Events (fields):

=====================  ================================================================
``connection_opened``  transport, conversation_id (WS: after hello), brand
``connection_closed``  transport, conversation_id, brand, code, reason
``resume``             transport, stream_id, after_seq, replayed
``slow_consumer``      transport, stream_id (SSE) or conversation_id (WS)
``downgrade``          transport (the one the client reports failed), reason, brand
``stream_started``     stream_id, conversation_id, brand
``first_token``        stream_id, brand, seconds
``token_gap``          brand, seconds (between two pieces of upstream text; per token: declare ``events``)
``upstream_error``     stream_id, brand, code, status, retryable
``upstream_retry``     stream_id, brand, code, wait_s
``guard_fallback``     stream_id, brand, rule
``off_topic``          stream_id, brand, score, threshold, terms, action (end-of-reply relevance check)
``language``           stream_id, brand, expected, user, source, detected, confidence, action (wrong language)
``guard_review``       stream_id, brand, reviewer, call, outcome (ok|violation|timeout|error|garbage), seconds
``stream_ended``       stream_id, brand, terminal (done|error), outcome, seconds
=====================  ================================================================

Example (Sentry)::

    import sentry_sdk

    def sentry_hook(event, fields):
        if event == "upstream_error":
            sentry_sdk.capture_message(f"upstream {fields['code']}", level="warning", extras=fields)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from loguru import logger

Hook = Callable[[str, dict[str, Any]], None]


class HookRegistry:
    def __init__(self) -> None:
        self._hooks: list[Hook] = []
        self._by_event: dict[str, tuple[Hook, ...]] = {}

    def add(self, hook: Hook) -> None:
        self._hooks.append(hook)
        self._by_event.clear()

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def _for(self, event: str) -> tuple[Hook, ...]:
        hooks = self._by_event.get(event)
        if hooks is None:
            hooks = self._by_event[event] = tuple(h for h in self._hooks if event in getattr(h, "events", (event,)))
        return hooks

    def emit(self, event: str, **fields: Any) -> None:
        for hook in self._by_event.get(event) or self._for(event):
            try:
                hook(event, fields)
            except Exception:
                logger.exception("monitoring hook {!r} failed on {}", hook, event)

    # GenerationManager calls its hooks as ``hooks(event, **fields)``.
    __call__ = emit


def load_hook(path: str) -> Hook:
    """``"package.module:function"`` → the callable. Raises ValueError with a readable message."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"HOOKS entry {path!r} must look like 'package.module:function'")
    try:
        hook = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"HOOKS entry {path!r} cannot be loaded: {exc}") from exc
    if not callable(hook):
        raise ValueError(f"HOOKS entry {path!r} is not callable")
    return hook  # type: ignore[no-any-return]


def log_hook(event: str, fields: dict[str, Any]) -> None:
    """Lifecycle events that only the job knows about, logged once each."""
    if event == "first_token":
        logger.bind(stream_id=fields["stream_id"], brand=fields["brand"]).info(
            "first token after {:.3f} s", fields["seconds"]
        )


log_hook.events = frozenset({"first_token"})  # type: ignore[attr-defined]
