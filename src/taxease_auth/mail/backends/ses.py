"""SesBackend: mail through Amazon SES API v2 (botocore's ``sesv2.send_email``).

botocore's errors are translated here and nowhere else (SECURITY-AND-SES.md §2.3): the worker
sees ``TransientSendError`` (retry with backoff), ``PermanentSendError`` (drop this message) or
``PermanentSendError(account_wide=True)`` (nothing will go until an operator acts: open the
circuit breaker).
"""

from __future__ import annotations

import functools
from typing import Any

import anyio
import anyio.to_thread
import botocore.config
import botocore.exceptions
import botocore.session

from taxease_auth.config import Settings
from taxease_auth.mail.backends.base import (
    PermanentSendError,
    SendError,
    TransientSendError,
    header_values,
)
from taxease_auth.mail.backends.reasons import safe_reason
from taxease_auth.mail.backends.unverified import is_sender_rejection
from taxease_auth.mail.message import Message, SendResult

# Error codes that say "later": rate, capacity or a server fault.
_TRANSIENT_CODES = frozenset(
    {
        "TooManyRequestsException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
    }
)

# Of those, the server faults that may come after the message was accepted.
_POSSIBLY_SENT_CODES = frozenset({"InternalFailure", "InternalError"})

# Error codes after which every other message fails the same way: sender or account state,
# configuration, credentials.
_ACCOUNT_WIDE_CODES = frozenset(
    {
        "MailFromDomainNotVerifiedException",
        "AccountSuspendedException",
        "SendingPausedException",
        "AccountSendingPausedException",
        "ConfigurationSetSendingPausedException",
        "NotFoundException",
        "ConfigurationSetDoesNotExist",
        "ConfigurationSetDoesNotExistException",
        # Standard retry mode retries it as a throttle, but for SendEmail it is a limit that
        # does not lift within seconds (SECURITY-AND-SES.md §2.9).
        "LimitExceededException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "AccessDenied",
        "AccessDeniedException",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)

# SES says "Daily message quota exceeded." with a throttling code; it will not lift for hours.
_DAILY_QUOTA = "daily message quota exceeded"

# botocore errors raised before or instead of an HTTP answer.
_NETWORK_ERRORS = (
    botocore.exceptions.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, SSL...
    botocore.exceptions.HTTPClientError,  # ReadTimeoutError, ConnectionClosedError
)
_CREDENTIAL_ERRORS = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.CredentialRetrievalError,
    botocore.exceptions.TokenRetrievalError,
    botocore.exceptions.SSOError,
    botocore.exceptions.NoAuthTokenError,
    botocore.exceptions.NoRegionError,
    botocore.exceptions.ProfileNotFound,
)


