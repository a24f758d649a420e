"""One canonical form per email address (DESIGN.md §5).

Trim, normalise Unicode, lowercase, domain to IDNA (Punycode); ``+tags`` are kept; the local
part must be ASCII because SES has no SMTPUTF8. The canonical form is what is stored under the
unique index and compared everywhere, so ``User@Example.COM`` is one account. Lowercasing the
local part is a deliberate choice: RFC 5321 allows case-sensitive mailboxes, but no mainstream
provider uses them, and two accounts differing only in case would be a trap.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata

from email_validator import EmailNotValidError, validate_email

from taxease_auth.store.models import EMAIL_MAX_LENGTH


class InvalidEmail(ValueError):
    """The address cannot be used; the message says why (safe to show the client)."""


def canonical_email(value: str) -> str:
    """Return the canonical form of ``value`` or raise InvalidEmail.

    Control characters (CR, LF, NUL...) are refused outright, so no address can inject a
    mail header or forge a log line.
    """
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise InvalidEmail("the email address contains control characters")
    candidate = unicodedata.normalize("NFC", value.strip())
    try:
        checked = validate_email(
            candidate,
            check_deliverability=False,
            allow_smtputf8=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            strict=True,  # enforces RFC 5321's 64-character local part, which SES also needs
        )
    except EmailNotValidError as error:
        raise InvalidEmail(str(error)) from None
    canonical = checked.ascii_email
    if canonical is None:  # only None when smtputf8 is allowed, which it is not
        raise InvalidEmail("the email address must be ASCII before the @")
    canonical = canonical.lower()
    if len(canonical) > EMAIL_MAX_LENGTH:
        raise InvalidEmail(f"the email address is longer than {EMAIL_MAX_LENGTH} characters")
    return canonical


def mask_email(email: str) -> str:
    """``alice@example.com`` -> ``a***@example.com``: enough to correlate, not to harvest."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


_FINGERPRINT_LABEL = b"taxease-auth/email-fingerprint/v1"


def email_fingerprint(secret_key: str, email: str) -> str:
    """A keyed hash of a canonical email: searchable (audit, rate-limit keys) without storing
    the address. Rotating SECRET_KEY changes it; search with every key that may have made it."""
    key = hmac.new(secret_key.encode(), _FINGERPRINT_LABEL, hashlib.sha256).digest()
    return hmac.new(key, email.encode(), hashlib.sha256).hexdigest()[:32]
