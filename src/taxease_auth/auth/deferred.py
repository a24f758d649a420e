"""Work done after the answer: a bounded first-come, first-served queue run by one task.

A route whose answer must not depend on an account's state (register) does the
state-dependent part here, after it answered: the answer's timing then tells nothing about
the address. What a 2xx promised must still happen, so nothing queued is ever dropped: past
``capacity`` jobs queued or running, callers wait for room *before* answering (the wait
depends on the load only, never on the address), and ``drain`` runs what is queued at
shutdown.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from taxease_auth.logs import REQUEST_ID

logger = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]


class AfterAnswer:
    """Jobs run one at a time, in the order submitted, by a task of this queue's own.

    ``wait_for_room`` then ``submit``: a job is never refused. A job that raises is logged
    (with its request's id) and the next one runs.
    """

    def __init__(self, name: str, *, capacity: int) -> None:
        self._name = name
        self._capacity = capacity
        self._jobs: deque[tuple[Job, str | None]] = deque()
        self._running = 0
        self._runner: asyncio.Task[None] | None = None
        # Callers waiting for room, woken one per finished job (an Event would wake them all).
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def wait_for_room(self) -> None:
        """Return once fewer than ``capacity`` jobs are queued or running."""
        if self._waiting or len(self._jobs) + self._running >= self._capacity:
            # First come, first served: a newcomer never overtakes a waiting caller.
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:  # the client went away
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake(1)  # it had been given room: pass it on
                raise

    def submit(self, job: Job) -> None:
        """Queue ``job``; it runs after the current request's answer (in its own context)."""
        self._jobs.append((job, REQUEST_ID.get()))
        if self._runner is None or self._runner.done():
            # A context of its own: the task outlives the request that happened to start it.
            self._runner = asyncio.create_task(self._run(), context=contextvars.Context())

    async def drain(self) -> None:
        """Return once every queued job has run (at shutdown; in tests, before reading)."""
        while self._runner is not None and not self._runner.done():
            await asyncio.shield(self._runner)

    async def _run(self) -> None:
        while self._jobs:
            job, request_id = self._jobs.popleft()
            self._running = 1
            REQUEST_ID.set(request_id)  # its log lines carry the id of the request
            try:
                await job()
            except Exception:
                logger.exception("%s: a job queued after its answer failed", self._name)
            finally:
                self._running = 0
                REQUEST_ID.set(None)
                self._wake(1)
            await asyncio.sleep(0)  # let a request that just got room answer first

    def _wake(self, count: int) -> None:
        while count and self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # not cancelled meanwhile
                waiter.set_result(None)
                count -= 1
