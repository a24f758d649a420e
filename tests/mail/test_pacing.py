"""SendPacer: turns on one evenly spaced grid, handed out once across every pacer sharing a
storage (one process's memory, or Redis for several processes).

The grid tests run on a simulated clock (exact and instant); the sharing tests on real time,
with the limits library's real storages.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Iterator

import pytest
from limits.aio.storage import MemoryStorage

from taxease_auth.mail.pacing import RATE_HEADROOM, Grid, SendPacer, shared_pacer
from tests.support import free_port, redis_server
from tests.support.fault_proxy import max_in_any_window

pytestmark = pytest.mark.database_independent


class SimulatedTime:
    """A wall clock that moves only when a pacer sleeps."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def simulated_pacer(rate: float | None, clock: SimulatedTime) -> SendPacer:
    return SendPacer(MemoryStorage(), rate=rate, wall_clock=clock, sleep=clock.sleep)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


# --- the grid --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "at_least"),
    [(1.0, 0.9), (2.0, 1.9), (14.0, 13.2), (50.0, 47.5), (200.0, 190.0), (1000.0, 950.0)],
)
def test_grid_runs_just_under_the_rate(rate: float, at_least: float) -> None:
    grid = Grid.for_rate(rate)
    assert at_least <= grid.per_second <= rate * RATE_HEADROOM + 1e-9
    assert grid.epoch_seconds <= 10


def test_grid_for_a_very_slow_rate_has_one_turn_per_long_epoch() -> None:
    grid = Grid.for_rate(0.05)
    assert grid.turns == 1
    assert grid.spacing >= 1 / 0.05


def test_grid_refuses_a_rate_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Grid.for_rate(0)


# --- one pacer, simulated time ---------------------------------------------------------------


async def test_turns_are_evenly_spaced_and_never_in_the_past() -> None:
    clock = SimulatedTime()
    pacer = simulated_pacer(20.0, clock)
    spacing = 1 / pacer.turns_per_second  # type: ignore[operator]

    times = []
    for _ in range(100):
        assert await pacer.acquire()
        times.append(clock.now)

    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(spacing, abs=1e-6)
    assert max(gaps) == pytest.approx(spacing, abs=1e-6)
    assert max_in_any_window(times) <= 20


async def test_a_late_sender_does_not_bunch_turns() -> None:
    """Turns whose instant passed while nobody sent are skipped, not handed out at once."""
    clock = SimulatedTime()
    pacer = simulated_pacer(10.0, clock)
    await pacer.acquire()
    clock.now += 0.75  # idle for a while mid-epoch

    times = []
    for _ in range(30):
        await pacer.acquire()
        times.append(clock.now)

    assert max_in_any_window(times) <= 10
    assert times[1] - times[0] == pytest.approx(1 / pacer.turns_per_second, abs=1e-6)  # type: ignore[operator]


async def test_concurrent_senders_share_one_pacer() -> None:
    clock = SimulatedTime()
    pacer = simulated_pacer(50.0, clock)
    times: list[float] = []

    async def sender() -> None:
        for _ in range(20):
            await pacer.acquire()
            times.append(clock.now)

    await asyncio.gather(*(sender() for _ in range(5)))

    assert len(times) == 100
    assert max_in_any_window(times) <= 50


async def test_unpaced_pacer_never_waits() -> None:
    clock = SimulatedTime()
    pacer = simulated_pacer(None, clock)
    start = clock.now
    for _ in range(1000):
        assert await pacer.acquire()
    assert clock.now == start
    assert pacer.turns_per_second is None


async def test_a_turn_too_far_away_is_refused_at_once() -> None:
    clock = SimulatedTime()
    pacer = SendPacer(MemoryStorage(), rate=1.0, wall_clock=clock, sleep=_no_sleep)

    granted = [await pacer.acquire(max_wait=3.0) for _ in range(10)]

    # Nobody sleeps, so turns pile up ahead: those within 3 s are granted, the rest refused.
    assert granted.count(True) == math.floor(3.0 * pacer.turns_per_second) + 1  # type: ignore[operator]
    assert granted[-1] is False
    assert clock.now == 1_000_000.0


async def _no_sleep(_seconds: float) -> None:
    return


async def test_a_new_rate_applies_to_the_next_turn() -> None:
    clock = SimulatedTime()
    pacer = simulated_pacer(1.0, clock)
    await pacer.acquire()

    pacer.set_rate(100.0)
    before = clock.now
    for _ in range(10):
        await pacer.acquire()

    assert pacer.rate == 100.0
    assert clock.now - before < 0.2


# --- sharing the pace, real time -------------------------------------------------------------


async def _send_times(pacers: list[SendPacer], per_pacer: int) -> list[float]:
    times: list[float] = []

    async def sender(pacer: SendPacer) -> None:
        for _ in range(per_pacer):
            await pacer.acquire()
            times.append(time.time())

    await asyncio.gather(*(sender(pacer) for pacer in pacers for _ in range(3)))
    return times


@pytest.mark.timing
async def test_pacers_sharing_one_memory_storage_share_the_rate() -> None:
    storage = MemoryStorage()
    pacers = [SendPacer(storage, rate=40.0) for _ in range(3)]

    times = await _send_times(pacers, per_pacer=10)

    assert len(times) == 90
    assert max_in_any_window(times) <= 40


@pytest.mark.timing
@pytest.mark.usefixtures("worker_process_heap")
async def test_four_workers_share_the_rate_through_redis(redis_url: str) -> None:
    # Four pacers with their own connections: what four worker processes would hold.
    pacers = [shared_pacer(redis_url) for _ in range(4)]
    for pacer in pacers:
        pacer.set_rate(40.0)
    try:
        for pacer in pacers:  # connect first: a worker's connection outlives its start-up
            await pacer.acquire()
        times = await _send_times(pacers, per_pacer=8)
    finally:
        for pacer in pacers:
            pacer.close()

    assert len(times) == 96
    assert max_in_any_window(times) <= 40
    achieved = (len(times) - 1) / (max(times) - min(times))
    assert achieved >= 0.85 * 40


async def test_without_its_storage_a_pacer_paces_alone(caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on this port: every call to the shared storage fails.
    pacer = shared_pacer(f"redis://127.0.0.1:{free_port()}/0")
    pacer.set_rate(50.0)
    try:
        times = []
        for _ in range(20):
            assert await pacer.acquire()
            times.append(time.time())
    finally:
        pacer.close()

    assert max_in_any_window(times) <= 50
    # Paced, not let through: no two sends closer than half a turn's spacing.
    spacing = 1 / pacer.turns_per_second  # type: ignore[operator]
    assert min(b - a for a, b in itertools.pairwise(times)) >= spacing / 2 - 0.002
    assert "paces alone" in caplog.text
