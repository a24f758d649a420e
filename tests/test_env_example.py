"""`.env.example` documents every variable, and a copy of it is a working configuration."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from taxease_auth.config import EmailBackendName, Settings

pytestmark = pytest.mark.database_independent

ROOT = Path(__file__).resolve().parent.parent


def _documented() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))


def test_every_setting_is_documented_in_env_example() -> None:
    expected = {name.upper() for name in Settings.model_fields}
    assert _documented() == expected


def test_env_example_copied_to_dotenv_loads_in_development_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEVELOPMENT_MODE", "true")
    settings = Settings()
    assert settings.mail_backend is EmailBackendName.CONSOLE  # empty EMAIL_BACKEND = default
    assert settings.otp_expiry_minutes == 5
    assert settings.ses_max_send_rate is None
