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
