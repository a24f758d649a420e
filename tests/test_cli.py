"""The `taxease-auth` command line, as an operator (and the README's reader) runs it."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from taxease_auth.cli import app
from tests.conftest import STRONG_PASSWORD
from tests.support import free_port
from tests.support.cli import (
    CLI,
    STOP_SECONDS,
    Running,
    code_printed_for,
    db_upgrade,
    dev_env,
    process_environment,
    serving,
    start_process,
    stop,
    table_names,
    wait_for_log,
)

TABLES = {"users", "otps", "email_outbox"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def _empty_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI reads ./.env: run where there is none."""
    monkeypatch.chdir(tmp_path)


def sqlite_env(database: Path, **extra: str) -> dict[str, str]:
    """For the commands refused before they open any database."""
    return dev_env(f"sqlite:///{database}", **extra)


# --- help -------------------------------------------------------------------------------------


def test_help_lists_the_commands_with_their_help(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    output = result.output
    for command, help_text in [
        ("serve", "Serve the HTTP API"),
        ("worker", "Deliver queued mail without serving HTTP"),
        ("db", "Database schema"),
    ]:
        assert any(
            line.strip(" │").startswith(command) and help_text in line
            for line in output.splitlines()
        ), f"{command!r} with {help_text!r} not in:\n{output}"


def test_no_arguments_shows_the_help(runner: CliRunner) -> None:
    result = runner.invoke(app, [], env={"COLUMNS": "200"})

    assert "serve" in result.output
    assert "Usage" in result.output


def test_db_help_lists_upgrade_and_downgrade(runner: CliRunner) -> None:
    result = runner.invoke(app, ["db", "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0
    assert "upgrade" in result.output
    assert "downgrade" in result.output


def test_serve_help_documents_its_options(runner: CliRunner) -> None:
    result = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0
    for option in ("--host", "--port", "--workers"):
        assert option in result.output


# --- db -------------------------------------------------------------------------------------


def test_db_upgrade_creates_the_tables(runner: CliRunner, empty_database_url: str) -> None:
    result = runner.invoke(app, ["db", "upgrade"], env=dev_env(empty_database_url))

    assert result.exit_code == 0, result.output
    assert "head" in result.stdout
    assert table_names(empty_database_url) >= TABLES


def test_db_upgrade_twice_then_downgrade(runner: CliRunner, empty_database_url: str) -> None:
    env = dev_env(empty_database_url)

    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    result = runner.invoke(app, ["db", "downgrade", "base"], env=env)

    assert result.exit_code == 0, result.output
    assert table_names(empty_database_url) & TABLES == set()


def test_db_upgrade_with_invalid_config_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    database = tmp_path / "cli.sqlite3"

    result = runner.invoke(app, ["db", "upgrade"], env=sqlite_env(database, LOG_LEVEL="LOUD"))

    assert result.exit_code == 2
    assert "LOG_LEVEL" in result.stderr
    assert not database.exists()


# --- serve refuses bad set-ups before listening -----------------------------------------------


def test_serve_with_invalid_config_exits_2_naming_the_variable(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["serve"], env=sqlite_env(tmp_path / "x.sqlite3", OTP_LENGTH="5"))

    assert result.exit_code == 2
    assert "OTP_LENGTH" in result.stderr
    assert "Traceback" not in result.output


def test_serve_in_production_without_secret_key_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    env = sqlite_env(tmp_path / "x.sqlite3", DEVELOPMENT_MODE="false")
    env["AWS_SES_FROM_EMAIL"] = "no-reply@taxease.example"

    result = runner.invoke(app, ["serve"], env=env)

    assert result.exit_code == 2
    assert "SECRET_KEY" in result.stderr


@pytest.mark.sqlite_only
def test_serve_with_several_workers_on_sqlite_and_embedded_worker_exits_2(
    runner: CliRunner, database_url: str
) -> None:
    result = runner.invoke(app, ["serve", "--workers", "2"], env=dev_env(database_url))

    assert result.exit_code == 2
    assert "SQLite" in result.stderr
    assert "--workers 1" in result.stderr


def test_production_serve_with_several_workers_on_memory_budgets_exits_2(
    runner: CliRunner, tmp_path: Path
) -> None:
    env = sqlite_env(
        tmp_path / "x.sqlite3",
        DEVELOPMENT_MODE="false",
        SECRET_KEY="a-test-secret-key-that-is-long-enough-x",
        AWS_SES_FROM_EMAIL="no-reply@taxease.example",
        EMBEDDED_WORKER="false",
        RATE_LIMIT_STORAGE_URL="memory://",
    )

    result = runner.invoke(app, ["serve", "--workers", "2"], env=env)

    assert result.exit_code == 2
    assert "RATE_LIMIT_STORAGE_URL" in result.stderr


def test_worker_with_invalid_config_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["worker"], env=sqlite_env(tmp_path / "x.sqlite3", DATABASE_URL="mysql://h/db")
    )

    assert result.exit_code == 2
    assert "DATABASE_URL" in result.stderr


def test_the_console_script_and_python_m_agree() -> None:
    for command in ([str(CLI), "--help"], [sys.executable, "-m", "taxease_auth", "--help"]):
        completed = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        assert completed.returncode == 0, completed.stderr
        assert "serve" in completed.stdout


# --- the README flow: db upgrade, serve, register, code from the console, verify, login -------


@pytest.fixture
def upgraded_environment(empty_database_url: str) -> dict[str, str]:
    """The environment of the README: a database brought to head by `taxease-auth db upgrade`."""
    env = process_environment(empty_database_url)
    db_upgrade(env)
    return env


@pytest.fixture
def served(upgraded_environment: dict[str, str], tmp_path: Path) -> Iterator[Running]:
    """`taxease-auth serve` on a free port, killed at the end."""
    with serving(upgraded_environment, tmp_path, free_port()) as running:
        yield running


def test_readme_flow_against_a_real_server(served: Running) -> None:
    email = "test@example.com"
    with httpx.Client(base_url=served.base_url, timeout=10.0) as client:
        registered = client.post(
            "/api/v1/auth/register",
            json={
                "email": email,
                "password": STRONG_PASSWORD,
                "first_name": "Test",
                "last_name": "User",
                "accept_terms": True,
            },
        )
        assert registered.status_code == 201, registered.text

        code = code_printed_for(served.stdout, email)
        verified = client.post(
            "/api/v1/auth/verify-otp",
            json={"email": email, "code": code, "purpose": "email_verification"},
        )
        assert verified.status_code == 200, verified.text
        assert verified.json() == {"message": "OTP verified successfully"}

        login = client.post(
            "/api/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD}
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]

        me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        assert me.json()["email"] == email
        assert me.json()["email_verified"] is True

    served.process.send_signal(signal.SIGTERM)
    returncode = served.process.wait(timeout=STOP_SECONDS)

    log = served.stderr.read_text()
    assert "Application shutdown complete" in log
    assert "delivery worker" in log
    assert "stopped" in log
    assert "Traceback" not in log
    # Graceful shutdown, then uvicorn re-raises the signal it caught (uvicorn/server.py,
    # capture_signals) so a supervisor sees "terminated by SIGTERM", which systemd counts as
    # success. Anything else (a crash, a hang, exit 1) fails here.
    assert returncode in (0, -signal.SIGTERM), f"exit status {returncode} after SIGTERM"


def test_worker_stops_cleanly_on_sigterm(
    upgraded_environment: dict[str, str], tmp_path: Path
) -> None:
    worker = start_process(["worker"], upgraded_environment, tmp_path, "worker")
    try:
        wait_for_log(worker, "started")

        worker.process.send_signal(signal.SIGTERM)

        assert worker.process.wait(timeout=STOP_SECONDS) == 0, worker.output()
        assert "stopped" in worker.stderr.read_text()
    finally:
        stop(worker.process)
