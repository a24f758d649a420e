"""Per-client budgets hold against a client with a whole IPv6 /64 (issue 16.2).

The addresses arrive as a trusted proxy forwards them (X-Forwarded-For): each request of the
flood comes from a different address inside one /64, as a host handed that /64 can do.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from taxease_auth.config import ConfigError, load_settings
from tests.api.conftest import API
from tests.api.test_audit import events
from tests.api.test_rate_limits import _register_from
from tests.conftest import GENEROUS_LIMITS, STRONG_PASSWORD, RunningApp, SettingsFactory, StartApp

BUDGET = 5


def random_host(prefix64: str) -> str:
    """A random address inside the /64 ``prefix64`` ("2001:db8:1:2")."""
    groups = [f"{secrets.randbits(16):x}" for _ in range(4)]
    return f"{prefix64}:{':'.join(groups)}"


async def register_from(client: httpx.AsyncClient, email: str, address: str) -> int:
    return await _register_from(client, email, address)


async def request_code_from(client: httpx.AsyncClient, email: str, address: str) -> int:
    response = await client.post(
        f"{API}/request-otp",
        json={"email": email, "purpose": "password_reset"},
        headers={"X-Forwarded-For": address},
    )
    return response.status_code


async def behind_a_proxy(
    start_app: StartApp, settings: SettingsFactory, **budgets: Any
) -> RunningApp:
    return await start_app(
        settings(**{**GENEROUS_LIMITS, **budgets}, trusted_proxies=["127.0.0.0/8"])
    )


@pytest.mark.parametrize(
    ("budget", "send", "accepted"),
    [
        ("rate_limit_register_per_ip", register_from, 201),
        ("rate_limit_otp_issue_per_ip", request_code_from, 202),
    ],
    ids=["registrations", "code-requests"],
)
async def test_a_flood_from_one_64_spends_one_budget(
    start_app: StartApp,
    make_settings: SettingsFactory,
    budget: str,
    send: Callable[[httpx.AsyncClient, str, str], Awaitable[int]],
    accepted: int,
) -> None:
    app = await behind_a_proxy(start_app, make_settings, **{budget: f"{BUDGET}/hour"})

    flood = [
        await send(app.client, f"flood{n}@example.com", random_host("2001:db8:1:2"))
        for n in range(3 * BUDGET)
    ]
    neighbour = await send(app.client, "next@example.com", random_host("2001:db8:1:3"))

    assert flood == [accepted] * BUDGET + [429] * (2 * BUDGET)
    assert neighbour == accepted  # another /64 has a budget of its own


async def test_a_wider_prefix_setting_groups_more(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await behind_a_proxy(
        start_app,
        make_settings,
        rate_limit_register_per_ip="1/hour",
        rate_limit_ipv6_prefix=48,
    )

    first = await register_from(app.client, "a@example.com", "2001:db8:1:1::1")
    same_48 = await register_from(app.client, "b@example.com", "2001:db8:1:ffff::1")
    other_48 = await register_from(app.client, "c@example.com", "2001:db8:2:1::1")

    assert (first, same_48, other_48) == (201, 429, 201)


async def test_an_ipv4_mapped_address_shares_the_ipv4_budget(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await behind_a_proxy(start_app, make_settings, rate_limit_register_per_ip="1/hour")

    first = await register_from(app.client, "a@example.com", "203.0.113.9")
    mapped = await register_from(app.client, "b@example.com", "::ffff:203.0.113.9")

    assert (first, mapped) == (201, 429)


async def test_the_audit_trail_keeps_the_full_address(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await behind_a_proxy(start_app, make_settings)
    address = "2001:db8:1:2:aaaa:bbbb:cccc:dddd"

    failed = await app.client.post(
        f"{API}/login",
        json={"email": "audit-v6@example.com", "password": STRONG_PASSWORD},
        headers={"X-Forwarded-For": address},
    )

    assert failed.status_code == 401
    assert {event.ip for event in await events(app, "audit-v6@example.com")} == {address}


@pytest.mark.parametrize("prefix", ["31", "129", "sixty-four"])
def test_the_prefix_is_validated(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_IPV6_PREFIX", prefix)

    with pytest.raises(ConfigError, match="RATE_LIMIT_IPV6_PREFIX"):
        load_settings(_env_file=None, development_mode=True)
