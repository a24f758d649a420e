"""`serve --workers 2`: /metrics adds up what every server process (and a separate `worker`
sharing PROMETHEUS_MULTIPROC_DIR) counted.

Real processes on a real port, SQLite with EMBEDDED_WORKER=false (SQLite allows several server
processes only without the embedded worker). Which process answered each request is read back
from the per-process files of prometheus_client's multiprocess mode.
"""

from __future__ import annotations

import re
import signal
import struct
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import STRONG_PASSWORD
from tests.support import free_port
from tests.support.cli import (
    START_SECONDS,
    STOP_SECONDS,
    code_printed_for,
    db_upgrade,
    process_environment,
    serve,
    start_process,
    stop,
)

# The subject is SQLite's multi-process rule (several servers only without the embedded
# worker); the database each test builds is its own.
pytestmark = pytest.mark.sqlite_only

ME = "/api/v1/auth/me"


def scraped(base_url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def per_process(directory: Path, name: str, **labels: str) -> dict[int, float]:
    """The sample's value in each process's own counter file."""
    values = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        value = 0.0
        try:
            merged = MultiProcessCollector.merge([str(path)], accumulate=True)
        except struct.error:
            continue  # created this instant, not sized yet: read it on the next call
        for metric in merged:
            for sample in metric.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    value += sample.value
        values[pid] = value
    return values


def unauthorised_calls_per_process(directory: Path) -> dict[int, float]:
    return per_process(directory, "taxease_http_requests_total", route=ME, status="401")


def collected_in(stderr: Path) -> Path:
    match = re.search(r"collected in (\S+)", stderr.read_text())
    assert match, stderr.read_text()
    return Path(match.group(1))


def sqlite_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A migrated SQLite database; several server processes, so no embedded worker."""
    env = process_environment(
        f"sqlite:///{tmp_path}/auth.sqlite3", EMBEDDED_WORKER="false", **extra
    )
    db_upgrade(env)
    return env


def test_metrics_add_up_the_requests_served_by_each_of_two_processes(tmp_path: Path) -> None:
    env = sqlite_environment(tmp_path)
    server = serve(env, tmp_path, free_port(), "--workers", "2")
    try:
        directory = collected_in(server.stderr)
        assert directory.is_dir()

        # Each call on a new connection: the kernel hands it to whichever process accepts.
        calls = 0
        while len([v for v in unauthorised_calls_per_process(directory).values() if v]) < 2:
            assert calls < 500, f"one process answered all {calls} calls"
            assert httpx.get(f"{server.base_url}{ME}", timeout=5).status_code == 401
            calls += 1

        base_url = server.base_url
        assert scraped(base_url, "taxease_http_requests_total", route=ME, status="401") == calls
        assert scraped(base_url, "taxease_http_request_duration_seconds_count", route=ME) == calls

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=STOP_SECONDS) == 0, server.output()
        assert not directory.exists()  # the temporary directory went with `serve`
        assert "Traceback" not in server.stderr.read_text()
    finally:
        stop(server.process)


def test_a_separate_worker_sharing_the_directory_shows_its_delivery_metrics(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = sqlite_environment(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(shared))
    server = serve(env, tmp_path, free_port(), "--workers", "2")
    worker = start_process(["worker"], env, tmp_path, name="worker")
    try:
        assert collected_in(server.stderr) == shared
        email = "shared-metrics@example.com"
        registered = httpx.post(
            f"{server.base_url}/api/v1/auth/register",
            json={
                "email": email,
                "password": STRONG_PASSWORD,
                "first_name": "Multi",
                "last_name": "Process",
                "accept_terms": True,
            },
            timeout=10,
        )
        assert registered.status_code == 201, registered.text
        code_printed_for(worker.stdout, email)  # the separate worker delivered it

        sent = {"kind": "email_verification", "outcome": "sent"}
        deadline = time.monotonic() + START_SECONDS
        while scraped(server.base_url, "taxease_mails_total", **sent) != 1:
            assert time.monotonic() < deadline, worker.output()
            time.sleep(0.05)
        purpose = {"purpose": "email_verification"}
        assert scraped(server.base_url, "taxease_codes_issued_total", **purpose) == 1
        worker_gauges = list(shared.glob(f"gauge_livemax_{worker.process.pid}.db"))
        assert worker_gauges, sorted(path.name for path in shared.iterdir())

        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=STOP_SECONDS) == 0, worker.output()
        # Its gauges (circuit open, pending) ended with it; its counters stay in the totals.
        assert not any(path.exists() for path in worker_gauges)
        assert scraped(server.base_url, "taxease_mails_total", **sent) == 1

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=STOP_SECONDS) == 0, server.output()
        assert shared.is_dir()  # the operator's directory is left where it was
    finally:
        stop(worker.process)
        stop(server.process)


@pytest.fixture(autouse=True)
def _empty_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI reads ./.env: run where there is none."""
    monkeypatch.chdir(tmp_path)
