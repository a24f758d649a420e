"""Pacing under SES's MaxSendRate, shared by every delivery worker through the rate-limit storage.

SES counts messages per second for the whole account, so four workers must *together* stay
under the rate. Sending turns lie on one grid of evenly spaced instants of the wall clock
(``time.time()``, which every process on synchronised hosts shares), ``1 / (rate × headroom)``
apart. Each turn is handed out once, through a counter per epoch (a few seconds of grid) kept in
the rate-limit storage: ``memory://`` paces one process, ``redis://`` every process that shares
the Redis. A sender takes the next free turn, sleeps until its instant, then sends.

Why a grid rather than a windowed limiter ("47 per second"): a window lets all 47 go in the
first milliseconds of each second, and a sender that is a little late at one window edge and
on time at the next puts two windows' worth into one second at SES. On the grid, sends are
spread evenly; with enough concurrent sends the pace reaches the grid's rate however long one
SES round trip takes.

Why the headroom: SES measures arrivals, not our turns. With spacing ``1 / (h × R)`` any one
second at SES holds at most ``R`` arrivals as long as the delay from a turn's instant to its
arrival varies by less than ``1/h − 1`` seconds: 52 ms with ``h = 0.95``. A turn is never
handed out for an instant already past, so lateness cannot bunch sends.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from limits.aio.storage import MemoryStorage, Storage

from taxease_auth.ratelimit_storage import make_storage

logger = logging.getLogger(__name__)

# Fraction of MaxSendRate the grid runs at (see the module docstring for the jitter it buys).
RATE_HEADROOM = 0.95
# Longest epoch: lets slow rates (SES's sandbox: 1/s) use their whole budget (9 turns in 10 s
# instead of 1 in 2 s) while keeping the storage to a handful of short-lived keys.
MAX_EPOCH_SECONDS = 10
KEY_PREFIX = "taxease-mail-pacing"
# While the shared storage fails, how often to try it again (each try may wait for a timeout).
STORAGE_RETRY_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Grid:
    """``turns`` sending instants per epoch of ``epoch_seconds``, evenly spaced."""

    turns: int
    epoch_seconds: int

    @property
    def spacing(self) -> float:
        return self.epoch_seconds / self.turns

    @property
    def per_second(self) -> float:
        return self.turns / self.epoch_seconds

    @classmethod
    def for_rate(cls, rate: float, headroom: float = RATE_HEADROOM) -> Grid:
        """The grid closest under ``rate × headroom`` turns per second."""
        if not rate > 0:
            raise ValueError("rate must be positive")
        target = rate * headroom
        best = cls(turns=1, epoch_seconds=max(1, math.ceil(1 / target)))
        for seconds in range(1, MAX_EPOCH_SECONDS + 1):
            turns = math.floor(target * seconds)
            if turns >= 1 and turns / seconds > best.per_second:
                best = cls(turns=turns, epoch_seconds=seconds)
        return best


class SendPacer:
    """Hands out sending turns at most ``rate`` per second across everything sharing ``storage``.

    ``rate`` None means unpaced: ``acquire`` returns at once. When the storage fails (Redis
    down), this process paces alone on a local counter until it answers again, and says so in
    the log: delivery goes on at the right pace per process rather than stopping.
    """

    def __init__(
        self,
        storage: Storage | None = None,
        *,
        rate: float | None = None,
        headroom: float = RATE_HEADROOM,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        if not 0 < headroom <= 1:
            raise ValueError("headroom must be in (0, 1]")
        self._storage = storage if storage is not None else MemoryStorage()
        self._local: Storage | None = None
        # Set while the shared storage is failing: when to try it again.
        self._shared_retry_at: float | None = None
        self._headroom = headroom
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._on_close = on_close
        self._rate: float | None = None
        self._grid: Grid | None = None
        self.set_rate(rate)

    def close(self) -> None:
        """Release the storage's connections (Redis), when this pacer was given them."""
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()

    @property
    def rate(self) -> float | None:
        """The MaxSendRate being paced to (None: unpaced)."""
        return self._rate

    @property
    def turns_per_second(self) -> float | None:
        """The rate turns are really handed out at (under ``rate`` by the headroom)."""
        return self._grid.per_second if self._grid else None

    def set_rate(self, rate: float | None) -> None:
        """Pace to ``rate`` messages per second from the next turn on (None: unpaced).

        Processes that briefly disagree on the rate (one refreshed it, another not yet) pace
        on different grids until they agree: SES rates change seldom and by operator action.
        """
        self._rate = rate
        self._grid = Grid.for_rate(rate, self._headroom) if rate is not None else None

    async def acquire(self, max_wait: float = math.inf) -> bool:
        """Wait for this sender's turn; True when it may send now.

        False, at once, when the next free turn is more than ``max_wait`` seconds away (that
        turn is then left unused). Cancelling the wait is safe: an untaken turn only goes
        unused.
        """
        grid = self._grid
        if grid is None:
            return True
        while True:
            now = self._wall_clock()
            instant = await self._next_turn(grid, now, max_wait)
            if instant is None:
                return False
            wait = instant - self._wall_clock()
            # A turn handed out late (the storage was slow to answer) is dropped rather than
            # used after its instant, where it would crowd the next one.
            if wait >= -grid.spacing / 2:
                break
        if wait > max_wait:
            return False
        if wait > 0:
            await self._sleep(wait)
        return True

    async def _next_turn(self, grid: Grid, now: float, max_wait: float) -> float | None:
        """Take the first free turn not before ``now``; its instant, or None when the first
        candidate is more than ``max_wait`` away."""
        epoch = math.floor(now / grid.epoch_seconds)
        # The first instant of this epoch that is not yet past.
        first = math.ceil((now - epoch * grid.epoch_seconds) / grid.spacing)
        while True:
            if first >= grid.turns:
                epoch, first = epoch + 1, 0
                continue
            start = epoch * grid.epoch_seconds
            if start + first * grid.spacing - now > max_wait:
                return None
            turn = await self._take(grid, epoch, first, now)
            if turn < grid.turns:
                return start + turn * grid.spacing
            epoch, first = epoch + 1, 0

    async def _take(self, grid: Grid, epoch: int, first: int, now: float) -> int:
        """The next unclaimed turn number of ``epoch`` at or after ``first`` (may be past the
        epoch's last turn: the epoch is then full)."""
        key = f"{KEY_PREFIX}/{grid.turns}per{grid.epoch_seconds}s/{epoch}"
        # The counter must outlive its epoch; it is only set when the key is created.
        expiry = math.ceil((epoch + 1) * grid.epoch_seconds - now) + 2
        turn = await self._incr(key, expiry, 1) - 1
        if turn < first:
            # The turns before ``first`` are past: burn them in one step. Racing burners only
            # waste turns, never hand one out twice (each increment returns a distinct value).
            turn = await self._incr(key, expiry, first - turn) - 1
        return turn

    async def _incr(self, key: str, expiry: int, amount: int) -> int:
        now = self._wall_clock()
        if self._shared_retry_at is None or now >= self._shared_retry_at:
            failures: tuple[type[Exception], ...] = (
                *_as_tuple(self._storage.base_exceptions),
                OSError,
            )
            try:
                value = await self._storage.incr(key, expiry, amount)
            except failures as error:
                if self._shared_retry_at is None:
                    logger.warning(
                        "mail pacing: the rate-limit storage failed (%s); this process paces "
                        "alone until it answers again",
                        type(error).__name__,
                    )
                self._shared_retry_at = now + STORAGE_RETRY_SECONDS
            else:
                if self._shared_retry_at is not None:
                    logger.warning("mail pacing: the rate-limit storage answers again")
                    self._shared_retry_at = None
                return value
        if self._local is None:
            self._local = MemoryStorage()
        return await self._local.incr(key, expiry, amount)


def _as_tuple(
    exceptions: type[Exception] | tuple[type[Exception], ...],
) -> tuple[type[Exception], ...]:
    return exceptions if isinstance(exceptions, tuple) else (exceptions,)


def shared_pacer(storage_url: str) -> SendPacer:
    """A pacer on RATE_LIMIT_STORAGE_URL's storage; ``close()`` it when done."""
    limits_storage = make_storage(storage_url)
    return SendPacer(limits_storage.storage, on_close=limits_storage.close)
