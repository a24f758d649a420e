"""The per-address login failure budget is spent before the password is checked, so
simultaneous wrong passwords cannot overdraw it."""

from __future__ import annotations

import asyncio

from tests.api.conftest import audit_events, login, verified_user
from tests.conftest import GENEROUS_LIMITS, STRONG_PASSWORD, SettingsFactory, StartApp

BUDGET = 3


async def test_simultaneous_wrong_passwords_at_the_last_unit_reach_the_check_at_most_once(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(
        make_settings(
            **{**GENEROUS_LIMITS, "rate_limit_login_failures_per_email": f"{BUDGET}/15minutes"}
        )
    )
    email = "last-unit@example.com"
    await verified_user(app, email)
    spent = [await login(app.client, email, "not the password!") for _ in range(BUDGET - 1)]
    assert [r.status_code for r in spent] == [401] * (BUDGET - 1)

    burst = await asyncio.gather(
        *(login(app.client, email, f"guess number {n} of many") for n in range(12))
    )

    # Checked first and charged after the failure, every one of the 12 passed the check while
    # the last unit was left, and all 12 reached the password check (12 x 401).
    statuses = sorted(r.status_code for r in burst)
    assert statuses == [401] + [429] * 11
    failed = [e for e in await audit_events(app, email) if e.event == "login_failed"]
    assert len(failed) == BUDGET
    # Spent: the right password is refused too, before any hashing.
    assert (await login(app.client, email, STRONG_PASSWORD)).status_code == 429
