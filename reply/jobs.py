"""Generation jobs: one task per reply, decoupled from every connection.

A job reads the upstream model and appends to the stream log; connections only *follow* logs.
So a reply keeps generating when its client drops, and any connection (any transport, any
instance) can pick it up. Lifecycle of one job::

    submit ─▶ create stream, claim client_message_id (idempotent), assemble the prompt, record turns,
              append `start`
           ─▶ task: Upstream.generate (reply/upstream.py) ─▶ guard ─▶ DeltaBatcher ─▶ buffer.append(delta…)
           ─▶ exactly one terminal, decided by reply/ending.py: done(stop|length|cancelled|fallback)
              or error(…)

The total deadline wraps everything including the one retry; the other deadlines are the
upstream's (``reply.upstream``).

**Failover.** Each job's stream keeps its origin (the prompt, the brand, the request) in the buffer,
and the job holds the stream's producer lease. A sweeper on every instance takes over streams whose
lease expired (their instance died or was paused): it rebuilds the job from the origin, numbers on
from the last durable seq and continues the text (``reply/failover.py``). The total deadline and a
cancel requested meanwhile still hold. A producer that lost its lease stops without writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from loguru import logger

from llm.base import ChatProvider, ReplyRequest
from llm.exceptions import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from persona.brand import Brand
from persona.guard import GuardContext, GuardFactory
from persona.prompt import assemble
from persona.tokens import count_tokens
from reply.batcher import DeltaBatcher
from reply.ending import Outcome, closing_events
from reply.exceptions import GuardViolation, ShuttingDown, StreamFull
from reply.failover import Continuation, Delta, Op
from reply.options import JobHooks, ReplyOptions
from reply.review import Finding, ReplyReview, ReviewerFactory
from reply.upstream import ReplyContext, Upstream
from streaming.buffer import StreamBuffer
from streaming.contract import AssistantTurn, Orphan, ReplyStatus, StreamOrigin, Turn, UserTurn, turn_record
from streaming.exceptions import BufferUnavailable, LeaseLost, StreamExpired
from streaming.ids import new_id
from streaming.log import StreamWriter, fold_text

# Room left after the total deadline before a stream's metadata may expire: the terminal write
# and its retries happen in it.
STREAM_TTL_MARGIN_S = 60
# How long writing the pending text and the terminal event may take once generation stopped.
CLOSE_TIMEOUT_S = 5.0
# How long a reply's end waits for ``before_end`` (giving back its limits' places) before it ends anyway.
BEFORE_END_TIMEOUT_S = 1.0
# After the shutdown grace, how long cancelled replies get to write their terminal event.
DRAIN_CANCEL_WAIT_S = 5.0
# The prompt's most recent history turns the guard's relevance check may count as on-topic.
GUARD_RECENT_TURNS = 4
# A finished reply longer than this is counted in a thread, off the event loop.
INLINE_COUNT_CHARS = 2_000


async def reply_tokens(text: str) -> int:
    """A finished reply's token count, stored with its turn (counted once, when it is written)."""
    if len(text) <= INLINE_COUNT_CHARS:
        return count_tokens(text)
    return await asyncio.to_thread(count_tokens, text)


@dataclass(frozen=True)
class Submission:
    stream_id: str
    created: bool  # False: the client_message_id was already used; this is the first stream


@dataclass
class _Job:
    reply: ReplyContext
    conversation_id: str
    writer: StreamWriter
    request: ReplyRequest
    total_s: float  # what is left of the total deadline when this job starts
    continuation: Continuation | None = None  # set when this job took the stream over
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None  # cancelled, shutdown, fenced, or review (a reviewer's finding)
    review: ReplyReview | None = None

    @property
    def stream_id(self) -> str:
        return self.reply.stream_id

    @property
    def brand(self) -> Brand:
        return self.reply.brand


