"""The one contract every mail backend keeps, and the two ways a send can fail.

A backend translates its library's errors at the boundary (see ``ses.py``): the worker only
ever sees ``TransientSendError`` (try again later) or ``PermanentSendError`` (this message will
never go; ``account_wide`` when nothing will go until an operator acts).
"""

from __future__ import annotations

from typing import Protocol

from taxease_auth.mail.message import Message, SendResult


class SendError(Exception):
    """A send failed. ``reason`` is safe to log and store: it never holds the message body."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientSendError(SendError):
    """Throttling, 5xx, timeouts, connection errors: retry with backoff."""


class PermanentSendError(SendError):
    """This message will never be accepted as it is."""

    def __init__(self, reason: str, *, account_wide: bool = False) -> None:
        super().__init__(reason)
        # Unverified sender, paused or suspended account, bad credentials...: every other
        # message would fail the same way.
        self.account_wide = account_wide


class MailBackend(Protocol):
    name: str

    async def send(self, message: Message) -> SendResult:
        """Hand the message to the provider; raise a SendError subclass on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...
