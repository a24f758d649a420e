"""MailRenderer: every kind renders, subjects name the app, user data is escaped."""

from __future__ import annotations

import pytest
from babel.units import format_unit
from hypothesis import given
from hypothesis import strategies as st

from taxease_auth.mail.render import (
    CODE_KINDS,
    MailRenderer,
    sanitize_header_value,
    strip_control_chars,
)
from taxease_auth.store.models import MailKind

pytestmark = pytest.mark.database_independent

NOTICE_KINDS = [kind for kind in MailKind if kind not in CODE_KINDS]


@pytest.fixture(scope="module")
def renderer() -> MailRenderer:
    return MailRenderer("TaxEase")


@pytest.mark.parametrize("kind", sorted(CODE_KINDS))
def test_code_kinds_show_code_expiry_and_security_note(renderer: MailRenderer, kind: MailKind):
    mail = renderer.render(kind, code="042917", expires_minutes=5)

    for body in (mail.html, mail.text):
        assert "042917" in body
        assert "expires in 5 minutes" in body
        assert "If you did not ask for this, ignore this email." in body
        assert "Never share this code" in body
        assert "TaxEase staff will never ask for it" in body
    assert "TaxEase" in mail.subject


@pytest.mark.parametrize("kind", NOTICE_KINDS)
def test_notices_render_without_a_code(renderer: MailRenderer, kind: MailKind):
    mail = renderer.render(kind, first_name="Ada")

    assert "TaxEase" in mail.subject
    for body in (mail.html, mail.text):
        assert "Hello Ada," in body
        assert "reset your password" in body
        assert "expires in" not in body


def test_a_notice_never_carries_a_code_passed_by_mistake(renderer: MailRenderer):
    mail = renderer.render(MailKind.PASSWORD_CHANGED, code="042917", expires_minutes=5)

    assert "042917" not in mail.html
    assert "042917" not in mail.text


def test_login_subject_is_the_guides(renderer: MailRenderer):
    mail = renderer.render(MailKind.LOGIN, code="123456", expires_minutes=5)

    assert mail.subject == "Your TaxEase Login OTP"


def test_every_subject_names_the_app_and_differs():
    renderer = MailRenderer("Acme Tax")
    subjects = {
        kind: renderer.render(kind, code="123456", expires_minutes=5).subject for kind in MailKind
    }

    assert all("Acme Tax" in subject for subject in subjects.values())
    assert len(set(subjects.values())) == len(MailKind)
    assert subjects[MailKind.ACCOUNT_EXISTS] == (
        "Someone tried to create a Acme Tax account with your email"
    )


@pytest.mark.parametrize("kind", list(MailKind))
def test_greeting_names_the_person_when_given_a_name(renderer: MailRenderer, kind: MailKind):
    mail = renderer.render(kind, code="123456", first_name="Zoë", expires_minutes=5)

    assert mail.text.startswith("Hello Zoë,\n")
    assert ">Hello Zoë,</p>" in mail.html
    assert "Hello,</p>" not in mail.html


@pytest.mark.parametrize("kind", list(MailKind))
@pytest.mark.parametrize("no_name", [None, "", "   "])
def test_greeting_is_plain_hello_without_a_name(
    renderer: MailRenderer, kind: MailKind, no_name: str | None
):
    # Code mail to an unverified address gets no name (issue 17 item 5): the name there is
    # whatever the registrant typed, and the mailbox may belong to someone else.
    mail = renderer.render(kind, code="123456", first_name=no_name, expires_minutes=5)

    assert mail.text.startswith("Hello,\n")
    assert ">Hello,</p>" in mail.html
    assert "Hello ," not in mail.text + mail.html
    assert "Hi" not in mail.text.splitlines()[0]


def test_first_name_is_escaped_in_html(renderer: MailRenderer):
    mail = renderer.render(
        MailKind.EMAIL_VERIFICATION,
        code="123456",
        first_name="<script>alert(1)</script>",
        expires_minutes=5,
    )

    assert "<script>" not in mail.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.html


def test_one_minute_is_singular(renderer: MailRenderer):
    mail = renderer.render(MailKind.PASSWORD_RESET, code="123456", expires_minutes=1)

    assert "expires in 1 minute." in mail.text
    assert "expires in 1 minute." in mail.html


@pytest.mark.parametrize("kind", sorted(CODE_KINDS))
def test_code_kind_without_code_or_expiry_raises(renderer: MailRenderer, kind: MailKind):
    with pytest.raises(ValueError, match="code"):
        renderer.render(kind, expires_minutes=5)
    with pytest.raises(ValueError, match="expires_minutes"):
        renderer.render(kind, code="123456")


