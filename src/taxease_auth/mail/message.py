"""What the mail path carries: a message to one recipient in, a provider's receipt out.

The rendered content before it is queued (``RenderedMail``) lives in ``store/mail_rows.py``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    """One mail to one recipient, as a backend sends it."""

    sender: str
    recipient: str
    subject: str
    html: str
    text: str
    kind: str
    # Stable per outbox row: a retry after an ambiguous failure is recognisable in the logs.
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class SendResult:
    provider_message_id: str | None
