"""Logs never hold a code, a password, a token, a key or a full email address (DESIGN.md §5).

Every route is driven with the service's own logging set-up (``configure_logging``) at
LOG_LEVEL=DEBUG, mail going through SES (moto) with distinctive fake credentials. Then every
record is checked as captured (message and arguments), as formatted by both formatters, and
as the handler really wrote it to stderr.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from taxease_auth.config import Settings
from taxease_auth.logs import ConsoleFormatter, JsonFormatter, configure_logging
from tests.conftest import (
    SENDER,
    STRONG_PASSWORD,
    TEST_SECRET_KEY,
    SesInbox,
    SettingsFactory,
    StartApp,
    extract_code,
)

AWS_SECRET = "fake-secret-for-log-test-0000"
AWS_KEY_ID = "fake-key-id-for-log-test"
NEW_PASSWORD = "a different horse battery staple"
WRONG_PASSWORD = "definitely not the password 42"
EMAIL = "log-test@example.com"
MASKED = "l***@example.com"
STRANGER = "stranger@example.com"

ConfigureLogging = Callable[[Settings], None]


@pytest.fixture
def service_logging(caplog: pytest.LogCaptureFixture) -> Iterator[ConfigureLogging]:
    """Apply ``configure_logging(settings)`` as `serve` does, keeping pytest's capture handlers
    (so caplog still sees everything), and undo it after the test."""
    caplog.set_level(logging.DEBUG)
    root = logging.getLogger()
    saved_level = root.level
    saved_levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    added: list[logging.Handler] = []

    def apply(settings: Settings) -> None:
        before = root.handlers[:]
        configure_logging(settings)
        added.extend(handler for handler in root.handlers if handler not in before)
        root.handlers[:] = [*before, *added]

    yield apply
    for handler in added:
        root.removeHandler(handler)
    root.setLevel(saved_level)
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)


@dataclass
class Secrets:
    """What must never be logged, collected while the flow runs."""

    values: set[str] = field(
        default_factory=lambda: {
            STRONG_PASSWORD,
            NEW_PASSWORD,
            WRONG_PASSWORD,
            TEST_SECRET_KEY,
            AWS_SECRET,
            AWS_KEY_ID,
        }
    )

    def add(self, value: str) -> str:
        self.values.add(value)
        return value


def log_settings(ses_settings: SettingsFactory, **overrides: object) -> Settings:
    return ses_settings(
        aws_access_key_id=AWS_KEY_ID,
        aws_secret_access_key=AWS_SECRET,
        log_level="DEBUG",
        otp_resend_cooldown_seconds=0,
        **overrides,
    )


def renderings(record: logging.LogRecord) -> list[str]:
    """The record as captured and as each formatter writes it (JSON without its timestamp,
    whose microseconds are digits that could collide with a code)."""
    as_json = json.loads(JsonFormatter().format(record))
    del as_json["time"]
    return [
        record.getMessage(),
        repr(record.msg),
        repr(record.args),
        ConsoleFormatter().format(record),
        json.dumps(as_json),
    ]


def stream_lines(stderr: str) -> list[str]:
    """What the handler wrote, as text, JSON lines without their timestamp."""
    lines = []
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            lines.append(line)
            continue
        entry.pop("time", None)
        lines.append(json.dumps(entry))
    return lines


def assert_nothing_leaked(
    caplog: pytest.LogCaptureFixture, stderr: str, secrets: Secrets, emails: list[str]
) -> None:
    records = caplog.records
    assert any(r.name.startswith("taxease_auth") for r in records)
    written = stream_lines(stderr)
    if written:
        assert any(MASKED in line for line in written), "the handler should have written"
    texts = [text for record in records for text in renderings(record)] + written
    assert any(MASKED in text for text in texts), "the masked address should be logged"
    for secret in sorted(secrets.values):
        leaks = [text for text in texts if secret in text]
        assert not leaks, f"{secret!r} logged: {leaks[:3]}"
    for email in emails:
        leaks = [text for text in texts if email in text]
        assert not leaks, f"full address {email!r} logged: {leaks[:3]}"


async def codes_mailed(ses: SesInbox, count: int) -> list[str]:
    mails = await ses.wait_for(EMAIL, count)
    return [extract_code(mail["body"]) for mail in mails if _has_code(mail["body"])]


def _has_code(body: str) -> bool:
    try:
        extract_code(body)
    except AssertionError:
        return False
    return True


_LINK_TOKEN = re.compile(r"/c/([A-Za-z0-9_-]{22})")
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def link_tokens(mails: list[dict[str, str]]) -> list[str]:
    """The mail link tokens (DESIGN.md §12) in ``mails``, in order."""
    return [token for mail in mails for token in _LINK_TOKEN.findall(mail["body"])]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


REGISTRATION = {
    "email": EMAIL,
    "password": STRONG_PASSWORD,
    "first_name": "Log",
    "last_name": "Tester",
    "accept_terms": True,
}


async def test_no_secret_or_address_in_logs_across_every_route(
    start_app: StartApp,
    ses: SesInbox,
    ses_settings: SettingsFactory,
    service_logging: ConfigureLogging,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ses.verify_identity(SENDER)
    settings = log_settings(
        ses_settings, log_format="json", public_base_url="http://127.0.0.1:8001"
    )
    service_logging(settings)
    running = await start_app(settings)
    client = running.client
    secrets = Secrets()

    # register, a resend, a wrong code, the retired first code, the right code
    assert (await client.post("/api/v1/auth/register", json=REGISTRATION)).status_code == 201
    [first] = await codes_mailed(ses, 1)
    secrets.add(first)
    requested = await client.post(
        "/api/v1/auth/request-otp", json={"email": EMAIL, "purpose": "email_verification"}
    )
    assert requested.status_code == 202
    second = secrets.add((await codes_mailed(ses, 2))[-1])
    wrong = "000000" if "000000" not in (first, second) else "999999"
    verify = {"email": EMAIL, "purpose": "email_verification"}
    assert (
        await client.post("/api/v1/auth/verify-otp", json={**verify, "code": wrong})
    ).status_code == 400
    if first != second:
        retired = await client.post("/api/v1/auth/verify-otp", json={**verify, "code": first})
        assert retired.status_code == 400
    verified = await client.post("/api/v1/auth/verify-otp", json={**verify, "code": second})
    assert verified.status_code == 200

    # login: right, wrong password, unknown address; then /me
    logged_in = await client.post(
        "/api/v1/auth/login", json={"email": EMAIL, "password": STRONG_PASSWORD}
    )
    assert logged_in.status_code == 200
    token = secrets.add(logged_in.json()["access_token"])
    for attempt in (
        {"email": EMAIL, "password": WRONG_PASSWORD},
        {"email": STRANGER, "password": STRONG_PASSWORD},
    ):
        assert (await client.post("/api/v1/auth/login", json=attempt)).status_code == 401
    assert (await client.get("/api/v1/auth/me", headers=bearer(token))).status_code == 200
    assert (
        await client.get("/api/v1/auth/me", headers=bearer(token[:-4] + "AAAA"))
    ).status_code == 401

    # password reset: request, check the code, confirm; the old token dies; new login
    reset = await client.post("/api/v1/auth/password-reset/request", json={"email": EMAIL})
    assert reset.status_code == 202
    unknown_reset = await client.post(
        "/api/v1/auth/password-reset/request", json={"email": STRANGER}
    )
    assert unknown_reset.status_code == 202
    reset_code = secrets.add((await codes_mailed(ses, 3))[-1])
    checked = await client.post(
        "/api/v1/auth/verify-otp",
        json={"email": EMAIL, "code": reset_code, "purpose": "password_reset"},
    )
    assert checked.status_code == 200
    confirmed = await client.post(
        "/api/v1/auth/password-reset/confirm",
        json={"email": EMAIL, "code": reset_code, "new_password": NEW_PASSWORD},
    )
    assert confirmed.status_code == 200, confirmed.text
    assert (await client.get("/api/v1/auth/me", headers=bearer(token))).status_code == 401
    relogged = await client.post(
        "/api/v1/auth/login", json={"email": EMAIL, "password": NEW_PASSWORD}
    )
    assert relogged.status_code == 200
    new_token = secrets.add(relogged.json()["access_token"])
    assert (await client.get("/api/v1/auth/me", headers=bearer(new_token))).status_code == 200

    # registering the verified address again: a notice to the owner, same answer
    assert (await client.post("/api/v1/auth/register", json=REGISTRATION)).status_code == 201
    await ses.wait_for(EMAIL, 5)  # code, code, reset code, password changed, account exists

    # the mail link of a new reset code: a scanner's GET, the button, the dead link after it
    reset = await client.post("/api/v1/auth/password-reset/request", json={"email": EMAIL})
    assert reset.status_code == 202
    mails = await ses.wait_for(EMAIL, 6)
    for value in [*link_tokens(mails), *(await codes_mailed(ses, 6))]:
        secrets.add(value)
    link = f"/c/{link_tokens(mails)[-1]}"
    # Production cookies are Secure: the browser reaches the pages over HTTPS. This test's
    # own client (httpx, which the service never uses) logs the URLs it asks for: quieted, so
    # only the service's lines are judged.
    test_client_logger = logging.getLogger("httpx")
    test_client_logger.disabled = True
    try:
        async with httpx.AsyncClient(
            transport=client._transport, base_url="https://testserver"
        ) as browser:
            shown = await browser.get(link)
            assert shown.status_code == 200
            csrf = _CSRF.search(shown.text)
            assert csrf is not None
            pressed = await browser.post(link, data={"csrf_token": csrf.group(1)})
            assert pressed.headers.get("location") == "/reset"
            assert (await browser.get(link)).status_code == 400
    finally:
        test_client_logger.disabled = False
    await running.settled_outbox()

    stderr = capsys.readouterr().err
    assert '"logger": "taxease_auth.auth.service"' in stderr  # LOG_FORMAT=json on the stream
    assert_nothing_leaked(caplog, stderr, secrets, [EMAIL, STRANGER])


async def test_no_secret_or_address_in_logs_with_login_codes(
    start_app: StartApp,
    ses: SesInbox,
    ses_settings: SettingsFactory,
    service_logging: ConfigureLogging,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ses.verify_identity(SENDER)
    settings = log_settings(ses_settings, log_format="console", login_otp_required=True)
    service_logging(settings)
    running = await start_app(settings)
    client = running.client
    secrets = Secrets()

    assert (await client.post("/api/v1/auth/register", json=REGISTRATION)).status_code == 201
    code = secrets.add((await codes_mailed(ses, 1))[-1])
    verified = await client.post(
        "/api/v1/auth/verify-otp",
        json={"email": EMAIL, "code": code, "purpose": "email_verification"},
    )
    assert verified.status_code == 200

    challenged = await client.post(
        "/api/v1/auth/login", json={"email": EMAIL, "password": STRONG_PASSWORD}
    )
    assert challenged.status_code == 202
    challenge_id = challenged.json()["challenge_id"]
    secrets.add((await codes_mailed(ses, 2))[-1])
    resent = await client.post(
        "/api/v1/auth/request-otp",
        json={"email": EMAIL, "purpose": "login", "challenge_id": challenge_id},
    )
    assert resent.status_code == 202
    login_code = secrets.add((await codes_mailed(ses, 3))[-1])
    answered = await client.post(
        "/api/v1/auth/verify-otp",
        json={"email": EMAIL, "code": login_code, "purpose": "login", "challenge_id": challenge_id},
    )
    assert answered.status_code == 200, answered.text
    token = secrets.add(answered.json()["access_token"])
    assert (await client.get("/api/v1/auth/me", headers=bearer(token))).status_code == 200
    await running.settled_outbox()

    stderr = capsys.readouterr().err
    # LOG_FORMAT=console on the stream (the account flows log from several auth/ modules)
    assert " taxease_auth.auth." in stderr
    assert_nothing_leaked(caplog, stderr, secrets, [EMAIL])


async def test_a_failed_ses_send_logs_no_secret(
    start_app: StartApp,
    ses: SesInbox,
    ses_settings: SettingsFactory,
    service_logging: ConfigureLogging,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SES refuses (sender not verified): the error is logged, the code and keys are not."""
    settings = log_settings(ses_settings, log_format="json")
    service_logging(settings)
    running = await start_app(settings)
    secrets = Secrets()

    assert (
        await running.client.post("/api/v1/auth/register", json=REGISTRATION)
    ).status_code == 201
    [row] = await running.settled_outbox()
    assert row.status == "failed"
    assert row.html_body is not None
    secrets.add(extract_code(row.html_body))

    assert any("MessageRejected" in r.getMessage() for r in caplog.records)
    assert_nothing_leaked(caplog, capsys.readouterr().err, secrets, [EMAIL])


