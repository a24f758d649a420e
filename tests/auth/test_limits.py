"""The in-process moving window answers exactly as the ``limits`` library's own."""

from __future__ import annotations

import gc
import random

import pytest
from limits import parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from taxease_auth.auth.limits import TUPLE_MAX_AMOUNT, LocalMovingWindow

pytestmark = pytest.mark.database_independent


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("budgets", "steps"),
    [
        # Small windows (tuples), at the pace of people.
        ("3/10 seconds;5/minute;1/2 seconds", (0.0, 0.1, 0.5, 1.0, 3.0, 7.0)),
        # Windows over TUPLE_MAX_AMOUNT (lists), filled by a flood, beside a small one.
        (
            f"{TUPLE_MAX_AMOUNT + 6}/10 seconds;{TUPLE_MAX_AMOUNT}/5 seconds",
            (0.0, 0.0, 0.005, 0.05),
        ),
    ],
)
async def test_local_moving_window_matches_the_limits_library(
    monkeypatch: pytest.MonkeyPatch, budgets: str, steps: tuple[float, ...]
) -> None:
    clock = FakeTime()
    monkeypatch.setattr("time.time", clock)
    reference = MovingWindowRateLimiter(MemoryStorage())
    local = LocalMovingWindow()
    items = parse_many(budgets)
    keys = ["a", "b", "c"]
    rng = random.Random(6)
    refused = 0
    for _ in range(3000):
        clock.now += rng.choice(steps)
        item = rng.choice(items)
        key = rng.choice(keys)
        action = rng.choice(("hit", "hit", "test", "stats"))
        if action == "hit":
            allowed = await local.hit(item, "budget", key)
            assert allowed == await reference.hit(item, "budget", key)
            refused += not allowed
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
    assert refused > 20  # the budgets were reached, again and again


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


async def test_per_address_budgets_are_not_left_to_the_garbage_collector() -> None:
    """Tens of thousands of addresses' budgets live for up to a day: a full collection that
    walked them paused every request (DESIGN's defaults, per-address budgets of 5 to 50)."""
    local = LocalMovingWindow()
    items = parse_many("5/hour;20/day")
    for number in range(2000):
        for item in items:
            for _ in range(3):
                assert await local.hit(item, "code-email", f"fingerprint-{number}")
    gc.collect()

    windows = [(key, hits) for keys in local._windows.values() for key, hits in keys.items()]
    assert len(windows) == 4000
    assert not any(gc.is_tracked(key) or gc.is_tracked(hits) for key, hits in windows)
