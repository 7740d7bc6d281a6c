"""Small asyncio helpers used by connection handlers."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def race(*coros: Coroutine[Any, Any, Any]) -> None:
    """Run the coroutines together; when the first ends, cancel the rest.

    Re-raises the first one's exception, if it had one. Cancelling ``race`` cancels all of them
    and waits for them to finish."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    done: set[asyncio.Future[Any]] = set()
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if task in done and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
