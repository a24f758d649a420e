"""ConsoleBackend: development mail printed to the terminal and kept for /dev/mailbox.

The mail (code included: the guide's development mode shows the code on the console) goes to
a stream, never through ``logging``: the rule that logs never hold a code has no exceptions.
Settings refuse this backend outside development mode.
"""

from __future__ import annotations

import itertools
import sys
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from taxease_auth.clock import Clock, SystemClock
from taxease_auth.mail.message import Message, SendResult

_RULE = "=" * 72


@dataclass(frozen=True, slots=True)
class KeptMail:
    """A mail the console "sent": ``number`` counts from 1 and never changes (the mailbox's
    links use it), ``sent_at`` is when it was printed."""

    number: int
    sent_at: datetime
    message: Message


class ConsoleBackend:
    """Writes each mail to ``stream`` (``sys.stdout`` by default) and remembers the last ones."""

    name = "console"

    def __init__(
        self, stream: TextIO | None = None, keep: int = 50, *, clock: Clock | None = None
    ) -> None:
        if keep < 0:
            raise ValueError("keep must be >= 0")
        # None means "sys.stdout as it is when sending", so a stdout replaced later (pytest's
        # capture, a redirect) still receives the mail.
        self._stream = stream
        self._recent: deque[KeptMail] = deque(maxlen=keep)
        self._numbers = itertools.count(1)
        self._clock = clock or SystemClock()

    async def send(self, message: Message) -> SendResult:
        """Print the mail's addresses, subject and text body; never fails for a valid message."""
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(
            f"\n{_RULE}\n"
            f"Mail ({message.kind}) via the console backend, not sent\n"
            f"From: {message.sender}\n"
            f"To: {message.recipient}\n"
            f"Subject: {message.subject}\n"
            f"{'-' * len(_RULE)}\n"
            f"{message.text.rstrip()}\n"
            f"{_RULE}\n"
        )
        stream.flush()
        self._recent.appendleft(KeptMail(next(self._numbers), self._clock.now(), message))
        return SendResult(provider_message_id=f"console-{message.idempotency_key}")

    def recent(self) -> list[Message]:
        """The last ``keep`` messages sent, newest first."""
        return [kept.message for kept in self._recent]

    @property
    def keep(self) -> int:
        """How many mails are remembered."""
        return self._recent.maxlen or 0

    def kept(self) -> list[KeptMail]:
        """The last ``keep`` messages sent with their number and time, newest first."""
        return list(self._recent)

    def find(self, number: int) -> KeptMail | None:
        """The kept mail numbered ``number``, or None once it has been dropped (or never was)."""
        return next((kept for kept in self._recent if kept.number == number), None)

    async def max_send_rate(self) -> None:
        """A terminal sets no rate: the worker does not pace this backend."""

    async def aclose(self) -> None:
        """Nothing to release."""