def test_control_characters_in_app_name_never_reach_the_subject():
    renderer = MailRenderer("Tax\r\nBcc: victim@example.org\x00Ease")

    mail = renderer.render(MailKind.LOGIN, code="123456", expires_minutes=5)

    assert mail.subject == "Your TaxBcc: victim@example.orgEase Login OTP"
    assert sanitize_header_value(mail.subject) == mail.subject


def test_app_name_of_only_control_characters_is_refused():
    with pytest.raises(ValueError, match="app_name"):
        MailRenderer("\r\n")


@pytest.mark.parametrize("value", ["a\r\nBcc: x@example.org", "a\nb", "a\rb", "a\x00b", "a\x7fb"])
def test_sanitize_header_value_rejects_control_characters(value: str):
    with pytest.raises(ValueError, match="control character"):
        sanitize_header_value(value)


def test_sanitize_header_value_keeps_ordinary_text():
    value = "TaxEase <no-reply@taxease.ca> é"

    assert sanitize_header_value(value) == value


# --- two languages (issue 15 item 4; DESIGN.md §12 "Locales") --------------------------------

SUBJECTS = {
    "en": {
        MailKind.EMAIL_VERIFICATION: "Your TaxEase email verification code",
        MailKind.LOGIN: "Your TaxEase Login OTP",
        MailKind.PASSWORD_RESET: "Your TaxEase password reset code",
        MailKind.ACCOUNT_EXISTS: "Someone tried to create a TaxEase account with your email",
        MailKind.PASSWORD_CHANGED: "Your TaxEase password was changed",
        MailKind.CHOOSE_PASSWORD: "Choose a password for your TaxEase account",
    },
    "fr-CA": {
        MailKind.EMAIL_VERIFICATION: "Votre code de vérification de courriel TaxEase",
        MailKind.LOGIN: "Votre code de connexion TaxEase",
        MailKind.PASSWORD_RESET: "Votre code de réinitialisation du mot de passe TaxEase",
        MailKind.ACCOUNT_EXISTS: "Quelqu’un a tenté de créer un compte TaxEase avec votre courriel",
        MailKind.PASSWORD_CHANGED: "Le mot de passe de votre compte TaxEase a été modifié",
        MailKind.CHOOSE_PASSWORD: "Choisissez un mot de passe pour votre compte TaxEase",
    },
}
# A phrase of each French mail that only a translation can have produced.
FRENCH_PHRASES = {
    MailKind.EMAIL_VERIFICATION: "confirmer votre adresse courriel",
    MailKind.LOGIN: "terminer votre connexion à TaxEase\u00a0:",
    MailKind.PASSWORD_RESET: "réinitialiser votre mot de passe TaxEase\u00a0:",
    MailKind.ACCOUNT_EXISTS: "vous en avez déjà un",
    MailKind.PASSWORD_CHANGED: "«\u00a0Mot de passe oublié\u00a0?\u00a0»",
    MailKind.CHOOSE_PASSWORD: "réinitialisez maintenant votre mot de passe",
}
# English that must never be left in a French mail.
ENGLISH = ["Hello", "email", "expires", "If you", "Never share", "staff", "password", "account"]


@pytest.mark.parametrize("locale", ["en", "fr-CA"])
@pytest.mark.parametrize("kind", list(MailKind))
def test_every_kind_renders_in_both_locales(renderer: MailRenderer, kind: MailKind, locale: str):
    mail = renderer.render(kind, code="042917", first_name="Zoë", expires_minutes=5, locale=locale)

    assert mail.subject == SUBJECTS[locale][kind]
    assert f'<html lang="{locale}">' in mail.html
    greeting = {"en": "Hello Zoë,", "fr-CA": "Bonjour Zoë,"}[locale]
    assert mail.text.startswith(greeting + "\n")
    assert f">{greeting}</p>" in mail.html
    if kind in CODE_KINDS:
        expiry = {
            "en": "This code expires in 5 minutes.",
            "fr-CA": "Ce code expire dans 5 minutes.",
        }
        for body in (mail.html, mail.text):
            assert "042917" in body
            assert expiry[locale] in body


@pytest.mark.parametrize("kind", list(MailKind))
def test_a_french_mail_holds_no_english(renderer: MailRenderer, kind: MailKind):
    mail = renderer.render(kind, code="042917", expires_minutes=5, locale="fr-CA")

    for body in (mail.text, mail.html):
        assert FRENCH_PHRASES[kind] in body
        assert body.startswith("Bonjour,\n") or ">Bonjour,</p>" in body
        for english in ENGLISH:
            assert english.lower() not in body.lower(), english
    for english in ENGLISH:
        assert english.lower() not in mail.subject.lower()


