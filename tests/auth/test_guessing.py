"""The guessing bound is computed from the settings, and production refuses a weak one."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from taxease_auth import cli, config
from taxease_auth.app import create_app
from taxease_auth.auth.guessing import refuse_likely_guessing, settings_bound
from taxease_auth.config import ConfigError, load_settings
from tests.conftest import SENDER, TEST_SECRET_KEY

pytestmark = pytest.mark.database_independent


def production(**overrides: Any) -> dict[str, Any]:
    return {
        "_env_file": None,
        "development_mode": False,
        "secret_key": TEST_SECRET_KEY,
        "aws_ses_from_email": SENDER,
        **overrides,
    }


def test_defaults_allow_50_wrong_guesses_a_day() -> None:
    bound = settings_bound(load_settings(**production()))

    assert bound.guesses_per_day == 50
    assert bound.probability_per_day == pytest.approx(5e-5)


def test_without_a_failure_budget_the_issuing_caps_bound_the_guesses() -> None:
    bound = settings_bound(
        load_settings(
            **production(
                rate_limit_verify_failures_per_email="100000/minute",
                rate_limit_otp_issue_per_email="2/hour",
                otp_resend_cooldown_seconds=60,
                otp_max_guess_probability_per_day=1.0,
            )
        )
    )

    # 48 codes a day per purpose, 5 tries each, 2 guessable purposes.
    assert bound.guesses_per_day == 48 * 5 * 2


LOOSE = {
    "rate_limit_verify_failures_per_email": "1000/hour",
    "rate_limit_otp_issue_per_email": "100/hour",
}


def test_production_refuses_settings_that_make_guessing_likely() -> None:
    settings = load_settings(**production(**LOOSE))

    with pytest.raises(ConfigError) as refused:
        refuse_likely_guessing(settings)

    message = str(refused.value)
    assert "OTP_MAX_GUESS_PROBABILITY_PER_DAY" in message
    assert "RATE_LIMIT_VERIFY_FAILURES_PER_EMAIL" in message


def test_a_longer_code_makes_the_same_budget_acceptable() -> None:
    settings = load_settings(**production(**LOOSE, otp_length=8))
    refuse_likely_guessing(settings)

    # The cooldown (1 code a minute) caps the codes: 1440 a day x 5 tries x 2 purposes.
    assert settings_bound(settings).probability_per_day == pytest.approx(14_400 / 10**8)


def test_development_mode_only_warns_nothing_is_refused() -> None:
    settings = load_settings(_env_file=None, development_mode=True, **LOOSE)
    refuse_likely_guessing(settings)

    assert settings_bound(settings).probability_per_day > settings.otp_max_guess_probability_per_day


def test_an_unparsable_budget_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="RATE_LIMIT_LOGIN_PER_IP"):
        load_settings(**production(rate_limit_login_per_ip="lots"))


# --- start-up refuses, the settings module knows nothing of the rule --------------------------

LOOSE_ENV = {
    "DEVELOPMENT_MODE": "false",
    "SECRET_KEY": TEST_SECRET_KEY,
    "AWS_SES_FROM_EMAIL": SENDER,
    **{name.upper(): value for name, value in LOOSE.items()},
}


@pytest.mark.parametrize("command", [["serve"], ["worker"], ["db", "upgrade"]])
def test_the_command_line_refuses_to_start_with_guessable_codes(
    command: list[str], tmp_path: Path
) -> None:
    env = {**LOOSE_ENV, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"}

    result = CliRunner().invoke(cli.app, command, env=env)

    assert result.exit_code == 2
    assert "OTP_MAX_GUESS_PROBABILITY_PER_DAY" in result.stderr
    assert not (tmp_path / "x.sqlite3").exists()


def test_the_app_refuses_to_start_with_guessable_codes() -> None:
    with pytest.raises(ConfigError, match="OTP_MAX_GUESS_PROBABILITY_PER_DAY"):
        create_app(load_settings(**production(**LOOSE)))


def test_settings_import_nothing_above_them() -> None:
    source = Path(config.__file__).read_text()
    imported = {
        node.module or ""
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import)
        for alias in node.names
    }

    above = ("taxease_auth.auth", "taxease_auth.api", "taxease_auth.store", "taxease_auth.mail")
    assert not [name for name in imported if name.startswith(above)]
