"""Turn a mail kind and its values into a subject, an HTML body and a plain-text body.

One ``MailRenderer`` is built at start-up and shared: the Jinja2 environment compiles each
template once and caches it. HTML templates are autoescaped, so a first name such as
``<script>`` arrives in the mail as text; subjects never carry user data at all.
"""

from __future__ import annotations

import re

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from taxease_auth.store.mail_rows import RenderedMail
from taxease_auth.store.models import MailKind

# The kinds whose mail carries a one-time code; the others are notices.
CODE_KINDS = frozenset({MailKind.EMAIL_VERIFICATION, MailKind.LOGIN, MailKind.PASSWORD_RESET})

# C0 controls (CR and LF among them) and DEL: a header value holding one could end the header
# and start another (header injection), so none may reach a subject or an address.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")

_SUBJECTS: dict[MailKind, str] = {
    # The login subject is the integration guide's, word for word ("Your TaxEase Login OTP").
    MailKind.LOGIN: "Your {app_name} Login OTP",
    MailKind.EMAIL_VERIFICATION: "Your {app_name} email verification code",
    MailKind.PASSWORD_RESET: "Your {app_name} password reset code",
    MailKind.ACCOUNT_EXISTS: "Someone tried to create a {app_name} account with your email",
    MailKind.PASSWORD_CHANGED: "Your {app_name} password was changed",
}


def sanitize_header_value(value: str) -> str:
    """Return ``value`` unchanged if it is safe as a mail header value.

    Raises ``ValueError`` if it holds any control character (``ord < 32`` or ``== 127``),
    CR and LF included. Use it on subjects and addresses just before they leave.
    """
    match = _CONTROL_CHARS.search(value)
    if match is not None:
        raise ValueError(f"control character {match.group()!r} in a mail header value")
    return value


def strip_control_chars(value: str) -> str:
    """Return ``value`` without control characters and surrounding whitespace."""
    return _CONTROL_CHARS.sub("", value).strip()


class MailRenderer:
    """Renders every ``MailKind`` from the templates in ``taxease_auth/mail/templates``.

    Build one per process and share it; ``render`` is cheap and safe to call concurrently.
    """

    def __init__(self, app_name: str) -> None:
        # APP_NAME comes from configuration, not from users, but it ends up in a header:
        # stripped here once, so no subject can ever carry CR/LF.
        self.app_name = strip_control_chars(app_name)
        if not self.app_name:
            raise ValueError("app_name is empty once control characters are removed")
        self._environment = Environment(
            loader=PackageLoader("taxease_auth", "mail/templates"),
            autoescape=select_autoescape(["html"]),
            # A misspelt variable fails the render (and the test) instead of mailing a blank.
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            # The templates ship with the package: no stat() of each file on every render.
            auto_reload=False,
        )

    def subject(self, kind: MailKind) -> str:
        """The subject line for ``kind``: always names the app, never holds user data."""
        return sanitize_header_value(_SUBJECTS[kind].format(app_name=self.app_name))

    def render(
        self,
        kind: MailKind,
        *,
        code: str | None = None,
        first_name: str | None = None,
        expires_minutes: int | None = None,
    ) -> RenderedMail:
        """Render the subject, HTML body and text body of one mail.

        ``code`` and ``expires_minutes`` are required for the code kinds (email
        verification, login, password reset) and ignored for the notices; a missing one raises
        ``ValueError``. The greeting is "Hello <first_name>," and plain "Hello," when
        ``first_name`` is None or empty: callers pass no name in code mail to an address not
        yet verified, since the name there is the registrant's claim, not the mailbox owner's.
        """
        kind = MailKind(kind)
        if kind in CODE_KINDS:
            if not code:
                raise ValueError(f"a {kind} mail needs a code")
            if expires_minutes is None or expires_minutes < 1:
                raise ValueError(f"a {kind} mail needs expires_minutes >= 1")
        else:
            # A notice must never carry a code, even if a caller passes one by mistake.
            code = None
            expires_minutes = None
        name = strip_control_chars(first_name) if first_name else ""
        context = {
            "app_name": self.app_name,
            "first_name": name or None,
            "code": code,
            "expires_minutes": expires_minutes,
        }
        html = self._environment.get_template(f"{kind.value}.html").render(context)
        text = self._environment.get_template(f"{kind.value}.txt").render(context)
        return RenderedMail(subject=self.subject(kind), html=html, text=text)

    def render_test(self) -> RenderedMail:
        """The mail `taxease-auth send-test` sends: no code, no user data."""
        context = {"app_name": self.app_name, "first_name": None, "code": None}
        html = self._environment.get_template("test_mail.html").render(context)
        text = self._environment.get_template("test_mail.txt").render(context)
        subject = sanitize_header_value(f"{self.app_name} test mail")
        return RenderedMail(subject=subject, html=html, text=text)
