"""The operating commands as an operator runs them: doctor (against moto and a real SMTP
server), send-test, outbox list/stats/retry, purge and why, on a database the running app wrote.

The app runs in the test's event loop; each command runs in a thread (it has its own loop),
reading and writing the same database, as a second process would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner, Result

from taxease_auth.cli import app as cli
from taxease_auth.clock import ManualClock
from taxease_auth.store.db import make_sessionmaker
from taxease_auth.store.models import EmailOutbox, Session
from tests.api.conftest import login_token, me, register, request_otp, verified_user, verify
from tests.conftest import (
    REGION,
    SENDER,
    STRONG_PASSWORD,
    TEST_SECRET_KEY,
    RunningApp,
    SesInbox,
    SettingsFactory,
    StartApp,
    extract_code,
)
from tests.smtp_server import SmtpServer, free_port, running_smtp_server

EMAIL = "operator-case@example.com"


@pytest.fixture(autouse=True)
def _empty_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI reads ./.env: run where there is none."""
    monkeypatch.chdir(tmp_path)


def run(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(cli, args, env={"COLUMNS": "200", **env})


def assert_no_crash(result: Result) -> None:
    """The command ended by its own decision (an exit status), not by an exception."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )


async def run_async(args: list[str], env: dict[str, str]) -> Result:
    """The command in a thread: it runs its own event loop, beside the app's."""
    return await asyncio.to_thread(run, args, env)


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    return {"DEVELOPMENT_MODE": "true", "DATABASE_URL": database_url}


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with running_smtp_server() as server:
        yield server


def smtp_overrides(server: SmtpServer) -> dict[str, Any]:
    return {
        "email_backend": "smtp",
        "smtp_host": server.host,
        "smtp_port": server.port,
        "smtp_security": "none",
        "aws_ses_from_email": SENDER,
    }


async def app_refused_by_smtp(
    start_app: StartApp,
    make_settings: SettingsFactory,
    server: SmtpServer,
    reply: str,
    *,
    clock: ManualClock | None = None,
) -> RunningApp:
    """The app sending through ``server``, which answers RCPT TO with ``reply`` (a 5xx: the
    mail fails permanently), after one registration of EMAIL."""
    server.handler.rcpt_reply = reply
    running = await start_app(make_settings(**smtp_overrides(server)), clock=clock)
    assert (await register(running.client, EMAIL)).status_code == 201
    await running.settled_outbox()
    return running


async def wait_for_status(running: RunningApp, row_id: int, status: str) -> EmailOutbox:
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        [row] = [row for row in await running.outbox() if row.id == row_id]
        if row.status == status:
            return row
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"outbox row {row_id} is {row.status}, not {status}")
        await asyncio.sleep(0.02)


async def secrets_in_database(running: RunningApp) -> list[str]:
    """Every code hash and pending password hash stored: none may ever be printed."""
    async with running.app.state.engine.connect() as connection:
        rows = (
            await connection.execute(text("SELECT code_hash, pending_password_hash FROM otps"))
        ).all()
    return [value for row in rows for value in row if value]


# --- help ------------------------------------------------------------------------------------


def test_help_lists_the_operating_commands() -> None:
    result = run(["--help"], {})

    assert result.exit_code == 0
    for command in ("doctor", "send-test", "outbox", "purge", "why"):
        assert command in result.stdout
    outbox_help = run(["outbox", "--help"], {})
    for command in ("list", "stats", "retry"):
        assert command in outbox_help.stdout


# --- why -------------------------------------------------------------------------------------


