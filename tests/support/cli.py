"""The real ``taxease-auth`` command in subprocesses, as an operator runs it: environments,
start and stop, waiting for health, and reading what the console backend printed.

Output goes to files (no pipe can fill up and block the process); each process gets its own
pair, named after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from taxease_auth.config import Settings
from tests.conftest import FAST_HASHING, extract_code

BIN = Path(sys.executable).parent
CLI = BIN / "taxease-auth"
START_SECONDS = 20.0
STOP_SECONDS = 10.0
# Where the console backend separates the mails it prints.
_MAIL_SEPARATOR = re.compile(r"\n={72}\n")
_PASSED_THROUGH = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT"}


def dev_env(database_url: str, **extra: str) -> dict[str, str]:
    """The variables of a development set-up on ``database_url`` (cheap hashing)."""
    env = {
        "DEVELOPMENT_MODE": "true",
        "DATABASE_URL": database_url,
        **{name.upper(): str(value) for name, value in FAST_HASHING.items()},
    }
    env.update(extra)
    return env


def process_environment(database_url: str, **extra: str) -> dict[str, str]:
    """A whole environment for a subprocess: ``dev_env`` plus what a shell passes on, and
    nothing else of the developer's."""
    env = {name: value for name, value in os.environ.items() if name in _PASSED_THROUGH}
    env.update(dev_env(database_url))
    env["PYTHONUNBUFFERED"] = "1"
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env.update(extra)
    return env


def table_names(database_url: str) -> set[str]:
    """The tables in the database (SQLite or PostgreSQL), read with the service's driver."""

    async def read() -> set[str]:
        url = Settings(_env_file=None, development_mode=True, database_url=database_url)
        engine = create_async_engine(url.async_database_url)
        try:
            async with engine.connect() as connection:
                names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        finally:
            await engine.dispose()
        return set(names)

    return asyncio.run(read())


def db_upgrade(env: dict[str, str]) -> None:
    """`taxease-auth db upgrade`, as the README says to run before serving."""
    upgrade = subprocess.run(
        [str(CLI), "db", "upgrade"], env=env, capture_output=True, timeout=60, check=False
    )
    assert upgrade.returncode == 0, upgrade.stderr


@dataclass
class Running:
    """A ``taxease-auth`` process and the files holding its output."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    base_url: str = ""

    def output(self) -> str:
        return f"stdout:\n{self.stdout.read_text()}\nstderr:\n{self.stderr.read_text()}"


def start_process(
    args: list[str], env: dict[str, str], directory: Path, name: str = "server"
) -> Running:
    """Start ``taxease-auth ARGS`` with its output in ``NAME.out`` and ``NAME.err``, in a
    process group of its own (``serve --workers N`` has children: ``stop`` ends them all)."""
    stdout_path = directory / f"{name}.out"
    stderr_path = directory / f"{name}.err"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [str(CLI), *args],
            env=env,
            stdout=stdout,
            stderr=stderr,
            cwd=directory,
            start_new_session=True,
        )
    return Running(process, stdout_path, stderr_path)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the process and whatever it started (its process group), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_SECONDS)


def serve(
    env: dict[str, str], directory: Path, port: int, *args: str, name: str = "server"
) -> Running:
    """`taxease-auth serve --port PORT ARGS`, once it answers /healthz."""
    running = start_process(["serve", "--port", str(port), *args], env, directory, name)
    running.base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(running.process, running.base_url, running.stderr)
    except BaseException:
        stop(running.process)
        raise
    return running


@contextmanager
def serving(
    env: dict[str, str], directory: Path, port: int, *args: str, name: str = "server"
) -> Iterator[Running]:
    """``serve``, killed at the end."""
    running = serve(env, directory, port, *args, name=name)
    try:
        yield running
    finally:
        stop(running.process)


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


def wait_for_log(running: Running, text: str) -> None:
    """Wait until ``text`` appears on the process's stderr (its log)."""
    deadline = time.monotonic() + START_SECONDS
    while text not in running.stderr.read_text():
        assert running.process.poll() is None, running.output()
        assert time.monotonic() < deadline, running.output()
        time.sleep(0.05)


def mails_printed(stdout: Path) -> list[str]:
    """Every mail the console backend printed, whole, in order (a mail being printed right
    now is left out until its last line is there)."""
    text = stdout.read_text()
    blocks = _MAIL_SEPARATOR.split(text)
    if not text.endswith("=" * 72 + "\n"):
        blocks = blocks[:-1]  # the last one is not finished
    return [block for block in blocks if block.startswith("Mail (") and "\nTo: " in block]


def code_printed_for(stdout: Path, recipient: str) -> str:
    """The code in the last mail the console backend printed for ``recipient``."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        mails = [mail for mail in mails_printed(stdout) if f"\nTo: {recipient}\n" in mail]
        if mails:
            try:
                return extract_code(mails[-1])
            except AssertionError:
                pass  # printed halfway: read again
        time.sleep(0.05)
    raise AssertionError(f"no code printed for {recipient}: {stdout.read_text()!r}")
