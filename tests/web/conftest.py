"""The browser tests' parts: Debian's Chromium driven by Playwright (launched with
``executable_path``: nothing is ever downloaded), and one
real ``taxease-auth serve`` for the module, as ``make run`` starts it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.conftest import GENEROUS_LIMITS
from tests.support import free_port, require_server
from tests.support.cli import Running, db_upgrade, process_environment, serving

CHROMIUM_MISSING = (
    "Chromium not found (/usr/bin/chromium): install it (Debian: apt-get install chromium) "
    "to run the browser tests; .ci/run installs it"
)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium for one module (skipped when missing, a failure under CI=true).

    Replaces pytest-playwright's session-wide ``browser``: the sync API keeps an event loop
    running in the main thread while Playwright is started, and every later test that calls
    ``asyncio.run`` (the migrations) would fail; stopped with the module, it is gone."""
    executable = require_server(chromium_path(), CHROMIUM_MISSING)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One development server (console mail, SQLite) for the module's browser tests."""
    directory = tmp_path_factory.mktemp("web")
    limits = {name.upper(): str(value) for name, value in GENEROUS_LIMITS.items()}
    port = free_port()
    env = process_environment(
        f"sqlite:///{directory / 'web.sqlite3'}",
        **limits,
        LOG_LEVEL="WARNING",
        # The mail links (/c/{token}) point at this server, as they point at `make run`'s.
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
    )
    db_upgrade(env)
    with serving(env, directory, port) as running:
        yield running


ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
