"""SmtpBackend against a real SMTP server (aiosmtpd): the message on the wire, TLS, AUTH, and
how every kind of failure is classified."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from pydantic import ValidationError

from taxease_auth.config import Settings
from taxease_auth.mail.backends import build_backend
from taxease_auth.mail.backends.base import PermanentSendError, TransientSendError
from taxease_auth.mail.backends.smtp import SmtpBackend, Stage, classify_reply
from taxease_auth.mail.message import Message
from tests.conftest import SENDER, STRONG_PASSWORD, SettingsFactory, StartApp, extract_code
from tests.smtp_server import (
    PASSWORD,
    USERNAME,
    Certificate,
    SmtpServer,
    free_port,
    make_certificate,
    running_smtp_server,
)

RECIPIENT = "user@example.org"
CODE = "048213"


def make_message(**changes: Any) -> Message:
    values: dict[str, Any] = {
        "sender": f"TaxEase <{SENDER}>",
        "recipient": RECIPIENT,
        "subject": "Your TaxEase Login OTP",
        "html": f"<p>Votre code : <b>{CODE}</b> — déjà ✓</p>",
        "text": f"Votre code :\n\n    {CODE}\n\nDéjà vu — ✓\n",
        "kind": "login",
        "idempotency_key": "0123abcd0123abcd",
    }
    values.update(changes)
    return Message(**values)


class SmtpSettings(Protocol):
    def __call__(self, server: SmtpServer | None = None, **overrides: Any) -> Settings: ...


@pytest.fixture
def smtp_settings(make_settings: SettingsFactory) -> SmtpSettings:
    def build(server: SmtpServer | None = None, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "email_backend": "smtp",
            "smtp_host": "127.0.0.1",
            "smtp_port": server.port if server else free_port(),
            "smtp_security": "none",
            "aws_ses_from_email": SENDER,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture
def plain_server() -> Iterator[SmtpServer]:
    with running_smtp_server() as server:
        yield server


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    return make_certificate(tmp_path)


async def send(settings: Settings, message: Message | None = None) -> str | None:
    backend = SmtpBackend(settings)
    try:
        return (await backend.send(message or make_message())).provider_message_id
    finally:
        await backend.aclose()


# --- the message on the wire ---------------------------------------------------------------


async def test_sends_a_multipart_alternative_utf8_message(
    plain_server: SmtpServer, smtp_settings: SmtpSettings
) -> None:
    provider_id = await send(smtp_settings(plain_server))

    [received] = plain_server.handler.messages()
    assert received.mail_from == SENDER
    assert received.rcpt_tos == [RECIPIENT]
    message = received.message
    assert message.get_content_type() == "multipart/alternative"
    assert message["From"] == f"TaxEase <{SENDER}>"
    assert message["To"] == RECIPIENT
    assert message["Subject"] == "Your TaxEase Login OTP"
    assert message["Date"]
    assert message["Message-ID"] == "<0123abcd0123abcd@taxease.example>"
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    assert all(part.get_content_charset() == "utf-8" for part in message.iter_parts())
    assert received.body("plain") == make_message().text
    assert received.body("html").strip() == make_message().html
    # 7-bit clean on the wire: no 8BITMIME or SMTPUTF8 needed from the server.
    assert max(received.data) < 128
    assert provider_id == "4QxYz1"


async def test_provider_id_is_the_message_id_when_the_server_names_no_queue_id(
    plain_server: SmtpServer, smtp_settings: SmtpSettings
) -> None:
    plain_server.handler.accept_reply = "250 Message accepted for delivery"

    assert await send(smtp_settings(plain_server)) == "<0123abcd0123abcd@taxease.example>"


async def test_ses_style_reply_gives_the_ses_message_id(
    plain_server: SmtpServer, smtp_settings: SmtpSettings
) -> None:
    plain_server.handler.accept_reply = "250 Ok 0101018f1f2e3d4c-5b6a7980-aaaa-bbbb-000000"

    assert await send(smtp_settings(plain_server)) == "0101018f1f2e3d4c-5b6a7980-aaaa-bbbb-000000"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", "Hello\r\nBcc: victim@example.org"),
        ("recipient", "user@example.org\nBcc: victim@example.org"),
    ],
)
async def test_header_injection_is_refused_before_connecting(
    plain_server: SmtpServer, smtp_settings: SmtpSettings, field: str, value: str
) -> None:
    with pytest.raises(PermanentSendError) as caught:
        await send(smtp_settings(plain_server), make_message(**{field: value}))

    assert not caught.value.account_wide
    assert plain_server.handler.messages() == []


async def test_control_character_in_the_sender_is_account_wide(
    plain_server: SmtpServer, smtp_settings: SmtpSettings
) -> None:
    with pytest.raises(PermanentSendError) as caught:
        await send(smtp_settings(plain_server), make_message(sender="a@b.example\r\nX: y"))

    assert caught.value.account_wide


async def test_sessions_are_reused_and_a_dropped_one_is_replaced(
    smtp_settings: SmtpSettings,
) -> None:
    port = free_port()
    backend = SmtpBackend(smtp_settings(smtp_port=port))
    try:
        with running_smtp_server(port=port) as server:
            await backend.send(make_message(idempotency_key="first"))
            await backend.send(make_message(idempotency_key="second"))
        # The server restarted: the pooled session is dead, the next send reconnects.
        with running_smtp_server(port=port, handler=server.handler):
            await backend.send(make_message(idempotency_key="third"))
    finally:
        await backend.aclose()

    received = server.handler.messages()
    keys = [m.message["Message-ID"].split("@")[0] for m in received]
    assert keys == ["<first", "<second", "<third"]
    assert [m.session for m in received] == [1, 1, 2]


async def test_build_backend_picks_smtp(
    plain_server: SmtpServer, smtp_settings: SmtpSettings
) -> None:
    backend = build_backend(smtp_settings(plain_server))
    try:
        assert isinstance(backend, SmtpBackend)
        assert backend.name == "smtp"
    finally:
        await backend.aclose()


# --- TLS and AUTH ----------------------------------------------------------------------------


async def test_starttls_with_a_trusted_private_certificate(
    smtp_settings: SmtpSettings, certificate: Certificate
) -> None:
    with running_smtp_server(
        tls_context=certificate.server_context(), require_starttls=True
    ) as server:
        await send(
            smtp_settings(server, smtp_security="starttls", smtp_ca_file=str(certificate.cert))
        )

    [received] = server.handler.messages()
    assert received.tls


async def test_starttls_with_an_untrusted_certificate_is_account_wide(
    smtp_settings: SmtpSettings, certificate: Certificate
) -> None:
    with (
        running_smtp_server(tls_context=certificate.server_context()) as server,
        pytest.raises(PermanentSendError) as caught,
    ):
        await send(smtp_settings(server, smtp_security="starttls"))

    assert caught.value.account_wide
    assert "not trusted" in caught.value.reason
    assert "SMTP_CA_FILE" in caught.value.reason
    assert server.handler.messages() == []


async def test_certificate_for_another_host_is_refused(
    smtp_settings: SmtpSettings, tmp_path: Path
) -> None:
    certificate = make_certificate(tmp_path, "mail.example.test", hosts=("mail.example.test",))
    with (
        running_smtp_server(tls_context=certificate.server_context()) as server,
        pytest.raises(PermanentSendError) as caught,
    ):
        await send(
            smtp_settings(
                server,
                smtp_security="starttls",
                smtp_ca_file=str(certificate.cert),
            )
        )

    assert caught.value.account_wide
    assert server.handler.messages() == []


async def test_starttls_required_but_not_offered_is_account_wide(
    plain_server: SmtpServer, smtp_settings: SmtpSettings
) -> None:
    with pytest.raises(PermanentSendError) as caught:
        await send(smtp_settings(plain_server, smtp_security="starttls"))

    assert caught.value.account_wide
    assert "STARTTLS" in caught.value.reason
    assert plain_server.handler.messages() == []


async def test_implicit_tls(smtp_settings: SmtpSettings, certificate: Certificate) -> None:
    with running_smtp_server(tls_context=certificate.server_context(), implicit_tls=True) as server:
        await send(smtp_settings(server, smtp_security="tls", smtp_ca_file=str(certificate.cert)))

    [received] = server.handler.messages()
    assert received.tls


async def test_tls_against_a_plain_server_is_account_wide(
    plain_server: SmtpServer, smtp_settings: SmtpSettings, certificate: Certificate
) -> None:
    with pytest.raises(PermanentSendError) as caught:
        await send(
            smtp_settings(plain_server, smtp_security="tls", smtp_ca_file=str(certificate.cert))
        )

    assert caught.value.account_wide
    assert "SMTP_SECURITY" in caught.value.reason


@pytest.mark.parametrize(("excluded", "mechanism"), [(["LOGIN"], "PLAIN"), (["PLAIN"], "LOGIN")])
async def test_auth_over_starttls(
    smtp_settings: SmtpSettings,
    certificate: Certificate,
    excluded: list[str],
    mechanism: str,
) -> None:
    with running_smtp_server(
        tls_context=certificate.server_context(), auth=True, auth_exclude_mechanism=excluded
    ) as server:
        await send(
            smtp_settings(
                server,
                smtp_security="starttls",
                smtp_ca_file=str(certificate.cert),
                smtp_username=USERNAME,
                smtp_password=PASSWORD,
            )
        )

    [received] = server.handler.messages()
    assert received.tls
    assert received.auth_mechanism == mechanism


async def test_auth_on_a_plain_relay(smtp_settings: SmtpSettings) -> None:
    with running_smtp_server(auth=True) as server:
        await send(smtp_settings(server, smtp_username=USERNAME, smtp_password=PASSWORD))

    [received] = server.handler.messages()
    assert received.auth_mechanism == "PLAIN"


@pytest.mark.parametrize(
    ("credentials", "reply"),
    [
        ({"smtp_username": USERNAME, "smtp_password": "wrong-password"}, "SMTP auth 535"),
        ({}, "SMTP mail 530"),  # none configured where the server requires AUTH
    ],
)
async def test_refused_authentication_is_account_wide(
    smtp_settings: SmtpSettings, certificate: Certificate, credentials: dict[str, str], reply: str
) -> None:
    with (
        running_smtp_server(tls_context=certificate.server_context(), auth=True) as server,
        pytest.raises(PermanentSendError) as caught,
    ):
        await send(
            smtp_settings(
                server,
                smtp_security="starttls",
                smtp_ca_file=str(certificate.cert),
                **credentials,
            )
        )

    assert caught.value.account_wide
    assert caught.value.reason.startswith(reply)
    assert "wrong-password" not in caught.value.reason
    assert server.handler.messages() == []


# --- failures: permanent, account-wide, transient --------------------------------------------


@pytest.mark.parametrize(
    ("hook", "reply", "account_wide"),
    [
        ("rcpt_reply", "550 5.1.1 No such user", False),
        ("data_reply", "550 5.7.1 Message content rejected", False),
        ("data_reply", "552 5.3.4 Message size exceeds fixed limit", False),
        ("mail_reply", "553 5.7.1 Sender address rejected", True),
        (
            "data_reply",
            "554 Message rejected: Email address is not verified. The following identities "
            f"failed the check in region CA-CENTRAL-1: {SENDER}",
            True,
        ),
        (
            "data_reply",
            "554 Message rejected: Email address is not verified. The following identities "
            f"failed the check in region CA-CENTRAL-1: {RECIPIENT}",
            False,
        ),
        ("data_reply", "554 Account sending paused", True),
        ("data_reply", "454 Throttling failure: Daily message quota exceeded", True),
    ],
)
async def test_permanent_replies(
    plain_server: SmtpServer,
    smtp_settings: SmtpSettings,
    hook: str,
    reply: str,
    account_wide: bool,
) -> None:
    setattr(plain_server.handler, hook, reply)

    with pytest.raises(PermanentSendError) as caught:
        await send(smtp_settings(plain_server))

    assert caught.value.account_wide is account_wide
    assert reply.split(" ", 1)[0] in caught.value.reason


@pytest.mark.parametrize(
    "recipient",
    [
        "sender@example.org",
        "from@example.org",
        "taxease.example@example.org",
        f"{SENDER}.org",
        "mail.from.domain@example.org",
        "sending.paused@example.org",
    ],
)
async def test_a_sandbox_recipient_never_reads_as_the_sender_and_is_masked(
    plain_server: SmtpServer, smtp_settings: SmtpSettings, recipient: str
) -> None:
    # Issue 17 item 8: the identities SES lists are compared with the sender, not searched
    # for words; and the stored reason keeps no address whole.
    plain_server.handler.data_reply = (
        "554 Message rejected: Email address is not verified. The following identities "
        f"failed the check in region CA-CENTRAL-1: {recipient}"
    )

    with pytest.raises(PermanentSendError) as caught:
        await send(smtp_settings(plain_server), make_message(recipient=recipient))

    assert not caught.value.account_wide
    assert recipient not in caught.value.reason
    assert f"{recipient[0]}***@{recipient.partition('@')[2]}" in caught.value.reason


async def test_a_refused_recipient_is_masked_in_the_reason(
    plain_server: SmtpServer, smtp_settings: SmtpSettings
) -> None:
    plain_server.handler.rcpt_reply = f"550 5.1.1 <{RECIPIENT}>: Recipient address rejected"

    with pytest.raises(PermanentSendError) as caught:
        await send(smtp_settings(plain_server))

    assert not caught.value.account_wide
    assert RECIPIENT not in caught.value.reason
    assert "<u***@example.org>" in caught.value.reason


@pytest.mark.parametrize(
    ("hook", "reply"),
    [
        ("data_reply", "451 4.3.0 Temporary service failure"),
        ("data_reply", "454 Throttling failure: Maximum sending rate exceeded"),
        ("rcpt_reply", "450 4.2.1 Mailbox busy, try later"),
        ("mail_reply", "421 4.7.0 Too many concurrent SMTP connections"),
    ],
)
async def test_transient_replies(
    plain_server: SmtpServer, smtp_settings: SmtpSettings, hook: str, reply: str
) -> None:
    setattr(plain_server.handler, hook, reply)

    with pytest.raises(TransientSendError) as caught:
        await send(smtp_settings(plain_server))

    assert caught.value.reason.split(": ", 1)[0].endswith(reply.split(" ", 1)[0])


async def test_connection_lost_after_the_message_left_is_transient_and_possibly_sent(
    plain_server: SmtpServer, smtp_settings: SmtpSettings
) -> None:
    plain_server.handler.drop_after_data = True

    with pytest.raises(TransientSendError) as caught:
        await send(smtp_settings(plain_server))

    assert caught.value.possibly_sent
    assert caught.value.reason.startswith("SMTP data")
    assert len(plain_server.handler.messages()) == 1  # the server did take it


async def test_failures_before_the_message_left_are_not_possibly_sent(
    plain_server: SmtpServer, smtp_settings: SmtpSettings
) -> None:
    plain_server.handler.rcpt_reply = "450 Mailbox busy"

    with pytest.raises(TransientSendError) as caught:
        await send(smtp_settings(plain_server))

    assert not caught.value.possibly_sent


async def test_a_failed_send_does_not_poison_the_next(
    plain_server: SmtpServer, smtp_settings: SmtpSettings
) -> None:
    backend = SmtpBackend(smtp_settings(plain_server))
    try:
        plain_server.handler.rcpt_reply = "550 No such user"
        with pytest.raises(PermanentSendError):
            await backend.send(make_message())
        plain_server.handler.rcpt_reply = None
        await backend.send(make_message())
    finally:
        await backend.aclose()

    assert len(plain_server.handler.messages()) == 1


async def test_server_down_is_transient(smtp_settings: SmtpSettings) -> None:
    with pytest.raises(TransientSendError) as caught:
        await send(smtp_settings(smtp_port=free_port()))

    assert "ConnectionRefusedError" in caught.value.reason


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


async def test_a_server_that_never_answers_times_out_as_transient(
    smtp_settings: SmtpSettings, silent_server: int
) -> None:
    with pytest.raises(TransientSendError):
        await send(smtp_settings(smtp_port=silent_server, smtp_timeout_seconds=0.3))


@pytest.mark.parametrize(
    ("stage", "code", "text", "expected"),
    [
        (Stage.CONNECT, 554, "No SMTP service here", "account_wide"),
        (Stage.CONNECT, 421, "Service not available", "transient"),
        (Stage.AUTH, 535, "Authentication Credentials Invalid", "account_wide"),
        (Stage.AUTH, 454, "Temporary authentication failure", "transient"),
        (Stage.STARTTLS, 454, "TLS not available due to temporary reason", "transient"),
        (Stage.RCPT, 553, "Mailbox name not allowed", "permanent"),
        (Stage.DATA, 554, "Transaction failed: Configuration set does not exist", "account_wide"),
        (Stage.DATA, 554, f"Transaction failed: code {CODE} in message", "permanent"),
    ],
)
def test_classify_reply(stage: Stage, code: int, text: str, expected: str) -> None:
    error = classify_reply(stage, code, text, sender=SENDER)

    kind = (
        "transient"
        if isinstance(error, TransientSendError)
        else "account_wide"
        if isinstance(error, PermanentSendError) and error.account_wide
        else "permanent"
    )
    assert kind == expected
    assert CODE not in error.reason  # a code-like run of digits never reaches a stored reason


# --- through the app: register, read the code from the received mail, verify -----------------


async def test_register_and_verify_through_smtp(
    plain_server: SmtpServer, smtp_settings: SmtpSettings, start_app: StartApp
) -> None:
    email = "smtp-user@example.com"
    running = await start_app(smtp_settings(plain_server))

    registered = await running.client.post(
        "/api/v1/auth/register",
        json={
            "email": email,
            "password": STRONG_PASSWORD,
            "first_name": "Sam",
            "last_name": "Tp",
            "accept_terms": True,
        },
    )
    assert registered.status_code == 201, registered.text
    [received] = await plain_server.handler.wait_for(1)
    code = extract_code(received.body("plain"))
    assert extract_code(received.body("html")) == code
    verified = await running.client.post(
        "/api/v1/auth/verify-otp",
        json={"email": email, "code": code, "purpose": "email_verification"},
    )

    assert verified.status_code == 200, verified.text
    assert received.rcpt_tos == [email]
    [row] = await running.settled_outbox()
    assert row.status == "sent"
    assert row.provider_message_id == "4QxYz1"


# --- configuration ---------------------------------------------------------------------------


def test_username_without_password_is_refused(smtp_settings: SmtpSettings) -> None:
    with pytest.raises(ValidationError, match="SMTP_USERNAME and SMTP_PASSWORD"):
        smtp_settings(smtp_username=USERNAME)


def test_a_missing_ca_file_is_refused(smtp_settings: SmtpSettings, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="SMTP_CA_FILE"):
        smtp_settings(smtp_security="starttls", smtp_ca_file=str(tmp_path / "absent.pem"))


def test_credentials_over_a_plain_session_are_warned_about(smtp_settings: SmtpSettings) -> None:
    settings = smtp_settings(smtp_username=USERNAME, smtp_password=PASSWORD)

    assert any("travel in clear" in warning for warning in settings.startup_warnings())
    assert all(PASSWORD not in warning for warning in settings.startup_warnings())
