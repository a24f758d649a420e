"""One canonical form per email address (DESIGN.md §5).

Trim, normalise Unicode, lowercase, domain to IDNA (Punycode); ``+tags`` are kept; the local
part must be ASCII because SES has no SMTPUTF8. The canonical form is what is stored under the
unique index and compared everywhere, so ``User@Example.COM`` is one account. Lowercasing the
local part is a deliberate choice: RFC 5321 allows case-sensitive mailboxes, but no mainstream
provider uses them, and two accounts differing only in case would be a trap.
"""

from __future__ import annotations

import hmac
import re
import unicodedata
from functools import lru_cache

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from taxease_auth.store.models import EMAIL_MAX_LENGTH


class InvalidEmail(ValueError):
    """The address cannot be used; the message says why (safe to show the client)."""


# The addresses nearly everyone types, once lowercased: an ASCII dot-atom at a domain of
# letter-digit-hyphen labels that ends in a letters-only label. email_validator is exact but
# spends ~100 µs on an address (it checks each domain character against the IDNA tables), more
# than the rest of verify-otp; for these its answer is known to be the lowercased input (a
# property test holds the two together). Everything else goes through email_validator.
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
PLAIN_ADDRESS = re.compile(
    rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?P<domain>(?:{_LABEL}\.)+[a-z]{{2,63}})"
)
# C0 controls and DEL (a regex: a per-character loop cost more than the rest of the check).
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
_SPECIAL_USE_SUFFIXES = tuple(f".{name}" for name in SPECIAL_USE_DOMAIN_NAMES)


def _plain_canonical(candidate: str) -> str | None:
    """``candidate`` lowercased when it is a plain address email_validator accepts as is."""
    lowered = candidate.lower()
    match = PLAIN_ADDRESS.fullmatch(lowered) if lowered.isascii() else None
    if match is None or len(match["local"]) > 64 or len(lowered) > EMAIL_MAX_LENGTH:
        return None
    domain = match["domain"]
    # IDNA reserves "ab--" label starts for its own use (xn--), and special-use names
    # (localhost, .test...) are refused: both are email_validator's to explain.
    if "--" in domain or f".{domain}".endswith(_SPECIAL_USE_SUFFIXES):
        return None
    return lowered


def canonical_email(value: str) -> str:
    """Return the canonical form of ``value`` or raise InvalidEmail.

    Control characters (CR, LF, NUL...) are refused outright, so no address can inject a
    mail header or forge a log line.
    """
    if _CONTROL_CHARACTER.search(value):
        raise InvalidEmail("the email address contains control characters")
    candidate = unicodedata.normalize("NFC", value.strip())
    plain = _plain_canonical(candidate)
    if plain is not None:
        return plain
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


@lru_cache(maxsize=4096)
def email_fingerprint(secret_key: str, email: str) -> str:
    """A keyed hash of a canonical email: searchable (audit, rate-limit keys) without storing
    the address. Rotating SECRET_KEY changes it; search with every key that may have made it.

    Cached: one request needs it up to four times (budgets, audit), and the addresses in
    flight are few."""
    return hmac.digest(_fingerprint_key(secret_key), email.encode(), "sha256").hex()[:32]


@lru_cache(maxsize=16)
def _fingerprint_key(secret_key: str) -> bytes:
    return hmac.digest(secret_key.encode(), _FINGERPRINT_LABEL, "sha256")
