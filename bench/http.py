"""HTTP benchmark (issue 6): every hot path against the framework's own ceiling, in one run.

Two servers, both started as a user starts them, each one uvicorn process with the same event
loop and HTTP parser (``--loop``, ``--http``):

- the reference, ``bench/reference_app.py``: a bare FastAPI route that parses the verify-otp
  body with a pydantic model and answers a small JSON (the framework's ceiling here);
- the service, ``taxease-auth serve`` after ``taxease-auth db upgrade``, on a fresh SQLite file
  (or ``--database postgresql``: a throwaway PostgreSQL started for the run), in development
  mode with the console mail backend (its stdout, the mails, discarded), the embedded delivery
  worker on, argon2id at the production defaults, INFO logs to a file, and every rate budget
  raised for the run (same windows and number of limits as the defaults, larger amounts: 64
  per address, far more per client address, since every request comes from one).

Load comes from ``wrk`` (Lua scripts in ``bench/wrk/``), not from Python: a Python load
generator saturates its own core near 1.5k req/s. wrk shares the machine's two cores with the
server (``-t1`` by default). Each scenario runs ``--warmup`` seconds, then ``--duration``
seconds at ``--connections`` (32), and between scenarios the driver waits until the server is
idle again (the background work a scenario left, such as codes issued after their 202, mail
delivery, queued logins, is drained before the next one starts; that time is reported).
Every response's status is checked in Lua: a run with one unexpected status, a socket error, a
single-use code sent twice, or an ERROR in the server's log is reported FAILED, not fast.

Scenarios, and what each ratio is taken against:

- ``reference``: the bare route, at the start and again at the end (their drift tells how
  noisy the machine was); the request ratios use their mean;
- ``verify-valid``: verify-otp with a correct, live ``email_verification`` code, each used once
  (the code is consumed, the account activated, an audit row written). The codes are seeded
  into the database before the server starts (keyed hashes, as the service stores them), more
  than the reference's rate × time could use; a run that runs out fails;
- ``verify-wrong``: verify-otp with a wrong code for a live code (counted, audited, 400);
- ``request-otp``: request-otp for existing unverified accounts (202; the new code, its outbox
  row and audit row are written after the answer, by design, and the embedded worker mails it
  later). The service holds answers back while 64 issues are in progress, so answers cannot
  outrun issuing; the codes issued are counted in the database after the drain all the same,
  and fewer than the answers is a failure. Also reported: codes issued / (duration + drain),
  the drain being mostly mail delivery;
- ``refresh``: token/refresh, each request rotating the refresh token of one seeded session
  (sent once: a replay would end the session), as many sessions as verify-valid's codes;
- ``me``: GET /me with the access tokens of 1000 seeded sessions, minted just before it
  (signature, session liveness, account lookup; a token seen before skips the signature
  check, as a client's next request with the same token does). bench/sessions.py says more;
- ``login`` and ``register``: against the hasher's ceiling, measured in the same run: the same
  argon2id parameters hashed by as many threads at once as the server's hashing semaphore
  allows (the CPU count), in this process while the server is idle, before and after the
  password scenarios (their mean);
- ``flood``: a login flood at ``--connections`` while verify-otp (wrong codes) and healthz run
  beside it, each a steady load (4 connections pausing 40 ms between requests, at most ~100
  req/s): their p99 is the "other routes" figure;
- the server's RSS (VmRSS) idle after start-up and after the run, and its peak (VmHWM).

Results: a table on stdout and ``bench/results/http-<time>.json``. Exit status 0 when every
target holds, 1 when one misses, 2 when the run failed (unexpected statuses, errors).
``--server-env NAME=VALUE`` changes one server setting for an A/B (the results say so), e.g.
``EMBEDDED_WORKER=false`` to see the request path without the delivery worker beside it;
``python -m bench.cpu`` gives the CPU per request in process, in seconds, for quick A/Bs of the
code. ``--profile DIR`` also records each scenario with py-spy (``pip install py-spy``); the
environment variable BENCH_CLI names another ``taxease-auth`` executable to start (a wrapper
that patches or profiles the server, for an A/B in the same conditions).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import rss

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WRK_SCRIPTS = ROOT / "bench" / "wrk"
CLI = Path(os.environ.get("BENCH_CLI", ROOT / ".venv" / "bin" / "taxease-auth"))
PYTHON = ROOT / ".venv" / "bin" / "python"

PASSWORD = "correct horse battery staple"
DOMAIN = "bench.example.org"
VERIFY_PATH = "/api/v1/auth/verify-otp"
# Same windows and number of limits as the defaults (so the limiter does the same work per
# request), amounts above what a run sends. Per address, 64: each seeded account gets a request
# or two per run, and a budget this small is kept as production's are (a tuple the garbage
# collector stops tracking: auth/limits.py, TUPLE_MAX_AMOUNT). Per client address (every
# request comes from one), far larger.
PER_ADDRESS = 64
RAISED_LIMITS = {
    "OTP_RESEND_COOLDOWN_SECONDS": "0",
    "RATE_LIMIT_OTP_ISSUE_PER_EMAIL": f"{PER_ADDRESS}/hour;{PER_ADDRESS}/day",
    "RATE_LIMIT_OTP_ISSUE_PER_IP": "10000000/hour",
    "RATE_LIMIT_VERIFY_FAILURES_PER_EMAIL": f"{PER_ADDRESS}/hour;{PER_ADDRESS}/day",
    "RATE_LIMIT_VERIFY_PER_IP": "10000000/hour",
    "RATE_LIMIT_LOGIN_FAILURES_PER_EMAIL": f"{PER_ADDRESS}/15minutes",
    "RATE_LIMIT_LOGIN_PER_IP": "10000000/15minutes",
    "RATE_LIMIT_REGISTER_PER_IP": "10000000/hour",
    "RATE_LIMIT_REFRESH_PER_IP": "10000000/minute",
    "RATE_LIMIT_REFRESH_PER_SESSION": f"{PER_ADDRESS}/minute",
}
# Variables that would change what is measured if the caller's environment had them.
CLEARED = ("DEVELOPER_OTP", "SKIP_EMAIL_VERIFICATION", "TRUSTED_PROXIES", "LOGIN_OTP_REQUIRED",
           "RATE_LIMIT_STORAGE_URL", "EMBEDDED_WORKER", "LOG_FORMAT")  # fmt: skip
SERVER_VARIABLES = (
    "DEVELOPMENT_MODE", "SECRET_KEY", "DATABASE_URL", "EMAIL_BACKEND", "LOG_LEVEL",
    "PASSWORD_HASH_MEMORY_KIB", "PASSWORD_HASH_TIME_COST", "PASSWORD_HASH_PARALLELISM",
    *RAISED_LIMITS,
)  # fmt: skip
# Seeded codes live this long: longer than any run, so none expires mid-scenario.
SEEDED_CODE_LIFETIME = timedelta(hours=2)
# Beside the login flood: verify-otp and healthz, each from SIDE_CONNECTIONS connections that
# wait SIDE_PAUSE_MS between requests (at most ~100 req/s each): other users' steady traffic,
# whose latency is the figure, not a second flood competing for the event loop.
SIDE_CONNECTIONS = 4
SIDE_PAUSE_MS = 40
TARGETS = {
    "verify_ratio": 0.5,
    "verify_p99_ms": 50.0,
    "refresh_ratio": 0.3,
    "me_ratio": 0.5,
    "session_p99_ms": 50.0,
    "request_otp_ratio": 0.4,
    "request_otp_p99_ms": 60.0,
    "hashing_ratio": 0.8,
    "flood_other_p99_ms": 100.0,
    "rss_mb": 140.0,  # after the run (issue 16.1)
}
ALL_SCENARIOS = (
    "verify-valid", "verify-wrong", "request-otp", "refresh", "me", "login", "register", "flood"
)  # fmt: skip


class BenchFailed(Exception):
    """The run could not be measured honestly (a server did not start, a tool is missing)."""


# --- processes -------------------------------------------------------------------------------


class Children:
    """Every process this run started; ``close()`` stops them all, whatever happened."""

    def __init__(self) -> None:
        self._processes: list[subprocess.Popen[bytes]] = []
        self._cleanups: list[Any] = []

    def start(self, command: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
        # A session of its own: the whole group (uvicorn and anything it forks) can be signalled.
        process = subprocess.Popen(command, start_new_session=True, **options)  # noqa: S603
        self._processes.append(process)
        return process

    def on_close(self, cleanup: Any) -> None:
        self._cleanups.append(cleanup)

    def stop(self, process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
        """SIGTERM (uvicorn shuts down gracefully), then SIGKILL after ``grace`` seconds."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process in self._processes:
            self._processes.remove(process)

    def close(self) -> None:
        for process in reversed(self._processes[:]):
            self.stop(process, grace=5.0)
        for cleanup in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        self._cleanups.clear()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path | None, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchFailed(f"{url}: the server exited ({process.returncode}){_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - our own server
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise BenchFailed(f"{url}: not ready after {timeout:.0f} s{_tail(log)}")


def _tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    return "\n--- server log (tail) ---\n" + "\n".join(log.read_text().splitlines()[-lines:])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pid: int, timeout: float = 90.0) -> float:
    """Wait until the server is idle (under 3% of a core for two 0.5 s looks); seconds waited.

    What a scenario left behind (codes issued after their 202, mails to deliver, logins queued
    for the hasher by connections wrk already closed) must not be charged to the next one.
    """
    started = time.monotonic()
    quiet = 0
    before = cpu_seconds(pid)
    while time.monotonic() - started < timeout:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if now - before < 0.015 else 0
        before = now
        if quiet >= 2:
            return max(0.0, time.monotonic() - started - 1.0)
    raise BenchFailed(f"the server was still busy {timeout:.0f} s after the scenario")