@pytest.mark.parametrize(
    ("minutes", "english", "french"),
    [(1, "1 minute", "1 minute"), (15, "15 minutes", "15 minutes"),
     (1000, "1,000 minutes", "1\u00a0000 minutes")],
)  # fmt: skip
def test_expiry_is_written_the_locales_way(
    renderer: MailRenderer, minutes: int, english: str, french: str
):
    for locale, expected in (("en", english), ("fr-CA", french)):
        mail = renderer.render(
            MailKind.LOGIN, code="123456", expires_minutes=minutes, locale=locale
        )
        assert expected in mail.text, locale
        assert expected in mail.html, locale


@pytest.mark.parametrize("asked", ["fr-CA", "fr_CA", "FR-ca", "fr", "fr-FR"])
def test_french_is_matched_however_it_is_asked_for(renderer: MailRenderer, asked: str):
    mail = renderer.render(MailKind.LOGIN, code="123456", expires_minutes=5, locale=asked)

    assert mail.subject == SUBJECTS["fr-CA"][MailKind.LOGIN]


@pytest.mark.parametrize("asked", [None, "", "de", "zz-ZZ", "en-GB"])
def test_anything_else_is_the_default_locale(asked: str | None):
    english = MailRenderer("TaxEase")
    french = MailRenderer("TaxEase", default_locale="fr-CA")

    mail = english.render(MailKind.LOGIN, code="123456", expires_minutes=5, locale=asked)
    assert mail.subject == SUBJECTS["en"][MailKind.LOGIN]
    if asked != "en-GB":  # English asked for stays English
        mail = french.render(MailKind.LOGIN, code="123456", expires_minutes=5, locale=asked)
        assert mail.subject == SUBJECTS["fr-CA"][MailKind.LOGIN]


def test_an_unsupported_default_locale_is_refused():
    with pytest.raises(ValueError, match="default_locale"):
        MailRenderer("TaxEase", default_locale="de")


def test_a_name_is_escaped_in_french_html_too(renderer: MailRenderer):
    mail = renderer.render(
        MailKind.LOGIN, code="123456", first_name="<b>x</b>", expires_minutes=5, locale="fr-CA"
    )

    assert "<b>x</b>" not in mail.html
    assert "Bonjour &lt;b&gt;x&lt;/b&gt;," in mail.html
    assert "Bonjour <b>x</b>," in mail.text


# --- the skeletons (render) against the templates run for each mail (render_with_jinja) ----


# Any character UTF-8 can carry (no lone surrogates), markup, quotes and a marker's text.
_NAMES = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", "Zoë", "O'Brien", "<script>", 'A "B" & C', "QxSLOTxcodexSLOTxQ"]
)
_LINKS = st.none() | st.sampled_from(
    [
        "https://auth.taxease.example/c/abc_DEF-123",
        "http://127.0.0.1:8001/c/x?a=1&b=<2>",
        "https://e.example/c/\"quoted\"'single'",
    ]
)


@given(
    kind=st.sampled_from(sorted(MailKind)),
    locale=st.sampled_from(["en", "fr-CA"]),
    code=st.text("0123456789", min_size=6, max_size=6),
    first_name=_NAMES,
    link=_LINKS,
    minutes=st.integers(min_value=1, max_value=100_000),
)
def test_a_mail_is_what_its_templates_make_of_its_values(
    kind: MailKind, locale: str, code: str, first_name: str, link: str | None, minutes: int
) -> None:
    renderer = MailRenderer("TaxEase")
    mail = renderer.render(
        kind, code=code, first_name=first_name, expires_minutes=minutes, locale=locale, link=link
    )

    is_code = kind in CODE_KINDS
    expected = renderer.render_with_jinja(
        kind,
        locale,
        code=code if is_code else None,
        first_name=strip_control_chars(first_name) or None,
        link=link if is_code else None,
        duration=format_unit(
            minutes, "duration-minute", length="long", locale=locale.replace("-", "_")
        )
        if is_code
        else None,
    )
    assert (mail.html, mail.text) == expected


def test_a_name_holding_a_marker_is_not_filled_again(renderer: MailRenderer) -> None:
    mail = renderer.render(
        MailKind.LOGIN, code="123456", first_name="QxSLOTxcodexSLOTxQ", expires_minutes=5
    )

    assert "QxSLOTxcodexSLOTxQ" in mail.html
    assert "QxSLOTxcodexSLOTxQ" in mail.text
    assert mail.text.count("123456") == 1
