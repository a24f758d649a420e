"""A private PgBouncer in transaction mode, in front of the test session's PostgreSQL server.

Debian's ``pgbouncer`` package (``.ci/run`` installs it). It refuses to run as root: as root
(CI) it runs as the ``postgres`` system user through ``runuser``, like the server; its files
live in a ``tempfile.mkdtemp()`` directory that user owns. Every database of the server is
reachable through it under the same name, by user ``postgres`` without a password.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import free_port

START_SECONDS = 10.0
PGBOUNCER_MISSING = (
    "pgbouncer not found on PATH or in /usr/sbin: install it (Debian: apt-get install "
    "pgbouncer) to run the PgBouncer tests; .ci/run installs it"
)


def find_binary() -> str | None:
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


class PgBouncer:
    """One ``pgbouncer`` process (pool_mode=transaction) on a free loopback port."""

    def __init__(self, binary: str, server_port: int) -> None:
        self.binary = binary
        self.server_port = server_port
        self.directory = Path(tempfile.mkdtemp(prefix="taxease-pgbouncer-"))
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.directory, account.pw_uid, account.pw_gid)
            self._as_user = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.directory / "pgbouncer.log"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        users = self.directory / "users.txt"
        users.write_text('"postgres" ""\n')
        config = self.directory / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.server_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            "pool_mode = transaction\n"
            "default_pool_size = 10\n"
            "max_client_conn = 200\n"
            f"logfile = {self.log}\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n"
        )
        if self._as_user:
            for path in (users, config):
                shutil.chown(path, "postgres")
        self._process = subprocess.Popen(
            [*self._as_user, self.binary, str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_SECONDS
        while not self._listening():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = self.log.read_text() if self.log.exists() else ""
                raise RuntimeError(f"pgbouncer did not start:\n{log}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        try:
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()  # runuser passes it on
                try:
                    self._process.wait(timeout=START_SECONDS)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
