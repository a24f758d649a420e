"""`serve --metrics-port`: /metrics on a listener of its own, without METRICS_TOKEN, beside a
public port whose /metrics wants the token (issue 17.3).

Real `taxease-auth serve` processes on real ports, SQLite without the embedded worker (several
server processes on SQLite need that; the subject here is the listener, not delivery).
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from taxease_auth.cli import app
from tests.support import free_port
from tests.support.cli import (
    STOP_SECONDS,
    db_upgrade,
    process_environment,
    serving,
    wait_for_log,
)
from tests.test_multiprocess_metrics import collected_in, unauthorised_calls_per_process

pytestmark = pytest.mark.sqlite_only

ME = "/api/v1/auth/me"
METRICS_TOKEN = "a-random-metrics-token-for-the-tests-" + "t" * 12
UNAUTHORISED = {"route": ME, "status": "401"}


@pytest.fixture(autouse=True)
def _empty_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI reads ./.env: run where there is none."""
    monkeypatch.chdir(tmp_path)


def value_in(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def production_environment(tmp_path: Path) -> dict[str, str]:
    """Production mode with METRICS_TOKEN; mail would go through SMTP (none is sent here)."""
    env = process_environment(
        f"sqlite:///{tmp_path}/auth.sqlite3",
        DEVELOPMENT_MODE="false",
        SECRET_KEY="a-test-secret-key-that-is-long-enough-x",
        AWS_SES_FROM_EMAIL="no-reply@taxease.example",
        EMAIL_BACKEND="smtp",
        SMTP_HOST="127.0.0.1",
        EMBEDDED_WORKER="false",
        METRICS_TOKEN=METRICS_TOKEN,
    )
    db_upgrade(env)
    return env


def test_the_metrics_port_answers_without_the_token_the_public_port_only_with_it(
    tmp_path: Path,
) -> None:
    env = production_environment(tmp_path)
    metrics_port = free_port()
    with serving(env, tmp_path, free_port(), "--metrics-port", str(metrics_port)) as server:
        wait_for_log(server, f"metrics served without a token on 127.0.0.1 port {metrics_port}")
        for _ in range(3):
            assert httpx.get(f"{server.base_url}{ME}", timeout=5).status_code == 401

        public = f"{server.base_url}/metrics"
        assert httpx.get(public, timeout=5).status_code == 404
        wrong = {"Authorization": "Bearer not-the-token"}
        assert httpx.get(public, headers=wrong, timeout=5).status_code == 404
        right = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        with_token = httpx.get(public, headers=right, timeout=5)
        assert with_token.status_code == 200
        assert value_in(with_token.text, "taxease_http_requests_total", **UNAUTHORISED) == 3

        private = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert private.status_code == 200
        assert private.headers["content-type"].startswith("text/plain")
        assert value_in(private.text, "taxease_http_requests_total", **UNAUTHORISED) == 3
        other = httpx.get(f"http://127.0.0.1:{metrics_port}/api/v1/auth/me", timeout=5)
        assert other.status_code == 404


def test_with_two_workers_the_metrics_port_shows_the_sum_over_the_processes(
    tmp_path: Path,
) -> None:
    env = process_environment(f"sqlite:///{tmp_path}/auth.sqlite3", EMBEDDED_WORKER="false")
    db_upgrade(env)
    metrics_port = free_port()
    scrape_url = f"http://127.0.0.1:{metrics_port}/metrics"
    with serving(
        env, tmp_path, free_port(), "--workers", "2", "--metrics-port", str(metrics_port)
    ) as server:
        directory = collected_in(server.stderr)
        # Each call on a new connection: the kernel hands it to whichever process accepts.
        calls = 0
        while len([v for v in unauthorised_calls_per_process(directory).values() if v]) < 2:
            assert calls < 500, f"one process answered all {calls} calls"
            assert httpx.get(f"{server.base_url}{ME}", timeout=5).status_code == 401
            calls += 1

        scraped = httpx.get(scrape_url, timeout=5)
        assert scraped.status_code == 200
        assert value_in(scraped.text, "taxease_http_requests_total", **UNAUTHORISED) == calls

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=STOP_SECONDS) == 0, server.output()
        assert "Traceback" not in server.stderr.read_text()
        with pytest.raises(httpx.TransportError):  # the listener went with `serve`
            httpx.get(scrape_url, timeout=2)


def test_a_metrics_port_already_taken_exits_2_naming_the_option(tmp_path: Path) -> None:
    env = process_environment(f"sqlite:///{tmp_path}/auth.sqlite3")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = CliRunner().invoke(app, ["serve", "--metrics-port", str(port)], env=env)

    assert result.exit_code == 2, result.output
    assert f"--metrics-port {port}" in result.stderr


def test_a_metrics_port_equal_to_the_api_port_exits_2(tmp_path: Path) -> None:
    env = process_environment(f"sqlite:///{tmp_path}/auth.sqlite3")

    result = CliRunner().invoke(app, ["serve", "--port", "8123", "--metrics-port", "8123"], env=env)

    assert result.exit_code == 2, result.output
    assert "--metrics-port must differ from --port" in result.stderr
