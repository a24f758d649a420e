"""Test-only parts that stand in for the world outside the service: a fault-injecting proxy in
front of moto (``fault_proxy``), a real Redis server started from its binary (here), a private
PostgreSQL server (``postgres``), and the real ``taxease-auth`` command in subprocesses
(``cli``); and ``transaction_on``, the request path's kind of transaction for writing rows
as the service does."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from taxease_auth.store.sql import Transaction, database_for

REDIS_START_SECONDS = 10.0


@contextlib.asynccontextmanager
async def transaction_on(engine: AsyncEngine) -> AsyncIterator[Transaction]:
    """One transaction of the request path's kind (``store/sql.py``) on ``engine``'s database,
    its connection closed after (on PostgreSQL, a pool of its own)."""
    database = database_for(engine)
    try:
        async with database.transaction() as tx:
            yield tx
    finally:
        await database.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


REDIS_MISSING = (
    "redis-server not found: install it (Debian: apt-get install redis-server) to run the "
    "shared rate-limit tests; .ci/run installs it"
)


def require_server(binary: str | None, reason: str) -> str:
    """The binary's path; skip when missing, but fail under CI=true (a green CI must have
    touched every real server)."""
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    return binary


def redis_binary() -> str:
    """``redis-server`` from PATH or Debian's place for it (DESIGN §8: skip, or fail in CI)."""
    return require_server(
        shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/bin"),
        REDIS_MISSING,
    )


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throw-away Redis on a free loopback port; yields its ``redis://`` URL."""
    binary = redis_binary()
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="taxease-redis-"))
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + REDIS_START_SECONDS
        while not _redis_answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)
