"""Schemathesis against our own /openapi.json: no input makes the service answer 5xx, and every
answer is one the document describes (status, content type, headers, body schema).

The app runs as in `make run` (development mode, console mail kept in memory, cheap argon2,
budgets raised far above this traffic) under a real uvicorn server on a free 127.0.0.1 port,
with its lifespan and delivery worker running. The budget is fixed and the generation
derandomized, so every run sends the same requests: a failure here reproduces.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from taxease_auth.app import create_app
from taxease_auth.config import Settings
from taxease_auth.mail.backends.console import ConsoleBackend
from tests.conftest import FAST_HASHING, GENEROUS_LIMITS, TEST_SECRET_KEY, Databases

# Generated requests per operation, on top of the document's examples and schemathesis'
# boundary cases: the module runs in about 5 s on a 2-core machine. (400 per operation, with
# random seeds too, found nothing that 50 did not.)
MAX_EXAMPLES = 50
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,  # Hypothesis' derandomize: the same cases every run
            "database": "none",  # no example database: nothing replayed from an earlier run
        },
        "phases": {"stateful": {"enabled": False}},
    }
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
STARTUP_SECONDS = 20.0


def _settings(database_url: str) -> Settings:
    """Development mode on this module's database; the developer's environment ignored."""
    with pytest.MonkeyPatch.context() as environment:
        for name in list(os.environ):
            if name.lower() in Settings.model_fields:
                environment.delenv(name)
        return Settings(
            _env_file=None,
            development_mode=True,
            database_url=database_url,
            secret_key=TEST_SECRET_KEY,
            **FAST_HASHING,
            **GENEROUS_LIMITS,
        )


@pytest.fixture(scope="module")
def server_url(databases: Databases) -> Iterator[str]:
    """The app under uvicorn in a background thread, as `taxease-auth serve` runs it, on a
    database of its own (the module's requests add up in it)."""
    database_url = databases.migrated()
    mailbox = ConsoleBackend(stream=io.StringIO(), keep=100)
    app = create_app(_settings(database_url), mail_backend=mailbox)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    host, port = listener.getsockname()
    config = uvicorn.Config(
        app,
        lifespan="on",
        ws="none",  # no websockets import (it warns, and warnings are errors)
        log_config=None,
        proxy_headers=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_SECONDS)
        listener.close()
        databases.drop(database_url)
        assert not thread.is_alive(), "uvicorn did not stop"


# The document /openapi.json serves, taken from the app itself at import: building the app
# creates nothing (the lifespan does), and schemathesis needs the operations at collection.
# (schemathesis.pytest.from_fixture would load it from the running server instead, but its
# lazy loader sets pytest's private Node._nodeid, gone in pytest 9.)
DOCUMENT = create_app(_settings("sqlite:///not-opened.sqlite3")).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


def test_fuzzed_document_is_the_one_the_server_serves(server_url: str) -> None:
    served = httpx.get(f"{server_url}/openapi.json")

    assert served.status_code == 200
    assert served.json() == DOCUMENT


@schema.parametrize()
def test_no_input_gets_a_5xx_or_an_undocumented_answer(
    case: schemathesis.Case[Any], server_url: str
) -> None:
    case.call_and_validate(base_url=server_url, checks=CHECKS)
