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
