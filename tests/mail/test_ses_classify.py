"""classify_client_error / classify_botocore_error: every SES outcome lands in its class.

Pure functions over real botocore exceptions: no client, no network.
"""

from __future__ import annotations

import botocore.exceptions
import pytest

from taxease_auth.mail.backends.base import PermanentSendError, SendError, TransientSendError
from taxease_auth.mail.backends.ses import (
    REASON_MAX_LENGTH,
    classify_botocore_error,
    classify_client_error,
)

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
