"""Small asyncio helpers used by connection handlers."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class _Finished(Exception):
    """Raised by the first coroutine to end, so the task group cancels the others."""


async def _until_first(coro: Coroutine[Any, Any, Any]) -> None:
    await coro
    raise _Finished


async def race(*coros: Coroutine[Any, Any, Any]) -> None:
    """Run the coroutines in one ``asyncio.TaskGroup``; when the first ends, cancel the rest.

    Re-raises the first failure as itself (not wrapped in an ``ExceptionGroup``), so callers catch
    ``TimeoutError`` or ``OSError`` as usual. Cancelling ``race`` cancels all of them and waits for
    them to finish."""
    try:
        async with asyncio.TaskGroup() as group:
            for coro in coros:
                group.create_task(_until_first(coro))
    except BaseExceptionGroup as errors:
        failures = [e for e in errors.exceptions if not isinstance(e, _Finished)]
        if failures:
            raise failures[0] from None


class MovingDeadline:
    """``asyncio.timeout`` for a deadline that keeps moving, such as a stall timer pushed back by
    every piece of a stream: moving it costs a float store, and the loop's timer is re-armed only
    when it fires before the (moved) deadline — about once per deadline period, not once per piece.

    Use ``async with MovingDeadline() as deadline: deadline.move_to(loop.time() + s)``; past the
    deadline the block is cancelled and ``TimeoutError`` raised, exactly as ``asyncio.timeout``
    does (a cancellation from outside still propagates as ``CancelledError``)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("MovingDeadline must be used inside a task")
        self._task = task
        self._when: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._cancelling = 0
        self.expired = False

    def move_to(self, when: float) -> None:
        """The deadline is now ``when`` (``loop.time()`` clock), earlier or later than before."""
        self._when = when
        if self._handle is None or self._handle.when() > when:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        if self._when is None or self.expired:
            return
        if self._loop.time() < self._when:  # moved later since it was armed
            self._handle = self._loop.call_at(self._when, self._fire)
            return
        self.expired = True
        self._task.cancel()

    async def __aenter__(self) -> MovingDeadline:
        self._cancelling = self._task.cancelling()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._when = None
        if self.expired and exc_type is asyncio.CancelledError and self._task.uncancel() <= self._cancelling:
            raise TimeoutError from exc


class Doorbell:
    """One consumer's wait for "something arrived" or a deadline, without a timer per item.

    :meth:`wait` creates one future, which :meth:`ring` completes. The deadline is one timer per
    doorbell, armed lazily and pushed back when it fires early (the idle-timer trick), so a consumer
    woken 20 times a second re-arms it once per ``wait_s``. The queues of the hot path subclass it
    (``streaming.fanout.Subscription``, ``api.ws.Outbox``); :meth:`close` drops the timer."""

    __slots__ = ("_deadline", "_timer", "_waiter")

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0  # loop time at which the current wait gives up
        self._timer: asyncio.TimerHandle | None = None

    def ring(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, wait_s: float) -> None:
        """Until :meth:`ring` or ``wait_s`` seconds; the caller looks at its queue to tell which."""
        loop = asyncio.get_running_loop()
        self._deadline = deadline = loop.time() + wait_s
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._on_deadline)
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _on_deadline(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nobody is waiting: the next wait arms a new timer
        loop = waiter.get_loop()
        if loop.time() >= self._deadline:
            waiter.set_result(None)
        else:  # this wait began after the timer was armed: wait for its own deadline
            self._timer = loop.call_at(self._deadline, self._on_deadline)

    def close(self) -> None:
        """Drop the deadline timer (the doorbell is no longer used)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
