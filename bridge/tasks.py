"""Stopping background tasks in bounded time."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# How long shutdown waits for background tasks to finish once cancelled.
STOP_TIMEOUT_S = 5.0
_RECANCEL_EVERY_S = 0.2


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], *, timeout_s: float = STOP_TIMEOUT_S, what: str = "tasks"
) -> set[asyncio.Task[Any]]:
    """Cancel `tasks` and wait until they are done, for at most `timeout_s`.

    The cancel is repeated every 0.2 s: a cancel can be lost (on Python 3.11 `asyncio.wait_for`
    drops one that lands just as its inner future finishes), and a task cancelled again lands on
    its next await. A task that outlives the bound is logged with its stack and left behind:
    shutdown goes on without it instead of hanging. Returns the tasks still running.
    """
    me = asyncio.current_task()
    pending = {t for t in tasks if t is not me and not t.done()}
    deadline = time.monotonic() + timeout_s
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=min(_RECANCEL_EVERY_S, left))
    for task in pending:
        log.error(
            "background_task_did_not_stop",
            what=what,
            task=task.get_name(),
            timeout_s=timeout_s,
            stack=_stack(task),
        )
    return pending


def _stack(task: asyncio.Task[Any]) -> str:
    out = io.StringIO()
    task.print_stack(file=out)
    return out.getvalue()