# --- log forging ------------------------------------------------------------------------------

FORGED = "evil@example.com\r\n2026-01-01 00:00:00,000 INFO    taxease_auth: forged admin login"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/auth/register", {**REGISTRATION, "email": FORGED}),
        ("/api/v1/auth/login", {"email": FORGED, "password": STRONG_PASSWORD}),
        ("/api/v1/auth/request-otp", {"email": FORGED, "purpose": "email_verification"}),
        ("/api/v1/auth/verify-otp", {"email": FORGED, "code": "123456", "purpose": "login"}),
        ("/api/v1/auth/password-reset/request", {"email": FORGED}),
        (
            "/api/v1/auth/password-reset/confirm",
            {"email": FORGED, "code": "123456", "new_password": NEW_PASSWORD},
        ),
    ],
)
async def test_an_email_with_cr_lf_is_refused_and_forges_no_log_line(
    start_app: StartApp,
    make_settings: SettingsFactory,
    service_logging: ConfigureLogging,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    path: str,
    body: dict[str, object],
) -> None:
    settings = make_settings(log_level="DEBUG")
    service_logging(settings)
    running = await start_app(settings)

    response = await running.client.post(path, json=body)

    assert response.status_code == 422
    assert "forged" not in response.text  # the refused value is not echoed back
    stderr = capsys.readouterr().err
    assert "forged" not in stderr
    for record in caplog.records:
        assert "\n" not in ConsoleFormatter().format(record)
        assert "forged" not in record.getMessage()


