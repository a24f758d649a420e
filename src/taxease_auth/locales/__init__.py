"""The languages mail is written in, and their message catalogues (DESIGN.md §12, "Locales").

The catalogues are the gettext ``.po`` files beside this module (``<locale>/LC_MESSAGES/
messages.po``, made from ``messages.pot`` by ``make messages``), read once per process when
first needed: no compiled ``.mo`` file is committed and no build step stands between a
translator's edit and the service. Imports nothing from the rest of the package, so
``config`` can name the supported locales.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

# BCP 47 tags, as a client or a setting writes them; the first is the source language.
SUPPORTED_LOCALES = ("en", "fr-CA")
DOMAIN = "messages"
CATALOGUE_DIR = Path(__file__).parent


def babel_identifier(tag: str) -> str:
    """``"fr-CA"`` -> ``"fr_CA"``: how Babel and the catalogue directories name a locale."""
    return tag.replace("-", "_")


def supported_locale(requested: str | None, default: str = SUPPORTED_LOCALES[0]) -> str:
    """The supported tag for ``requested`` (any case, ``-`` or ``_``): the exact locale if
    supported, else the one supported locale of the same language (``fr``, ``fr-FR`` ->
    ``fr-CA``; ``en-GB`` -> ``en``), else ``default``."""
    if requested:
        wanted = requested.strip().replace("_", "-").lower()
        for tag in SUPPORTED_LOCALES:
            if tag.lower() == wanted:
                return tag
        language = wanted.split("-", 1)[0]
        for tag in SUPPORTED_LOCALES:
            if tag.split("-", 1)[0].lower() == language:
                return tag
    return default


def catalogue_path(tag: str) -> Path:
    """The ``.po`` file of a supported locale."""
    return CATALOGUE_DIR / babel_identifier(tag) / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def translations(tag: str) -> Translations:
    """The gettext translations of supported locale ``tag``, read from its ``.po`` file.

    Fuzzy and empty entries are left out, so an unfinished translation shows the English
    text rather than a guess (and the catalogue test fails on it). Raises ``ValueError`` for
    a tag that is not supported.
    """
    if tag not in SUPPORTED_LOCALES:
        raise ValueError(f"unsupported locale {tag!r}; supported: {', '.join(SUPPORTED_LOCALES)}")
    with catalogue_path(tag).open("rb") as po:
        catalogue = read_po(po, locale=babel_identifier(tag), domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalogue, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)
