"""A provider's error text, made safe to keep in ``email_outbox.last_error`` and to log.

SES and SMTP servers echo parts of the request in their error texts: the recipient's address
(a sandbox rejection lists it, a refused RCPT repeats it) and sometimes a parameter value, which
may be the body with its code. What is stored and logged masks every address as the rest of the
service does (``auth.emails.mask_email``) and replaces every run of digits that looks like a
code; it is one line, at most ``REASON_MAX_LENGTH`` characters.
"""

from __future__ import annotations

import re

from taxease_auth.auth.emails import mask_email

REASON_MAX_LENGTH = 300

# A lone run of 6-10 digits is what a code looks like. Longer runs (12-digit account ids in
# ARNs) stay readable.
_CODE_LIKE = re.compile(r"(?<!\d)\d{6,10}(?!\d)")
# Anything shaped like local@domain, however odd: SES echoes addresses as the request gave
# them, and a stored reason must not keep one whole. Brackets, quotes, commas and the like end
# the token, so "<a@b.org>," masks to "<a***@b.org>,".
EMAIL_LIKE = re.compile(r"[^\s<>()\[\]{},;:\"'@]+@[^\s<>()\[\]{},;:\"'@]+")


def mask_addresses(text: str) -> str:
    """``text`` with every email-like token masked: ``ann@example.org`` -> ``a***@example.org``."""
    return EMAIL_LIKE.sub(lambda match: mask_email(match.group()), text)


def safe_reason(text: str) -> str:
    """``text`` as a failure reason to store and log: whitespace runs made one space, addresses
    masked, code-like digit runs replaced by ``[digits]``, cut to ``REASON_MAX_LENGTH``."""
    one_line = " ".join(text.split())
    return _CODE_LIKE.sub("[digits]", mask_addresses(one_line))[:REASON_MAX_LENGTH]
