"""Request ids in the answer and on every log line of a request; our one-line access log.

The app runs with the service's own logging set-up (``configure_logging``, as `serve` does)
and the lines are read as the handler wrote them to stderr.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from taxease_auth.config import Settings
from taxease_auth.logs import REQUEST_ID, configure_logging
from tests.api.conftest import register
from tests.conftest import RunningApp, SettingsFactory, StartApp

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line the handler wrote, parsed (each must be one JSON object)."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


async def logging_app(start_app: StartApp, settings: Settings) -> RunningApp:
    configure_logging(settings)  # conftest's _restore_logging undoes it after the test
    return await start_app(settings)


# --- the request id ----------------------------------------------------------------------------


async def test_an_answer_carries_a_generated_request_id(dev_app: RunningApp) -> None:
    first = await dev_app.client.get("/healthz")
    second = await dev_app.client.get("/healthz")

    assert GENERATED_ID.fullmatch(first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize(
    "incoming",
    ["3f2c9a1e-7b4d-4c1a-9e2f-0a1b2c3d4e5f", "req.42:edge_7", "a", "x" * 128],
)
async def test_a_valid_incoming_request_id_is_kept(dev_app: RunningApp, incoming: str) -> None:
    response = await dev_app.client.get("/healthz", headers={"X-Request-ID": incoming})

    assert response.headers["x-request-id"] == incoming


@pytest.mark.parametrize(
    "incoming",
    [b"", b"x" * 129, b"two words", b'"quoted"', b"a=b", b"caf\xc3\xa9", b"<script>"],
    ids=["empty", "too-long", "space", "quotes", "equals", "non-ascii", "markup"],
)
async def test_an_unsafe_incoming_request_id_is_replaced(
    dev_app: RunningApp, incoming: bytes
) -> None:
    response = await dev_app.client.get("/healthz", headers={b"X-Request-ID": incoming})

    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])


async def test_the_request_id_does_not_outlive_the_request(dev_app: RunningApp) -> None:
    await dev_app.client.get("/healthz", headers={"X-Request-ID": "leak-check"})

    assert REQUEST_ID.get() is None


async def test_a_refused_oversized_body_still_carries_a_request_id(dev_app: RunningApp) -> None:
    response = await dev_app.client.post(
        "/api/v1/auth/register", content=b"x" * 40_000, headers={"X-Request-ID": "big-body"}
    )

    assert response.status_code == 413
    assert response.headers["x-request-id"] == "big-body"


# --- on every log line of the request ---------------------------------------------------------


async def test_json_logs_carry_the_request_id_on_every_line_of_a_request(
    start_app: StartApp, make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await logging_app(start_app, make_settings(log_format="json"))

    response = await register(running.client, "rid@example.com")
    await running.console_mail("rid@example.com")
    await running.settled_outbox()

    request_id = response.headers["x-request-id"]
    lines = json_lines(capsys.readouterr().err)
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    issued = [line for line in lines if "code issued for r***@example.com" in line["message"]]
    access = [line for line in lines if line["logger"] == "taxease_auth.access"]
    assert issued
    assert access
    assert [line.get("request_id") for line in issued + access] == [request_id] * len(
        issued + access
    )
    # The delivery worker sends outside any request: its lines carry no request id.
    sent = [line for line in lines if line["logger"] == "taxease_auth.mail.worker"]
    assert any(" sent" in line["message"] for line in sent)
    assert all("request_id" not in line for line in sent)


async def test_concurrent_requests_keep_their_own_request_ids(
    start_app: StartApp, make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await logging_app(start_app, make_settings(log_format="json"))

    async def register_as(email: str, request_id: str) -> None:
        response = await running.client.post(
            "/api/v1/auth/register",
            headers={"X-Request-ID": request_id},
            json={
                "email": email,
                "password": "correct horse battery staple",
                "first_name": "Con",
                "last_name": "Current",
                "accept_terms": True,
            },
        )
        assert response.headers["x-request-id"] == request_id

    await asyncio.gather(
        *(register_as(f"{name}@example.com", f"req-{name}") for name in ("anna", "bert", "cleo"))
    )
    await running.requested_codes_issued()  # codes are issued after the answers

    lines = json_lines(capsys.readouterr().err)
    for name in ("anna", "bert", "cleo"):
        issued = [
            line for line in lines if f"issued for {name[0]}***@example.com" in line["message"]
        ]
        assert [line["request_id"] for line in issued] == [f"req-{name}"]


async def test_console_logs_show_the_request_id(
    start_app: StartApp, make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await logging_app(start_app, make_settings(log_format="console"))

    await register(running.client, "console@example.com")
    await running.console_mail("console@example.com")

    stderr = capsys.readouterr().err
    assert re.search(
        r" INFO    \[[0-9a-f]{32}\] taxease_auth\.auth\.code_mail: email_verification code issued "
        r"for c\*\*\*@example\.com$",
        stderr,
        re.MULTILINE,
    ), stderr
    worker_lines = [line for line in stderr.splitlines() if " taxease_auth.mail.worker: " in line]
    assert worker_lines
    assert not any("[" in line.split(" taxease_auth.mail.worker: ")[0] for line in worker_lines)


# --- the access log ---------------------------------------------------------------------------


def access_lines(stderr: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(stderr) if line["logger"] == "taxease_auth.access"]


async def test_the_access_log_has_method_route_status_duration_and_client(
    start_app: StartApp, make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await logging_app(start_app, make_settings(log_format="json"))

    await register(running.client, "access@example.com")

    [line] = access_lines(capsys.readouterr().err)
    assert line["level"] == "INFO"
    assert re.fullmatch(
        r"POST /api/v1/auth/register 201 [0-9]+\.[0-9]ms 127\.0\.0\.1", line["message"]
    ), line


async def test_the_access_log_never_holds_a_query_string_or_a_raw_unmatched_path(
    start_app: StartApp, make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await logging_app(start_app, make_settings(log_format="json"))

    await running.client.get("/api/v1/auth/me?access_token=secret-token-value")
    await running.client.get("/reset/secret-path-segment?code=123456")

    messages = [line["message"] for line in access_lines(capsys.readouterr().err)]
    assert [message.split()[:3] for message in messages] == [
        ["GET", "/api/v1/auth/me", "401"],
        ["GET", "unmatched", "404"],
    ]
    assert not any("secret" in message or "123456" in message for message in messages)


async def test_the_access_log_shows_the_forwarded_client_behind_a_trusted_proxy(
    start_app: StartApp, make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await logging_app(
        start_app, make_settings(log_format="json", trusted_proxies="127.0.0.1")
    )

    await running.client.get("/api/v1/auth/me", headers={"X-Forwarded-For": "203.0.113.7"})

    [line] = access_lines(capsys.readouterr().err)
    assert line["message"].endswith(" 203.0.113.7")


async def test_health_checks_are_logged_at_debug_only(
    start_app: StartApp, make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    quiet = await logging_app(start_app, make_settings(log_format="json", log_level="INFO"))
    await quiet.client.get("/healthz")
    await quiet.client.get("/metrics")
    assert access_lines(capsys.readouterr().err) == []

    verbose = await logging_app(start_app, make_settings(log_format="json", log_level="DEBUG"))
    await verbose.client.get("/healthz")
    [line] = access_lines(capsys.readouterr().err)
    assert line["level"] == "DEBUG"
    assert line["message"].startswith("GET /healthz 200 ")


async def test_access_log_false_writes_no_access_line(
    start_app: StartApp, make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await logging_app(start_app, make_settings(log_format="json", access_log=False))

    response = await register(running.client, "silent@example.com")

    assert response.status_code == 201
    assert "x-request-id" in response.headers
    assert access_lines(capsys.readouterr().err) == []
