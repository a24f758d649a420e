"""Turn a mail kind and its values into a subject, an HTML body and a plain-text body.

One ``MailRenderer`` is built at start-up and shared: it reads the message catalogues
(``taxease_auth.locales``) and keeps one Jinja2 environment per locale, each compiling a
template once. Every mail exists in English and Canadian French; its text is the templates'
English run through the locale's catalogue (``make messages`` extracts it). HTML templates are
autoescaped, so a first name such as ``<script>`` arrives in the mail as text; subjects never
carry user data at all.

A mail's template run is done once per kind, locale and shape (a name or not, a link or not),
with markers in place of the values (code, name, link, duration); each mail then joins that
skeleton with its own values, escaped as autoescape escapes them in HTML. The templates use
those values only as text and in ``if``s on whether they are there, so the result is the
template's own (a property test compares the two on generated values). Running Jinja2 with
its catalogue lookups for each code was most of request-otp's CPU (`bench/cpu.py`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from babel.units import format_unit
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import escape

from taxease_auth.locales import (
    SUPPORTED_LOCALES,
    babel_identifier,
    supported_locale,
    translations,
)
from taxease_auth.store.mail_rows import RenderedMail
from taxease_auth.store.models import MailKind

# The kinds whose mail carries a one-time code; the others are notices.
CODE_KINDS = frozenset({MailKind.EMAIL_VERIFICATION, MailKind.LOGIN, MailKind.PASSWORD_RESET})

# C0 controls (CR and LF among them) and DEL: a header value holding one could end the header
# and start another (header injection), so none may reach a subject or an address.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


# The values a mail carries. Each one's marker is ASCII letters only (escaping leaves it as it
# is) and appears in no template or catalogue.
_VALUES = ("code", "first_name", "link", "duration")
_MARKERS = {name: f"QxSLOTx{name}xSLOTxQ" for name in _VALUES}
# Captures the value's name: split() gives text, name, text, ..., text.
_SLOT = re.compile(f"QxSLOTx({'|'.join(_VALUES)})xSLOTxQ")

# Literal text and slot names, alternating: text, slot, text, ..., text.
_Skeleton = tuple[str, ...]
# Kind, locale, with a name, with a link.
_Shape = tuple[MailKind, str, bool, bool]


def _skeleton(rendered: str) -> _Skeleton:
    return tuple(_SLOT.split(rendered))


def _fill(skeleton: _Skeleton, values: dict[str, str]) -> str:
    """One pass: a value that happens to hold a marker is not filled again."""
    parts = list(skeleton)
    for index in range(1, len(parts), 2):
        parts[index] = values[parts[index]]
    return "".join(parts)


@lru_cache(maxsize=64)
def _duration(minutes: int, tag: str) -> str:
    """The locale's words and digits: "5 minutes", "1 minute", "1 000 minutes"."""
    return format_unit(minutes, "duration-minute", length="long", locale=babel_identifier(tag))


def gettext_noop(message: str) -> str:
    """Marks ``message`` for the catalogue (``pybabel extract -k gettext_noop``); translated
    where it is used."""
    return message