async def test_names_with_cr_lf_are_refused(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    running = await start_app(make_settings())

    response = await running.client.post(
        "/api/v1/auth/register", json={**REGISTRATION, "first_name": "Eve\r\nBcc: all@example.com"}
    )

    assert response.status_code == 422


def make_record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("taxease_auth.test", logging.INFO, __file__, 1, message, args, None)


@pytest.mark.parametrize(
    "hostile",
    [
        "a@example.com\r\nINFO forged",
        "a@example.com\nforged",
        "tab\there",
        "\x1b[31mred\x1b[0m",
        "nul\x00byte",
        "del\x7f",
    ],
)
def test_console_formatter_escapes_control_characters(hostile: str) -> None:
    line = ConsoleFormatter().format(make_record("login failed for %s", hostile))

    assert not re.search(r"[\x00-\x1f\x7f]", line), repr(line)
    assert line.endswith(
        "login failed for "
        + hostile.translate({code: f"\\x{code:02x}" for code in (*range(32), 127)})
    )


def test_console_formatter_escapes_control_characters_in_the_message_itself() -> None:
    line = ConsoleFormatter().format(make_record("first line\r\nsecond line"))

    assert "\n" not in line
    assert "first line\\x0d\\x0asecond line" in line


def test_console_formatter_keeps_ordinary_text() -> None:
    line = ConsoleFormatter().format(make_record("code issued for %s", "t***@example.com"))

    assert line.endswith("INFO    taxease_auth.test: code issued for t***@example.com")


@pytest.mark.parametrize("hostile", ["a\r\nforged", "\x1b[2J", "nul\x00", "é ü — 中"])
def test_json_formatter_writes_one_line_that_round_trips(hostile: str) -> None:
    line = JsonFormatter().format(make_record("login failed for %s", hostile))

    assert "\n" not in line
    assert not re.search(r"[\x00-\x1f\x7f]", line)
    entry = json.loads(line)
    assert entry["message"] == f"login failed for {hostile}"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "taxease_auth.test"


def test_json_formatter_keeps_the_exception_in_one_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord(
            "taxease_auth.test", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )

    line = JsonFormatter().format(record)

    assert "\n" not in line
    assert "ValueError" in json.loads(line)["exception"]


async def test_configure_logging_quiets_the_chatty_libraries(
    make_settings: SettingsFactory, service_logging: ConfigureLogging
) -> None:
    """botocore and aiosqlite echo request bodies and SQL parameters at DEBUG: capped."""
    service_logging(make_settings(log_level="DEBUG"))

    for name in ("botocore", "boto3", "urllib3", "aiosqlite"):
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
    assert not logging.getLogger("sqlalchemy.engine.Engine").isEnabledFor(logging.INFO)
    assert logging.getLogger("taxease_auth.auth.service").isEnabledFor(logging.DEBUG)


async def test_helper_would_catch_a_leak(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The checker is not vacuous: a logged code is found in the record and the formats."""
    caplog.set_level(logging.INFO)
    logging.getLogger("taxease_auth.test").info("sent %s to %s", "483920", MASKED)
    secrets = Secrets()
    secrets.add("483920")

    with pytest.raises(AssertionError, match="483920"):
        assert_nothing_leaked(caplog, "", secrets, [])
