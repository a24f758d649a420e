"""The in-process moving window answers exactly as the ``limits`` library's own."""

from __future__ import annotations

import random

import pytest
from limits import parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from taxease_auth.auth.limits import LocalMovingWindow


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_local_moving_window_matches_the_limits_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeTime()
    monkeypatch.setattr("time.time", clock)
    reference = MovingWindowRateLimiter(MemoryStorage())
    local = LocalMovingWindow()
    items = parse_many("3/10 seconds;5/minute;1/2 seconds")
    keys = ["a", "b", "c"]
    rng = random.Random(6)
    for _ in range(3000):
        clock.now += rng.choice((0.0, 0.1, 0.5, 1.0, 3.0, 7.0))
        item = rng.choice(items)
        key = rng.choice(keys)
        action = rng.choice(("hit", "hit", "test", "stats"))
        if action == "hit":
            assert await local.hit(item, "budget", key) == await reference.hit(item, "budget", key)
        elif action == "test":
            assert await local.test(item, "budget", key) == await reference.test(
                item, "budget", key
            )
        else:
            ours = await local.get_window_stats(item, "budget", key)
            theirs = await reference.get_window_stats(item, "budget", key)
            assert ours.remaining == theirs.remaining
            if ours.remaining < item.amount:  # a hit in the window: it sets the reset time
                assert ours.reset_time == theirs.reset_time


async def test_local_moving_window_forgets_keys_whose_window_has_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeTime()
    monkeypatch.setattr("time.time", clock)
    local = LocalMovingWindow()
    (item,) = parse_many("2/minute")
    for number in range(1000):
        assert await local.hit(item, "budget", f"address-{number}")
    clock.now += 61
    assert await local.hit(item, "budget", "one more")

    assert sum(len(keys) for keys in local._windows.values()) == 1
