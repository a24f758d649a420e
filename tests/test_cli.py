"""The `taxease-auth` command line, as an operator (and the README's reader) runs it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from taxease_auth.cli import app
from tests.conftest import FAST_HASHING, STRONG_PASSWORD, extract_code

BIN = Path(sys.executable).parent
CLI = BIN / "taxease-auth"
TABLES = {"users", "otps", "email_outbox"}
START_SECONDS = 20.0
STOP_SECONDS = 10.0


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def _empty_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI reads ./.env: run where there is none."""
    monkeypatch.chdir(tmp_path)


def dev_env(database: Path, **extra: str) -> dict[str, str]:
    env = {
        "DEVELOPMENT_MODE": "true",
        "DATABASE_URL": f"sqlite:///{database}",
        **{name.upper(): str(value) for name, value in FAST_HASHING.items()},
    }
    env.update(extra)
    return env


def table_names(database: Path) -> set[str]:
    engine = create_engine(f"sqlite:///{database}")
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


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


def test_db_upgrade_creates_the_tables(runner: CliRunner, tmp_path: Path) -> None:
    database = tmp_path / "cli.sqlite3"

    result = runner.invoke(app, ["db", "upgrade"], env=dev_env(database))

    assert result.exit_code == 0, result.output
    assert "head" in result.stdout
    assert table_names(database) >= TABLES


def test_db_upgrade_twice_then_downgrade(runner: CliRunner, tmp_path: Path) -> None:
    database = tmp_path / "cli.sqlite3"
    env = dev_env(database)

    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    result = runner.invoke(app, ["db", "downgrade", "base"], env=env)

    assert result.exit_code == 0, result.output
    assert table_names(database) & TABLES == set()


def test_db_upgrade_with_invalid_config_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    database = tmp_path / "cli.sqlite3"

    result = runner.invoke(app, ["db", "upgrade"], env=dev_env(database, LOG_LEVEL="LOUD"))

    assert result.exit_code == 2
    assert "LOG_LEVEL" in result.stderr
    assert not database.exists()


# --- serve refuses bad set-ups before listening -----------------------------------------------


def test_serve_with_invalid_config_exits_2_naming_the_variable(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["serve"], env=dev_env(tmp_path / "x.sqlite3", OTP_LENGTH="5"))

    assert result.exit_code == 2
    assert "OTP_LENGTH" in result.stderr
    assert "Traceback" not in result.output


def test_serve_in_production_without_secret_key_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    env = dev_env(tmp_path / "x.sqlite3", DEVELOPMENT_MODE="false")
    env["AWS_SES_FROM_EMAIL"] = "no-reply@taxease.example"

    result = runner.invoke(app, ["serve"], env=env)

    assert result.exit_code == 2
    assert "SECRET_KEY" in result.stderr


def test_serve_with_several_workers_on_sqlite_and_embedded_worker_exits_2(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["serve", "--workers", "2"], env=dev_env(tmp_path / "x.sqlite3"))

    assert result.exit_code == 2
    assert "SQLite" in result.stderr
    assert "--workers 1" in result.stderr


def test_worker_with_invalid_config_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["worker"], env=dev_env(tmp_path / "x.sqlite3", DATABASE_URL="mysql://h/db")
    )

    assert result.exit_code == 2
    assert "DATABASE_URL" in result.stderr


def test_the_console_script_and_python_m_agree() -> None:
    for command in ([str(CLI), "--help"], [sys.executable, "-m", "taxease_auth", "--help"]):
        completed = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        assert completed.returncode == 0, completed.stderr
        assert "serve" in completed.stdout


# --- the README flow: db upgrade, serve, register, code from the console, verify, login -------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_environment(database: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name in {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT"}
    }
    env.update(dev_env(database))
    env["PYTHONUNBUFFERED"] = "1"
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    base_url: str
    stdout: Path
    stderr: Path


def start_process(
    args: list[str], env: dict[str, str], directory: Path
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Start ``taxease-auth ARGS`` with its output in files (no pipe can fill up and block)."""
    stdout_path = directory / "server.out"
    stderr_path = directory / "server.err"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [str(CLI), *args], env=env, stdout=stdout, stderr=stderr, cwd=directory
        )
    return process, stdout_path, stderr_path


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=STOP_SECONDS)


def upgraded_environment(tmp_path: Path) -> dict[str, str]:
    env = server_environment(tmp_path / "readme.sqlite3")
    upgrade = subprocess.run(
        [str(CLI), "db", "upgrade"], env=env, capture_output=True, timeout=60, check=False
    )
    assert upgrade.returncode == 0, upgrade.stderr
    return env


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`taxease-auth db upgrade` then `taxease-auth serve` on a free port, killed at the end."""
    env = upgraded_environment(tmp_path)
    port = free_port()
    process, stdout, stderr = start_process(["serve", "--port", str(port)], env, tmp_path)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_healthy(process, base_url, stderr)
        yield Served(process, base_url, stdout, stderr)
    finally:
        stop(process)


def wait_until_healthy(process: subprocess.Popen[bytes], base_url: str, stderr: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited {process.returncode}: {stderr.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"server not healthy after {START_SECONDS}s: {stderr.read_text()}")


def code_printed_for(stdout: Path, recipient: str) -> str:
    """The code in the last mail the console backend printed for ``recipient``."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        mails = [
            block
            for block in re.split(r"\n={72}\n", stdout.read_text())
            if block.startswith("Mail (") and f"\nTo: {recipient}\n" in block
        ]
        if mails:
            try:
                return extract_code(mails[-1])
            except AssertionError:
                pass  # printed halfway: read again
        time.sleep(0.05)
    raise AssertionError(f"no code printed for {recipient}: {stdout.read_text()!r}")


def test_readme_flow_against_a_real_server(served: Served) -> None:
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


def test_worker_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    env = upgraded_environment(tmp_path)
    process, _stdout, stderr = start_process(["worker"], env, tmp_path)
    try:
        deadline = time.monotonic() + START_SECONDS
        while "started" not in stderr.read_text():
            assert process.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.05)

        process.send_signal(signal.SIGTERM)

        assert process.wait(timeout=STOP_SECONDS) == 0, stderr.read_text()
        assert "stopped" in stderr.read_text()
    finally:
        stop(process)
