"""Settings: the guide's variables, validated at start-up with messages that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from taxease_auth.config import (
    DEVELOPMENT_SECRET_KEY,
    DEVELOPMENT_SENDER,
    ConfigError,
    EmailBackendName,
    Settings,
    load_settings,
)
from tests.conftest import SENDER, TEST_SECRET_KEY

pytestmark = pytest.mark.database_independent


@pytest.fixture(autouse=True)
def _no_stray_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings() reads ./.env: run each test in an empty directory unless it writes one."""
    monkeypatch.chdir(tmp_path)


def production(**overrides: object) -> dict[str, object]:
    """A valid production configuration, to be broken one variable at a time."""
    values: dict[str, object] = {
        "development_mode": False,
        "secret_key": TEST_SECRET_KEY,
        "aws_ses_from_email": SENDER,
    }
    values.update(overrides)
    return values


def config_error(**overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    return str(caught.value)


# --- production mode refuses unsafe set-ups ---------------------------------------------------


def test_a_complete_production_configuration_loads() -> None:
    settings = load_settings(**production())

    assert settings.development_mode is False
    assert settings.mail_backend is EmailBackendName.SES
    assert settings.sender == SENDER
    assert settings.signing_key == TEST_SECRET_KEY


def test_production_is_the_default_so_a_bare_environment_refuses_to_start() -> None:
    # Nothing set at all: DEVELOPMENT_MODE defaults to false, so a forgotten variable never
    # opens the development bypasses; every missing variable is named in one message.
    message = config_error()
    assert "AWS_SES_FROM_EMAIL" in message
    assert "SECRET_KEY" in message


def test_production_requires_secret_key() -> None:
    values = production()
    del values["secret_key"]

    assert "SECRET_KEY" in config_error(**values)


def test_production_refuses_an_empty_secret_key() -> None:
    assert "SECRET_KEY" in config_error(**production(secret_key=""))


def test_production_refuses_a_short_secret_key() -> None:
    message = config_error(**production(secret_key="s3cret-but-only-24-chars"))

    assert "SECRET_KEY" in message
    assert "32" in message


def test_production_refuses_the_development_key() -> None:
    assert "SECRET_KEY" in config_error(**production(secret_key=DEVELOPMENT_SECRET_KEY))


@pytest.mark.parametrize("weak", ["x", DEVELOPMENT_SECRET_KEY])
def test_production_refuses_a_weak_or_public_previous_key(weak: str) -> None:
    good = "another-random-previous-key-" + "p" * 16
    message = config_error(**production(previous_secret_keys=f"{good},{weak}"))

    assert "PREVIOUS_SECRET_KEYS entry 2 " in message
    assert DEVELOPMENT_SECRET_KEY not in message  # a key is never echoed


def test_production_accepts_strong_previous_keys() -> None:
    good = "another-random-previous-key-" + "p" * 16
    settings = load_settings(**production(previous_secret_keys=good))

    assert settings.verification_keys == [TEST_SECRET_KEY, good]


def test_production_refuses_a_short_metrics_token() -> None:
    message = config_error(**production(metrics_token="scrape-me-please"))

    assert "METRICS_TOKEN" in message
    assert "scrape-me-please" not in message  # a secret is never echoed


def test_metrics_token_is_optional_and_not_shown_in_the_settings_repr() -> None:
    token = "a-random-metrics-token-of-enough-length-" + "m" * 8
    assert load_settings(**production()).metrics_token is None

    settings = load_settings(**production(metrics_token=token))

    assert settings.metrics_token is not None
    assert settings.metrics_token.get_secret_value() == token
    assert token not in repr(settings)


def test_production_requires_a_sender() -> None:
    values = production()
    del values["aws_ses_from_email"]

    assert "AWS_SES_FROM_EMAIL" in config_error(**values)


def test_production_refuses_the_console_backend() -> None:
    assert "EMAIL_BACKEND" in config_error(**production(email_backend="console"))


def test_production_error_does_not_echo_the_rejected_key() -> None:
    message = config_error(**production(secret_key="short-secret-value"))

    assert "short-secret-value" not in message


# --- wrong values, from the environment -------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTP_LENGTH", "5"),
        ("OTP_LENGTH", "six"),
        ("OTP_EXPIRY_MINUTES", "0"),
        ("PASSWORD_MIN_LENGTH", "4"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_FORMAT", "xml"),
        ("DATABASE_URL", "mysql://user:pass@localhost/taxease"),
        ("EMAIL_BACKEND", "pigeon"),
        ("DEVELOPMENT_MODE", "perhaps"),
    ],
)
def test_a_wrong_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("DEVELOPMENT_MODE", "true")
    monkeypatch.setenv(variable, value)

    message = config_error()

    assert message.startswith("invalid configuration: ")
    assert f"{variable}:" in message


