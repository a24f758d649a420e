"""The browser tests' parts: Debian's Chromium driven by Playwright (pytest-playwright's
``browser`` fixture, launched with ``executable_path``: nothing is ever downloaded), and one
real ``taxease-auth serve`` for the module, as ``make run`` starts it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GENEROUS_LIMITS
from tests.support import free_port, require_server
from tests.support.cli import Running, db_upgrade, process_environment, serving

CHROMIUM_MISSING = (
    "Chromium not found (/usr/bin/chromium): install it (Debian: apt-get install chromium) "
    "to run the browser tests; .ci/run installs it"
)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's launch arguments, with Debian's browser (skipped when missing,
    a failure under CI=true)."""
    executable = require_server(chromium_path(), CHROMIUM_MISSING)
    return {**browser_type_launch_args, "executable_path": executable}


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One development server (console mail, SQLite) for the module's browser tests."""
    directory = tmp_path_factory.mktemp("web")
    limits = {name.upper(): str(value) for name, value in GENEROUS_LIMITS.items()}
    env = process_environment(
        f"sqlite:///{directory / 'web.sqlite3'}", **limits, LOG_LEVEL="WARNING"
    )
    db_upgrade(env)
    with serving(env, directory, free_port()) as running:
        yield running


ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