async def test_why_shows_the_account_codes_and_their_mail(
    dev_app: RunningApp, env: dict[str, str]
) -> None:
    assert (await register(dev_app.client, EMAIL)).status_code == 201
    code = await dev_app.latest_code(EMAIL)
    assert (await verify(dev_app.client, EMAIL, code)).status_code == 200
    reset = await dev_app.client.post("/api/v1/auth/password-reset/request", json={"email": EMAIL})
    assert reset.status_code == 202
    reset_code = await dev_app.latest_code(EMAIL, count=2)
    await dev_app.settled_outbox()

    # As the user typed it: the command canonicalises it.
    result = await run_async(["why", "  Operator-Case@EXAMPLE.com "], env)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"why {EMAIL}" in out
    assert "account     verified" in out
    lines = out.splitlines()
    [reset_line] = [line for line in lines if "password_reset" in line and "code #" in line]
    [verification_line] = [
        line for line in lines if "email_verification" in line and "code #" in line
    ]
    assert "live" in reset_line
    assert "tries 0/5" in reset_line
    assert "used" in verification_line
    assert out.count("sent ") >= 2
    assert "provider id console-" in out
    assert "verdict     the newest code (password_reset) was accepted" in out
    # Never a code, a code hash, a password hash or a body.
    for secret in (code, reset_code, *await secrets_in_database(dev_app)):
        assert secret not in out
    assert "<html" not in out


async def test_why_for_an_unknown_address(env: dict[str, str]) -> None:
    result = await run_async(["why", "nobody@example.com"], env)

    assert result.exit_code == 0
    assert "account     none" in result.stdout
    assert "nothing is stored for this address" in result.stdout


def test_why_refuses_an_unusable_address(env: dict[str, str]) -> None:
    result = run(["why", "not-an-address"], env)

    assert result.exit_code == 2
    assert "not a usable email address" in result.stderr


def test_why_with_ses_says_what_the_suppression_list_cannot_tell(
    env: dict[str, str], ses: SesInbox
) -> None:
    result = run(["why", EMAIL], {**env, **ses_env(ses)})

    assert result.exit_code == 0, result.output
    assert "suppression UNKNOWN: the endpoint cannot tell" in result.stdout


# --- a failed mail: why, outbox list/stats, retry ---------------------------------------------


async def test_a_refused_mail_is_explained_then_retried_and_delivered(
    start_app: StartApp,
    make_settings: SettingsFactory,
    smtp_server: SmtpServer,
    env: dict[str, str],
) -> None:
    running = await app_refused_by_smtp(
        start_app, make_settings, smtp_server, "550 5.1.1 Mailbox unavailable"
    )
    [row] = await running.outbox()
    assert row.status == "failed"

    why = await run_async(["why", EMAIL], env)
    listed = await run_async(["outbox", "list", "--status", "failed"], env)
    stats = await run_async(["outbox", "stats"], env)

    assert "failed: SMTP rcpt 550: 5.1.1 Mailbox unavailable" in why.stdout
    assert f"`taxease-auth outbox retry {row.id}` sends it again" in why.stdout
    assert f"#{row.id}" in listed.stdout
    assert EMAIL in listed.stdout
    assert "last error: SMTP rcpt 550:" in listed.stdout
    assert "0 pending, 0 sent, 1 failed, 0 expired" in stats.stdout
    assert "1  SMTP rcpt 550: 5.1.1 Mailbox unavailable" in stats.stdout

    smtp_server.handler.rcpt_reply = None  # the mailbox works again
    retried = await run_async(["outbox", "retry", str(row.id)], env)

    assert retried.exit_code == 0, retried.output
    assert "pending again" in retried.stdout
    sent = await wait_for_status(running, row.id, "sent")
    assert sent.attempts == 2
    [received] = await smtp_server.handler.wait_for(1)
    code = extract_code(received.body("plain"))
    assert (await verify(running.client, EMAIL, code)).status_code == 200
    again = await run_async(["outbox", "retry", str(row.id)], env)
    assert again.exit_code == 1
    assert f"outbox row {row.id} is sent: only failed rows are retried" in again.stdout


async def test_retry_refuses_a_code_replaced_by_a_newer_one(
    start_app: StartApp,
    make_settings: SettingsFactory,
    smtp_server: SmtpServer,
    env: dict[str, str],
) -> None:
    running = await app_refused_by_smtp(start_app, make_settings, smtp_server, "550 No user")
    # A resend: a new code for the registration, its first code retired.
    assert (await request_otp(running.client, EMAIL)).status_code == 202
    first, second = await running.settled_outbox()

    result = await run_async(["outbox", "retry", str(first.id)], env)

    assert result.exit_code == 1
    assert "replaced by a newer one" in result.stdout
    assert second.status == "failed"


