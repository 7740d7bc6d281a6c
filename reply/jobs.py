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
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from loguru import logger

from llm.base import ChatProvider, ReplyRequest
from llm.exceptions import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from persona.brand import Brand
from persona.guard import GuardContext, GuardFactory
from persona.prompt import assemble
from reply.batcher import DeltaBatcher
from reply.ending import Outcome, closing_events
from reply.exceptions import GuardViolation, ShuttingDown, StreamFull
from reply.options import JobHooks, ReplyOptions
from reply.upstream import ReplyContext, Upstream
from streaming.buffer import StreamBuffer
from streaming.contract import AssistantTurn, ReplyStatus, UserTurn, turn_to_dict
from streaming.exceptions import StreamExpired
from streaming.ids import new_id
from streaming.log import StreamWriter

# Room left after the total deadline before a stream's metadata may expire: the terminal write
# and its retries happen in it.
STREAM_TTL_MARGIN_S = 60
# How long writing the pending text and the terminal event may take once generation stopped.
CLOSE_TIMEOUT_S = 5.0
# After the shutdown grace, how long cancelled replies get to write their terminal event.
DRAIN_CANCEL_WAIT_S = 5.0
# The prompt's most recent history turns the guard's relevance check may count as on-topic.
GUARD_RECENT_TURNS = 4


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
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None

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
        options: ReplyOptions,
        hooks: JobHooks,
        guard_factory: GuardFactory,
    ) -> None:
        self.buffer = buffer
        self.options = options
        self._hooks = hooks
        self._upstream = Upstream(
            provider=provider, deadlines=options.deadlines, guard_factory=guard_factory, hooks=self._hook
        )
        self._jobs: dict[str, _Job] = {}
        self._accepting = True
        buffer.on_cancel(self._cancel_local)

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
    ) -> Submission:
        """Start a reply for a user message, or return the stream that message already started.

        ``history`` (docs/protocol.md §6 turn shape) replaces the conversation's stored turns in the prompt:
        the OpenAI-compatible endpoint passes the turns its client sent. Raises :class:`ShuttingDown`
        once shutdown began. Cancelling before it returns may leave an unanswered claim; the stream
        then ends by its deadline-based TTL."""
        if not self._accepting:
            raise ShuttingDown("the server is shutting down; send again to another instance")
        options = self.options
        stream_id = new_id("s")
        ttl_s = int(options.deadlines.total_s + options.resume_window_s + STREAM_TTL_MARGIN_S)
        # Create the stream before claiming: whoever learns the winning id can read it at once.
        await self.buffer.create_stream(stream_id, conversation_id, ttl_s)
        winner = await self.buffer.claim_message(conversation_id, client_message_id, stream_id)
        if winner != stream_id:
            logger.bind(conversation_id=conversation_id, stream_id=winner).info("duplicate send, first stream returned")
            return Submission(winner, created=False)
        if history is None:
            history = [turn_to_dict(t) for t in await self.buffer.history(conversation_id)]
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
        guard_context = GuardContext(question=text, context=(*(s.text for s in prompt.knowledge), *recent))
        await self.buffer.add_turn(conversation_id, UserTurn(text=text, client_message_id=client_message_id))
        await self.buffer.add_turn(conversation_id, AssistantTurn(stream_id=stream_id))
        writer = StreamWriter(stream_id, max_events=options.stream_max_events, max_chars=options.stream_max_chars)
        await self.buffer.append(stream_id, [writer.start(conversation_id, client_message_id)])
        model = brand.model
        request = ReplyRequest(
            brand_id=brand.id,
            messages=prompt.messages,
            max_tokens=model.max_reply_tokens or options.max_reply_tokens,
            model=model.model,
            temperature=model.temperature,
        )
        reply = ReplyContext(stream_id, brand, time.monotonic(), guard_context)
        job = _Job(reply, conversation_id, writer, request)
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
                await asyncio.wait(pending, timeout=DRAIN_CANCEL_WAIT_S)

    # --- the job --------------------------------------------------------------------------------
    async def _run(self, job: _Job) -> None:
        log = logger.bind(stream_id=job.stream_id, conversation_id=job.conversation_id)
        batcher = DeltaBatcher(job.writer, lambda events: self.buffer.append(job.stream_id, events))
        total_s = self.options.deadlines.total_s
        outcome: Outcome
        try:
            try:
                async with asyncio.timeout(total_s):
                    outcome = Outcome(finish=await self._upstream.generate(job.reply, job.request, batcher))
            except TimeoutError:
                raise UpstreamTimeout("deadline", total_s) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if job.cancel_reason is None or task is None:
                raise  # cancelled by the event loop going away: nothing sensible left to do
            task.uncancel()
            outcome = Outcome(shutdown=True) if job.cancel_reason == "shutdown" else Outcome(finish="cancelled")
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
        await self._finish(job, batcher, outcome, log)

    async def _finish(self, job: _Job, batcher: DeltaBatcher, outcome: Outcome, log: Any) -> None:
        writer = job.writer
        try:
            try:
                await batcher.close(timeout_s=CLOSE_TIMEOUT_S)
            except StreamExpired:
                raise
            except Exception as exc:
                log.error("could not write pending text: {!r}", exc)
                raise
            events = closing_events(writer, job.brand.fallbacks, outcome)
            await self.buffer.append(job.stream_id, events, expire_after_s=self.options.resume_window_s)
            terminal = events[-1].payload()
            status: ReplyStatus = "error" if terminal["type"] == "error" else "done"
            await self.buffer.finish_reply(job.conversation_id, job.stream_id, writer.text, status)
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
        except Exception:
            log.exception("could not write the terminal event")
        finally:
            self._jobs.pop(job.stream_id, None)
