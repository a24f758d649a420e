"""Enumeration by timing: known and unknown addresses take the same time to answer.

Run with real argon2id work (OWASP's minimum, so the suite stays quick): if the dummy hash for
unknown addresses were skipped, unknown logins would answer in a fraction of the time and the
medians below would differ by the whole hash time. Samples are interleaved so that load on the
shared machine hits both classes alike. Runs on SQLite only (DESIGN.md §5).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tests.api.conftest import login, register, verified_user
from tests.conftest import RunningApp, SettingsFactory, StartApp

pytestmark = pytest.mark.sqlite_only

SAMPLES = 25
OWASP_MINIMUM_HASHING = {
    "password_hash_memory_kib": 19456,
    "password_hash_time_cost": 2,
    "password_hash_parallelism": 1,
}


async def _median_seconds(
    first: Callable[[int], Awaitable[httpx.Response]],
    second: Callable[[int], Awaitable[httpx.Response]],
) -> tuple[float, float]:
    timings: tuple[list[float], list[float]] = ([], [])
    for sample in range(SAMPLES):
        for index, call in enumerate((first, second)):
            started = time.perf_counter()
            await call(sample)
            timings[index].append(time.perf_counter() - started)
    return statistics.median(timings[0]), statistics.median(timings[1])


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