async def test_retry_refuses_an_expired_code(
    start_app: StartApp,
    make_settings: SettingsFactory,
    smtp_server: SmtpServer,
    env: dict[str, str],
) -> None:
    # The app's clock is an hour behind: by the operator's clock, its code has expired.
    clock = ManualClock(datetime.now(UTC) - timedelta(hours=1))
    running = await app_refused_by_smtp(
        start_app, make_settings, smtp_server, "550 No user", clock=clock
    )
    [row] = await running.outbox()

    result = await run_async(["outbox", "retry", str(row.id)], env)
    missing = await run_async(["outbox", "retry", "9999"], env)

    assert result.exit_code == 1
    assert "expired" in result.stdout
    assert "the user must ask for a new one" in result.stdout
    assert missing.exit_code == 1
    assert "no outbox row 9999" in missing.stdout


def test_outbox_commands_on_an_empty_outbox(env: dict[str, str]) -> None:
    assert "no failed outbox rows" in run(["outbox", "list", "--status", "failed"], env).stdout
    stats = run(["outbox", "stats"], env)
    assert stats.exit_code == 0
    assert "pending: none" in stats.stdout


def test_outbox_list_refuses_an_unknown_status(env: dict[str, str]) -> None:
    result = run(["outbox", "list", "--status", "lost"], env)

    assert result.exit_code == 2


# --- purge -----------------------------------------------------------------------------------


async def test_purge_removes_old_codes_and_rows_and_keeps_recent_ones(
    start_app: StartApp, make_settings: SettingsFactory, env: dict[str, str]
) -> None:
    # The app lives a month in the past, then catches up with the operator's clock. Its
    # worker's own scheduled purge would then race the command under test: it is off.
    clock = ManualClock(datetime.now(UTC) - timedelta(days=30))
    running = await start_app(make_settings(housekeeping_interval_seconds=0), clock=clock)
    await register(running.client, "old@example.com")
    await running.console_mail("old@example.com")
    clock.advance(datetime.now(UTC) - clock.now())
    await register(running.client, "recent@example.com")
    await running.console_mail("recent@example.com")
    await running.settled_outbox()

    dry = await run_async(["purge", "--dry-run"], env)

    assert dry.exit_code == 0, dry.output
    assert "would delete 1 code(s)" in dry.stdout
    assert "would delete 1 final outbox row(s) older than 7 day(s)" in dry.stdout
    assert "dry run: nothing changed" in dry.stdout
    assert len(await running.outbox()) == 2

    done = await run_async(["purge"], env)

    assert "deleted 1 code(s)" in done.stdout
    assert "deleted 1 final outbox row(s)" in done.stdout
    assert [row.recipient for row in await running.outbox()] == ["recent@example.com"]
    gone = await run_async(["why", "old@example.com"], env)
    assert "nothing is stored" in gone.stdout
    kept = await run_async(["why", "recent@example.com"], env)
    assert "code #" in kept.stdout


# --- send-test -------------------------------------------------------------------------------


def test_send_test_through_the_console(env: dict[str, str]) -> None:
    result = run(["send-test", "Someone@Example.com"], env)

    assert result.exit_code == 0, result.output
    assert "To: someone@example.com" in result.stdout
    assert "Subject: TaxEase test mail" in result.stdout
    assert "provider message id: console-test-" in result.stdout


def test_send_test_through_smtp(env: dict[str, str], smtp_server: SmtpServer) -> None:
    result = run(["send-test", "someone@example.com"], {**env, **smtp_env(smtp_server)})

    assert result.exit_code == 0, result.output
    assert "provider message id: 4QxYz1" in result.stdout
    [received] = smtp_server.handler.messages()
    assert received.rcpt_tos == ["someone@example.com"]
    assert received.message["Subject"] == "TaxEase test mail"
    assert "test mail from TaxEase" in received.body("plain")


