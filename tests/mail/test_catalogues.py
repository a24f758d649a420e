"""The message catalogues (src/taxease_auth/locales): complete, current and well typeset.

A translator edits the .po files; these tests say what is missing, stale or mistyped, and
each names the message it is about.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from taxease_auth.locales import CATALOGUE_DIR, SUPPORTED_LOCALES, babel_identifier, catalogue_path

pytestmark = pytest.mark.database_independent

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")
NBSP = "\u00a0"
TRANSLATED = [tag for tag in SUPPORTED_LOCALES if tag != SUPPORTED_LOCALES[0]]


def _read(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as po:
        return read_po(po, locale=locale)


def _messages(catalogue: Catalog) -> dict[str, Message]:
    return {str(message.id): message for message in catalogue if message.id}


def _template_ids() -> set[str]:
    return set(_messages(_read(CATALOGUE_DIR / "messages.pot")))


def test_the_template_holds_every_message_the_code_and_templates_use() -> None:
    # Fails when a text changed and `make messages` was not run.
    with (ROOT / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config)
    keywords = {**DEFAULT_KEYWORDS, "gettext_noop": None}
    extracted = {
        str(found[2]) for found in extract_from_dir(ROOT, method_map, options_map, keywords)
    }

    assert extracted == _template_ids()


@pytest.mark.parametrize("tag", SUPPORTED_LOCALES)
def test_each_catalogue_has_exactly_the_templates_messages(tag: str) -> None:
    catalogue = _read(catalogue_path(tag), babel_identifier(tag))

    assert set(_messages(catalogue)) == _template_ids()
    assert not catalogue.obsolete


@pytest.mark.parametrize("tag", TRANSLATED)
def test_every_message_is_translated(tag: str) -> None:
    catalogue = _read(catalogue_path(tag), babel_identifier(tag))

    untranslated = [key for key, message in _messages(catalogue).items() if not message.string]
    fuzzy = [key for key, message in _messages(catalogue).items() if message.fuzzy]
    assert untranslated == [], f"no {tag} text for these"
    assert fuzzy == [], f"{tag} texts marked fuzzy (check them, then drop the flag)"


@pytest.mark.parametrize("tag", SUPPORTED_LOCALES)
def test_placeholders_are_the_same_in_every_language(tag: str) -> None:
    catalogue = _read(catalogue_path(tag), babel_identifier(tag))

    for key, message in _messages(catalogue).items():
        if message.string:
            assert sorted(PLACEHOLDER.findall(str(message.string))) == sorted(
                PLACEHOLDER.findall(key)
            ), key
            # A lone % would break the %-formatting every message goes through.
            assert "%" not in PLACEHOLDER.sub("", str(message.string)), key


def _french() -> dict[str, str]:
    catalogue = _read(catalogue_path("fr-CA"), "fr_CA")
    return {key: str(message.string) for key, message in _messages(catalogue).items()}


def test_french_typography() -> None:
    for key, text in _french().items():
        # A non-breaking space before : ; ? ! » and after «, never an ordinary one or none.
        assert not re.search(r"[^\u00a0][:;?!»]", text), (key, text)
        assert not re.search(r"«[^\u00a0]", text), (key, text)
        assert "'" not in text, (key, text)  # the apostrophe is U+2019
        assert '"' not in text, (key, text)  # quotation marks are « »


def test_quebec_vocabulary() -> None:
    french = " ".join(_french().values()).lower()

    assert "courriel" in french
    assert "code de vérification" in french
    for anglicism in ("email", "e-mail", "mail ", "login", "otp"):
        assert anglicism not in french, anglicism
