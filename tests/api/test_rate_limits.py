"""Rate limits and failure budgets, each tried as an attack against the running app.

Every budget is counted on the submitted address or the client address whether or not an
account exists, so a 429 answers alike for known and unknown emails.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from taxease_auth.auth.guessing import guessing_bound
from taxease_auth.store.models import Purpose
from tests.api.conftest import (
    API,
    audit_events,
    code_in_mail,
    confirm_reset,
    login,
    otp_rows,
    register,
    request_otp,
    request_reset,
    verified_user,
    verify,
)
from tests.conftest import GENEROUS_LIMITS, STRONG_PASSWORD, RunningApp, SettingsFactory, StartApp

NEW_PASSWORD = "a brand new passphrase for this"


def limited(**budgets: Any) -> dict[str, Any]:
    """The generous test limits, with the budgets under test set to their real values."""
    return {**GENEROUS_LIMITS, **budgets}


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json() == {"detail": "Too many requests. Try again later."}
    assert int(response.headers["Retry-After"]) >= 1


def comparable(response: httpx.Response) -> tuple[int, str, bool]:
    """What a client can compare between two answers (Retry-After values tick with time)."""
    return response.status_code, response.text, "retry-after" in response.headers


async def outbox_count(app: RunningApp, recipient: str) -> int:
    return sum(1 for row in await app.outbox() if row.recipient == recipient)


# --- issuing codes ----------------------------------------------------------------------------


async def test_resend_within_the_cooldown_is_429_with_retry_after(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(**limited(otp_resend_cooldown_seconds=60)))
    await register(app.client, "cool@example.com")

    response = await request_otp(app.client, "cool@example.com")

    assert_rate_limited(response)
    assert int(response.headers["Retry-After"]) <= 60
    assert await outbox_count(app, "cool@example.com") == 1


async def test_cooldown_answers_alike_for_known_and_unknown_addresses(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(**limited(otp_resend_cooldown_seconds=60)))
    await verified_user(app, "known@example.com")

    known = [await request_otp(app.client, "known@example.com", "password_reset") for _ in range(2)]
    unknown = [
        await request_otp(app.client, "nobody@example.com", "password_reset") for _ in range(2)
    ]

    assert [comparable(r) for r in known] == [comparable(r) for r in unknown]
    assert [r.status_code for r in known] == [202, 429]


async def test_a_flood_of_resends_mails_at_most_the_hourly_cap(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(**limited(rate_limit_otp_issue_per_email="5/hour")))
    await register(app.client, "flood@example.com")  # the registration's code is the first

    answers = await asyncio.gather(
        *(request_otp(app.client, "flood@example.com") for _ in range(50))
    )

    statuses = [response.status_code for response in answers]
    assert statuses.count(202) == 4
    assert statuses.count(429) == 46
    await app.settled_outbox()
    # The registration's mail, and one per accepted resend; resends issued in one batch share
    # one mail (the newest code: each would retire the one before). Never more than the cap.
    assert 2 <= await outbox_count(app, "flood@example.com") <= 5


async def test_resends_issued_together_mail_one_live_code(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(**limited()))
    await register(app.client, "twice@example.com")
    service = app.app.state.auth_service
    # Queued back to back, before the issuing task runs: one batch.
    for _ in range(3):
        service.queue_requested_code(
            "twice@example.com", Purpose.EMAIL_VERIFICATION, client_ip="192.0.2.1"
        )

    rows = await app.outbox()
    assert [row.recipient for row in rows] == ["twice@example.com"] * 2
    live = [
        row
        for row in await otp_rows(app, "twice@example.com")
        if not row.used and row.retired_at is None
    ]
    assert len(live) == 1
    assert rows[-1].otp_id == live[0].id


async def test_codes_issued_together_each_go_to_their_own_address(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(**limited()))
    emails = [f"batch{number}@example.com" for number in range(6)]
    for email in emails:
        await register(app.client, email)
    before = {row.id for row in await app.outbox()}
    service = app.app.state.auth_service
    for email in emails:  # back to back: one batch (one statement per kind on PostgreSQL)
        service.queue_requested_code(email, Purpose.EMAIL_VERIFICATION, client_ip="192.0.2.1")

    new_mails = [row for row in await app.outbox() if row.id not in before]
    assert sorted(row.recipient for row in new_mails) == emails
    for mail in new_mails:
        [live] = [
            row
            for row in await otp_rows(app, mail.recipient)
            if not row.used and row.retired_at is None
        ]
        assert mail.otp_id == live.id
        assert mail.send_before == live.expires_at
        # The mail's code is the live code of its own address.
        code = await code_in_mail(app, mail.recipient, 2)
        assert (await verify(app.client, mail.recipient, code)).status_code == 200


async def test_one_client_cannot_mail_many_addresses_past_its_cap(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(**limited(rate_limit_otp_issue_per_ip="3/hour")))
    for number in range(3):
        await verified_user(app, f"user{number}@example.com")
    app_outbox_before = len(await app.outbox())

    answers = [
        await request_reset(app.client, f"user{number}@example.com") for number in range(3)
    ] + [await request_reset(app.client, "user0@example.com")]

    # The registrations spent the client's 3 codes already: every reset is refused.
    assert [r.status_code for r in answers] == [429, 429, 429, 429]
    assert len(await app.outbox()) == app_outbox_before


async def test_registrations_per_client_are_capped(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(**limited(rate_limit_register_per_ip="2/hour")))

    answers = [await register(app.client, f"r{number}@example.com") for number in range(3)]

    assert [r.status_code for r in answers[:2]] == [201, 201]
    assert_rate_limited(answers[2])


# --- guessing codes ---------------------------------------------------------------------------


async def test_guessing_across_reissued_codes_stops_at_the_failure_budget(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    budget = "10/hour;50/day"
    app = await start_app(
        make_settings(
            **limited(rate_limit_verify_failures_per_email=budget, developer_otp="000000"),
            skip_email_verification=True,
        )
    )
    # Verified at registration: verifying would take a slot of the budget under test.
    assert (await register(app.client, "target@example.com")).status_code == 201
    wrong_guesses = 0
    refused = 0
    # The attacker loops {new code, 5 wrong guesses}: reissuing must not reset the budget.
    for _round in range(5):
        assert (await request_reset(app.client, "target@example.com")).status_code == 202
        for guess in range(5):
            response = await verify(
                app.client, "target@example.com", f"{guess + 1:06d}", "password_reset"
            )
            if response.status_code == 400:
                wrong_guesses += 1
            else:
                assert_rate_limited(response)
                refused += 1

    assert wrong_guesses == 10
    assert refused == 15
    # Even the right code is refused while the budget is spent: no guess gets through.
    assert_rate_limited(await verify(app.client, "target@example.com", "000000", "password_reset"))


async def test_simultaneous_wrong_guesses_check_at_most_the_failure_budget(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    """Review 17 (smaller): the budget was checked before a verification and charged after,
    so a burst of 40 wrong guesses got 33 checked against a budget of 10. A guess now takes
    its slot before it is checked: the rest are refused without looking at any code."""
    app = await start_app(
        make_settings(
            **limited(rate_limit_verify_failures_per_email="10/hour", otp_max_attempts=20),
            developer_otp="999999",
            skip_email_verification=True,
        )
    )
    # Verified at registration: verifying would take a slot of the budget under test.
    assert (await register(app.client, "burst@example.com")).status_code == 201
    assert (await request_reset(app.client, "burst@example.com")).status_code == 202
    await app.requested_codes_issued()

    answers = await asyncio.gather(
        *(
            verify(app.client, "burst@example.com", f"{guess:06d}", "password_reset")
            for guess in range(40)
        )
    )

    statuses = [answer.status_code for answer in answers]
    assert statuses.count(400) == 10, statuses
    assert statuses.count(429) == 30, statuses
    checked = [
        event
        for event in await audit_events(app, "burst@example.com")
        if event.purpose == "password_reset"
        and event.event in ("code_failed", "code_locked", "code_verified")
    ]
    assert len(checked) == 10


def test_the_documented_guessing_bound_follows_from_the_defaults() -> None:
    bound = guessing_bound(
        otp_length=6,
        max_attempts=5,
        failure_budget="10/hour;50/day",
        issue_budget="5/hour;20/day",
        resend_cooldown_seconds=60,
    )

    assert bound.guesses_per_day == 50
    assert bound.probability_per_day == pytest.approx(5e-5)
    assert bound.probability_per_year == pytest.approx(0.0181, abs=1e-4)


async def test_wrong_codes_for_unknown_addresses_spend_the_budget_alike(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(**limited(rate_limit_verify_failures_per_email="3/hour")))
    await register(app.client, "real@example.com")

    real = [await verify(app.client, "real@example.com", "999999") for _ in range(4)]
    ghost = [await verify(app.client, "ghost@example.com", "999999") for _ in range(4)]

    assert [comparable(r) for r in real] == [comparable(r) for r in ghost]
    assert [r.status_code for r in real] == [400, 400, 400, 429]


# --- passwords --------------------------------------------------------------------------------


async def test_wrong_passwords_lock_login_but_password_reset_still_works(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(
        make_settings(**limited(rate_limit_login_failures_per_email="3/15minutes"))
    )
    await verified_user(app, "locked@example.com")

    wrong = [await login(app.client, "locked@example.com", "not the password!") for _ in range(3)]
    assert [r.status_code for r in wrong] == [401, 401, 401]
    # Locked: even the right password is refused, before any hashing.
    assert_rate_limited(await login(app.client, "locked@example.com", STRONG_PASSWORD))

    assert (await request_reset(app.client, "locked@example.com")).status_code == 202
    code = await code_in_mail(app, "locked@example.com", 2)
    response = await confirm_reset(app.client, "locked@example.com", code, NEW_PASSWORD)
    assert response.status_code == 200


async def test_login_lockout_answers_alike_for_unknown_addresses(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(
        make_settings(**limited(rate_limit_login_failures_per_email="2/15minutes"))
    )
    await verified_user(app, "someone@example.com")

    known = [await login(app.client, "someone@example.com", "not the password!") for _ in range(3)]
    unknown = [await login(app.client, "no-one@example.com", "not the password!") for _ in range(3)]

    assert [comparable(r) for r in known] == [comparable(r) for r in unknown]
    assert [r.status_code for r in known] == [401, 401, 429]


async def test_login_attempts_per_client_are_capped(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(**limited(rate_limit_login_per_ip="3/15minutes")))

    answers = [
        await login(app.client, f"spray{number}@example.com", "guess guess guess")
        for number in range(4)
    ]

    assert [r.status_code for r in answers[:3]] == [401, 401, 401]
    assert_rate_limited(answers[3])


# --- client addresses -------------------------------------------------------------------------


async def _register_from(
    client: httpx.AsyncClient, email: str, forwarded_for: str | list[str]
) -> int:
    lines = [forwarded_for] if isinstance(forwarded_for, str) else forwarded_for
    response = await client.post(
        f"{API}/register",
        json={
            "email": email,
            "password": STRONG_PASSWORD,
            "first_name": "Test",
            "last_name": "User",
            "accept_terms": True,
        },
        headers=[("X-Forwarded-For", line) for line in lines],
    )
    return response.status_code


async def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(**limited(rate_limit_register_per_ip="1/hour")))

    first = await _register_from(app.client, "a@example.com", "203.0.113.1")
    spoofed = await _register_from(app.client, "b@example.com", "203.0.113.2")

    # The socket peer (127.0.0.1) is not trusted: a forged header does not buy a new budget.
    assert (first, spoofed) == (201, 429)


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(
        make_settings(
            **limited(rate_limit_register_per_ip="1/hour"), trusted_proxies=["127.0.0.0/8"]
        )
    )

    one = await _register_from(app.client, "a@example.com", "203.0.113.1")
    two = await _register_from(app.client, "b@example.com", "203.0.113.2")
    one_again = await _register_from(app.client, "c@example.com", "203.0.113.1")
    # A client prepending its own entry does not escape: the right-most untrusted hop counts.
    forged = await _register_from(app.client, "d@example.com", "198.51.100.7, 203.0.113.2")

    assert (one, two, one_again, forged) == (201, 201, 429, 429)


async def test_a_forged_first_forwarded_line_does_not_buy_a_budget(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    # A proxy that adds a line of its own (HAProxy's option forwardfor) instead of appending
    # leaves the client's forged line first: every line counts, in order, as one list of hops.
    app = await start_app(
        make_settings(
            **limited(rate_limit_register_per_ip="1/hour"), trusted_proxies=["127.0.0.0/8"]
        )
    )

    answers = [
        await _register_from(app.client, f"user{n}@example.com", [f"198.51.100.{n}", "203.0.113.5"])
        for n in range(12)
    ]

    assert answers == [201] + [429] * 11


# --- shared between processes (Redis) ---------------------------------------------------------


async def test_two_instances_share_budgets_through_redis(
    start_app: StartApp, make_settings: SettingsFactory, redis_db: str
) -> None:
    settings = make_settings(
        **limited(rate_limit_login_failures_per_email="2/15minutes"),
        rate_limit_storage_url=redis_db,
    )
    first = await start_app(settings)
    second = await start_app(settings)

    answers = [
        await login(first.client, "shared@example.com", "not the password!"),
        await login(second.client, "shared@example.com", "not the password!"),
        await login(first.client, "shared@example.com", "not the password!"),
        await login(second.client, "shared@example.com", "not the password!"),
    ]

    assert [r.status_code for r in answers] == [401, 401, 429, 429]


async def test_readiness_reports_the_redis_storage(
    start_app: StartApp, make_settings: SettingsFactory, redis_db: str
) -> None:
    app = await start_app(make_settings(rate_limit_storage_url=redis_db))

    response = await app.client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"]["rate_limit_storage"] == "ok"


async def test_readiness_names_an_unreachable_redis(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(rate_limit_storage_url="redis://127.0.0.1:1/0"))

    response = await app.client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["rate_limit_storage"] == "failed"