class GenerationManager:
    """Starts, cancels and drains the replies of this instance."""

    def __init__(
        self,
        *,
        buffer: StreamBuffer,
        provider: ChatProvider,
        brands: Mapping[str, Brand],
        options: ReplyOptions,
        hooks: JobHooks,
        guard_factory: GuardFactory,
        reviewers: ReviewerFactory | None = None,
        before_end: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.buffer = buffer
        self._reviewers = reviewers
        # Awaited (bounded by BEFORE_END_TIMEOUT_S) just before a reply's terminal event is written:
        # whatever must be true once a client reads `done` (the API gives back the limits' places).
        self._before_end = before_end
        self.options = options
        self._brands = brands
        self._hooks = hooks
        self._upstream = Upstream(
            provider=provider, deadlines=options.deadlines, guard_factory=guard_factory, hooks=self._hook
        )
        self._jobs: dict[str, _Job] = {}
        self._accepting = True
        self._sweeper: asyncio.Task[None] | None = None
        buffer.on_cancel(self._cancel_local)
        buffer.on_lease_lost(self._lease_lost)

    def start(self) -> None:
        """Start looking for streams whose producer died (see the module docstring)."""
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="takeover-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    @property
    def running(self) -> int:
        return len(self._jobs)

    def _hook(self, event: str, **fields: Any) -> None:
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
        locale: str | None = None,
    ) -> Submission:
        """Start a reply for a user message, or return the stream that message already started.

        ``history`` (docs/protocol.md §6 turn shape) replaces the conversation's stored turns in the prompt:
        the OpenAI-compatible endpoint passes the turns its client sent. ``locale``: the client's locale
        hint, which the language check uses when neither this message nor earlier ones tell the language.
        Raises :class:`ShuttingDown` once shutdown began. Cancelling before it returns may leave an
        unanswered claim; the stream then ends by its deadline-based TTL."""
        if not self._accepting:
            raise ShuttingDown("the server is shutting down; send again to another instance")
        options = self.options
        stream_id = new_id("s")
        ttl_s = int(options.deadlines.total_s + options.resume_window_s + STREAM_TTL_MARGIN_S)
        # Create the stream and claim the message in one step: whoever learns the winning id can read
        # it at once.
        winner = await self.buffer.create_stream(stream_id, conversation_id, ttl_s, client_message_id)
        if winner != stream_id:
            logger.bind(conversation_id=conversation_id, stream_id=winner).info("duplicate send, first stream returned")
            return Submission(winner, created=False)
        stored: list[Turn] = []
        if history is None:
            stored = await self.buffer.history(conversation_id)
            history = [turn_record(t) for t in stored]
        prompt = assemble(brand, history, text, max_reply_tokens=options.max_reply_tokens)
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
        recent = [str(m.get("content") or "") for m in prompt.history_messages[-GUARD_RECENT_TURNS:]]
        # The earlier user turns tell the language check what the user writes in when this message is short.
        user_turns = tuple(str(m.get("content") or "") for m in prompt.history_messages if m.get("role") == "user")
        guard_context = GuardContext(
            question=text,
            context=(*(s.text for s in prompt.knowledge), *recent),
            user_turns=user_turns[-3:],
            locale=locale,
        )
        # The user turn keeps its token count: later prompts read it instead of tokenising it again.
        user_turn = UserTurn(text=text, client_message_id=client_message_id, tokens=prompt.user_tokens)
        turns = (user_turn, AssistantTurn(stream_id=stream_id))
        await self.buffer.add_turn(conversation_id, *turns)  # one write for both
        model = brand.model
        request = ReplyRequest(
            brand_id=brand.id,
            messages=prompt.messages,
            max_tokens=model.max_reply_tokens or options.max_reply_tokens,
            model=model.model,
            temperature=model.temperature,
        )
        origin = StreamOrigin(
            conversation_id, client_message_id, (*stored, *turns), _job_record(request, guard_context, time.time())
        )
        writer = self._writer(stream_id)
        await self.buffer.start_production(stream_id, origin, [writer.start(conversation_id, client_message_id)])
        reply = ReplyContext(stream_id, brand, time.monotonic(), guard_context)
        job = _Job(reply, conversation_id, writer, request, options.deadlines.total_s)
        self._jobs[stream_id] = job
        job.task = asyncio.create_task(self._run(job), name=f"job-{stream_id}")
        self._hook("stream_started", stream_id=stream_id, conversation_id=conversation_id, brand=brand.id)
        return Submission(stream_id, created=True)

    def _writer(self, stream_id: str) -> StreamWriter:
        return StreamWriter(
            stream_id, max_events=self.options.stream_max_events, max_chars=self.options.stream_max_chars
        )

    # --- failover ---------------------------------------------------------------------------------
    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.takeover_sweep_s)
            if not self._accepting:
                continue
            try:
                for stream_id in await self.buffer.orphans():
                    orphan = await self.buffer.take_over(stream_id)
                    if orphan is not None:
                        await self._adopt(orphan)
            except BufferUnavailable:
                continue  # the buffer is down: nobody can take anything over; try again later
            except Exception:
                logger.exception("takeover sweep failed")

    async def _adopt(self, orphan: Orphan) -> None:
        """Continue a stream whose producer died, from its last durable event."""
        sid, origin = orphan.stream_id, orphan.origin
        log = logger.bind(stream_id=sid, conversation_id=origin.conversation_id)
        record = json.loads(origin.job)
        brand = self._brands.get(str(record["brand"]))
        if brand is None or not orphan.events:
            log.error("cannot continue stream {}: brand {!r} unknown here", sid, record.get("brand"))
            await self.buffer.end_abandoned(sid, "generation_lost", "the reply was interrupted on the server")
            return
        writer = self._writer(sid)
        writer.seq, writer.text, writer._started = orphan.events[-1].seq, fold_text(orphan.events), True
        request = ReplyRequest(
            brand_id=brand.id,
            messages=record["messages"],
            max_tokens=int(record["max_tokens"]),
            model=record.get("model"),
            temperature=record.get("temperature"),
        )
        guard_context = GuardContext(
            question=str(record["question"]),
            context=tuple(record["context"]),
            user_turns=tuple(record.get("user_turns", ())),
            locale=record.get("locale"),
        )
        elapsed = max(0.0, time.time() - orphan.created_at)
        reply = ReplyContext(sid, brand, time.monotonic() - elapsed, guard_context)
        remaining = self.options.deadlines.total_s - elapsed
        job = _Job(reply, origin.conversation_id, writer, request, remaining, Continuation(writer.text))
        if orphan.cancel_requested:
            job.cancel_reason = "cancelled"
        self._jobs[sid] = job
        log.info("took over stream {} at seq {} ({:.1f} s of its deadline left)", sid, writer.seq, remaining)
        self._hook("stream_taken_over", stream_id=sid, brand=brand.id)
        job.task = asyncio.create_task(self._run(job), name=f"job-{sid}")

    def _lease_lost(self, stream_id: str) -> None:
        """Another instance produces this stream now: stop ours without writing anything."""
        job = self._jobs.get(stream_id)
        if job is not None and job.task is not None and not job.task.done():
            job.cancel_reason = "fenced"
            job.task.cancel()

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
                await asyncio.wait(pending, timeout=DRAIN_CANCEL_WAIT_S)

    # --- the job --------------------------------------------------------------------------------
    async def _run(self, job: _Job) -> None:
        log = logger.bind(stream_id=job.stream_id, conversation_id=job.conversation_id)
        batcher = DeltaBatcher(job.writer, lambda events: self.buffer.append(job.stream_id, events))
        job.review = self._review(job)
        sink = _Sink(batcher, job.continuation, job.review)
        outcome: Outcome
        try:
            if job.cancel_reason == "cancelled":  # cancelled while no instance produced it
                raise asyncio.CancelledError
            try:
                async with asyncio.timeout(max(0.0, job.total_s)):
                    finish = await self._upstream.generate(job.reply, job.request, sink)
                    sink.finish()
            except TimeoutError:
                raise UpstreamTimeout("deadline", self.options.deadlines.total_s) from None
            # Pending sentence reviews, deadlined by the reviewers (reply/review.py): fail open.
            found = await job.review.settle() if job.review is not None else None
            if found is not None:
                raise GuardViolation(found.rule)
            outcome = Outcome(finish=finish)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if job.cancel_reason is None or task is None:
                raise  # cancelled by the event loop going away: nothing sensible left to do
            if task.cancelling():
                task.uncancel()
            if job.cancel_reason == "fenced":
                await self._close_review(job)
                await self._abandon(job, batcher, log)
                return
            if job.cancel_reason == "review" and job.review is not None and job.review.violation is not None:
                outcome = self._review_violation(job, job.review.violation, log)
            else:
                outcome = Outcome(shutdown=True) if job.cancel_reason == "shutdown" else Outcome(finish="cancelled")
        except LeaseLost:
            await self._close_review(job)
            await self._abandon(job, batcher, log)
            return
        except BufferUnavailable:
            outcome = Outcome(buffer_unavailable=True)
            log.warning("the buffer stayed unavailable past its deadline; ending the reply")
        except StreamFull:
            outcome = Outcome(finish="length")
        except GuardViolation as exc:
            outcome = Outcome(violation=exc.rule, replacement=exc.replacement)
            log.info("guardrail fallback: {}", exc.rule)
            self._hook("guard_fallback", stream_id=job.stream_id, brand=job.brand.id, rule=exc.rule)
        except UpstreamError as exc:
            outcome = Outcome(failure=exc)
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
            outcome = Outcome(failure=UpstreamUnavailable(f"internal error: {type(exc).__name__}"))
            log.exception("generation failed")
        await self._close_review(job)
        await self._finish(job, batcher, outcome, log)

    # --- sentence reviews beside the stream (reply/review.py) ----------------------------------
    def _review(self, job: _Job) -> ReplyReview | None:
        if self._reviewers is None:
            return None
        reviewers = self._reviewers(job.brand, job.stream_id)
        if not reviewers:
            return None
        return ReplyReview(
            reviewers,
            stream_id=job.stream_id,
            brand_id=job.brand.id,
            on_violation=lambda finding: self._retract(job, finding),
            hook=self._hook,
        )

    def _retract(self, job: _Job, finding: Finding) -> None:
        """A reviewer found a violation while the reply streams: stop generating; ``_run`` retracts.

        Only called before ``settle()`` (which collects findings itself), and nothing between the end of
        ``Upstream.generate`` and ``settle()`` awaits, so the cancel always lands inside ``generate``."""
        if job.cancel_reason is None and job.task is not None and not job.task.done():
            job.cancel_reason = "review"
            job.task.cancel()

    def _review_violation(self, job: _Job, finding: Finding, log: Any) -> Outcome:
        log.info("review fallback: {} ({})", finding.rule, finding.detail)
        self._hook("guard_fallback", stream_id=job.stream_id, brand=job.brand.id, rule=finding.rule)
        return Outcome(violation=finding.rule)

    async def _close_review(self, job: _Job) -> None:
        if job.review is not None:
            await job.review.aclose()

    async def _abandon(self, job: _Job, batcher: DeltaBatcher, log: Any) -> None:
        """Another instance took the stream over: write nothing more, forget the job."""
        batcher.abort()
        log.warning("lease lost: another instance took over stream {}; this producer stops", job.stream_id)
        self._jobs.pop(job.stream_id, None)

    async def _finish(self, job: _Job, batcher: DeltaBatcher, outcome: Outcome, log: Any) -> None:
        writer = job.writer
        try:
            try:
                # The buffer bounds each append by its outage deadline; this is only a backstop.
                await batcher.close(timeout_s=self.options.buffer_outage_deadline_s + CLOSE_TIMEOUT_S)
            except (StreamExpired, LeaseLost):
                raise
            except (BufferUnavailable, TimeoutError) as exc:
                # Whatever was numbered is kept by the buffer and written back if it returns; end
                # the reply after it, so the log still ends once the buffer is back.
                log.warning("could not store the rest of the reply: {!r}", exc)
                batcher.abort()
                outcome = Outcome(buffer_unavailable=True)
            events = closing_events(writer, job.brand.fallbacks, outcome)
            if self._before_end is not None:
                try:
                    async with asyncio.timeout(BEFORE_END_TIMEOUT_S):
                        await self._before_end(job.stream_id)
                except Exception as exc:  # the stream_ended hook and the places' lease free them anyway
                    log.warning("before_end failed: {!r}", exc)
            try:
                await self.buffer.append(job.stream_id, events, expire_after_s=self.options.resume_window_s)
            except BufferUnavailable:
                # Kept by the buffer and written back if it returns; followers' own deadlines end
                # their wait with a retryable buffer_unavailable meanwhile.
                log.warning("could not store the end of the reply; it is written back when the buffer returns")
                return
            terminal = events[-1].payload()
            status: ReplyStatus = "error" if terminal["type"] == "error" else "done"
            tokens = await reply_tokens(writer.text)
            await self.buffer.finish_reply(job.conversation_id, job.stream_id, writer.text, status, tokens=tokens)
            ended_as = terminal.get("finish_reason") or terminal.get("code")
            log.info("stream ended: {} {}", terminal["type"], ended_as)
            self._hook(
                "stream_ended",
                stream_id=job.stream_id,
                brand=job.brand.id,
                outcome=ended_as,
                terminal=terminal["type"],
                seconds=time.monotonic() - job.reply.started_at,
            )
        except StreamExpired:
            log.error("the buffer lost the stream before it ended; nothing more can be written")
        except LeaseLost:
            log.warning("lease lost: another instance took over stream {}; this producer stops", job.stream_id)
        except Exception:
            log.exception("could not write the terminal event")
        finally:
            self._jobs.pop(job.stream_id, None)


