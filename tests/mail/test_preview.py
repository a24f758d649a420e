"""`taxease-auth preview-mail PURPOSE --locale L --out DIR`: each mail, both languages, on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from taxease_auth.cli import app
from taxease_auth.mail.preview import SAMPLE_CODE
from taxease_auth.store.models import MailKind

pytestmark = pytest.mark.database_independent

SUBJECT_WORDS = {"en": "TaxEase", "fr-CA": "TaxEase"}
GREETING = {"en": "Hello Zoë,", "fr-CA": "Bonjour Zoë,"}


@pytest.mark.parametrize("locale", ["en", "fr-CA"])
@pytest.mark.parametrize("kind", list(MailKind))
def test_preview_writes_html_and_text(tmp_path: Path, kind: MailKind, locale: str) -> None:
    result = CliRunner().invoke(
        app, ["preview-mail", kind.value, "--locale", locale, "--out", str(tmp_path)]
    )

    assert result.exit_code == 0, result.output
    html = tmp_path / f"{kind.value}.{locale}.html"
    text = tmp_path / f"{kind.value}.{locale}.txt"
    assert result.output.splitlines()[1:] == [str(html), str(text)]
    subject = result.output.splitlines()[0].removeprefix("Subject: ")
    assert text.read_text(encoding="utf-8").startswith(f"Subject: {subject}\n\n{GREETING[locale]}")
    assert f'<html lang="{locale}">' in html.read_text(encoding="utf-8")
    if kind in {MailKind.EMAIL_VERIFICATION, MailKind.LOGIN, MailKind.PASSWORD_RESET}:
        assert SAMPLE_CODE in html.read_text(encoding="utf-8")
        assert SAMPLE_CODE in text.read_text(encoding="utf-8")


def test_preview_accepts_the_underscore_form(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["preview-mail", "login", "--locale", "fr_CA", "--out", str(tmp_path)]
    )

    assert result.exit_code == 0, result.output
    assert (tmp_path / "login.fr-CA.txt").exists()


@pytest.mark.parametrize("locale", ["de", "fr", "en-GB"])
def test_preview_refuses_a_locale_it_does_not_have(tmp_path: Path, locale: str) -> None:
    result = CliRunner().invoke(
        app, ["preview-mail", "login", "--locale", locale, "--out", str(tmp_path)]
    )

    assert result.exit_code == 2
    assert "en, fr-CA" in result.output
    assert list(tmp_path.iterdir()) == []


def test_preview_refuses_an_unknown_purpose(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["preview-mail", "welcome", "--out", str(tmp_path)])

    assert result.exit_code == 2
