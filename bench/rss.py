"""A process's resident memory, read from /proc (Linux): what `make bench` prints for the server
it loads, and what tests/test_memory.py holds a started server to.

``python -m bench.rss PID...`` prints it for running processes.

``python -m bench.rss --table`` starts real ``taxease-auth serve`` processes idle, as
tests/test_memory.py does (moto for SES, a private PostgreSQL and Redis from tests/support),
and prints their RSS in development mode and in production mode with SES on SQLite and
PostgreSQL: the table of issue 16.1 (~1 min).

``python -m bench.rss --modules`` says where an idle server's memory goes: in this process,
with the settings of the environment (as ``serve`` reads them), it imports what ``serve``
imports, starts the app and lets it settle, then prints the RSS each module's own code added
while it was imported (the modules it imported in turn counted apart), summed per package,
and what the start-up added beyond imports. The truth about an import is this delta, not
``python -X importtime`` (time, not memory). The figures are approximate: memory a module
frees is reused by the next.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

_FIELDS = {"VmRSS": "rss_mb", "VmHWM": "peak_mb"}
SETTLE_SECONDS = 1.5
# The service's default argon2id parameters: the hasher's burn-in runs with them at start-up.
DEFAULT_HASHING = {
    "PASSWORD_HASH_MEMORY_KIB": "65536",
    "PASSWORD_HASH_TIME_COST": "3",
    "PASSWORD_HASH_PARALLELISM": "4",
}


@dataclass(frozen=True, slots=True)
class Memory:
    """Resident memory now (VmRSS) and its peak so far (VmHWM), in MB (2**20 bytes)."""

    rss_mb: float
    peak_mb: float

    def __str__(self) -> str:
        return f"RSS {self.rss_mb:.1f} MB (peak {self.peak_mb:.1f} MB)"


def memory(pid: int) -> Memory:
    """``pid``'s resident memory; OSError when the process is gone."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in _FIELDS:
            values[_FIELDS[name]] = round(int(rest.split()[0]) / 1024, 1)  # kB
    return Memory(**values)


