"""taxease_auth.locales: the locale a request gets, DEFAULT_LOCALE, loading the catalogues."""

from __future__ import annotations

import pytest

from taxease_auth.config import ConfigError, load_settings
from taxease_auth.locales import SUPPORTED_LOCALES, supported_locale, translations
from tests.conftest import SENDER, TEST_SECRET_KEY

pytestmark = pytest.mark.database_independent

PRODUCTION = {
    "development_mode": False,
    "secret_key": TEST_SECRET_KEY,
    "aws_ses_from_email": SENDER,
}


@pytest.mark.parametrize(
    ("asked", "chosen"),
    [
        ("en", "en"),
        ("EN", "en"),
        ("en-US", "en"),
        ("fr-CA", "fr-CA"),
        ("fr_ca", "fr-CA"),
        (" fr-CA ", "fr-CA"),
        ("fr", "fr-CA"),
        ("fr-BE", "fr-CA"),
        ("de", "en"),
        ("", "en"),
        (None, "en"),
    ],
)
def test_supported_locale(asked: str | None, chosen: str) -> None:
    assert supported_locale(asked) == chosen


def test_default_locale_is_english_and_takes_either_spelling() -> None:
    assert load_settings(**PRODUCTION).default_locale == "en"
    assert load_settings(**PRODUCTION, default_locale="fr_CA").default_locale == "fr-CA"


@pytest.mark.parametrize("value", ["de", "fr", "", "fr-FR"])
def test_an_unsupported_default_locale_stops_the_service_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="DEFAULT_LOCALE") as caught:
        load_settings(**PRODUCTION, default_locale=value)

    assert "en, fr-CA" in str(caught.value)


def test_each_catalogue_loads_and_translates() -> None:
    assert translations("en").gettext("Hello,") == "Hello,"
    assert translations("fr-CA").gettext("Hello,") == "Bonjour,"
    assert set(SUPPORTED_LOCALES) == {"en", "fr-CA"}
    with pytest.raises(ValueError, match="unsupported locale"):
        translations("de")
