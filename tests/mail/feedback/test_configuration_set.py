"""Every mail carries the configuration set that publishes its events, and the SES message id
its events will name is what the backend returns (DESIGN.md §10, "Path" and "Matching")."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from taxease_auth.mail.backends.ses import SesBackend
from taxease_auth.mail.backends.smtp import SmtpBackend
from taxease_auth.mail.message import Message
from tests.conftest import SENDER, SesInbox, SettingsFactory
from tests.smtp_server import running_smtp_server


def make_message() -> Message:
    return Message(
        sender=f"TaxEase <{SENDER}>",
        recipient="user@example.org",
        subject="Your TaxEase Login OTP",
        html="<p>code</p>",
        text="code",
        kind="login",
        idempotency_key="0123abcd0123abcd",
    )


def smtp_values(port: int, **overrides: Any) -> dict[str, Any]:
    return {
        "email_backend": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "aws_ses_from_email": SENDER,
        **overrides,
    }


@pytest.mark.parametrize("configuration_set", ["otp-events", None])
async def test_smtp_mail_names_the_configuration_set_in_its_header(
    make_settings: SettingsFactory, configuration_set: str | None
) -> None:
    with running_smtp_server() as server:
        backend = SmtpBackend(
            make_settings(**smtp_values(server.port, aws_ses_configuration_set=configuration_set))
        )
        try:
            await backend.send(make_message())
        finally:
            await backend.aclose()
        [received] = server.handler.messages()
    assert received.message["X-SES-CONFIGURATION-SET"] == configuration_set


@pytest.mark.parametrize(
    "reply",
    [
        "250 Ok 0101018f1f2e3d4c-5b6a7980-aaaa-bbbb-000000",
        "250 Ok <0101018f1f2e3d4c-5b6a7980-aaaa-bbbb-000000>",
    ],
)
async def test_smtp_keeps_the_ses_message_id_of_the_250_reply(
    make_settings: SettingsFactory, reply: str
) -> None:
    with running_smtp_server() as server:
        server.handler.accept_reply = reply
        backend = SmtpBackend(make_settings(**smtp_values(server.port)))
        try:
            result = await backend.send(make_message())
        finally:
            await backend.aclose()
    assert result.provider_message_id == "0101018f1f2e3d4c-5b6a7980-aaaa-bbbb-000000"


async def test_ses_send_carries_the_configuration_set_and_returns_the_message_id(
    ses_settings: SettingsFactory, ses: SesInbox
) -> None:
    ses.verify_identity(SENDER)
    backend = SesBackend(ses_settings(aws_ses_configuration_set="otp-events"))
    bodies: list[dict[str, Any]] = []
    # What left on the wire (moto itself ignores ConfigurationSetName).
    backend._client.meta.events.register(
        "before-send.sesv2.SendEmail", lambda request, **_: bodies.append(json.loads(request.body))
    )
    try:
        result = await backend.send(make_message())
    finally:
        await backend.aclose()
    assert [body["ConfigurationSetName"] for body in bodies] == ["otp-events"]
    [stored] = ses.messages("user@example.org")
    assert result.provider_message_id == stored["id"]


@pytest.mark.parametrize("name", ["otp events", "x\r\nBcc: a@b.c", "a" * 65])
def test_a_configuration_set_name_outside_ses_rules_is_refused(
    make_settings: SettingsFactory, name: str
) -> None:
    with pytest.raises(ValidationError, match="aws_ses_configuration_set"):
        make_settings(aws_ses_configuration_set=name)