def test_send_test_reports_a_classified_failure(
    env: dict[str, str], smtp_server: SmtpServer
) -> None:
    smtp_server.handler.mail_reply = "553 5.7.1 Sender address rejected"
    refused = run(["send-test", "someone@example.com"], {**env, **smtp_env(smtp_server)})
    down = run(
        ["send-test", "someone@example.com"],
        {**env, **smtp_env(smtp_server), "SMTP_PORT": str(free_port())},
    )

    assert refused.exit_code == 1
    assert "not sent (permanent, account-wide" in refused.stdout
    assert "SMTP mail 553: 5.7.1 Sender address rejected" in refused.stdout
    assert down.exit_code == 1
    assert "not sent (transient" in down.stdout
    assert_no_crash(down)


def test_send_test_through_ses(env: dict[str, str], ses: SesInbox) -> None:
    ses.verify_identity(SENDER)

    result = run(["send-test", "someone@example.com"], {**env, **ses_env(ses)})

    assert result.exit_code == 0, result.output
    [stored] = ses.messages("someone@example.com")
    assert stored["subject"] == "TaxEase test mail"
    assert f"provider message id: {stored['id']}" in result.stdout


# --- doctor ----------------------------------------------------------------------------------


def ses_env(ses: SesInbox, **extra: str) -> dict[str, str]:
    return {
        "EMAIL_BACKEND": "ses",
        "AWS_SES_FROM_EMAIL": f"TaxEase <{SENDER}>",
        "AWS_ENDPOINT_URL": ses.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        **extra,
    }


def smtp_env(server: SmtpServer) -> dict[str, str]:
    return {
        "EMAIL_BACKEND": "smtp",
        "SMTP_HOST": server.host,
        "SMTP_PORT": str(server.port),
        "SMTP_SECURITY": "none",
        "AWS_SES_FROM_EMAIL": SENDER,
    }


def lines_of(result: Result) -> dict[str, str]:
    """Each check's line by its name (the word(s) after the status)."""
    checks = {}
    for line in result.stdout.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("PASS", "FAIL", "UNKNOWN"):
            name = rest.strip().split("  ")[0]
            checks[name] = line
    return checks


def test_doctor_with_the_sender_verified(env: dict[str, str], ses: SesInbox) -> None:
    ses.verify_identity(SENDER)

    result = run(["doctor"], {**env, **ses_env(ses)})

    assert result.exit_code == 0, result.output
    checks = lines_of(result)
    assert checks["region"].startswith("PASS")
    assert checks["credentials"].startswith("PASS")
    # moto's quirk: VerifiedForSendingStatus is always false; VerificationStatus says SUCCESS.
    identity = checks["sender identity"]
    assert identity.startswith("UNKNOWN")
    assert "VerificationStatus=SUCCESS" in identity
    assert "moto" in identity
    # moto has no GetAccount: what only it can tell is unknown, not a crash and not a FAIL.
    assert checks["production access"].startswith("UNKNOWN")
    assert "cannot tell" in checks["production access"]
    assert checks["sending enabled"].startswith("UNKNOWN")
    assert checks["quota"].startswith("PASS")
    assert "0 of 200 used in the last 24 h, 200 left" in checks["quota"]
    assert checks["send rate"].startswith("PASS")
    assert checks["configuration set"].startswith("PASS")
    assert_no_crash(result)


def test_doctor_with_the_sender_not_verified(env: dict[str, str], ses: SesInbox) -> None:
    result = run(["doctor"], {**env, **ses_env(ses)})

    assert result.exit_code == 1
    identity = lines_of(result)["sender identity"]
    assert identity.startswith("FAIL")
    assert f"neither {SENDER} nor taxease.example is an SES identity in {REGION}" in identity
    assert "fix: SES console (ca-central-1) → Verified identities → Create identity" in (
        result.stdout
    )


def test_doctor_with_the_sender_domain_verified(env: dict[str, str], ses: SesInbox) -> None:
    ses.verify_identity("taxease.example")

    result = run(["doctor"], {**env, **ses_env(ses)})

    assert "taxease.example (domain)" in lines_of(result)["sender identity"]