def _own_rss_kib() -> int:
    """This process's RSS in KiB, cheaply (statm's second field, in pages)."""
    with Path("/proc/self/statm").open() as statm:
        return int(statm.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


# --- --modules: where an idle server's memory goes --------------------------------------------


class _MeasuringLoader(importlib.abc.Loader):
    """Runs the real loader's ``exec_module`` and books the RSS it added, minus its imports'."""

    def __init__(self, loader: importlib.abc.Loader, ledger: _Ledger) -> None:
        self._loader = loader
        self._ledger = ledger

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._ledger.measure(module.__name__, lambda: self._loader.exec_module(module))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _Ledger(importlib.abc.MetaPathFinder):
    """A finder placed first on ``sys.meta_path``: it asks the others, then wraps their loader."""

    def __init__(self) -> None:
        self.own_kib: collections.Counter[str] = collections.Counter()
        self._children_kib: list[int] = []

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _MeasuringLoader(spec.loader, self)
                return spec
        return None

    def measure(self, name: str, execute: Callable[[], None]) -> None:
        self._children_kib.append(0)
        start = _own_rss_kib()
        try:
            execute()
        finally:
            added = _own_rss_kib() - start
            self.own_kib[name] += added - self._children_kib.pop()
            if self._children_kib:
                self._children_kib[-1] += added


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "taxease_auth" else parts[0]


def print_modules(top: int) -> None:
    ledger = _Ledger()
    sys.meta_path.insert(0, ledger)
    start = _own_rss_kib()
    # What `serve` imports: the command line, uvicorn's loop and parser, then the app.
    for name in (
        "taxease_auth.cli",
        "uvloop",
        "uvicorn.loops.uvloop",
        "uvicorn.protocols.http.httptools_impl",
        "taxease_auth.app",
    ):
        importlib.import_module(name)
    from taxease_auth.app import create_app

    app = create_app()

    settled: list[int] = []

    async def started() -> None:
        # The ASGI lifespan protocol by hand: what uvicorn sends and waits for.
        messages: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        answers: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        await messages.put({"type": "lifespan.startup"})
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        lifespan = asyncio.create_task(app(scope, messages.get, answers.put))
        answer = await answers.get()
        if answer["type"] != "lifespan.startup.complete":
            raise SystemExit(f"start-up failed: {answer.get('message', answer)}")
        await asyncio.sleep(SETTLE_SECONDS)
        settled.append(_own_rss_kib())
        await messages.put({"type": "lifespan.shutdown"})
        await answers.get()
        await lifespan

    imported = _own_rss_kib()
    asyncio.run(started())
    sys.meta_path.remove(ledger)
    packages: collections.Counter[str] = collections.Counter()
    for module, kib in ledger.own_kib.items():
        packages[_package(module)] += kib
    print(
        f"RSS at start {start / 1024:.1f} MB, after serve's imports {imported / 1024:.1f} MB, "
        f"started and idle {settled[0] / 1024:.1f} MB (what start-up imported is counted below "
        "too)"
    )
    print("MB per package:")
    for package, kib in packages.most_common(top):
        print(f"  {kib / 1024:6.1f}  {package}")
    print("MB per module:")
    for module, kib in ledger.own_kib.most_common(top):
        print(f"  {kib / 1024:6.1f}  {module}")


# --- --table: idle servers as an operator starts them -----------------------------------------


def _idle_rss_mb(env: dict[str, str]) -> float:
    from tests.support import free_port
    from tests.support.cli import db_upgrade, serving

    db_upgrade(env)
    with (
        tempfile.TemporaryDirectory() as directory,
        serving(env, Path(directory), free_port()) as server,
    ):
        time.sleep(SETTLE_SECONDS)
        return memory(server.process.pid).rss_mb


@contextlib.contextmanager
def _servers() -> Iterator[tuple[str, str, str]]:
    """(moto's SES endpoint, a PostgreSQL database URL, a Redis URL), stopped at the end."""
    from moto.server import ThreadedMotoServer
    from tests.support import redis_server
    from tests.support.postgres import PostgresServer, find_binaries

    bin_dir = find_binaries()
    if bin_dir is None:
        raise SystemExit("PostgreSQL not found (see docs: .ci/run installs it)")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    postgres = PostgresServer(bin_dir)
    try:
        postgres.start()
        with redis_server() as redis_url:
            host, port = moto.get_host_and_port()
            yield f"http://{host}:{port}", postgres.create_database("rss_table"), redis_url
    finally:
        postgres.stop()
        moto.stop()


def print_table(runs: int) -> None:
    from tests.conftest import SesInbox
    from tests.support.cli import process_environment
    from tests.test_memory import production_env

    with _servers() as (endpoint, postgres_url, redis_url), tempfile.TemporaryDirectory() as tmp:
        ses = SesInbox(endpoint)
        sqlite_url = f"sqlite:///{Path(tmp) / 'rss.sqlite3'}"
        production_sqlite_memory = production_env(sqlite_url, redis_url, ses)
        production_sqlite_memory["RATE_LIMIT_STORAGE_URL"] = "memory://"
        configurations = {
            "development (SQLite, console)": process_environment(sqlite_url, **DEFAULT_HASHING),
            "production, SES, SQLite + memory://": production_sqlite_memory,
            "production, SES, SQLite + Redis": production_env(sqlite_url, redis_url, ses),
            "production, SES, PostgreSQL + Redis": production_env(postgres_url, redis_url, ses),
        }
        print(f"idle RSS of `taxease-auth serve`, MB ({runs} run(s) each)")
        for name, env in configurations.items():
            figures = [_idle_rss_mb(env) for _ in range(runs)]
            print(f"  {name:38} {'  '.join(f'{figure:6.1f}' for figure in figures)}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rss", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("pids", nargs="*", type=int, help="processes to read")
    parser.add_argument("--table", action="store_true", help="idle servers' RSS (issue 16.1)")
    parser.add_argument("--runs", type=int, default=1, help="--table: servers per configuration")
    parser.add_argument("--modules", action="store_true", help="RSS per imported module")
    parser.add_argument("--top", type=int, default=40, help="--modules: lines per list")
    args = parser.parse_args(argv)
    if args.table:
        print_table(args.runs)
    elif args.modules:
        print_modules(args.top)
    for pid in args.pids:
        print(f"{pid}: {memory(pid)}")


if __name__ == "__main__":
    main()
