"""Waiting for something unless a stop comes first: the delivery worker and the feedback
consumer both wait this way (for a lock, a sending turn, an SQS long poll)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

_T = TypeVar("_T")


async def until_stopped(awaitable: Awaitable[_T], stopping: asyncio.Event) -> _T | None:
    """``awaitable``'s result, or None when ``stopping`` is set first: it is then cancelled,
    and awaited so it has ended when this returns. An error of ``awaitable`` is raised as
    is; cancelling the caller cancels ``awaitable`` too."""
    task = asyncio.ensure_future(awaitable)
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task.cancelled():
        return None
    return task.result()
