"""classify_client_error / classify_botocore_error: every SES outcome lands in its class.

Mostly pure functions over real botocore exceptions; the sandbox rejections of issue 17 item 8
also go on the wire (moto behind the fault proxy) through the delivery worker.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import botocore.exceptions
import pytest

from taxease_auth.mail.backends.base import PermanentSendError, SendError, TransientSendError
from taxease_auth.mail.backends.reasons import REASON_MAX_LENGTH
from taxease_auth.mail.backends.ses import classify_botocore_error, classify_client_error
from tests.mail.test_worker import Delivery, delivery, proxy  # noqa: F401 (fixtures)
from tests.support.fault_proxy import Fault, recipient_not_verified

SENDER = "TaxEase <no-reply@mail.taxease.ca>"


def client_error(code: str, message: str = "", status: int | None = 400):
    response: dict[str, object] = {"Error": {"Code": code, "Message": message}}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return botocore.exceptions.ClientError(response, "SendEmail")


def is_transient(error: SendError) -> bool:
    return type(error) is TransientSendError


def is_per_message(error: SendError) -> bool:
    return isinstance(error, PermanentSendError) and not error.account_wide


def is_account_wide(error: SendError) -> bool:
    return isinstance(error, PermanentSendError) and error.account_wide


@pytest.mark.parametrize(
    ("code", "message", "status"),
    [
        ("TooManyRequestsException", "Maximum sending rate exceeded.", 429),
        ("Throttling", "Maximum sending rate exceeded.", 400),
        ("ThrottlingException", "Rate exceeded", 400),
        ("InternalFailure", "", 500),
        ("ServiceUnavailable", "", 503),
        ("RequestTimeout", "", 408),
        ("RequestTimeoutException", "", 408),
        ("SomethingNew", "server fault", 500),
        ("SomethingNew", "", 502),
        ("SomethingNew", "", 504),
        ("SomethingNew", "", 429),
    ],
)
def test_transient(code: str, message: str, status: int):
    assert is_transient(classify_client_error(client_error(code, message, status)))


@pytest.mark.parametrize(
    ("code", "message", "status"),
    [
        ("Throttling", "Daily message quota exceeded.", 400),
        ("ThrottlingException", "Daily message quota exceeded.", 400),
        ("TooManyRequestsException", "Daily message quota exceeded.", 429),
        ("MailFromDomainNotVerifiedException", "MAIL FROM domain not verified", 400),
        ("AccountSuspendedException", "", 400),
        ("SendingPausedException", "", 400),
        ("AccountSendingPausedException", "", 400),
        ("ConfigurationSetSendingPausedException", "", 400),
        ("NotFoundException", "Configuration set otp does not exist.", 404),
        ("ConfigurationSetDoesNotExist", "", 400),
        ("LimitExceededException", "", 400),
        ("InvalidClientTokenId", "The security token included in the request is invalid.", 403),
        ("UnrecognizedClientException", "", 403),
        ("SignatureDoesNotMatch", "", 403),
        ("AccessDenied", "", 403),
        ("AccessDeniedException", "not authorized to perform: ses:SendEmail", 403),
        ("ExpiredToken", "", 403),
        # moto and SES v1 wording for an unverified sender.
        ("MessageRejected", "Email address not verified no-reply@mail.taxease.ca", 400),
        ("MessageRejected", "Email address is not verified. The following identities", 400),
    ],
)
def test_account_wide(code: str, message: str, status: int):
    assert is_account_wide(classify_client_error(client_error(code, message, status)))


@pytest.mark.parametrize(
    ("code", "message", "status"),
    [
        ("MessageRejected", "Message contains invalid content", 400),
        ("MessageRejected", "Too many recipients.", 400),
        ("BadRequestException", "Invalid input", 400),
        ("InvalidParameterValue", "Missing domain", 400),
        ("SomethingNew", "", 400),
        ("SomethingNew", "", 413),
        ("SomethingNew", "", None),
    ],
)
def test_per_message(code: str, message: str, status: int | None):
    assert is_per_message(classify_client_error(client_error(code, message, status)))


def test_unverified_sender_named_by_address_or_domain_is_account_wide():
    for message in (
        "Email address is not verified. The following identities failed the check in region "
        "CA-CENTRAL-1: no-reply@mail.taxease.ca",
        "Email address is not verified. The following identities failed the check in region "
        "CA-CENTRAL-1: mail.taxease.ca, user@example.org",
    ):
        error = classify_client_error(client_error("MessageRejected", message), sender=SENDER)
        assert is_account_wide(error), message


def test_unverified_sandbox_recipient_is_this_message_only():
    message = (
        "Email address is not verified. The following identities failed the check in region "
        "CA-CENTRAL-1: someone@mail.taxease.ca"
    )

    error = classify_client_error(client_error("MessageRejected", message), sender=SENDER)

    assert is_per_message(error)


def test_reason_is_code_and_message():
    error = classify_client_error(client_error("MessageRejected", "Too many recipients."))

    assert error.reason == "MessageRejected: Too many recipients."


def test_reason_is_truncated():
    error = classify_client_error(client_error("BadRequestException", "x" * 1000))

    assert len(error.reason) == REASON_MAX_LENGTH
    assert error.reason.startswith("BadRequestException: xxx")


def test_reason_never_echoes_a_code():
    echoed = "Value 'Your code is 048213' at 'content.simple.body.text.data' failed"

    error = classify_client_error(client_error("ValidationException", echoed))

    assert "048213" not in error.reason


@pytest.mark.parametrize(
    "error",
    [
        botocore.exceptions.EndpointConnectionError(endpoint_url="https://email.example"),
        botocore.exceptions.ConnectTimeoutError(endpoint_url="https://email.example"),
        botocore.exceptions.ReadTimeoutError(endpoint_url="https://email.example"),
        botocore.exceptions.ConnectionClosedError(endpoint_url="https://email.example"),
    ],
)
def test_network_errors_are_transient(error: botocore.exceptions.BotoCoreError):
    classified = classify_botocore_error(error)

    assert is_transient(classified)
    assert classified.reason.startswith(type(error).__name__)


@pytest.mark.parametrize(
    "error",
    [
        botocore.exceptions.NoCredentialsError(),
        botocore.exceptions.PartialCredentialsError(provider="env", cred_var="secret_key"),
    ],
)
def test_missing_credentials_are_account_wide(error: botocore.exceptions.BotoCoreError):
    assert is_account_wide(classify_botocore_error(error))


def test_parameter_validation_is_per_message_and_never_quotes_the_value():
    error = botocore.exceptions.ParamValidationError(report="value: Your code is 048213")

    classified = classify_botocore_error(error)

    assert is_per_message(classified)
    assert classified.reason == "ParamValidationError"


# --- whose identity failed: issue 17 item 8 ------------------------------------------------

# The sender of the wire tests (tests.conftest.SENDER) is no-reply@taxease.example.
WIRE_SENDER = "no-reply@taxease.example"
# Registrants whose address holds the words, or the domain, the old rule searched the text for.
LOOKALIKE_RECIPIENTS = [
    "sender@example.org",
    "from@example.org",
    "taxease.example@example.org",
    "no-reply@taxease.example.org",
    "someone@taxease.example",
    "no-reply.taxease.example@example.org",
]


def not_verified(*identities: str) -> str:
    return (
        "Email address is not verified. The following identities failed the check in region "
        "CA-CENTRAL-1: " + ", ".join(identities)
    )


@pytest.mark.parametrize("recipient", LOOKALIKE_RECIPIENTS)
def test_a_sandbox_recipient_is_this_message_only_whatever_its_address_says(recipient: str):
    for sender in (WIRE_SENDER, f"TaxEase <{WIRE_SENDER}>"):
        error = classify_client_error(
            client_error("MessageRejected", not_verified(recipient)), sender=sender
        )
        assert is_per_message(error), (recipient, sender)


@pytest.mark.parametrize(
    "message",
    [
        not_verified(WIRE_SENDER),
        not_verified("taxease.example"),
        not_verified("TaxEase.Example"),
        not_verified("sender@example.org", "taxease.example"),
        not_verified(WIRE_SENDER, "from@example.org"),
        f"Email address not verified {WIRE_SENDER}",  # moto's wording
        "Email address is not verified.",  # SES wrote it all and named no one: not a recipient
    ],
)
def test_an_unverified_sender_is_account_wide(message: str):
    error = classify_client_error(client_error("MessageRejected", message), sender=WIRE_SENDER)

    assert is_account_wide(error)


@pytest.mark.parametrize(
    "message",
    [
        # The words of SES's phrase inside something a request supplied do not count.
        "Illegal address: email.address.not.verified@example.org",
        "sender@example.org: Email address is not verified",
        "Message contains invalid content from sender@example.org",
    ],
)
def test_only_ses_own_phrase_makes_a_rejection_about_identities(message: str):
    error = classify_client_error(client_error("MessageRejected", message), sender=WIRE_SENDER)

    assert is_per_message(error)


def test_a_daily_quota_is_read_only_from_a_throttling_answer():
    quota = "Daily message quota exceeded."

    assert is_account_wide(classify_client_error(client_error("Throttling", quota)))
    rejected = classify_client_error(
        client_error("MessageRejected", not_verified(f"daily.message.quota.exceeded.{quota}"))
    )
    assert not isinstance(rejected, TransientSendError)


@pytest.mark.parametrize("recipient", LOOKALIKE_RECIPIENTS)
def test_the_reason_masks_every_address(recipient: str):
    error = classify_client_error(
        client_error("MessageRejected", not_verified(recipient, WIRE_SENDER)), sender=WIRE_SENDER
    )

    assert recipient not in error.reason
    assert WIRE_SENDER not in error.reason
    local, _, domain = recipient.partition("@")
    assert f"{local[0]}***@{domain}" in error.reason
    assert "n***@taxease.example" in error.reason


async def test_sandbox_rejections_of_lookalike_recipients_never_stop_delivery(
    delivery: Delivery,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each look-alike registrant is refused by the sandbox, on the wire, as SES words it; the
    # mail queued after them still goes, and nothing stored or logged holds an address whole.
    await delivery.queue(to=[*LOOKALIKE_RECIPIENTS, "bystander@example.org"])
    for recipient in LOOKALIKE_RECIPIENTS:
        delivery.proxy.fail_next(1, recipient_not_verified(recipient))
    worker = delivery.worker(concurrency=1)

    with caplog.at_level(logging.INFO, logger="taxease_auth"):
        await worker.run_once()
        delivery.clock.advance(timedelta(seconds=61))
        await worker.run_once()

    assert not worker.breaker.is_open
    *rejected, bystander = await delivery.rows()
    assert [row.status for row in rejected] == ["failed"] * len(LOOKALIKE_RECIPIENTS)
    assert bystander.status == "sent"
    assert delivery.delivered() == {"bystander@example.org": 1}
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for row in rejected:
        assert row.last_error is not None
        assert row.last_error.startswith("MessageRejected: Email address is not verified.")
        assert row.recipient not in row.last_error
        assert row.recipient not in logged
    assert "failed permanently" in logged


async def test_an_unverified_sender_named_by_ses_opens_the_breaker(
    delivery: Delivery,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    await delivery.queue(to=["first@example.org", "second@example.org"])
    delivery.proxy.fail_sends(
        Fault(400, "MessageRejected", not_verified(WIRE_SENDER, "first@example.org"))
    )
    worker = delivery.worker(concurrency=1)

    with caplog.at_level(logging.INFO, logger="taxease_auth"):
        await worker.run_once()

    assert worker.breaker.is_open
    failed, waiting = await delivery.rows()
    assert (failed.status, waiting.status) == ("failed", "pending")
    assert failed.last_error is not None
    assert WIRE_SENDER not in failed.last_error
    assert "first@example.org" not in failed.last_error
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "first@example.org" not in logged
    assert WIRE_SENDER not in logged
