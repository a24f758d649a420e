"""Enumeration by timing: known and unknown addresses take the same time to answer.

Run with real argon2id work (OWASP's minimum, so the suite stays quick): if the dummy hash for
unknown addresses were skipped, unknown logins would answer in a fraction of the time and the
medians below would differ by the whole hash time. Samples are interleaved so that load on the
shared machine hits both classes alike. Runs on SQLite only (DESIGN.md §5).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from taxease_auth.store.db import sqlite_write_lock
from tests.api.conftest import login, outbox_kinds, register, verified_user
from tests.conftest import RunningApp, SettingsFactory, StartApp

pytestmark = [pytest.mark.sqlite_only, pytest.mark.timing]

SAMPLES = 25
OWASP_MINIMUM_HASHING = {
    "password_hash_memory_kib": 19456,
    "password_hash_time_cost": 2,
    "password_hash_parallelism": 1,
}


async def _medians(
    *calls: Callable[[int], Awaitable[httpx.Response]],
    settle: Callable[[], Awaitable[None]] | None = None,
) -> list[float]:
    """The median time of each call, sampled in turn (interleaved) SAMPLES times; ``settle``
    (untimed) after each call."""
    timings: list[list[float]] = [[] for _ in calls]
    for sample in range(SAMPLES):
        for index, call in enumerate(calls):
            started = time.perf_counter()
            await call(sample)
            timings[index].append(time.perf_counter() - started)
            if settle is not None:
                await settle()
    return [statistics.median(samples) for samples in timings]


async def _median_seconds(
    first: Callable[[int], Awaitable[httpx.Response]],
    second: Callable[[int], Awaitable[httpx.Response]],
) -> tuple[float, float]:
    first_median, second_median = await _medians(first, second)
    return first_median, second_median


async def _timing_app(start_app: StartApp, make_settings: SettingsFactory) -> RunningApp:
    app = await start_app(make_settings(**OWASP_MINIMUM_HASHING))
    await verified_user(app, "known@example.com")
    return app


async def test_login_takes_as_long_for_unknown_addresses_as_for_wrong_passwords(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await _timing_app(start_app, make_settings)

    async def known(_sample: int) -> httpx.Response:
        response = await login(app.client, "known@example.com", "a wrong password here")
        assert response.status_code == 401
        return response

    async def unknown(sample: int) -> httpx.Response:
        response = await login(app.client, f"unknown{sample}@example.com", "a wrong password here")
        assert response.status_code == 401
        return response

    known_median, unknown_median = await _median_seconds(known, unknown)

    assert abs(known_median - unknown_median) < 0.25 * known_median, (known_median, unknown_median)


async def test_registration_takes_as_long_for_taken_addresses_as_for_new_ones(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await _timing_app(start_app, make_settings)

    async def taken(_sample: int) -> httpx.Response:
        response = await register(app.client, "known@example.com")
        assert response.status_code == 201
        return response

    async def new(sample: int) -> httpx.Response:
        response = await register(app.client, f"new{sample}@example.com")
        assert response.status_code == 201
        return response

    taken_median, new_median = await _median_seconds(taken, new)

    assert abs(taken_median - new_median) < 0.25 * new_median, (taken_median, new_median)


async def test_registration_takes_as_long_for_new_unverified_and_verified_addresses(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    """Review 17.7: what depends on the address's state (a user row, a code, or a notice)
    happens after the answer; the three states answer alike."""
    app = await start_app(make_settings(**OWASP_MINIMUM_HASHING))
    await verified_user(app, "verified@example.com")
    assert (await register(app.client, "unverified@example.com")).status_code == 201

    async def registering(email: str) -> httpx.Response:
        response = await register(app.client, email)
        assert response.status_code == 201
        return response

    async def new(sample: int) -> httpx.Response:
        return await registering(f"new{sample}@example.com")

    async def unverified(_sample: int) -> httpx.Response:
        return await registering("unverified@example.com")

    async def verified(_sample: int) -> httpx.Response:
        return await registering("verified@example.com")

    new_median, unverified_median, verified_median = await _medians(
        new, unverified, verified, settle=app.requested_codes_issued
    )

    for median in (unverified_median, verified_median):
        assert abs(median - new_median) < 0.25 * new_median, (
            new_median,
            unverified_median,
            verified_median,
        )


async def test_registration_answers_before_the_work_that_depends_on_the_address(
    dev_app: RunningApp,
) -> None:
    """The 201 waits for no database work: with every transaction held up, registering a
    verified address still answers at once (before Review 17.7 it waited for the lock, and
    how long its transaction took told which branch it took); the notice follows."""
    await verified_user(dev_app, "held@example.com")
    lock = sqlite_write_lock(dev_app.app.state.engine)

    async with lock:
        response = await asyncio.wait_for(register(dev_app.client, "held@example.com"), 5)
        assert response.status_code == 201

    assert await outbox_kinds(dev_app, "held@example.com") == [
        "email_verification",
        "account_exists",
    ]