def test_wrong_values_are_all_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVELOPMENT_MODE", "true")
    monkeypatch.setenv("OTP_LENGTH", "5")
    monkeypatch.setenv("LOG_LEVEL", "LOUD")

    message = config_error()

    assert "OTP_LENGTH" in message
    assert "LOG_LEVEL" in message


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVELOPMENT_MODE", "true")
    monkeypatch.setenv("LOG_LEVEL", "debug")

    assert load_settings().log_level == "DEBUG"


def test_variable_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("development_mode", "true")
    monkeypatch.setenv("Otp_Expiry_Minutes", "9")

    assert load_settings().otp_expiry_minutes == 9


# --- the .env file ----------------------------------------------------------------------------


def test_settings_read_a_dot_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "\n".join(
            [
                "# a comment",
                "DEVELOPMENT_MODE=false",
                f"SECRET_KEY={TEST_SECRET_KEY}",
                f"AWS_SES_FROM_EMAIL={SENDER}",
                "AWS_REGION=us-west-2",
                "OTP_EXPIRY_MINUTES=7",
                "APP_NAME=TaxEase Staging",
                "",
            ]
        ),
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)

    settings = Settings()

    assert settings.development_mode is False
    assert settings.signing_key == TEST_SECRET_KEY
    assert settings.sender == SENDER
    assert settings.aws_region == "us-west-2"
    assert settings.otp_expiry_minutes == 7
    assert settings.app_name == "TaxEase Staging"


def test_the_environment_beats_the_dot_env_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("DEVELOPMENT_MODE=true\nOTP_EXPIRY_MINUTES=7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OTP_EXPIRY_MINUTES", "3")

    assert Settings().otp_expiry_minutes == 3


def test_a_wrong_value_in_dot_env_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("DEVELOPMENT_MODE=true\nOTP_LENGTH=4\n")
    monkeypatch.chdir(tmp_path)

    assert "OTP_LENGTH" in config_error()


def test_unknown_variables_in_dot_env_are_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("DEVELOPMENT_MODE=true\nSOMETHING_ELSE=1\n")
    monkeypatch.chdir(tmp_path)

    assert load_settings().development_mode is True


# --- development mode -------------------------------------------------------------------------


def test_development_mode_defaults() -> None:
    settings = load_settings(development_mode=True)

    assert settings.mail_backend is EmailBackendName.CONSOLE
    assert settings.sender == DEVELOPMENT_SENDER
    assert settings.signing_key == DEVELOPMENT_SECRET_KEY
    assert settings.verification_keys == [DEVELOPMENT_SECRET_KEY]
    assert settings.active_developer_otp is None
    assert settings.skips_email_verification is False
    assert settings.is_sqlite
    assert any("DEVELOPMENT_MODE" in warning for warning in settings.startup_warnings())


def test_the_guides_defaults() -> None:
    settings = load_settings(development_mode=True)

    assert settings.aws_region == "ca-central-1"
    assert settings.otp_expiry_minutes == 5
    assert settings.otp_length == 6
    assert settings.otp_max_attempts == 5
    assert settings.password_min_length == 12
    assert settings.login_otp_required is False
    assert settings.embedded_worker is True


def test_development_mode_keeps_an_explicit_sender_and_backend() -> None:
    settings = load_settings(development_mode=True, aws_ses_from_email=SENDER, email_backend="ses")

    assert settings.sender == SENDER
    assert settings.mail_backend is EmailBackendName.SES


def test_developer_otp_is_honoured_in_development_mode() -> None:
    settings = load_settings(
        development_mode=True, developer_otp="123456", skip_email_verification=True
    )

    assert settings.active_developer_otp == "123456"
    assert settings.skips_email_verification is True
    assert any("DEVELOPER_OTP" in warning for warning in settings.startup_warnings())
    assert all("123456" not in warning for warning in settings.startup_warnings())


@pytest.mark.parametrize(
    "value", ["12345", "1234567", "12345a", "12 345", "１２３４５６", "-12345"]
)
def test_developer_otp_must_be_otp_length_ascii_digits(value: str) -> None:
    message = config_error(development_mode=True, developer_otp=value)

    assert "DEVELOPER_OTP" in message
    assert value not in message


def test_developer_otp_follows_otp_length() -> None:
    assert (
        load_settings(
            development_mode=True, otp_length=8, developer_otp="01234567"
        ).active_developer_otp
        == "01234567"
    )
    assert "DEVELOPER_OTP" in config_error(
        development_mode=True, otp_length=8, developer_otp="123456"
    )


def test_developer_otp_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVELOPMENT_MODE", "true")
    monkeypatch.setenv("DEVELOPER_OTP", "000123")

    assert load_settings().active_developer_otp == "000123"