def classify_client_error(
    error: botocore.exceptions.ClientError, *, sender: str | None = None
) -> SendError:
    """Translate an error answer from SES into the worker's vocabulary.

    Returns (does not raise) a ``TransientSendError`` for throttling, 5xx and timeouts; a
    ``PermanentSendError(account_wide=True)`` for sender, account, configuration and credential
    problems (daily quota included); a plain ``PermanentSendError`` for anything wrong with
    this message alone. ``sender`` (the From address) tells an unverified sender from an
    unverified sandbox recipient by the identities SES lists (``unverified``), never by words
    in the text, which holds the recipient's address. The reason is ``"<code>: <message>"``
    with every address masked, at most 300 characters, and never holds the mail body.
    """
    response: dict[str, Any] = error.response or {}
    code = str(response.get("Error", {}).get("Code") or "Unknown")
    message = str(response.get("Error", {}).get("Message") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    status = status if isinstance(status, int) else 0
    reason = safe_reason(f"{code}: {message}")

    if code in _ACCOUNT_WIDE_CODES:
        return PermanentSendError(reason, account_wide=True)
    if code in _TRANSIENT_CODES or code.startswith("RequestTimeout") or status == 429:
        # SES words the daily quota as a throttle; only the message tells it from the rate.
        # Throttling answers echo nothing of the request, so the text is SES's own here.
        if _DAILY_QUOTA in message.lower():
            return PermanentSendError(reason, account_wide=True)
        if code in _TRANSIENT_CODES or code.startswith("RequestTimeout"):
            return TransientSendError(reason, possibly_sent=code in _POSSIBLY_SENT_CODES)
    if code == "MessageRejected":
        return PermanentSendError(reason, account_wide=is_sender_rejection(message, sender))
    # 429 is "too many requests" whatever the code says; 5xx is the server's fault.
    if status == 429 or status == 503:
        return TransientSendError(reason)
    if status >= 500:
        # A server fault other than "unavailable" may come after the message was accepted.
        return TransientSendError(reason, possibly_sent=True)
    # BadRequestException, InvalidParameterValue, any other 4xx, or an unknown answer: this
    # message as it is will not go; retrying it would only repeat the answer.
    return PermanentSendError(reason)


def classify_botocore_error(error: botocore.exceptions.BotoCoreError) -> SendError:
    """Translate a botocore error raised without an SES answer.

    Network failures and timeouts are transient; missing or broken credentials (and a missing
    region) are account-wide; anything else, such as a parameter that fails validation, is
    permanent for this message. The reason never holds the mail body.
    """
    name = type(error).__name__
    if isinstance(error, _NETWORK_ERRORS):
        # These messages name the endpoint URL, never a request parameter. A read timeout or
        # a connection closed after the request left (HTTPClientError) may hide an accepted
        # message; a failed connect (ConnectionError) never reached SES.
        return TransientSendError(
            safe_reason(f"{name}: {error}"),
            possibly_sent=isinstance(error, botocore.exceptions.HTTPClientError),
        )
    if isinstance(error, _CREDENTIAL_ERRORS):
        return PermanentSendError(safe_reason(f"{name}: {error}"), account_wide=True)
    # ParamValidationError's text quotes the invalid value, which may be the body: name only.
    return PermanentSendError(name)


class SesBackend:
    """Sends through one shared sesv2 client, in worker threads, at most ``max_concurrency``
    calls at a time."""

    name = "ses"

    def __init__(self, settings: Settings, *, max_concurrency: int | None = None) -> None:
        """``max_concurrency`` defaults to OUTBOX_WORKER_CONCURRENCY: one thread and one
        pooled connection per send the worker runs at once."""
        if max_concurrency is None:
            max_concurrency = settings.outbox_worker_concurrency
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self._configuration_set = settings.aws_ses_configuration_set
        # Explicit keys, or else botocore's own chain (environment, shared files, instance
        # role). botocore's session, not boto3's: the same client, without boto3's resource
        # layer and s3transfer (~1.6 MB of a server's memory, issue 16.1).
        credentials = settings.aws_credentials
        config = botocore.config.Config(
            # The outbox retries durably with its own backoff: the SDK makes one quick
            # retry at most and never holds a send for long.
            retries={"mode": "standard", "total_max_attempts": 2},
            connect_timeout=5,
            read_timeout=10,
            # One pooled connection per concurrent call, so no thread waits for a socket.
            max_pool_connections=max_concurrency,
        )

        def client(service: str) -> Any:
            # A session of its own, kept by nothing once the client is made (its endpoint
            # data included), and the parsed models let go: see _forget_parsed_models.
            made = botocore.session.get_session().create_client(
                service,
                region_name=settings.aws_region,
                # None lets botocore honour AWS_ENDPOINT_URL itself.
                endpoint_url=settings.aws_endpoint_url or None,
                config=config,
                **credentials,
            )
            _forget_parsed_models(made)
            return made

        self._client: Any = client("sesv2")
        # The classic API, only for GetSendQuota where GetAccount is missing (moto, some
        # emulators); made on first use.
        self._make_classic_client = functools.partial(client, "ses")
        self._classic_client: Any = None
        # botocore blocks; these threads keep the event loop free, and the limiter bounds them.
        self._limiter = anyio.CapacityLimiter(max_concurrency)

    async def send(self, message: Message) -> SendResult:
        """Send ``message``; return SES's MessageId or raise a ``SendError`` subclass.

        A control character in the sender is account-wide (configuration), in the recipient or
        subject permanent for this message. Cancelling returns at once, but the SES call
        runs on in its thread and may still deliver (the outbox row then looks unsent).
        """
        sender, recipient, subject = header_values(message)
        request: dict[str, Any] = {
            "FromEmailAddress": sender,
            "Destination": {"ToAddresses": [recipient]},
            "Content": {
                "Simple": {
                    # UTF-8 always: SES assumes 7-bit ASCII otherwise (names, fr-CA text).
                    "Subject": {"Data": subject, "Charset": "UTF-8"},
                    "Body": {
                        "Text": {"Data": message.text, "Charset": "UTF-8"},
                        "Html": {"Data": message.html, "Charset": "UTF-8"},
                    },
                }
            },
            "EmailTags": [
                # The idempotency key makes a duplicate after an ambiguous failure visible in
                # SES's event publishing, beside our own "retry of possibly-sent" log line.
                {"Name": "kind", "Value": message.kind},
                {"Name": "idempotency_key", "Value": message.idempotency_key},
            ],
        }
        if self._configuration_set:
            request["ConfigurationSetName"] = self._configuration_set
        try:
            response = await anyio.to_thread.run_sync(
                functools.partial(self._client.send_email, **request), limiter=self._limiter
            )
        except botocore.exceptions.ClientError as error:
            raise classify_client_error(error, sender=sender) from None
        except botocore.exceptions.BotoCoreError as error:
            raise classify_botocore_error(error) from None
        message_id = response.get("MessageId")
        return SendResult(provider_message_id=message_id if isinstance(message_id, str) else None)

    async def max_send_rate(self) -> float:
        """SES's ``MaxSendRate`` (messages per second) for this account and region.

        Asks sesv2 ``GetAccount``; where that fails (moto answers 404, an old emulator), the
        classic ``GetSendQuota``. Raises a ``SendError`` subclass when neither answers.
        """
        try:
            account = await anyio.to_thread.run_sync(
                self._client.get_account, limiter=self._limiter
            )
            return _positive_rate(account.get("SendQuota", {}).get("MaxSendRate"))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, ValueError):
            pass
        try:
            quota = await anyio.to_thread.run_sync(self._get_send_quota, limiter=self._limiter)
            return _positive_rate(quota.get("MaxSendRate"))
        except botocore.exceptions.ClientError as error:
            raise classify_client_error(error) from None
        except botocore.exceptions.BotoCoreError as error:
            raise classify_botocore_error(error) from None
        except ValueError as error:
            raise TransientSendError(f"GetSendQuota: {error}") from None

    def _get_send_quota(self) -> dict[str, Any]:
        if self._classic_client is None:
            self._classic_client = self._make_classic_client()
        quota: dict[str, Any] = self._classic_client.get_send_quota()
        return quota

    async def aclose(self) -> None:
        """Close the clients' connection pools."""
        self._client.close()
        if self._classic_client is not None:
            self._classic_client.close()


def _forget_parsed_models(client: Any) -> None:
    """Let go of the JSON files botocore parsed to make ``client``, which its loader would
    keep for the client's lifetime: endpoints.json alone is ~7 MB of dicts, and a made client
    never reads them again (a paginator or waiter would parse its own file anew). Freed at
    start-up, that memory is reused by what the server builds next: ~7 MB less idle RSS in
    production (issue 16.1). The loader's cache is botocore's own (``Loader._cache``, pinned
    botocore): where a release names it otherwise, nothing is freed and nothing breaks."""
    cache = getattr(getattr(client, "_loader", None), "_cache", None)
    if isinstance(cache, dict):
        cache.clear()


def _positive_rate(value: object) -> float:
    """A MaxSendRate from an SES answer, or ValueError when it is missing or not positive."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"no usable MaxSendRate in the answer ({value!r})")
    return float(value)