class _Sink:
    """Where the upstream's checked text goes: the batcher, through the failover splice when this
    job continues a stream another instance started."""

    def __init__(self, batcher: DeltaBatcher, continuation: Continuation | None, review: ReplyReview | None) -> None:
        self._batcher = batcher
        self._continuation = continuation
        self._review = review

    @property
    def text_so_far(self) -> int:
        return self._batcher.text_so_far

    def push(self, text: str) -> None:
        if self._continuation is None:
            self._batcher.push(text)
            if self._review is not None:
                self._review.feed(text)
        else:
            self._apply(self._continuation.feed(text))

    def finish(self) -> None:
        if self._continuation is not None:
            self._apply(self._continuation.finish())

    def _apply(self, ops: list[Op]) -> None:
        for op in ops:
            if isinstance(op, Delta):
                self._batcher.push(op.text)
                if self._review is not None:
                    self._review.feed(op.text)
            else:
                self._batcher.retract(op.reason, op.text)


def _job_record(request: ReplyRequest, guard: GuardContext, created_at: float) -> str:
    """What another instance needs to continue this reply (kept with the stream; see StreamOrigin)."""
    record: str = json.dumps(
        {
            "brand": request.brand_id,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "model": request.model,
            "temperature": request.temperature,
            "question": guard.question,
            "context": list(guard.context),
            "user_turns": list(guard.user_turns),
            "locale": guard.locale,
            "created_at": created_at,
        },
        separators=(",", ":"),
    )
    return record
