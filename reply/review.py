"""Sentence reviews that run beside the stream and may retract the reply.

The streaming guard (``persona/guard.py``) runs per token and must stay cheap. Slower checks — a
second opinion from a model, sentence embeddings — run here instead, on *whole sentences*, in
parallel with the stream: they never hold a token back. A finding stops the upstream call and
replaces the reply with the brand's fallback (``retract`` + ``done{fallback}``), exactly like a
guard violation::

    upstream ─▶ guard ─▶ sink ─┬─▶ batcher ─▶ log ─▶ clients          (never waits for a review)
                               └─▶ ReplyReview.feed ─▶ whole sentences
                                      └─ one lane per reviewer: up to 4 calls in flight; sentences
                                         that end while all are busy go together in the next call
                                             finding ─▶ on_violation ─▶ the job cancels generation
                                                        ─▶ retract(rule, fallback), done(fallback)
    upstream finished ─▶ settle(): the last sentence, each reviewer's end-of-reply check, and a wait
                         for pending reviews of at most the longest reviewer deadline ─▶ done

**Fail open.** A review that times out, fails (500, connection refused) or answers something
unreadable is logged and counted (hook ``guard_review``, outcome ``timeout`` / ``error`` /
``garbage``) and the reply stands: the streaming guard already enforced every hard rule, and a
second opinion that is down must not take the chat down with it (nor turn every reply into the
fallback). Every call has its reviewer's deadline; :meth:`ReplyReview.settle` waits at most the
longest of them before ``done``.

Bounds: at most ``MAX_CALLS_IN_FLIGHT`` calls per reviewer per reply; the backlog is text of this
reply, which the stream's size cap bounds. Nothing is allocated per token: :meth:`ReplyReview.feed` appends the
piece and looks for a sentence end only when the piece has whitespace after a ``.!?…``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from loguru import logger

from persona.brand import Brand
from persona.text import sentence_ends

# Calls of one reviewer for one reply at once; sentences that end meanwhile wait and go together.
MAX_CALLS_IN_FLIGHT = 4
# After a violation or a cancel, how long the reviews' own cleanup may take.
CANCEL_WAIT_S = 1.0
_ENDS = frozenset(".!?…")
_SPACE = re.compile(r"\s")


@dataclass(frozen=True)
class Finding:
    """What a reviewer found: the rule (the ``retract`` reason and the fallback's kind, see
    ``reply/ending.py``) and a detail for the logs (the model's words, a score)."""

    rule: str
    detail: str = ""


class ReviewUnreadable(Exception):
    """The reviewer answered something that is not a verdict (counted as ``garbage``; fails open)."""


class SentenceReviewer(Protocol):
    """One check over one reply, made per reply by a :class:`ReviewerFactory`."""

    name: str  # in logs and metrics: "model", "semantic"
    timeout_s: float  # the deadline of each call
    judges_reply: bool  # has an end-of-reply check (:meth:`end` is called only then)

    async def sentences(self, text: str) -> Finding | None:
        """Review ``text``: the reply's next whole sentences, in order. ``None``: fine. Raising
        (anything, or :class:`ReviewUnreadable`) fails open. Cancelling it is safe."""
        ...

    async def end(self) -> Finding | None:
        """Every sentence was reviewed: a judgement of the whole reply, if the reviewer has one."""
        ...


class ReviewerFactory(Protocol):
    def __call__(self, brand: Brand, stream_id: str, /) -> Sequence[SentenceReviewer]: ...


class ReviewHook(Protocol):
    def __call__(self, event: str, **fields: Any) -> None: ...


@dataclass
class _Lane:
    reviewer: SentenceReviewer
    backlog: list[str] = field(default_factory=list)  # sentences waiting for a free call
    calls: set[asyncio.Task[None]] = field(default_factory=set)
    ended: bool = False  # the end-of-reply check was started (or the reviewer has none)


class ReplyReview:
    """The reviews of one reply (see the module docstring)."""

    def __init__(
        self,
        reviewers: Sequence[SentenceReviewer],
        *,
        stream_id: str,
        brand_id: str,
        on_violation: Callable[[Finding], None],
        hook: ReviewHook,
    ) -> None:
        self._lanes = [_Lane(r) for r in reviewers]
        self._stream_id = stream_id
        self._brand_id = brand_id
        self._on_violation = on_violation
        self._hook = hook
        self._tail: list[str] = []  # text after the last whole sentence sent for review
        self._may_end = False  # the tail has a .!?… that whitespace may have made a sentence end
        self._settling = False
        self._closed = False
        self.violation: Finding | None = None

    @property
    def deadline_s(self) -> float:
        """The longest a pending review may keep ``done`` waiting."""
        return max((lane.reviewer.timeout_s for lane in self._lanes), default=0.0)

    # --- on the token path: cheap ---------------------------------------------------------------------
    def feed(self, text: str) -> None:
        """Released reply text, in order. Whole sentences go to the reviewers; never blocks."""
        if self._closed or self.violation is not None or not text:
            return
        self._tail.append(text)
        if not self._may_end:
            if _ENDS.isdisjoint(text):
                return
            self._may_end = True
        if _SPACE.search(text) is None:
            return  # "3." may still become "3.10": whitespace decides
        tail = "".join(self._tail)
        cut = _whole_sentences(tail)
        if cut:
            self._tail = [tail[cut:]] if cut < len(tail) else []
            self._may_end = not _ENDS.isdisjoint(tail[cut:])
            self._dispatch(tail[:cut])
        else:
            self._tail = [tail]
            # Whitespace came after the .!?… and made no sentence end ("3.10 "): look again only once
            # the tail ends on one (skipping closing quotes and brackets).
            self._may_end = tail.rstrip().rstrip("\"')]")[-1:] in _ENDS

    def _dispatch(self, text: str) -> None:
        if text.strip():
            for lane in self._lanes:
                lane.backlog.append(text)
        for lane in self._lanes:
            self._pump(lane)

    # --- the lanes --------------------------------------------------------------------------------------
    def _pump(self, lane: _Lane) -> None:
        """Start calls for the lane's backlog (at most ``MAX_CALLS_IN_FLIGHT``: sentences that end while
        they are busy go together in the next call); once settling and idle, its end-of-reply check."""
        if self._closed or self.violation is not None:
            return
        if lane.backlog and len(lane.calls) < MAX_CALLS_IN_FLIGHT:
            text = "".join(lane.backlog)
            lane.backlog.clear()
            self._spawn(lane, self._review(lane, "sentences", text))
        elif self._settling and not lane.backlog and not lane.calls and not lane.ended:
            lane.ended = True
            if lane.reviewer.judges_reply:
                self._spawn(lane, self._review(lane, "end", ""))

    def _spawn(self, lane: _Lane, call: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(call, name=f"review-{lane.reviewer.name}-{self._stream_id}")
        lane.calls.add(task)
        task.add_done_callback(lane.calls.discard)

    async def _review(self, lane: _Lane, what: str, text: str) -> None:
        reviewer = lane.reviewer
        call = reviewer.sentences(text) if what == "sentences" else reviewer.end()
        finding = await self._call(lane, what, call, text)
        current = asyncio.current_task()
        if current is not None:
            lane.calls.discard(current)
        if finding is not None:
            self._violate(lane, finding)
        else:
            self._pump(lane)

    async def _call(self, lane: _Lane, what: str, call: Any, text: str) -> Finding | None:
        reviewer = lane.reviewer
        started = time.monotonic()
        log = logger.bind(stream_id=self._stream_id, brand=self._brand_id)
        finding: Finding | None = None
        try:
            async with asyncio.timeout(reviewer.timeout_s):
                finding = await call
        except TimeoutError:
            outcome = "timeout"
            log.warning(
                "review {} timed out after {} s; the reply stands (fail open)", reviewer.name, reviewer.timeout_s
            )
        except ReviewUnreadable as exc:
            outcome = "garbage"
            log.warning("review {} answered no verdict ({}); the reply stands (fail open)", reviewer.name, exc)
        except Exception as exc:
            outcome = "error"
            log.warning("review {} failed: {!r}; the reply stands (fail open)", reviewer.name, exc)
        else:
            outcome = "ok" if finding is None else "violation"
        seconds = time.monotonic() - started
        if finding is not None:
            log.info("review {} found {} ({}) in {!r}", reviewer.name, finding.rule, finding.detail, text[:200])
        self._hook(
            "guard_review",
            stream_id=self._stream_id,
            brand=self._brand_id,
            reviewer=reviewer.name,
            call=what,
            outcome=outcome,
            seconds=seconds,
        )
        return finding

    def _violate(self, lane: _Lane, finding: Finding) -> None:
        if self.violation is not None or self._closed:
            return
        self.violation = finding
        current = asyncio.current_task()
        for other in self._lanes:
            for task in other.calls:
                if task is not current:
                    task.cancel()
        if not self._settling:
            self._on_violation(finding)  # settle() returns it instead

    # --- the end ------------------------------------------------------------------------------------------
    async def settle(self) -> Finding | None:
        """The upstream finished: review the last sentence, run each reviewer's end check, and wait for
        pending reviews up to :attr:`deadline_s`. Returns the finding that retracts the reply, if any; a
        review still pending at the deadline fails open (counted as ``timeout``). Cancelling it cancels
        the reviews."""
        if self._closed or self.violation is not None:
            return self.violation
        self._settling = True
        self._dispatch("".join(self._tail))
        self._tail = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        while self.violation is None:
            calls = [task for lane in self._lanes for task in lane.calls]
            remaining = deadline - loop.time()
            if not calls or remaining <= 0:
                break
            await asyncio.wait(calls, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        if self.violation is None:
            for lane in self._lanes:
                if lane.calls or lane.backlog or not lane.ended:
                    logger.bind(stream_id=self._stream_id, brand=self._brand_id).warning(
                        "review {} still pending at the reply's end; the reply stands (fail open)", lane.reviewer.name
                    )
                    self._hook(
                        "guard_review",
                        stream_id=self._stream_id,
                        brand=self._brand_id,
                        reviewer=lane.reviewer.name,
                        call="settle",
                        outcome="timeout",
                        seconds=self.deadline_s,
                    )
        await self.aclose()
        return self.violation

    async def aclose(self) -> None:
        """Cancel what is still running (the reply ended some other way) and wait, briefly, for it."""
        self._closed = True
        tasks = [task for lane in self._lanes for task in lane.calls]
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(tasks, timeout=CANCEL_WAIT_S)


def _whole_sentences(text: str) -> int:
    """Offset after the last sentence that whitespace has ended ("3." at the very end is not one yet)."""
    ends = sentence_ends(text)
    while ends and ends[-1] == len(text) and not text[-1].isspace():
        ends.pop()
    return ends[-1] if ends else 0