def test_doctor_checks_the_configuration_set(env: dict[str, str], ses: SesInbox) -> None:
    ses.verify_identity(SENDER)
    missing = run(["doctor"], {**env, **ses_env(ses, AWS_SES_CONFIGURATION_SET="otp-events")})
    ses.client().create_configuration_set(ConfigurationSetName="otp-events")
    present = run(["doctor"], {**env, **ses_env(ses, AWS_SES_CONFIGURATION_SET="otp-events")})

    assert missing.exit_code == 1
    assert lines_of(missing)["configuration set"].startswith("FAIL")
    assert "otp-events does not exist" in missing.stdout
    assert present.exit_code == 0, present.output
    # moto reports every configuration set as paused: against an emulator that is not final.
    assert lines_of(present)["configuration set"].startswith("UNKNOWN")


def test_doctor_flags_a_send_rate_above_the_quota(env: dict[str, str], ses: SesInbox) -> None:
    ses.verify_identity(SENDER)

    result = run(["doctor"], {**env, **ses_env(ses, SES_MAX_SEND_RATE="50")})

    assert result.exit_code == 1
    assert lines_of(result)["send rate"].startswith("FAIL")
    assert "SES_MAX_SEND_RATE=50/s is above SES's MaxSendRate 1/s" in result.stdout