def memory_mb(pid: int) -> dict[str, float]:
    measured = rss.memory(pid)
    return {"VmRSS": measured.rss_mb, "VmHWM": measured.peak_mb}


# --- PostgreSQL for --database postgresql ----------------------------------------------------


def postgres_bin() -> Path:
    candidates = []
    if found := shutil.which("pg_ctl"):
        candidates.append(Path(found).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise BenchFailed("PostgreSQL binaries not found (Debian: apt-get install -y postgresql)")


def start_postgres(children: Children) -> str:
    """A throwaway PostgreSQL on a free port; its URL. Stopped and removed by ``children``.

    As root, initdb and postgres run as the ``postgres`` user (they refuse root), with a data
    directory from mkdtemp chowned to it. ``synchronous_commit=off`` mirrors SQLite's
    ``synchronous=NORMAL`` in WAL mode: no flush per commit, no corruption on a crash.
    """
    bin_dir = postgres_bin()
    directory = Path(tempfile.mkdtemp(prefix="taxease-bench-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(directory, account.pw_uid, account.pw_gid)
        as_user = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]
    port = free_port()
    data, log = directory / "data", directory / "server.log"

    def pg(*command: str) -> None:
        done = subprocess.run(  # noqa: S603 - the PostgreSQL binaries, fixed arguments
            [*as_user, *command], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise BenchFailed(f"{Path(command[0]).name} failed: {done.stderr.strip()}")

    def stop() -> None:
        if (data / "postmaster.pid").exists():
            pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(directory, ignore_errors=True)

    children.on_close(stop)
    pg(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
       "-E", "UTF8", "--locale=C", "--no-sync")  # fmt: skip
    options = (
        f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 "
        "-c synchronous_commit=off -c max_connections=100"
    )
    pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


# --- wrk -------------------------------------------------------------------------------------


@dataclass
class Load:
    """A scenario's load: which URL, which script and data, which statuses are right."""

    url: str
    data: Path | None
    expected: str
    reuse: str = "cycle"  # "once": single-use codes, wrapping around fails the run
    script: str = "post_json.lua"
    pause_ms: int = 0  # each connection waits this long between requests (a paced load)


@dataclass
class Measured:
    name: str
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: int = 0
    unexpected: int = 0
    unexpected_statuses: str = ""
    wrapped: int = 0
    connections: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.errors > 0 or self.unexpected > 0 or self.wrapped > 0 or self.requests == 0


class Wrk:
    def __init__(self, threads: int, children: Children, empty: Path) -> None:
        self.threads = threads
        self.children = children
        self.empty = empty

    def start(
        self, load: Load, seconds: float, connections: int
    ) -> tuple[subprocess.Popen[bytes], int]:
        threads = min(self.threads, connections)
        command = [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "60s",
            "-s", str(WRK_SCRIPTS / load.script), load.url,
            "--", str(threads), load.expected, load.reuse, str(load.data or self.empty),
            str(load.pause_ms),
        ]  # fmt: skip
        process = self.children.start(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return process, connections

    def finish(
        self, name: str, started: tuple[subprocess.Popen[bytes], int], timeout: float
    ) -> Measured:
        process, connections = started
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.children.stop(process, grace=1.0)
            raise BenchFailed(f"{name}: wrk did not finish") from None
        self.children.stop(process)
        line = next((ln for ln in out.decode().splitlines() if ln.startswith("RESULT ")), None)
        if process.returncode != 0 or line is None:
            raise BenchFailed(f"{name}: wrk failed ({process.returncode}): {err.decode()[-500:]}")
        raw = json.loads(line.removeprefix("RESULT "))
        seconds = raw["duration_us"] / 1e6
        return Measured(
            name=name,
            requests=raw["requests"],
            seconds=round(seconds, 2),
            rps=round(raw["requests"] / seconds, 1) if seconds else 0.0,
            p50_ms=round(raw["p50_us"] / 1000, 2),
            p90_ms=round(raw["p90_us"] / 1000, 2),
            p99_ms=round(raw["p99_us"] / 1000, 2),
            max_ms=round(raw["max_us"] / 1000, 2),
            errors=sum(
                raw[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
            ),
            unexpected=raw["unexpected"],
            unexpected_statuses=" ".join(sorted(set(raw["unexpected_statuses"].split()))),
            wrapped=raw["wrapped"],
            connections=connections,
        )

    def run(self, name: str, load: Load, seconds: float, connections: int) -> Measured:
        return self.finish(name, self.start(load, seconds, connections), timeout=seconds + 90)


# --- the hasher's ceiling --------------------------------------------------------------------


def hasher_ceiling(settings: Any, seconds: float) -> dict[str, float]:
    """Hashes/s with the server's argon2id parameters, as many threads at once as its hashing
    semaphore allows (one per CPU). argon2-cffi releases the GIL while it hashes."""
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    hasher = PasswordHash(
        (
            Argon2Hasher(
                time_cost=settings.password_hash_time_cost,
                memory_cost=settings.password_hash_memory_kib,
                parallelism=settings.password_hash_parallelism,
            ),
        )
    )
    slots = os.cpu_count() or 1
    hasher.hash(PASSWORD)  # first-use costs out of the window
    counts = [0] * slots
    ends = [0.0] * slots
    start = time.monotonic()
    deadline = start + seconds

    def work(slot: int) -> None:
        while time.monotonic() < deadline:
            hasher.hash(PASSWORD)
            counts[slot] += 1
        ends[slot] = time.monotonic()

    workers = [threading.Thread(target=work, args=(slot,)) for slot in range(slots)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = max(ends) - start
    return {
        "threads": slots,
        "hashes": sum(counts),
        "seconds": round(elapsed, 2),
        "hashes_per_second": round(sum(counts) / elapsed, 2),
        "seconds_per_hash_per_thread": round(elapsed * slots / sum(counts), 3),
    }


# --- seeding ---------------------------------------------------------------------------------


@dataclass
class Seeded:
    valid: list[tuple[str, str]]  # (email, code): live email_verification codes, used once each
    wrong: list[tuple[str, str]]  # (email, a wrong code) for accounts with a live code
    verified: list[str]  # verified accounts whose password is PASSWORD


async def seed(settings: Any, *, valid: int, wrong: int, verified: int) -> Seeded:
    """Accounts and codes written straight into the database, as the service writes them.

    Registering them through the API would cost one production argon2id hash each (minutes);
    every seeded account shares one such hash of PASSWORD, so a login costs what a real one
    does.
    """
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher
    from sqlalchemy import insert

    from taxease_auth.auth.otp import hash_code
    from taxease_auth.store.db import make_engine
    from taxease_auth.store.models import Otp, Purpose, User

    password_hash = PasswordHash(
        (
            Argon2Hasher(
                time_cost=settings.password_hash_time_cost,
                memory_cost=settings.password_hash_memory_kib,
                parallelism=settings.password_hash_parallelism,
            ),
        )
    ).hash(PASSWORD)
    now = datetime.now(UTC)
    run = secrets.token_hex(3)
    purpose = Purpose.EMAIL_VERIFICATION

    def code() -> str:
        return f"{secrets.randbelow(10**6):06d}"

    pending = [(f"v-{run}-{i}@{DOMAIN}", code()) for i in range(valid + wrong)]
    verified_emails = [f"l-{run}-{i}@{DOMAIN}" for i in range(verified)]
    user_rows = [
        {
            "email": email,
            "password_hash": password_hash,
            "first_name": "Bench",
            "last_name": "User",
            "email_verified": email in verified_set,
            "email_verified_at": now if email in verified_set else None,
            "token_version": 0,
            "created_at": now,
        }
        for verified_set in [set(verified_emails)]
        for email in [e for e, _ in pending] + verified_emails
    ]
    otp_rows = [
        {
            "email": email,
            "purpose": purpose.value,
            "code_hash": hash_code(settings.signing_key, email=email, purpose=purpose, code=value),
            "expires_at": now + SEEDED_CODE_LIFETIME,
            "used": False,
            "attempts": 0,
            "created_at": now,
            "pending_password_hash": password_hash,
            "pending_first_name": "Bench",
            "pending_last_name": "User",
        }
        for email, value in pending
    ]
    engine = make_engine(settings)
    try:
        async with engine.begin() as connection:
            for start in range(0, len(user_rows), 5000):
                await connection.execute(insert(User), user_rows[start : start + 5000])
            for start in range(0, len(otp_rows), 5000):
                await connection.execute(insert(Otp), otp_rows[start : start + 5000])
    finally:
        await engine.dispose()

    def wrong_code(value: str) -> str:
        return f"{(int(value) + 1 + secrets.randbelow(10**6 - 1)) % 10**6:06d}"

    return Seeded(
        valid=pending[:valid],
        wrong=[(email, wrong_code(value)) for email, value in pending[valid:]],
        verified=verified_emails,
    )


async def count_codes(settings: Any) -> int:
    from sqlalchemy import func, select

    from taxease_auth.store.db import make_engine
    from taxease_auth.store.models import Otp

    engine = make_engine(settings)
    try:
        async with engine.connect() as connection:
            count = (await connection.execute(select(func.count()).select_from(Otp))).scalar()
            return int(count or 0)
    finally:
        await engine.dispose()


def server_errors(log: Path) -> dict[str, int]:
    """ERROR and CRITICAL lines in the server's log, counted by what failed: the exception
    that ended each traceback, or the message when there was none."""
    counts: dict[str, int] = {}
    lines = log.read_text(errors="replace").splitlines()
    for number, line in enumerate(lines):
        if " ERROR " not in line and " CRITICAL " not in line:
            continue
        what = line.split(": ", 1)[-1][:160]
        for following in lines[number + 1 : number + 200]:
            if following.startswith("Traceback") or following.startswith(" "):
                continue
            if following[:1].isalpha() and ("Error" in following or "Exception" in following):
                what = following[:160]
            break
        counts[what] = counts.get(what, 0) + 1
    return counts


def write_lines(path: Path, lines: Iterator[str] | Sequence[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def body(**fields: Any) -> str:
    return json.dumps(fields, separators=(",", ":"))


# --- the run ---------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace, children: Children, workdir: Path) -> None:
        self.args = args
        self.children = children
        self.workdir = workdir
        self.wrk = Wrk(args.threads, children, write_lines(workdir / "empty.txt", [""]))
        self.results: list[Measured] = []
        self.notes: list[str] = []
        self.server_pid = 0
        self.idle_memory: dict[str, float] = {}
        self.server_log = workdir / "server.log"

    # --- servers -----------------------------------------------------------------------------

    def server_env(self, database_url: str, secret_key: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k.upper() not in CLEARED}
        env.update(
            DEVELOPMENT_MODE="true",
            SECRET_KEY=secret_key,
            DATABASE_URL=database_url,
            EMAIL_BACKEND="console",
            LOG_LEVEL="INFO",
            # The production defaults (config.py), spelled out so a caller's environment
            # cannot lower them.
            PASSWORD_HASH_MEMORY_KIB="65536",
            PASSWORD_HASH_TIME_COST="3",
            PASSWORD_HASH_PARALLELISM="4",
            # One server process with a PostgreSQL server of its own: the sizing rule
            # (docs/deploy.md) gives it the room the default keeps for four and a worker.
            DATABASE_POOL_SIZE="32",
            **RAISED_LIMITS,
        )
        for setting in self.args.server_env:  # an A/B of one setting, said in the results
            name, _, value = setting.partition("=")
            env[name] = value
            self.notes.append(f"server setting changed for this run: {name}={value}")
        assert set(SERVER_VARIABLES) <= set(env)
        return env

    def start_reference(self) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        log = self.workdir / "reference.log"
        process = self.children.start(
            [str(PYTHON), "-m", "bench.reference_app", "--port", str(port),
             "--loop", self.args.loop, "--http", self.args.http],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
        )  # fmt: skip
        wait_ready(f"http://127.0.0.1:{port}/docs", process, log, timeout=30)
        return process, f"http://127.0.0.1:{port}"

    def start_server(self, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        # The console backend prints every mail (codes included) to stdout: discarded.
        process = self.children.start(
            [str(CLI), "serve", "--port", str(port), "--loop", self.args.loop,
             "--http", self.args.http],
            cwd=self.workdir, env=env, stdout=subprocess.DEVNULL,
            stderr=self.server_log.open("wb"),
        )  # fmt: skip
        wait_ready(f"http://127.0.0.1:{port}/readyz", process, self.server_log, timeout=60)
        self.server_pid = process.pid
        settle(process.pid)  # start-up over (the hasher's burn-in, the worker's first poll)
        self.idle_memory = memory_mb(process.pid)
        print(f"  pid {process.pid}, {self.args.database}, idle {rss.memory(process.pid)}",
              file=sys.stderr)  # fmt: skip
        return process, f"http://127.0.0.1:{port}"

    # --- measuring ---------------------------------------------------------------------------

    def measure(
        self,
        name: str,
        load: Load,
        pid: int,
        warm: Load | None = None,
        *,
        count_codes: Any = None,
    ) -> Measured:
        """Warm up (on ``warm``'s data when the measured data is single-use), let the server
        (``pid``) go idle, then measure; the drain after it and the server's CPU time per
        answered request (the drain's included) are recorded with the result. With
        ``count_codes`` (a function), the codes issued by the measured run are counted after
        the drain: fewer than the requests answered fails the run."""
        args = self.args
        if args.warmup > 0:
            self.wrk.run(f"{name} warm-up", warm or load, args.warmup, args.connections)
            settle(pid)
        codes_before = count_codes() if count_codes else 0
        profiler = self.profile(name, pid)
        print(f"  {name}: {args.duration:g} s at {args.connections} connections", file=sys.stderr)
        cpu_before = cpu_seconds(pid)
        measured = self.wrk.run(name, load, args.duration, args.connections)
        if profiler is not None:
            self.children.stop(profiler, grace=30)
        measured.extra["drain_seconds"] = round(settle(pid), 1)
        if measured.requests:
            cpu = cpu_seconds(pid) - cpu_before
            measured.extra["cpu_ms_per_request"] = round(cpu * 1000 / measured.requests, 3)
        if count_codes:
            self.check_issued(measured, count_codes() - codes_before)
        self.results.append(measured)
        return measured

    def profile(self, name: str, pid: int) -> subprocess.Popen[bytes] | None:
        if self.args.profile is None:
            return None
        out = Path(self.args.profile) / f"{name}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        return self.children.start(
            [str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid", str(pid),
             "--duration", str(int(self.args.duration)), "--format", "raw", "--threads",
             "--nonblocking", "--rate", "200", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def run(self) -> dict[str, Any]:
        from taxease_auth.config import Settings

        args = self.args
        wanted = set(args.scenarios)
        secret_key = secrets.token_urlsafe(32)
        if args.database == "postgresql":
            database_url = start_postgres(self.children)
        else:
            database_url = f"sqlite:///{self.workdir / 'bench.sqlite3'}"
        env = self.server_env(database_url, secret_key)
        # The server's settings as the driver needs them: the key codes are hashed with, the
        # database, the argon2id parameters.
        values: dict[str, Any] = {name.lower(): env[name] for name in SERVER_VARIABLES}
        settings = Settings(_env_file=None, **values)
        subprocess.run(  # noqa: S603 - our own CLI
            [str(CLI), "db", "upgrade"], cwd=self.workdir, env=env, check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

        print("reference (bare FastAPI)", file=sys.stderr)
        reference, reference_url = self.start_reference()
        ref_data = write_lines(
            self.workdir / "reference.txt",
            [body(email=f"r{i}@{DOMAIN}", code=f"{i % 10**6:06d}", purpose="email_verification")
             for i in range(1000)],
        )  # fmt: skip
        ref_load = Load(reference_url + VERIFY_PATH, ref_data, "200")
        ref_start = self.measure("reference (start)", ref_load, reference.pid)

        # Enough single-use codes for the reference's own rate over warm-up and run, with room.
        window = args.warmup + args.duration
        valid_warm = math.ceil(ref_start.rps * args.warmup * args.margin) + 100
        valid_run = math.ceil(ref_start.rps * args.duration * args.margin) + 100
        wrong = max(2000, math.ceil(ref_start.rps * window * args.margin / 4))
        seeded = asyncio.run(
            seed(settings, valid=valid_warm + valid_run, wrong=wrong, verified=200)
        )
        self.notes.append(
            f"seeded {valid_warm + valid_run} live codes for verify-valid (each sent once), "
            f"{wrong} accounts with live codes for verify-wrong and request-otp, 200 verified "
            "accounts for login"
        )
        valid_bodies = [
            body(email=email, code=code, purpose="email_verification")
            for email, code in seeded.valid
        ]
        valid_warm_data = write_lines(self.workdir / "valid-warm.txt", valid_bodies[:valid_warm])
        valid_data = write_lines(self.workdir / "valid.txt", valid_bodies[valid_warm:])
        wrong_data = write_lines(
            self.workdir / "wrong.txt",
            [body(email=e, code=c, purpose="email_verification") for e, c in seeded.wrong],
        )
        resend_data = write_lines(
            self.workdir / "resend.txt",
            [body(email=e, purpose="email_verification") for e, _ in seeded.wrong],
        )
        login_data = write_lines(
            self.workdir / "login.txt", [body(email=e, password=PASSWORD) for e in seeded.verified]
        )
        register_data = write_lines(
            self.workdir / "register.txt",
            [body(email=f"reg-{secrets.token_hex(4)}-{i}@{DOMAIN}", password=PASSWORD,
                  first_name="Bench", last_name="User", accept_terms=True)
             for i in range(5000)],
        )  # fmt: skip

        print("service (taxease-auth serve)", file=sys.stderr)
        server, url = self.start_server(env)
        api = url + "/api/v1/auth"
        ceiling: dict[str, Any] = {}
        if "verify-valid" in wanted:
            self.measure(
                "verify-valid",
                Load(api + "/verify-otp", valid_data, "200", reuse="once"),
                self.server_pid,
                warm=Load(api + "/verify-otp", valid_warm_data, "200", reuse="once"),
            )
        if "verify-wrong" in wanted:
            self.measure(
                "verify-wrong", Load(api + "/verify-otp", wrong_data, "400"), self.server_pid
            )
        if "request-otp" in wanted:
            self.measure(
                "request-otp",
                Load(api + "/request-otp", resend_data, "202"),
                self.server_pid,
                count_codes=lambda: asyncio.run(count_codes(settings)),
            )
        if {"refresh", "me"} & wanted:
            self.session_scenarios(wanted, api, settings, seeded.verified, valid_warm, valid_run)
        hashing = {"login", "register", "flood"} & wanted
        if hashing:
            settle(self.server_pid)
            print("  hasher ceiling (before)", file=sys.stderr)
            before = hasher_ceiling(settings, args.hasher_seconds)
        if "login" in wanted:
            self.measure("login", Load(api + "/login", login_data, "200"), self.server_pid)
        if "register" in wanted:
            self.measure(
                "register",
                Load(api + "/register", register_data, "201", reuse="once"),
                self.server_pid,
            )
        if "flood" in wanted:
            self.flood(api, url, login_data, wrong_data)
        if hashing:
            # Measured again after the password scenarios, as the reference is: on a shared
            # machine the ceiling moves, and the mean is what the scenarios are compared with.
            print("  hasher ceiling (after)", file=sys.stderr)
            after = hasher_ceiling(settings, args.hasher_seconds)
            ceiling = {
                "hashes_per_second": round(
                    (before["hashes_per_second"] + after["hashes_per_second"]) / 2, 2
                ),
                "threads": before["threads"],
                "before": before,
                "after": after,
            }
        memory = {
            "idle_VmRSS": self.idle_memory.get("VmRSS", math.nan),
            **memory_mb(self.server_pid),
        }
        print(f"  server RSS: idle {memory['idle_VmRSS']} MB, final {memory['VmRSS']} MB "
              f"(peak {memory['VmHWM']} MB)", file=sys.stderr)  # fmt: skip
        ref_end = self.measure("reference (end)", ref_load, reference.pid)
        self.children.stop(server)
        self.children.stop(reference)
        return self.report(
            settings, ref_start, ref_end, ceiling, memory, server_errors(self.server_log)
        )

    def session_scenarios(
        self,
        wanted: set[str],
        api: str,
        settings: Any,
        emails: list[str],
        warm_count: int,
        run_count: int,
    ) -> None:
        """``refresh``: one seeded session per request, each refresh token sent once (as many
        as verify-valid's codes); ``me``: access tokens of 1000 seeded sessions, minted just
        before, each sent many times (bench/sessions.py says what each measures)."""
        from bench import sessions

        count = (warm_count + run_count if "refresh" in wanted else 0) + 1000
        seeded = asyncio.run(sessions.seed_sessions(settings, emails, count))
        self.notes.append(
            f"seeded {count} live sessions: {count - 1000} refresh tokens for refresh (each "
            "sent once), 1000 for me (their access tokens minted just before it)"
        )
        if "refresh" in wanted:
            bodies = [body(refresh_token=token) for _, _, _, token in seeded[1000:]]
            self.measure(
                "refresh",
                Load(api + "/token/refresh", write_lines(self.workdir / "refresh.txt",
                     bodies[warm_count:]), "200", reuse="once"),
                self.server_pid,
                warm=Load(api + "/token/refresh", write_lines(
                    self.workdir / "refresh-warm.txt", bodies[:warm_count]), "200", reuse="once"),
            )  # fmt: skip
        if "me" in wanted:
            tokens = sessions.access_tokens(settings, seeded[:1000])
            me_data = write_lines(self.workdir / "me.txt", tokens)
            self.measure("me", Load(api + "/me", me_data, "200", script="get_bearer.lua"),
                         self.server_pid)  # fmt: skip

    def flood(self, api: str, url: str, login_data: Path, wrong_data: Path) -> None:
        """A login flood at full concurrency; verify-otp and healthz beside it, started once
        the flood is underway and stopped before it ends."""
        args = self.args
        print("  flood: login, with verify-otp and healthz beside it", file=sys.stderr)
        flood = self.wrk.start(
            Load(api + "/login", login_data, "200"), args.duration + 3, args.connections
        )
        time.sleep(1.5)
        side_verify = self.wrk.start(
            Load(api + "/verify-otp", wrong_data, "400", pause_ms=SIDE_PAUSE_MS),
            args.duration,
            SIDE_CONNECTIONS,
        )
        side_health = self.wrk.start(
            Load(url + "/healthz", None, "200", script="get.lua", pause_ms=SIDE_PAUSE_MS),
            args.duration,
            SIDE_CONNECTIONS,
        )
        timeout = args.duration + 90
        results = [
            self.wrk.finish("flood: verify-otp beside it", side_verify, timeout),
            self.wrk.finish("flood: healthz beside it", side_health, timeout),
            self.wrk.finish("flood: login", flood, timeout),
        ]
        results[-1].extra["drain_seconds"] = round(settle(self.server_pid), 1)
        self.results.extend(results)

    @staticmethod
    def check_issued(measured: Measured, issued: int) -> None:
        """Codes are issued after the 202: the rate the server sustains is codes issued over
        the run and the drain that followed it, not the answers alone."""
        drain = measured.extra.get("drain_seconds", 0.0)
        measured.extra["codes_issued"] = issued
        measured.extra["sustained_rps"] = round(
            min(measured.requests, issued) / (measured.seconds + drain), 1
        )
        if issued < measured.requests:
            measured.extra["failure"] = f"{measured.requests} answered, {issued} codes issued"
            measured.unexpected += measured.requests - issued

    # --- the report --------------------------------------------------------------------------

    def report(
        self,
        settings: Any,
        ref_start: Measured,
        ref_end: Measured,
        ceiling: dict[str, Any],
        memory: dict[str, float],
        errors: dict[str, int],
    ) -> dict[str, Any]:
        reference_rps = (ref_start.rps + ref_end.rps) / 2
        hashes = ceiling.get("hashes_per_second", 0.0)
        by_name = {r.name: r for r in self.results}
        for result in self.results:
            if result.name.startswith("reference"):
                result.extra["ratio"] = round(result.rps / reference_rps, 3)
                result.extra["against"] = "reference mean"
            elif result.name in ("login", "register", "flood: login"):
                result.extra["ratio"] = round(result.rps / hashes, 3) if hashes else None
                result.extra["against"] = "hasher ceiling"
            elif not result.name.startswith("flood"):
                result.extra["ratio"] = round(result.rps / reference_rps, 3)
                result.extra["against"] = "reference mean"
        targets: dict[str, bool] = {}

        def target(name: str, holds: bool) -> None:
            targets[name] = holds

        for scenario in ("verify-valid", "verify-wrong"):
            if scenario in by_name:
                r = by_name[scenario]
                target(f"{scenario} >= {TARGETS['verify_ratio']}x reference",
                       r.extra["ratio"] >= TARGETS["verify_ratio"])  # fmt: skip
                target(f"{scenario} p99 <= {TARGETS['verify_p99_ms']:g} ms",
                       r.p99_ms <= TARGETS["verify_p99_ms"])  # fmt: skip
        for scenario, ratio_name in (("refresh", "refresh_ratio"), ("me", "me_ratio")):
            if scenario in by_name:
                r = by_name[scenario]
                target(f"{scenario} >= {TARGETS[ratio_name]}x reference",
                       r.extra["ratio"] >= TARGETS[ratio_name])  # fmt: skip
                target(f"{scenario} p99 <= {TARGETS['session_p99_ms']:g} ms",
                       r.p99_ms <= TARGETS["session_p99_ms"])  # fmt: skip
        if "request-otp" in by_name:
            r = by_name["request-otp"]
            target(f"request-otp >= {TARGETS['request_otp_ratio']}x reference",
                   r.extra["ratio"] >= TARGETS["request_otp_ratio"])  # fmt: skip
            target(f"request-otp p99 <= {TARGETS['request_otp_p99_ms']:g} ms",
                   r.p99_ms <= TARGETS["request_otp_p99_ms"])  # fmt: skip
        for scenario in ("login", "register"):
            if scenario in by_name:
                ratio = by_name[scenario].extra["ratio"] or 0.0
                target(f"{scenario} >= {TARGETS['hashing_ratio']}x hasher ceiling",
                       ratio >= TARGETS["hashing_ratio"])  # fmt: skip
        sides = [r for r in self.results if r.name.startswith("flood:") and "beside" in r.name]
        if sides:
            limit = TARGETS["flood_other_p99_ms"]
            target(f"other routes' p99 <= {limit:g} ms during a login flood",
                   max(r.p99_ms for r in sides) <= limit)  # fmt: skip
        target(f"RSS <= {TARGETS['rss_mb']:g} MB after the run",
               memory.get("VmRSS", math.inf) <= TARGETS["rss_mb"])  # fmt: skip

        failures = [
            f"{r.name}: {r.errors} socket errors, {r.unexpected} unexpected statuses "
            f"({r.unexpected_statuses or '-'}), {r.wrapped} single-use data wrapped"
            + (f"; {r.extra['failure']}" if "failure" in r.extra else "")
            for r in self.results
            if r.failed
        ]
        for what, count in errors.items():
            failures.append(f"server logged {count} x {what}")
        drift = (ref_end.rps - ref_start.rps) / ref_start.rps if ref_start.rps else 0.0
        return {
            "benchmark": "http",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "code": git_state(),
            "machine": {
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            },
            "setup": {
                "database": self.args.database,
                "loop": self.args.loop,
                "http": self.args.http,
                "connections": self.args.connections,
                "wrk_threads": self.args.threads,
                "warmup_seconds": self.args.warmup,
                "duration_seconds": self.args.duration,
                "argon2id": {
                    "memory_kib": settings.password_hash_memory_kib,
                    "time_cost": settings.password_hash_time_cost,
                    "parallelism": settings.password_hash_parallelism,
                },
                "raised_limits": RAISED_LIMITS,
                "notes": [
                    "wrk shares the machine's 2 cores with the server (and the reference)",
                    "development mode, console mail backend (stdout discarded), embedded "
                    "delivery worker on, INFO logs to a file (unless a setting below changes it)",
                    *self.notes,
                ],
            },
            "reference_rps_mean": round(reference_rps, 1),
            "reference_drift": round(drift, 3),
            "hasher_ceiling": ceiling,
            "scenarios": [
                {
                    **{k: v for k, v in vars(r).items() if k != "extra"},
                    **r.extra,
                }
                for r in self.results
            ],
            "server_memory_mb": memory,
            "server_errors_logged": errors,
            "targets": targets,
            "failed": failures,
        }


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the code differed from it (the results of earlier
    runs, not yet committed, do not count)."""

    def git(*args: str) -> str:
        done = subprocess.run(  # noqa: S603 - git, fixed arguments
            ["git", *args],  # noqa: S607 - git from PATH, as a developer runs it
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", ".", ":(exclude)bench/results")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(changed)}


def render(results: dict[str, Any]) -> str:
    header = (
        f"{'scenario':<30} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'ratio':>6}  {'against':<16} {'drain s':>7} {'cpu ms/req':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in results["scenarios"]:
        ratio = r.get("ratio")
        errors = r["errors"] + r["unexpected"] + r["wrapped"]
        lines.append(
            f"{r['name']:<30} {r['rps']:>9.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{errors:>7} {'' if ratio is None else f'{ratio:.2f}':>6}  "
            f"{r.get('against', ''):<16} {r.get('drain_seconds', ''):>7} "
            f"{r.get('cpu_ms_per_request', ''):>10}"
        )
        if "sustained_rps" in r:
            lines.append(
                f"{'':<4}codes issued {r['codes_issued']} (each answer's code: checked), "
                f"{r['sustained_rps']} /s counting the drain (mail delivery) after the run"
            )
    ceiling = results["hasher_ceiling"]
    if ceiling:
        lines.append(
            f"hasher ceiling: {ceiling['hashes_per_second']:.2f} hashes/s, the mean of "
            f"{ceiling['before']['hashes_per_second']:.2f} before the password scenarios and "
            f"{ceiling['after']['hashes_per_second']:.2f} after ({ceiling['threads']} threads "
            f"at once, {ceiling['before']['seconds_per_hash_per_thread']} s per hash in each)"
        )
    lines.append(
        f"reference mean {results['reference_rps_mean']} req/s, drift start->end "
        f"{results['reference_drift']:+.1%}"
    )
    memory = results["server_memory_mb"]
    lines.append(
        f"server memory: idle VmRSS {memory.get('idle_VmRSS')} MB, final VmRSS "
        f"{memory.get('VmRSS')} MB, peak {memory.get('VmHWM')} MB"
    )
    lines.append("")
    for name, holds in results["targets"].items():
        lines.append(f"{'PASS' if holds else 'FAIL'}  {name}")
    if results["failed"]:
        lines.append("")
        lines.append("RUN FAILED (the figures above are not valid):")
        lines.extend(f"  {failure}" for failure in results["failed"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each one")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--http", choices=("httptools", "h11"), default="httptools")
    parser.add_argument("--hasher-seconds", type=float, default=8.0)
    parser.add_argument(
        "--margin", type=float, default=1.5, help="single-use codes seeded per reference req"
    )
    parser.add_argument(
        "--scenarios",
        type=lambda text: [s for s in text.split(",") if s],
        default=list(ALL_SCENARIOS),
        help=f"comma-separated subset of {','.join(ALL_SCENARIOS)}",
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy each scenario into DIR")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a server variable for the run, e.g. EMBEDDED_WORKER=false or ACCESS_LOG=false "
        "(an A/B; the results say so)",
    )
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(ALL_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if shutil.which("wrk") is None:
        raise SystemExit("make bench needs wrk: apt-get install -y wrk")

    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="taxease-bench-http-"))
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the finally below stops every child.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    started = time.monotonic()
    try:
        results = Run(args, children, workdir).run()
    except BenchFailed as error:
        print(f"benchmark FAILED: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("benchmark interrupted: stopping its processes", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception:  # anything else is a failed run too: exit 2, not 1 (a missed target)
        traceback.print_exc()
        print("benchmark FAILED", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        children.close()
        shutil.rmtree(workdir, ignore_errors=True)
    results["total_seconds"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"http-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(render(results))
    print(f"\nwritten to {path.relative_to(ROOT)} ({results['total_seconds']} s)", file=sys.stderr)
    if results["failed"]:
        raise SystemExit(2)
    if not all(results["targets"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
