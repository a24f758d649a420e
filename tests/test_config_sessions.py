"""Settings of sessions and tokens (DESIGN.md §11, §12): the issuer's default, PUBLIC_BASE_URL's
rules, the session ages and the refresh budgets."""

from __future__ import annotations

from pathlib import Path

import pytest

from taxease_auth.config import load_settings
from tests.test_config import config_error, production

pytestmark = pytest.mark.database_independent


@pytest.fixture(autouse=True)
def _no_stray_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = load_settings(**production())

    assert settings.access_token_expire_minutes == 15
    assert settings.token_audience == "taxease"
    assert settings.token_issuer_value == "taxease-auth"
    assert (settings.session_idle_days, settings.session_max_days) == (14, 60)
    assert settings.refresh_reuse_grace_seconds == 10


def test_development_mode_issuer_is_make_runs_address() -> None:
    assert load_settings(development_mode=True).token_issuer_value == "http://127.0.0.1:8001"


@pytest.mark.parametrize(
    "url", ["https://auth.taxease.example", "http://127.0.0.1:8001", "http://localhost:9000/"]
)
def test_production_accepts_https_or_a_loopback_base_url(url: str) -> None:
    settings = load_settings(**production(public_base_url=url))

    assert settings.token_issuer_value == url.rstrip("/")


def test_production_refuses_a_plain_http_base_url() -> None:
    message = config_error(**production(public_base_url="http://auth.taxease.example"))

    assert "PUBLIC_BASE_URL must be https://" in message


@pytest.mark.parametrize("url", ["auth.taxease.example", "ftp://x.example", "https://"])
def test_a_base_url_must_be_an_http_url_in_any_mode(url: str) -> None:
    assert "PUBLIC_BASE_URL" in config_error(development_mode=True, public_base_url=url)


def test_token_issuer_overrides_the_base_url() -> None:
    settings = load_settings(
        **production(public_base_url="https://auth.example", token_issuer="urn:taxease:auth")
    )

    assert settings.token_issuer_value == "urn:taxease:auth"


def test_idle_days_cannot_exceed_max_days() -> None:
    message = config_error(development_mode=True, session_idle_days=61, session_max_days=60)

    assert "SESSION_IDLE_DAYS must not exceed SESSION_MAX_DAYS" in message


@pytest.mark.parametrize(
    "variable", ["rate_limit_refresh_per_ip", "rate_limit_refresh_per_session"]
)
def test_refresh_budgets_must_parse(variable: str) -> None:
    assert variable.upper() in config_error(development_mode=True, **{variable: "lots"})
