"""One reply's upstream call: the provider, our deadlines, the one retry, the guard on every piece.

::

    open_reply ──(connect_s)──▶ pieces ──(first_token_s, then stall_s per gap)──▶ guard ──▶ batcher
        │ fails before any text was shown, retryable, retry-after ≤ retry_max_wait_s: one retry
        └ the whole thing runs inside the job's total deadline (``reply.jobs``)

Deadlines are ours, independent of the SDK's read timeout. The guard is made per attempt, so text
held back when an attempt fails is simply dropped (a client never saw it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Protocol

from loguru import logger

from llm.base import ChatProvider, ReplyRequest
from llm.exceptions import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from persona.brand import Brand
from persona.guard import ABORTED, GuardContext, GuardFactory, GuardStep, ReplyGuard
from reply.exceptions import GuardViolation
from reply.options import Deadlines, JobHooks
from streaming.events import FinishReason
from streaming.tasks import MovingDeadline

# Wait before the one retry when the upstream gave no ``retry-after``.
DEFAULT_RETRY_WAIT_S = 0.25


class TextSink(Protocol):
    """Where checked text goes (the job's batcher, maybe through a failover splice)."""

    @property
    def text_so_far(self) -> int:
        """Characters of reply text written or pending (any means: no retry)."""
        ...

    def push(self, text: str) -> None: ...


@dataclass
class ReplyContext:
    """What one upstream attempt needs to know about its reply."""

    stream_id: str
    brand: Brand
    started_at: float  # time.monotonic() when the reply was submitted
    guard_context: GuardContext
    first_token_at: float | None = None

    @property
    def brand_id(self) -> str:
        return self.brand.id


class Upstream:
    """Runs the upstream call of a reply into its batcher (see the module docstring)."""

    def __init__(
        self, *, provider: ChatProvider, deadlines: Deadlines, guard_factory: GuardFactory, hooks: JobHooks
    ) -> None:
        self._provider = provider
        self._deadlines = deadlines
        self._guard_factory = guard_factory
        self._hook = hooks

    async def generate(self, reply: ReplyContext, request: ReplyRequest, batcher: TextSink) -> FinishReason:
        """Stream the reply into ``batcher``, retrying once if it fails before any text was produced.

        Raises :class:`UpstreamError` (after the retry), :class:`GuardViolation` or ``StreamFull``;
        cancelling it closes the upstream response and releases the text the guard held."""
        attempt = 0
        while True:
            try:
                return await self._stream_once(reply, request, batcher)
            except UpstreamError as exc:
                attempt += 1
                if attempt > 1 or not exc.retryable or batcher.text_so_far:
                    raise
                wait_s = exc.retry_after_s if exc.retry_after_s is not None else DEFAULT_RETRY_WAIT_S
                remaining = self._deadlines.total_s - (time.monotonic() - reply.started_at)
                if wait_s > self._deadlines.retry_max_wait_s or wait_s >= remaining:
                    raise
                logger.bind(stream_id=reply.stream_id).info("retrying upstream in {:.2f} s after {!r}", wait_s, exc)
                self._hook(
                    "upstream_retry", stream_id=reply.stream_id, brand=reply.brand_id, code=exc.code, wait_s=wait_s
                )
                await asyncio.sleep(wait_s)

    async def _stream_once(self, reply: ReplyContext, request: ReplyRequest, batcher: TextSink) -> FinishReason:
        d = self._deadlines
        opened_at = time.monotonic()
        try:
            async with asyncio.timeout(d.connect_s):
                pieces = await self._provider.open_reply(request)
        except TimeoutError:
            raise UpstreamTimeout("connect", d.connect_s) from None
        guard = self._guard_factory(reply.brand, reply.guard_context)
        # One deadline per phase, moved by each piece (no timer per piece): first token, then stall.
        phase, limit = "first_token", max(0.0, d.first_token_s - (time.monotonic() - opened_at))
        loop_time = asyncio.get_running_loop().time
        last_text_at: float | None = None
        try:
            async with MovingDeadline() as deadline:
                deadline.move_to(loop_time() + limit)
                try:
                    while True:
                        piece = await anext(pieces, None)
                        if piece is None:
                            raise UpstreamUnavailable("the model provider ended the reply without a finish reason")
                        if piece.text:
                            now = time.monotonic()
                            if last_text_at is None:
                                phase, limit = "stall", d.stall_s
                                if reply.first_token_at is None:
                                    reply.first_token_at = now
                                    seconds = now - reply.started_at
                                    self._hook(
                                        "first_token", stream_id=reply.stream_id, brand=reply.brand_id, seconds=seconds
                                    )
                            else:
                                self._hook("token_gap", brand=reply.brand_id, seconds=now - last_text_at)
                            last_text_at = now
                            deadline.move_to(loop_time() + limit)
                            if self._apply(guard.feed(piece.text), batcher, reply):
                                return "length"  # the guard trimmed the reply to the brand's length
                        if piece.finish_reason:
                            self._apply(guard.finish(piece.finish_reason), batcher, reply)
                            return "length" if piece.finish_reason == "length" else "stop"
                except (UpstreamError, asyncio.CancelledError):
                    # Failed, cancelled or out of time: the client keeps the checked text so far, as
                    # it would without a holdback window (and text shown means no retry, as before).
                    _release_held(guard, batcher)
                    raise
        except TimeoutError:
            raise UpstreamTimeout(phase, limit) from None
        finally:
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _apply(self, step: GuardStep, batcher: TextSink, reply: ReplyContext) -> bool:
        for note in step.notes:
            logger.bind(stream_id=reply.stream_id, brand=reply.brand_id).info(
                "guard note {}: {}", note.event, ", ".join(f"{k}={v}" for k, v in note.fields.items())
            )
            self._hook(note.event, stream_id=reply.stream_id, brand=reply.brand_id, **note.fields)
        if step.release:
            batcher.push(step.release)
        if step.violation:
            raise GuardViolation(step.violation, step.replacement)
        return step.stop


def _release_held(guard: ReplyGuard, batcher: TextSink) -> None:
    step = guard.finish(ABORTED)
    if step.release and not step.violation:
        with contextlib.suppress(Exception):  # a full stream or a failed buffer: the terminal path reports it
            batcher.push(step.release)
