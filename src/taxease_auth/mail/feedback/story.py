"""A mail's fate in plain words, from its SES events (for `taxease-auth why`).

"delivered to the recipient's mail server 2026-12-05 10:02:03 UTC — 250 2.0.0 OK",
"bounced: the address does not exist — 550 5.1.1 user unknown", "delayed: mailbox full, SES
keeps trying until …", "complaint: marked as spam". Only what SES said: never a body or code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

# Bounce subtypes (SES developer guide, "Bounce types"), by bounceType.
_PERMANENT = {
    "General": "the recipient's server refused it for good",
    "NoEmail": "the address does not exist",
    "Suppressed": "SES did not send it: the address is on SES's global suppression list",
    "OnAccountSuppressionList": (
        "SES did not send it: the address is on this account's SES suppression list"
    ),
}
_TRANSIENT = {
    "General": "the recipient's server refused it for now, SES gave up retrying",
    "MailboxFull": "the mailbox is full",
    "MessageTooLarge": "the message was too large for the mailbox",
    "ContentRejected": "the recipient's server rejected its content",
    "AttachmentRejected": "the recipient's server rejected an attachment",
}
# Delay types (SES developer guide, "DeliveryDelay object").
_DELAYS = {
    "InternalFailure": "an SES internal problem",
    "General": "a problem at the recipient's server",
    "MailboxFull": "mailbox full",
    "SpamDetected": "the recipient's server suspects spam",
    "RecipientServerError": "the recipient's server is failing",
    "IPFailure": "the recipient's server blocks SES's address",
    "TransientCommunicationFailure": "the recipient's server cannot be reached",
    "BYOIPHostNameLookupUnavailable": "a host name lookup failed",
    "Undetermined": "no reason given",
    "SendingDeferral": "SES deferred it",
}
_COMPLAINTS = {
    "abuse": "marked as spam",
    "auth-failure": "reported as failing authentication",
    "fraud": "reported as fraud or phishing",
    "not-spam": "reported as not spam",
    "virus": "reported as carrying a virus",
    "other": "reported by the recipient",
}


class Event(Protocol):
    """What a story needs of a recorded event (``store.models.MailEvent``)."""

    event_type: str
    category: str | None
    subtype: str | None
    status: str | None
    diagnostic: str | None
    occurred_at: datetime
    expires_at: datetime | None


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _server_said(event: Event) -> str:
    """The remote server's answer without its "smtp; " prefix, or the status code."""
    said = (event.diagnostic or "").removeprefix("smtp;").strip() or (event.status or "")
    return f" — {said}" if said else ""


def _bounce(event: Event) -> str:
    if event.category == "Permanent":
        if event.subtype == "General" and (event.status or "").startswith("5.1."):
            reason = "the address does not exist"
        else:
            reason = _PERMANENT.get(event.subtype or "", "the recipient's server refused it")
    elif event.category == "Transient":
        reason = _TRANSIENT.get(event.subtype or "", "a temporary failure, SES gave up")
    else:
        reason = "SES could not tell why"
    return f"bounced ({event.category or 'Undetermined'}): {reason}{_server_said(event)}"


def line(event: Event) -> str:
    """One event as a sentence, starting with the event's own time."""
    kind = event.event_type
    if kind == "delivery":
        text = f"delivered to the recipient's mail server{_server_said(event)}"
    elif kind == "bounce":
        text = _bounce(event)
    elif kind == "delivery_delay":
        reason = _DELAYS.get(event.category or "", event.category or "no reason given")
        until = f", SES keeps trying until {_when(event.expires_at)}" if event.expires_at else ""
        text = f"delayed: {reason}{until}{_server_said(event)}"
    elif kind == "complaint":
        text = f"complaint: {_COMPLAINTS.get(event.category or '', 'reported by the recipient')}"
    elif kind == "reject":
        # SES rejects a mail it found a virus in: the reason says so.
        text = f"rejected by SES, not sent{_server_said(event)}"
    elif kind == "rendering_failure":
        text = f"not sent: SES could not render it{_server_said(event)}"
    else:
        text = kind
    return f"{_when(event.occurred_at)}  {text}"