def test_doctor_flags_a_used_up_daily_quota(env: dict[str, str], ses: SesInbox) -> None:
    ses.verify_identity(SENDER)
    client = ses.client()
    for number in range(200):  # moto's fixed Max24HourSend
        client.send_email(
            FromEmailAddress=SENDER,
            Destination={"ToAddresses": [f"user{number}@example.org"]},
            Content={"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}}},
        )

    result = run(["doctor"], {**env, **ses_env(ses)})

    assert result.exit_code == 1
    assert lines_of(result)["quota"].startswith("FAIL")
    assert "used up: 200 of 200" in result.stdout


def test_doctor_when_ses_cannot_be_reached(env: dict[str, str], ses: SesInbox) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"

    result = run(["doctor"], {**env, **ses_env(ses, AWS_ENDPOINT_URL=unreachable)})

    assert result.exit_code == 1
    checks = lines_of(result)
    assert checks["credentials"].startswith("FAIL")
    assert "cannot reach SES" in checks["credentials"]
    assert checks["sender identity"].startswith("UNKNOWN")
    assert_no_crash(result)


@pytest.mark.parametrize(
    ("profile", "expected"),
    [(None, "no AWS credentials found"), ("absent-profile", "ProfileNotFound")],
)
def test_doctor_without_credentials(
    env: dict[str, str], ses: SesInbox, tmp_path: Path, profile: str | None, expected: str
) -> None:
    nowhere = str(tmp_path / "absent")
    no_keys = {
        name: value
        for name, value in ses_env(ses).items()
        if name not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    files = {"AWS_SHARED_CREDENTIALS_FILE": nowhere, "AWS_CONFIG_FILE": nowhere}
    if profile is not None:
        files["AWS_PROFILE"] = profile

    result = run(["doctor"], {**env, **no_keys, **files})

    assert result.exit_code == 1, result.output
    assert lines_of(result)["credentials"].startswith("FAIL")
    assert expected in result.stdout
    assert_no_crash(result)


def test_doctor_with_an_unusable_region(env: dict[str, str], ses: SesInbox) -> None:
    result = run(["doctor"], {**env, **ses_env(ses, AWS_REGION="canada-central")})

    assert result.exit_code == 1
    assert lines_of(result)["region"].startswith("FAIL")


def test_doctor_with_smtp(env: dict[str, str], smtp_server: SmtpServer) -> None:
    working = run(["doctor"], {**env, **smtp_env(smtp_server)})
    down = run(["doctor"], {**env, **smtp_env(smtp_server), "SMTP_PORT": str(free_port())})

    assert working.exit_code == 0, working.output
    assert lines_of(working)["smtp"].startswith("PASS")
    assert smtp_server.handler.messages() == []  # the check sends nothing
    assert down.exit_code == 1
    assert lines_of(down)["smtp"].startswith("FAIL")


def test_doctor_in_development_with_the_console(env: dict[str, str]) -> None:
    result = run(["doctor"], env)

    assert result.exit_code == 0
    assert "EMAIL_BACKEND=console" in result.stdout


def test_doctor_with_invalid_configuration_exits_2(env: dict[str, str]) -> None:
    result = run(["doctor"], {**env, "OTP_LENGTH": "4"})

    assert result.exit_code == 2
    assert "OTP_LENGTH" in result.stderr


# --- the pieces the commands share -----------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (59, "59s"), (61, "1m 1s"), (3725, "1h 2m"), (90061, "1d 1h")],
)
def test_ages_read_as_two_units(seconds: int, shown: str) -> None:
    from taxease_auth.operations import age

    assert age(timedelta(seconds=seconds)) == shown


# --- audit -----------------------------------------------------------------------------------


async def test_audit_lists_an_addresss_events_found_by_fingerprint(
    start_app: StartApp, make_settings: SettingsFactory, env: dict[str, str]
) -> None:
    running = await start_app(make_settings())
    await register(running.client, "Audited@Example.com")
    await register(running.client, "other@example.com")
    await running.requested_codes_issued()  # code_issued is written after the 201
    await running.client.post(
        "/api/v1/auth/login", json={"email": "audited@example.com", "password": "wrong password!!"}
    )

    # The operator's SECRET_KEY is the service's: fingerprints are keyed.
    keyed = {**env, "SECRET_KEY": TEST_SECRET_KEY}
    result = await run_async(["audit", "--email", " AUDITED@example.com"], keyed)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()[1:]
    assert [line.split()[3] for line in lines] == ["login_failed", "code_issued"]
    assert "audited@example.com" not in result.stdout  # the trail never held the address
    everything = await run_async(["audit"], keyed)
    assert len(everything.stdout.splitlines()) == 1 + 3
    other_key = await run_async(["audit", "--email", "audited@example.com"], env)
    assert other_key.stdout.startswith("no audit events")


async def test_purge_drops_audit_events_past_their_retention(
    start_app: StartApp, make_settings: SettingsFactory, env: dict[str, str]
) -> None:
    clock = ManualClock(datetime.now(UTC) - timedelta(days=30))
    running = await start_app(make_settings(), clock=clock)
    await register(running.client, "old@example.com")
    await running.requested_codes_issued()  # its audit event is written after the 201
    clock.advance(datetime.now(UTC) - clock.now())
    await register(running.client, "recent@example.com")
    await running.requested_codes_issued()

    kept = await run_async(["purge"], {**env, "AUDIT_RETENTION_DAYS": "90"})
    dropped = await run_async(["purge"], {**env, "AUDIT_RETENTION_DAYS": "7"})

    assert "deleted 0 audit event(s) older than 90 day(s)" in kept.stdout
    assert "deleted 1 audit event(s) older than 7 day(s)" in dropped.stdout
    remaining = await run_async(["audit"], env)
    assert len(remaining.stdout.splitlines()) == 1 + 1


async def _session_ids(running: RunningApp) -> set[str]:
    async with make_sessionmaker(running.app.state.engine)() as session:
        return set((await session.scalars(select(Session.id))).all())


async def test_purge_drops_dead_sessions_and_keeps_live_ones(
    start_app: StartApp, make_settings: SettingsFactory, env: dict[str, str]
) -> None:
    clock = ManualClock(datetime.now(UTC) - timedelta(days=30))
    running = await start_app(make_settings(), clock=clock)
    await verified_user(running, "sessions@example.com")
    await login_token(running.client, "sessions@example.com", STRONG_PASSWORD)  # then idle
    ended = await login_token(running.client, "sessions@example.com", STRONG_PASSWORD)
    logout = await running.client.post(
        "/api/v1/auth/logout", headers={"Authorization": f"Bearer {ended}"}
    )
    assert logout.status_code == 204, logout.text
    clock.advance(datetime.now(UTC) - clock.now())
    live = await login_token(running.client, "sessions@example.com", STRONG_PASSWORD)
    assert len(await _session_ids(running)) == 3

    dry = await run_async(["purge", "--dry-run"], env)
    assert "would delete 2 session(s) ended, expired or idle" in dry.stdout
    done = await run_async(["purge"], env)

    assert "deleted 2 session(s) ended, expired or idle" in done.stdout
    [kept] = await _session_ids(running)
    assert jwt.decode(live, options={"verify_signature": False})["sid"] == kept
    assert (await me(running.client, live)).status_code == 200
