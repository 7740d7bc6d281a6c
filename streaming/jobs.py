"""Generation jobs: one task per reply, decoupled from every connection.

A job reads the upstream model and appends to the stream log; connections only *follow* logs.
So a reply keeps generating when its client drops, and any connection (any transport, any
instance) can pick it up. Lifecycle of one job::

    submit ─▶ create stream, claim client_message_id (idempotent), record turns, append `start`
           ─▶ task: open upstream ─▶ pieces ─▶ DeltaBatcher ─▶ buffer.append(delta…)
           ─▶ exactly one terminal: done(stop|length|cancelled|fallback) or error(…)

Deadlines (all ours, independent of the SDK's 600 s read timeout): connect (until the upstream
answers with headers), first token (from the request until the first text), stall (between
text pieces), and a total deadline around everything including the one retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from loguru import logger

from llm.base import ChatProvider, Piece, ReplyRequest
from llm.exceptions import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from persona.brand import Brand
from persona.guard import ABORTED, GuardContext, GuardFactory, GuardStep, ReplyGuard, pass_through
from persona.prompt import assemble
from streaming.buffer import StreamBuffer
from streaming.events import FinishReason, StoredEvent
from streaming.exceptions import ShuttingDown, StreamExpired
from streaming.ids import new_id
from streaming.log import StreamWriter


@dataclass(frozen=True)
class Deadlines:
    connect_s: float = 5.0
    first_token_s: float = 20.0
    stall_s: float = 15.0
    total_s: float = 120.0
    retry_max_wait_s: float = 10.0


@dataclass(frozen=True)
class Submission:
    stream_id: str
    created: bool  # False: the client_message_id was already used; this is the first stream


class _Cancelled(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


class _StreamFull(Exception):
    pass


class _GuardViolation(Exception):
    def __init__(self, rule: str, fallback: str) -> None:
        super().__init__(rule)
        self.rule = rule
        self.fallback = fallback


class JobHooks(Protocol):
    """Lifecycle callbacks for monitoring (metrics, tracing). Called synchronously; must be cheap.

    Events and their fields: ``stream_started`` (stream_id, conversation_id, brand), ``first_token``
    (stream_id, brand, seconds), ``token_gap`` (brand, seconds), ``upstream_error`` (stream_id,
    brand, code, status, retryable), ``upstream_retry`` (stream_id, brand, code, wait_s),
    ``guard_fallback`` (stream_id, brand, rule), ``off_topic`` (stream_id, brand, score, threshold,
    terms, action: the end-of-reply relevance check, see ``persona/checks.py``), ``stream_ended``
    (stream_id, brand, terminal, outcome, seconds)."""

    def __call__(self, event: str, **fields: Any) -> None: ...


@dataclass
class _Job:
    stream_id: str
    conversation_id: str
    brand: Brand
    writer: StreamWriter
    messages: list[dict[str, Any]]
    guard_context: GuardContext = field(default_factory=GuardContext)
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None


class DeltaBatcher:
    """Coalesces upstream pieces into delta events without adding latency.

    The first piece is written at once; pieces that arrive while an append is in flight are
    joined into the next delta. So a fast upstream costs few appends and a slow one costs none
    extra. ``room`` is the stream's remaining size; a piece that does not fit raises
    :class:`_StreamFull` after writing the part that does."""

    def __init__(self, writer: StreamWriter, write: Callable[[list[StoredEvent]], Awaitable[None]]) -> None:
        self._writer = writer
        self._write = write
        self._pending: list[str] = []
        self._pending_chars = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._flush_forever(), name=f"deltas-{writer.stream_id}")

    @property
    def text_so_far(self) -> int:
        return len(self._writer.text) + self._pending_chars

    def push(self, text: str) -> None:
        if self._task.done():
            self._task.result()  # re-raise a failed append (buffer unreachable)
        room = self._writer.room() - self._pending_chars
        full = len(text) > room
        if full:
            text = text[: max(room, 0)]
        if text:
            self._pending.append(text)
            self._pending_chars += len(text)
            self._wake.set()
        if full:
            raise _StreamFull

    async def close(self, timeout_s: float) -> None:
        """Write what is pending and stop. Raises if the buffer failed."""
        self._closing = True
        self._wake.set()
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(self._task)

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending:
                text = "".join(self._pending)
                self._pending.clear()
                self._pending_chars = 0
                await self._write([self._writer.delta(text)])
            if self._closing and not self._pending:
                return


class GenerationManager:
    def __init__(
        self,
        *,
        buffer: StreamBuffer,
        provider: ChatProvider,
        deadlines: Deadlines,
        resume_window_s: int,
        max_reply_tokens: int = 512,
        stream_max_events: int = 5_000,
        stream_max_chars: int = 40_000,
        hooks: JobHooks | None = None,
        guard_factory: GuardFactory = pass_through,
    ) -> None:
        self.buffer = buffer
        self.provider = provider
        self.deadlines = deadlines
        self.resume_window_s = resume_window_s
        self.max_reply_tokens = max_reply_tokens
        self.stream_max_events = stream_max_events
        self.stream_max_chars = stream_max_chars
        self._hooks = hooks
        self._guard_factory = guard_factory
        self._jobs: dict[str, _Job] = {}
        self._accepting = True
        buffer.on_cancel(self._cancel_local)

    @property
    def running(self) -> int:
        return len(self._jobs)

    def _hook(self, event: str, **fields: Any) -> None:
        if self._hooks is not None:
            try:
                self._hooks(event, **fields)
            except Exception:  # a monitoring hook must never break a reply
                logger.exception("job hook {} failed", event)

    # --- submit / cancel ------------------------------------------------------------------------
    async def submit(
        self,
        *,
        conversation_id: str,
        brand: Brand,
        client_message_id: str,
        text: str,
        history: list[dict[str, Any]] | None = None,
    ) -> Submission:
        """Start a reply for a user message, or return the stream that message already started.

        ``history`` (stored-turn shape) replaces the conversation's stored turns in the prompt: the
        OpenAI-compatible endpoint passes the turns its client sent. Raises :class:`ShuttingDown`
        once shutdown began. Cancelling before it returns may leave an unanswered claim; the stream
        then ends by its deadline-based TTL."""
        if not self._accepting:
            raise ShuttingDown("the server is shutting down; send again to another instance")
        stream_id = new_id("s")
        ttl_s = int(self.deadlines.total_s + self.resume_window_s + 60)
        # Create the stream before claiming: whoever learns the winning id can read it at once.
        await self.buffer.create_stream(stream_id, conversation_id, ttl_s)
        winner = await self.buffer.claim_message(conversation_id, client_message_id, stream_id)
        if winner != stream_id:
            logger.bind(conversation_id=conversation_id, stream_id=winner).info("duplicate send, first stream returned")
            return Submission(winner, created=False)
        if history is None:
            history = await self.buffer.history(conversation_id)
        prompt = assemble(brand, history, text, max_reply_tokens=self.max_reply_tokens)
        logger.bind(conversation_id=conversation_id, stream_id=stream_id, brand=brand.id).debug(
            "prompt v{}: {} tokens of {}, {} exchanges kept, {} summarised, {} facts, {} examples",
            brand.version,
            prompt.tokens,
            prompt.limit,
            prompt.kept,
            prompt.evicted,
            len(prompt.knowledge),
            len(prompt.examples),
        )
        # What the guard's end-of-reply relevance check may count as on-topic besides the brand's words.
        recent = [str(m.get("content") or "") for m in prompt.history_messages[-4:]]
        guard_context = GuardContext(question=text, context=(*(s.text for s in prompt.knowledge), *recent))
        await self.buffer.add_turn(
            conversation_id, {"role": "user", "text": text, "client_message_id": client_message_id}
        )
        await self.buffer.add_turn(conversation_id, {"role": "assistant", "stream_id": stream_id})
        writer = StreamWriter(stream_id, max_events=self.stream_max_events, max_chars=self.stream_max_chars)
        await self.buffer.append(stream_id, [writer.start(conversation_id, client_message_id)])
        job = _Job(stream_id, conversation_id, brand, writer, prompt.messages, guard_context)
        self._jobs[stream_id] = job
        job.task = asyncio.create_task(self._run(job), name=f"job-{stream_id}")
        self._hook("stream_started", stream_id=stream_id, conversation_id=conversation_id, brand=brand.id)
        return Submission(stream_id, created=True)

    async def cancel(self, stream_id: str) -> None:
        """Stop a reply wherever it runs; it ends with ``done`` / ``finish_reason: cancelled``."""
        if stream_id in self._jobs:
            await self._cancel_local(stream_id)
        else:
            await self.buffer.request_cancel(stream_id)

    async def _cancel_local(self, stream_id: str, reason: str = "cancelled") -> None:
        job = self._jobs.get(stream_id)
        if job is None or job.task is None or job.task.done() or job.cancel_reason:
            return
        job.cancel_reason = reason
        job.task.cancel()

    # --- shutdown ---------------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        self._accepting = False

    async def drain(self, grace_s: float) -> None:
        """Let running replies finish for ``grace_s``; end the rest with a retryable error."""
        self.stop_accepting()
        tasks = [j.task for j in self._jobs.values() if j.task is not None]
        if tasks:
            logger.info("waiting up to {} s for {} running replies", grace_s, len(tasks))
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for stream_id, job in list(self._jobs.items()):
                if job.task in pending:
                    await self._cancel_local(stream_id, reason="shutdown")
            if pending:
                await asyncio.wait(pending, timeout=5.0)

    # --- the job --------------------------------------------------------------------------------
    async def _run(self, job: _Job) -> None:
        log = logger.bind(stream_id=job.stream_id, conversation_id=job.conversation_id)
        batcher = DeltaBatcher(job.writer, lambda events: self.buffer.append(job.stream_id, events))
        finish: FinishReason = "stop"
        failure: UpstreamError | None = None
        violation: _GuardViolation | None = None
        try:
            try:
                async with asyncio.timeout(self.deadlines.total_s):
                    finish = await self._generate(job, batcher)
            except TimeoutError:
                raise UpstreamTimeout("deadline", self.deadlines.total_s) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if job.cancel_reason is None or task is None:
                raise  # cancelled by the event loop going away: nothing sensible left to do
            task.uncancel()
            finish = "cancelled"
        except _StreamFull:
            finish = "length"
        except _GuardViolation as exc:
            violation = exc
            log.info("guardrail fallback: {}", exc.rule)
            self._hook("guard_fallback", stream_id=job.stream_id, brand=job.brand.id, rule=exc.rule)
        except UpstreamError as exc:
            failure = exc
            log.warning("upstream failed: {!r}", exc)
            self._hook(
                "upstream_error",
                stream_id=job.stream_id,
                brand=job.brand.id,
                code=exc.code,
                status=exc.status,
                retryable=exc.retryable,
            )
        except Exception as exc:
            failure = UpstreamUnavailable(f"internal error: {type(exc).__name__}")
            log.exception("generation failed")
        await self._finish(job, batcher, finish, failure, violation, log)

    async def _finish(
        self,
        job: _Job,
        batcher: DeltaBatcher,
        finish: FinishReason,
        failure: UpstreamError | None,
        violation: _GuardViolation | None,
        log: Any,
    ) -> None:
        writer = job.writer
        try:
            try:
                await batcher.close(timeout_s=5.0)
            except StreamExpired:
                raise
            except Exception as exc:
                log.error("could not write pending text: {!r}", exc)
                raise
            if job.cancel_reason == "shutdown":
                events = [writer.error("shutting_down", "the server restarted before the reply ended", retryable=True)]
            elif violation is not None:
                events = [*_replace_with(writer, violation.rule, violation.fallback), writer.done("fallback")]
            elif failure is not None and job.brand.fallbacks.error:
                events = [*_replace_with(writer, failure.code, job.brand.fallbacks.error), writer.done("fallback")]
            elif failure is not None:
                events = [writer.error(failure.code, failure.message, retryable=failure.retryable)]
            else:
                events = [writer.done(finish)]
            await self.buffer.append(job.stream_id, events, expire_after_s=self.resume_window_s)
            status = "error" if events[-1].type == "error" else "done"
            await self.buffer.finish_reply(job.conversation_id, job.stream_id, writer.text, status)
            terminal = events[-1].payload()
            log.info("stream ended: {} {}", terminal["type"], terminal.get("finish_reason") or terminal.get("code"))
            self._hook(
                "stream_ended",
                stream_id=job.stream_id,
                brand=job.brand.id,
                outcome=terminal.get("finish_reason") or terminal.get("code"),
                terminal=terminal["type"],
                seconds=time.monotonic() - job.started_at,
            )
        except StreamExpired:
            log.error("the buffer lost the stream before it ended; nothing more can be written")
        except Exception:
            log.exception("could not write the terminal event")
        finally:
            self._jobs.pop(job.stream_id, None)

    async def _generate(self, job: _Job, batcher: DeltaBatcher) -> FinishReason:
        """Run the upstream call, retrying once if it fails before any text was produced."""
        settings = job.brand.model
        request = ReplyRequest(
            brand=job.brand,
            messages=job.messages,
            max_tokens=settings.max_reply_tokens or self.max_reply_tokens,
            model=settings.model,
            temperature=settings.temperature,
        )
        attempt = 0
        while True:
            try:
                return await self._stream_once(job, batcher, request)
            except UpstreamError as exc:
                attempt += 1
                if attempt > 1 or not exc.retryable or batcher.text_so_far:
                    raise
                wait_s = exc.retry_after_s if exc.retry_after_s is not None else 0.25
                remaining = self.deadlines.total_s - (time.monotonic() - job.started_at)
                if wait_s > self.deadlines.retry_max_wait_s or wait_s >= remaining:
                    raise
                logger.bind(stream_id=job.stream_id).info("retrying upstream in {:.2f} s after {!r}", wait_s, exc)
                self._hook("upstream_retry", stream_id=job.stream_id, brand=job.brand.id, code=exc.code, wait_s=wait_s)
                await asyncio.sleep(wait_s)

    async def _stream_once(self, job: _Job, batcher: DeltaBatcher, request: ReplyRequest) -> FinishReason:
        d = self.deadlines
        opened_at = time.monotonic()
        try:
            async with asyncio.timeout(d.connect_s):
                pieces = await self.provider.open_reply(request)
        except TimeoutError:
            raise UpstreamTimeout("connect", d.connect_s) from None
        # Per attempt: held-back text of a failed attempt is dropped (or released by _release_held).
        guard = self._guard_factory(job.brand, job.guard_context)
        last_text_at: float | None = None
        try:
            while True:
                if last_text_at is not None:
                    phase, limit = "stall", d.stall_s
                else:
                    phase = "first_token"
                    limit = max(0.0, d.first_token_s - (time.monotonic() - opened_at))
                piece = await _next_piece(pieces, phase, limit)
                if piece is None:
                    raise UpstreamUnavailable("the model provider ended the reply without a finish reason")
                if piece.text:
                    now = time.monotonic()
                    if job.first_token_at is None:
                        job.first_token_at = now
                        self._hook(
                            "first_token",
                            stream_id=job.stream_id,
                            brand=job.brand.id,
                            seconds=now - job.started_at,
                        )
                    elif last_text_at is not None:
                        self._hook("token_gap", brand=job.brand.id, seconds=now - last_text_at)
                    last_text_at = now
                    self._guard_step(guard.feed(piece.text), batcher, job)
                if piece.finish_reason:
                    self._guard_step(guard.finish(piece.finish_reason), batcher, job)
                    return "length" if piece.finish_reason == "length" else "stop"
        except (UpstreamError, asyncio.CancelledError):
            # Failed, cancelled or out of time: the client keeps the checked text so far, as it
            # would without a holdback window (and text shown means no retry, as before).
            _release_held(guard, batcher)
            raise
        finally:
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _guard_step(self, step: GuardStep, batcher: DeltaBatcher, job: _Job) -> None:
        for note in step.notes:
            logger.bind(stream_id=job.stream_id, brand=job.brand.id).info(
                "guard note {}: {}", note.event, ", ".join(f"{k}={v}" for k, v in note.fields.items())
            )
            self._hook(note.event, stream_id=job.stream_id, brand=job.brand.id, **note.fields)
        _apply(step, batcher, job)


def _release_held(guard: ReplyGuard, batcher: DeltaBatcher) -> None:
    step = guard.finish(ABORTED)
    if step.release and not step.violation:
        with contextlib.suppress(Exception):  # a full stream or a failed buffer: the terminal path reports it
            batcher.push(step.release)


def _apply(step: GuardStep, batcher: DeltaBatcher, job: _Job) -> None:
    if step.release:
        batcher.push(step.release)
    if step.violation:
        fallback = step.fallback or job.brand.fallbacks.off_brand or job.brand.fallbacks.off_topic or ""
        raise _GuardViolation(step.violation, fallback)


def _replace_with(writer: StreamWriter, reason: str, text: str) -> list[StoredEvent]:
    """Withdraw what was streamed (if anything) in favour of ``text``."""
    if writer.text:
        return [writer.retract(reason, text)]
    return [writer.delta(text)] if text else []


async def _next_piece(pieces: AsyncIterator[Piece], phase: str, limit: float) -> Piece | None:
    try:
        async with asyncio.timeout(limit):
            return await anext(pieces)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise UpstreamTimeout(phase, limit) from None
