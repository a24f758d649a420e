"""The in-process (memory://) windows hold at most RATE_LIMIT_MEMORY_MAX_KEYS keys (issue 16.3).

A flood of distinct keys (new addresses, new client prefixes) must not grow the process without
bound, and must not wipe the budgets that are refusing an attack while it goes on.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import tracemalloc

import httpx
import pytest
from limits import parse_many
from prometheus_client import REGISTRY

from taxease_auth.auth.limits import LocalMovingWindow
from taxease_auth.config import Settings
from tests.api.conftest import API
from tests.api.test_rate_limits import _register_from
from tests.conftest import GENEROUS_LIMITS, SettingsFactory, StartApp

EVICTIONS = "taxease_rate_limit_evictions_total"


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr("time.time", fake)
    return fake


def evictions() -> float:
    return REGISTRY.get_sample_value(EVICTIONS) or 0.0


@pytest.mark.sqlite_only  # no database involved: once is enough
async def test_a_flood_of_keys_stays_at_the_bound_and_the_attacked_budget_keeps_refusing(
    clock: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    local = LocalMovingWindow(max_keys=500)
    (per_client,) = parse_many("3/hour")
    (per_address,) = parse_many("5/day")  # another window length, filled by the flood
    for _ in range(3):
        assert await local.hit(per_client, "login-ip", "203.0.113.66")
    before = evictions()

    for number in range(5000):
        clock.now += 0.1
        assert await local.hit(per_address, "code-email", f"fingerprint-{number}")
        assert await local.hit(per_client, "code-ip", f"2001:db8:{number:x}::/64")
        if number % 50 == 0:  # the attack goes on, refused, beside the flood
            assert not await local.hit(per_client, "login-ip", "203.0.113.66")
        assert local.key_count() <= 500

    assert local.key_count() == 500
    assert evictions() - before == 2 * 5000 + 1 - 500
    assert not await local.hit(per_client, "login-ip", "203.0.113.66")
    warnings = [r for r in caplog.records if "RATE_LIMIT_MEMORY_MAX_KEYS" in r.getMessage()]
    assert len(warnings) == 1  # once, not per eviction


@pytest.mark.sqlite_only  # no database involved: once is enough
async def test_a_failure_budget_checked_and_refused_is_kept_like_a_refused_hit(
    clock: FakeTime,
) -> None:
    """A failure budget read with ``test``: an address whose wrong-password budget is spent
    must stay spent while it is tried, however many other keys arrive."""
    local = LocalMovingWindow(max_keys=100)
    (failures,) = parse_many("2/15 minutes")
    for _ in range(2):
        await local.hit(failures, "login-fail-email", "victim")

    for number in range(1000):
        clock.now += 0.1
        await local.hit(failures, "login-fail-email", f"flood-{number}")
        if number % 20 == 0:
            assert not await local.test(failures, "login-fail-email", "victim")

    assert not await local.test(failures, "login-fail-email", "victim")


@pytest.mark.sqlite_only  # no database involved: once is enough
async def test_the_key_whose_newest_hit_is_oldest_goes_first(clock: FakeTime) -> None:
    local = LocalMovingWindow(max_keys=3)
    (hourly,) = parse_many("10/hour")
    (daily,) = parse_many("10/day")
    await local.hit(daily, "b", "old")  # t = 0
    clock.now += 1
    await local.hit(hourly, "b", "middle")  # t = 1
    clock.now += 1
    await local.hit(daily, "b", "young")  # t = 2
    clock.now += 1
    await local.hit(daily, "b", "old")  # t = 3: "old" is now the youngest

    clock.now += 1
    await local.hit(hourly, "b", "new")  # evicts "middle" (newest hit at t = 1)
    clock.now += 1
    await local.hit(daily, "b", "newer")  # evicts "young" (t = 2)

    held = {key[-1] for keys in local._windows.values() for key in keys}
    assert held == {"old", "new", "newer"}


@pytest.mark.sqlite_only  # no database involved: once is enough
def test_the_default_bound_holds_a_flood_under_30_mb() -> None:
    """The keys a flood of new clients and addresses makes (one request-otp each: cooldown,
    two per-address limits, one per-client), five hits per key, measured on a sample (under
    tracemalloc a full fill takes 15 s) and scaled to the default bound."""
    bound = Settings(_env_file=None, development_mode=True).rate_limit_memory_max_keys
    sample = 8000
    cooldown = parse_many("1/60 seconds")[0]
    per_address = parse_many("5/hour;20/day")
    per_client = parse_many("30/hour")[0]

    async def flood(local: LocalMovingWindow) -> None:
        number = 0
        while local.key_count() < sample:
            fingerprint = secrets.token_hex(16)
            prefix = f"2001:db8:{number & 0xFFFF:x}:{number >> 16:x}::/64"
            for _ in range(5):
                await local.hit(cooldown, "code-cooldown", fingerprint, "password_reset")
                for item in per_address:
                    await local.hit(item, "code-email", fingerprint, "password_reset")
                await local.hit(per_client, "code-ip", prefix)
            number += 1

    gc.collect()
    tracemalloc.start()
    try:
        local = LocalMovingWindow(max_keys=sample)
        asyncio.run(flood(local))
        gc.collect()
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert local.key_count() == sample
    per_key = used / sample
    assert per_key * bound < 30 * 1024 * 1024, f"{per_key:.0f} bytes a key, {bound} keys"


async def test_a_server_flooded_with_new_addresses_keeps_refusing_the_attacker(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    """Through the API: the attacker's registrations stay refused while a flood of password
    reset requests from new clients for new addresses pushes the windows past their bound."""
    app = await start_app(
        make_settings(
            **{**GENEROUS_LIMITS, "rate_limit_register_per_ip": "1/hour"},
            rate_limit_memory_max_keys=100,
            trusted_proxies=["127.0.0.0/8"],
        )
    )

    async def register() -> int:
        email = f"spam-{secrets.token_hex(4)}@example.com"
        return await _register_from(app.client, email, "198.51.100.23")

    assert await register() == 201
    before = evictions()
    answers = []
    for number in range(150):
        flood: httpx.Response = await app.client.post(
            f"{API}/password-reset/request",
            json={"email": f"flood-{number}@example.com"},
            headers={"X-Forwarded-For": f"2001:db8:{number:x}::1"},
        )
        assert flood.status_code == 202
        if number % 10 == 0:
            answers.append(await register())

    assert answers == [429] * len(answers)
    assert evictions() - before > 100
    metrics = await app.client.get("/metrics")
    assert EVICTIONS in metrics.text


@pytest.fixture(autouse=True)
def _warnings_visible(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="taxease_auth.auth.limits")