def test_developer_otp_is_not_shown_in_the_settings_repr() -> None:
    settings = load_settings(development_mode=True, developer_otp="987654")

    assert "987654" not in repr(settings)
    assert "987654" not in str(settings)


# --- the bypasses are ignored in production ---------------------------------------------------


def test_production_ignores_the_bypasses_and_warns_about_them() -> None:
    settings = load_settings(**production(developer_otp="123456", skip_email_verification=True))

    assert settings.active_developer_otp is None
    assert settings.skips_email_verification is False
    warnings = settings.startup_warnings()
    assert any("DEVELOPER_OTP" in warning and "IGNORED" in warning for warning in warnings)
    assert any(
        "SKIP_EMAIL_VERIFICATION" in warning and "IGNORED" in warning for warning in warnings
    )
    assert all("123456" not in warning for warning in warnings)


def test_production_ignores_a_malformed_developer_otp_instead_of_failing() -> None:
    # The guide's sample .env carries DEVELOPER_OTP: a production start must not depend on it.
    settings = load_settings(**production(developer_otp="not-a-code"))

    assert settings.active_developer_otp is None
    assert any("DEVELOPER_OTP" in warning for warning in settings.startup_warnings())


def test_production_without_bypasses_has_no_warnings() -> None:
    assert load_settings(**production()).startup_warnings() == []


def test_production_bypasses_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVELOPMENT_MODE", "false")
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("AWS_SES_FROM_EMAIL", SENDER)
    monkeypatch.setenv("DEVELOPER_OTP", "123456")
    monkeypatch.setenv("SKIP_EMAIL_VERIFICATION", "true")

    settings = load_settings()

    assert settings.active_developer_otp is None
    assert settings.skips_email_verification is False
    assert len(settings.startup_warnings()) == 2


# --- database URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("sqlite:///x.sqlite3", "sqlite+aiosqlite:///x.sqlite3"),
        ("sqlite:////var/lib/taxease/auth.db", "sqlite+aiosqlite:////var/lib/taxease/auth.db"),
        ("sqlite+pysqlite:///x.sqlite3", "sqlite+aiosqlite:///x.sqlite3"),
        ("postgresql://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("postgresql+psycopg2://u:p@h:5433/db", "postgresql+asyncpg://u:p@h:5433/db"),
        ("postgresql+asyncpg://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
    ],
)
def test_database_url_plain_forms_get_the_async_driver(given: str, used: str) -> None:
    settings = load_settings(development_mode=True, database_url=given)

    assert settings.async_database_url == used
    assert settings.is_sqlite is given.startswith("sqlite")


def test_database_url_keeps_a_password_with_special_characters() -> None:
    settings = load_settings(development_mode=True, database_url="postgresql://u:p%40ss%25w@h/db")

    assert settings.async_database_url == "postgresql+asyncpg://u:p%40ss%25w@h/db"


def test_database_url_default_is_a_sqlite_file() -> None:
    settings = load_settings(development_mode=True)

    assert settings.is_sqlite
    assert settings.async_database_url.startswith("sqlite+aiosqlite:///")


@pytest.mark.parametrize("url", ["mysql://u:p@h/db", "not a url", "oracle://h/db"])
def test_database_url_refuses_other_databases(url: str) -> None:
    assert "DATABASE_URL" in config_error(development_mode=True, database_url=url)


# --- comma-separated lists --------------------------------------------------------------------


def test_previous_secret_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVELOPMENT_MODE", "true")
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("PREVIOUS_SECRET_KEYS", "old-key-one, old-key-two,,")

    settings = load_settings()

    assert settings.previous_secret_keys == ["old-key-one", "old-key-two"]
    assert settings.verification_keys == [TEST_SECRET_KEY, "old-key-one", "old-key-two"]


def test_trusted_proxies_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVELOPMENT_MODE", "true")
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.1,  10.0.0.2 ,192.168.0.0/16")

    assert load_settings().trusted_proxies == ["10.0.0.1", "10.0.0.2", "192.168.0.0/16"]


def test_one_value_lists_and_empty_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVELOPMENT_MODE", "true")
    monkeypatch.setenv("TRUSTED_PROXIES", "127.0.0.1")
    monkeypatch.setenv("PREVIOUS_SECRET_KEYS", "")

    settings = load_settings()

    assert settings.trusted_proxies == ["127.0.0.1"]
    assert settings.previous_secret_keys == []


def test_secrets_are_not_shown_in_the_settings_repr() -> None:
    settings = load_settings(**production(aws_secret_access_key="fake-aws-secret-for-repr-test"))

    assert TEST_SECRET_KEY not in repr(settings)
    assert "fake-aws-secret-for-repr-test" not in repr(settings)
