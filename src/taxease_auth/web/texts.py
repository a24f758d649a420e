"""What the pages say about errors and outcomes: English msgids marked for the catalogue
(``make messages``), translated when a page renders (``locales/*/LC_MESSAGES/messages.po``).
One text per service error, none of them telling whether an address has an account."""

from __future__ import annotations

import re

from taxease_auth.auth.passwords import (
    PERSONAL_INFORMATION,
    REPETITIVE_OR_SEQUENTIAL,
    TOO_COMMON,
)
from taxease_auth.errors import WeakPassword
from taxease_auth.mail.render import gettext_noop
from taxease_auth.web.pages import Text

FIELD_TEXTS = {
    "email": gettext_noop("Enter an email address in the form name@example.com."),
    "password": gettext_noop("Enter your password."),
    "first_name": gettext_noop(
        "Enter your first name: letters, spaces, apostrophes, hyphens and periods only."
    ),
    "last_name": gettext_noop(
        "Enter your last name: letters, spaces, apostrophes, hyphens and periods only."
    ),
    "accept_terms": gettext_noop("Accept the terms of use to create an account."),
    "code": gettext_noop("Enter the code from the email: digits only."),
    "new_password": gettext_noop("Enter a new password."),
}
BAD_CREDENTIALS = gettext_noop("The email address or the password is incorrect.")
BAD_CODE = gettext_noop(
    "This code is incorrect or has expired. Check the email or ask for a new code."
)
RATE_LIMITED = gettext_noop("Too many attempts. Try again in %(seconds)s seconds.")
FORM_EXPIRED = gettext_noop("This form has expired. Reload the page and try again.")
NOTICES = {
    "verified": gettext_noop("Your email address is verified. You can sign in."),
    "reset": gettext_noop("Your password has been changed. Sign in with your new password."),
    "signed_out": gettext_noop("You are signed out."),
    "sent": gettext_noop("If this address needs a code, a new one has been sent."),
    "unverified": gettext_noop("Confirm your email address first: enter the code we sent you."),
    "expired": gettext_noop("Your session has ended. Sign in again."),
}

# The password policy's reasons (auth/passwords.py), as the pages say them in each language.
_PASSWORD_REASONS = {
    TOO_COMMON: gettext_noop("This password is too common: choose one that is harder to guess."),
    PERSONAL_INFORMATION: gettext_noop(
        "The password must not contain your email address or your name."
    ),
    REPETITIVE_OR_SEQUENTIAL: gettext_noop(
        "The password must not be a repeated or sequential pattern."
    ),
}
TOO_SHORT = gettext_noop("The password must have at least %(count)s characters.")
TOO_LONG = gettext_noop("The password must have at most %(count)s characters.")
OTHER_REFUSAL = gettext_noop("Choose another password.")
_LENGTH = re.compile(r"^Password must be at (least|most) (\d+) characters$")


def password_refusal(error: WeakPassword) -> Text:
    """The page text of the password policy's refusal (its reason is English for the API)."""
    if error.reason in _PASSWORD_REASONS:
        return Text(_PASSWORD_REASONS[error.reason])
    length = _LENGTH.match(error.reason)
    if length is not None:
        return Text(TOO_SHORT if length[1] == "least" else TOO_LONG, {"count": int(length[2])})
    return Text(OTHER_REFUSAL)
