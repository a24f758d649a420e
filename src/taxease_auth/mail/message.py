"""What the mail path carries: a rendered message in, a provider's receipt out."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RenderedMail:
    """A mail rendered from its templates, before it is addressed and queued."""

    subject: str
    html: str
    text: str


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
