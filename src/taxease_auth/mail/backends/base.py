"""The one contract every mail backend keeps, and the two ways a send can fail.

A backend translates its library's errors at the boundary (see ``ses.py``): the worker only
ever sees ``TransientSendError`` (try again later) or ``PermanentSendError`` (this message will
never go; ``account_wide`` when nothing will go until an operator acts).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from taxease_auth.mail.message import Message, SendResult
from taxease_auth.mail.render import sanitize_header_value


class SendError(Exception):
    """A send failed. ``reason`` is safe to log and store: it never holds the message body."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientSendError(SendError):
    """Throttling, 5xx, timeouts, connection errors: retry with backoff.

    ``possibly_sent`` when the provider may have accepted the message before the failure (a
    timeout or a connection lost after the request left): the retry may deliver a second copy
    of the same mail, and the worker logs it as such.
    """

    def __init__(self, reason: str, *, possibly_sent: bool = False) -> None:
        super().__init__(reason)
        self.possibly_sent = possibly_sent


class PermanentSendError(SendError):
    """This message will never be accepted as it is."""

    def __init__(self, reason: str, *, account_wide: bool = False) -> None:
        super().__init__(reason)
        # Unverified sender, paused or suspended account, bad credentials...: every other
        # message would fail the same way.
        self.account_wide = account_wide


def header_values(message: Message) -> tuple[str, str, str]:
    """The sender, recipient and subject of ``message``, checked just before they leave.

    A control character (CR and LF among them: header injection) raises
    ``PermanentSendError``, account-wide in the sender (configuration), for this message only
    in the recipient or the subject.
    """
    try:
        sender = sanitize_header_value(message.sender)
    except ValueError as error:
        raise PermanentSendError(f"sender: {error}", account_wide=True) from None
    try:
        recipient = sanitize_header_value(message.recipient)
        subject = sanitize_header_value(message.subject)
    except ValueError as error:
        raise PermanentSendError(f"recipient or subject: {error}") from None
    return sender, recipient, subject


class MailBackend(Protocol):
    name: str

    async def send(self, message: Message) -> SendResult:
        """Hand the message to the provider; raise a SendError subclass on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...


@runtime_checkable
class ReportsSendRate(Protocol):
    """A backend that knows the provider's sending rate (SES: ``MaxSendRate``).

    Optional: the worker paces a backend without this method only when ``SES_MAX_SEND_RATE``
    is set.
    """

    async def max_send_rate(self) -> float | None:
        """Messages per second the provider accepts; None when it sets no limit. Raises a
        ``SendError`` subclass when the provider cannot be asked."""
        ...
