"""Cancelling the tasks the runtime owns (a leaf module: everything else may import it)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

__all__ = ["awaiting", "cancel"]


async def cancel(task: asyncio.Task[Any], within: float | None = None) -> bool:
    """Cancel a task we own and wait for it, without swallowing our own cancellation.

    With `within`, wait at most that many seconds: False if the task has not ended by then
    (its clean-up is stuck, or a library swallowed the cancel and it went on), so a caller
    that must get on, like a stop, can say what is stuck and continue."""
    if task.done():
        return True
    task.cancel()
    if within is not None:
        # Our own cancellation propagates from the wait; the task's outcome is not raised.
        await asyncio.wait({task}, timeout=within)
        if not task.done():
            return False
        if not task.cancelled():
            task.exception()  # retrieved: its own guard has reported it
        return True
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    return True


def awaiting(task: asyncio.Task[Any]) -> str:
    """Where a pending task waits: the innermost few of its awaited coroutines outside
    asyncio itself (`asyncio.wait` says nothing; what called it does)."""
    where: list[str] = []
    step: Any = task.get_coro()
    while step is not None:
        frame = getattr(step, "cr_frame", None) or getattr(step, "ag_frame", None)
        if frame is not None and not frame.f_code.co_filename.startswith(_ASYNCIO):
            where.append(f"{frame.f_code.co_qualname} (line {frame.f_lineno})")
        step = getattr(step, "cr_await", None) or getattr(step, "ag_await", None)
    return " > ".join(where[-3:]) or "unknown"


_ASYNCIO = os.path.dirname(asyncio.__file__)
