"""Whose identity failed SES's check: our sender (every mail fails) or a recipient (this one).

SES answers ``MessageRejected`` "Email address is not verified. The following identities failed
the check in region CA-CENTRAL-1: a@example.org, example.org" (SECURITY-AND-SES.md §2.3) both
when the From address is not verified and, in the sandbox, when a recipient is not. Its SMTP
interface says the same after "Message rejected: "; moto says "Email address not verified
a@example.org". The listed identities are the only part of that text a request decides, and
the recipient is whatever someone registered with: a registrant called ``sender@…``,
``from@…`` or ``taxease.example@…`` must not be able to make their own rejection read as the
sender's and stop everyone's mail (issue 17 item 8). So the text is parsed, never searched for
words: SES's fixed phrase (which holds no ``@``), then the list, compared item by item and
exactly with the configured From address and its domain.
"""

from __future__ import annotations

import email.utils
import re

# SES's phrase, before which nothing from the request appears (no "@").
_PHRASE = re.compile(r"^[^@]*?\bemail address (?:is )?not verified\b", re.IGNORECASE)
# After it, the list: tokens without whitespace, separated by commas, to the end of the text.
# Canonical addresses hold no whitespace or comma, so a recipient is always one whole item.
_LIST = re.compile(
    r"""(?:\.?\s*the\ following\ identities\ failed\ the\ check\ in\ region\ [\w-]+)?
        \s*:?\s*
        (?P<identities>[^\s,]+(?:\s*,\s*[^\s,]+)*)
        \s*""",
    re.IGNORECASE | re.VERBOSE,
)


def failed_identities(message: str) -> list[str] | None:
    """The identities a "not verified" rejection lists, lowercased, in order; ``[]`` when it
    lists none that can be read; ``None`` when ``message`` is not such a rejection (content,
    size...)."""
    text = message.strip()
    phrase = _PHRASE.match(text)
    if phrase is None:
        return None
    listed = _LIST.fullmatch(text, phrase.end())
    if listed is None:
        return []
    items = (item.strip().rstrip(".").lower() for item in listed["identities"].split(","))
    return [item for item in items if item]


def sender_identities(sender: str) -> frozenset[str]:
    """The identities that make ``sender`` (``"Name <a@b>"`` or ``"a@b"``) sendable: its
    address and its domain, lowercased; empty when it holds no address."""
    address = email.utils.parseaddr(sender)[1].lower()
    if "@" not in address:
        return frozenset()
    return frozenset({address, address.rpartition("@")[2]})


def is_sender_rejection(message: str, sender: str | None) -> bool:
    """Whether a rejection ``message`` says our sender is not verified (an account-wide fault).

    True when the configured From address or its domain is exactly one of the listed
    identities, or when SES says "not verified" without a readable list (SES wrote all of that
    text: no recipient can be blamed). False for a list of other identities only (a sandbox
    recipient) and for every other rejection. Without a known ``sender`` any "not verified"
    rejection counts as the sender's.
    """
    identities = failed_identities(message)
    if identities is None:
        return False
    if not identities or sender is None:
        return True
    return not sender_identities(sender).isdisjoint(identities)