_SUBJECTS: dict[MailKind, str] = {
    # The login subject is the integration guide's, word for word ("Your TaxEase Login OTP").
    MailKind.LOGIN: gettext_noop("Your %(app_name)s Login OTP"),
    MailKind.EMAIL_VERIFICATION: gettext_noop("Your %(app_name)s email verification code"),
    MailKind.PASSWORD_RESET: gettext_noop("Your %(app_name)s password reset code"),
    MailKind.ACCOUNT_EXISTS: gettext_noop(
        "Someone tried to create a %(app_name)s account with your email"
    ),
    MailKind.PASSWORD_CHANGED: gettext_noop("Your %(app_name)s password was changed"),
    MailKind.CHOOSE_PASSWORD: gettext_noop("Choose a password for your %(app_name)s account"),
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
    """Renders every ``MailKind`` from the templates in ``taxease_auth/mail/templates``, in
    each supported locale.

    Build one per process and share it; ``render`` is cheap and safe to call concurrently.
    """

    def __init__(self, app_name: str, *, default_locale: str = SUPPORTED_LOCALES[0]) -> None:
        """``default_locale`` (DEFAULT_LOCALE) is used when ``render`` is given no locale or
        one that is not supported; it must itself be supported (``ValueError`` otherwise).
        The catalogues are read here, once."""
        # APP_NAME comes from configuration, not from users, but it ends up in a header:
        # stripped here once, so no subject can ever carry CR/LF.
        self.app_name = strip_control_chars(app_name)
        if not self.app_name:
            raise ValueError("app_name is empty once control characters are removed")
        if default_locale not in SUPPORTED_LOCALES:
            raise ValueError(f"default_locale must be one of {', '.join(SUPPORTED_LOCALES)}")
        self.default_locale = default_locale
        self._environments = {tag: _environment(tag) for tag in SUPPORTED_LOCALES}
        self._skeleton_cache: dict[_Shape, tuple[_Skeleton, _Skeleton]] = {}

    def locale(self, requested: str | None) -> str:
        """The supported locale a mail for ``requested`` is written in (DEFAULT_LOCALE when
        ``requested`` is None or matches none)."""
        return supported_locale(requested, self.default_locale)

    def subject(self, kind: MailKind, locale: str | None = None) -> str:
        """The subject line for ``kind``: always names the app, never holds user data."""
        translated = translations(self.locale(locale)).gettext(_SUBJECTS[kind])
        return sanitize_header_value(translated % {"app_name": self.app_name})

    def render(
        self,
        kind: MailKind,
        *,
        code: str | None = None,
        first_name: str | None = None,
        expires_minutes: int | None = None,
        locale: str | None = None,
        link: str | None = None,
    ) -> RenderedMail:
        """Render the subject, HTML body and text body of one mail.

        ``code`` and ``expires_minutes`` are required for the code kinds (email
        verification, login, password reset) and ignored for the notices; a missing one raises
        ``ValueError``. The greeting is "Hello <first_name>," and plain "Hello," when
        ``first_name`` is None or empty: callers pass no name in code mail to an address not
        yet verified, since the name there is the registrant's claim, not the mailbox owner's.
        ``locale`` (``"en"``, ``"fr-CA"``; ``fr``, ``fr_CA`` and the like are matched) picks
        the language; None or an unsupported one gives DEFAULT_LOCALE. ``link`` (code kinds
        only) is the mail link's address (DESIGN.md §12), shown under the code.
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
            link = None
        tag = self.locale(locale)
        name = strip_control_chars(first_name) if first_name else ""
        values = {
            "code": code or "",
            "first_name": name,
            "link": link or "",
            "duration": "" if expires_minutes is None else _duration(expires_minutes, tag),
        }
        html, text = self._skeletons(kind, tag, bool(name), bool(link))
        escaped = {slot: str(escape(value)) for slot, value in values.items()}
        return RenderedMail(
            subject=self.subject(kind, tag), html=_fill(html, escaped), text=_fill(text, values)
        )

    def _skeletons(
        self, kind: MailKind, tag: str, named: bool, linked: bool
    ) -> tuple[_Skeleton, _Skeleton]:
        """The HTML and text skeletons of one kind, locale and shape, made on first use."""
        key = (kind, tag, named, linked)
        skeletons = self._skeleton_cache.get(key)
        if skeletons is None:
            html, text = self.render_with_jinja(
                kind,
                tag,
                code=_MARKERS["code"] if kind in CODE_KINDS else None,
                first_name=_MARKERS["first_name"] if named else None,
                link=_MARKERS["link"] if linked else None,
                duration=_MARKERS["duration"] if kind in CODE_KINDS else None,
            )
            skeletons = self._skeleton_cache[key] = (_skeleton(html), _skeleton(text))
        return skeletons

    def render_with_jinja(
        self,
        kind: MailKind,
        tag: str,
        *,
        code: str | None,
        first_name: str | None,
        link: str | None,
        duration: str | None,
    ) -> tuple[str, str]:
        """The HTML and text bodies straight from the templates (what ``render``'s skeletons
        are made of; the tests compare the two)."""
        context: dict[str, Any] = {
            "app_name": self.app_name,
            "lang": tag,
            "first_name": first_name or None,
            "code": code,
            "link": link,
            "duration": duration,
        }
        environment = self._environments[tag]
        html = environment.get_template(f"{kind.value}.html").render(context)
        text = environment.get_template(f"{kind.value}.txt").render(context)
        return html, text

    def render_test(self) -> RenderedMail:
        """The mail `taxease-auth send-test` sends: no code, no user data."""
        context = {
            "app_name": self.app_name,
            "lang": "en",
            "first_name": None,
            "code": None,
            "link": None,
        }
        # An operator's check: in English whatever DEFAULT_LOCALE says.
        environment = self._environments["en"]
        html = environment.get_template("test_mail.html").render(context)
        text = environment.get_template("test_mail.txt").render(context)
        subject = sanitize_header_value(f"{self.app_name} test mail")
        return RenderedMail(subject=subject, html=html, text=text)


def _environment(tag: str) -> Environment:
    """The Jinja2 environment of one locale: the package's templates, its catalogue installed
    for ``_()`` (new-style gettext: placeholders are named, and escaped in HTML)."""
    environment = Environment(
        loader=PackageLoader("taxease_auth", "mail/templates"),
        autoescape=select_autoescape(["html"]),
        # A misspelt variable fails the render (and the test) instead of mailing a blank.
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        # The templates ship with the package: no stat() of each file on every render.
        auto_reload=False,
        extensions=["jinja2.ext.i18n"],
    )
    environment.install_gettext_translations(translations(tag), newstyle=True)  # type: ignore[attr-defined]
    return environment
