"""Cancelling the tasks the runtime owns (a leaf module: everything else may import it)."""

from __future__ import annotations

import asyncio

__all__ = ["cancel"]


async def cancel(task: asyncio.Task[None]) -> None:
    """Cancel a task we own and wait for it, without swallowing our own cancellation."""
    if task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
