"""Hostile bodies (SECURITY-AND-SES.md §1.2 attack 14): bodies over MAX_REQUEST_BODY_BYTES are
refused with 413 before parsing, whether their size is declared or streamed; odd JSON shapes
and oversized fields are 422, never 5xx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from taxease_auth.api import schemas
from taxease_auth.config import Settings
from tests.api.conftest import API, outbox_kinds, user_rows
from tests.conftest import STRONG_PASSWORD, RunningApp, SettingsFactory, StartApp

TOO_LARGE = {"detail": "Request body too large"}
REGISTER = f"{API}/register"


def _registration(**fields: Any) -> dict[str, Any]:
    return {
        "email": "hostile@example.com",
        "password": STRONG_PASSWORD,
        "first_name": "Test",
        "last_name": "User",
        "accept_terms": True,
        **fields,
    }


async def _chunks(body: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    """Stream ``body`` with no Content-Length: httpx sends it chunked."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def _nothing_happened(app: RunningApp) -> None:
    assert await user_rows(app) == []
    assert await outbox_kinds(app, "hostile@example.com") == []


# --- the size cap --------------------------------------------------------------------------


async def test_one_megabyte_password_is_refused_before_parsing(dev_app: RunningApp) -> None:
    response = await dev_app.client.post(REGISTER, json=_registration(password="p" * 1_000_000))

    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert response.headers["connection"] == "close"
    await _nothing_happened(dev_app)


async def test_declared_length_over_the_limit_is_refused_unread(dev_app: RunningApp) -> None:
    limit = dev_app.settings.max_request_body_bytes
    body = json.dumps(_registration(padding="x" * limit)).encode()
    assert len(body) > limit

    response = await dev_app.client.post(
        REGISTER, content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json() == TOO_LARGE


async def test_chunked_body_streaming_past_the_limit_is_refused(dev_app: RunningApp) -> None:
    body = json.dumps(_registration(password="p" * 100_000)).encode()

    response = await dev_app.client.post(
        REGISTER, content=_chunks(body), headers={"content-type": "application/json"}
    )

    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    await _nothing_happened(dev_app)


async def test_chunked_body_under_the_limit_reaches_the_route(dev_app: RunningApp) -> None:
    body = json.dumps(_registration()).encode()

    response = await dev_app.client.post(
        REGISTER, content=_chunks(body, size=16), headers={"content-type": "application/json"}
    )

    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 201, response.text


async def test_body_exactly_at_the_limit_is_parsed(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(max_request_body_bytes=4096))
    body = json.dumps(_registration()).encode()
    body = body[:-1] + b" " * (4096 - len(body)) + b"}"  # JSON allows trailing whitespace
    assert len(body) == 4096

    at_limit = await app.client.post(
        REGISTER, content=body, headers={"content-type": "application/json"}
    )
    over_limit = await app.client.post(
        REGISTER, content=body + b" ", headers={"content-type": "application/json"}
    )

    assert at_limit.status_code == 201, at_limit.text
    assert over_limit.status_code == 413


async def test_limit_follows_max_request_body_bytes(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(max_request_body_bytes=1024))

    response = await app.client.post(REGISTER, json=_registration(first_name="A" * 100 * 10))

    assert response.status_code == 413


async def test_requests_without_a_body_pass(dev_app: RunningApp) -> None:
    assert (await dev_app.client.get("/healthz")).status_code == 200
    assert (await dev_app.client.get(f"{API}/me")).status_code == 401


def _largest_body(model: type[BaseModel]) -> bytes:
    """``model``'s body with every string at its maximum length, each character an astral one
    that JSON escapes as a surrogate pair (12 bytes): the largest body the schema admits."""
    properties = model.model_json_schema()["properties"]
    body = {}
    for name, schema in properties.items():
        options = schema.get("anyOf", [schema])
        longest = max(option.get("maxLength", 0) for option in options)
        body[name] = "\U0001f600" * longest if longest else True
    return json.dumps(body).encode()


def test_default_limit_is_above_the_largest_body_any_schema_admits() -> None:
    models = [
        value
        for value in vars(schemas).values()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == schemas.__name__
    ]
    default = Settings.model_fields["max_request_body_bytes"].default
    assert len(models) > 5

    largest = max(len(_largest_body(model)) for model in models)

    # Register's is the largest (~25 KB: two names of up to 400 input characters, each one
    # escaped as 12 bytes, before they are composed to NFC and held to 100).
    assert largest < default


# --- hostile JSON shapes (not a size problem: 422, never 5xx) ----------------------------


async def test_nested_json_where_a_string_belongs_is_422(dev_app: RunningApp) -> None:
    body = ('{"email": ' + "[" * 50 + "]" * 50 + "}").encode()

    response = await dev_app.client.post(
        REGISTER, content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422, response.text


@pytest.mark.parametrize("depth", [1000, 5000])
async def test_json_nested_past_the_parsers_depth_is_a_client_error(
    dev_app: RunningApp, depth: int
) -> None:
    """Python's json parser gives up (RecursionError) near 1000 levels; FastAPI answers 400
    "There was an error parsing the body" for that, not 5xx. The body limit bounds the depth
    an attacker can send, so the parser's work stays small."""
    body = ('{"email": ' + "[" * depth + "]" * depth + "}").encode()
    assert len(body) < dev_app.settings.max_request_body_bytes

    response = await dev_app.client.post(
        REGISTER, content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code in {400, 422}, response.text
    assert "Traceback" not in response.text
    await _nothing_happened(dev_app)


@pytest.mark.parametrize(
    "fields",
    [
        {"email": ["a@example.com", "b@example.com"]},
        {"email": {"address": "a@example.com"}},
        {"email": None},
        {"email": 12345},
        {"password": ["correct", "horse"]},
        {"password": None},
        {"password": 123456789012},
        {"first_name": None},
        {"first_name": 7},
        {"accept_terms": "yes please"},
        {"accept_terms": None},
    ],
)
async def test_wrong_json_types_are_422(dev_app: RunningApp, fields: dict[str, Any]) -> None:
    response = await dev_app.client.post(REGISTER, json=_registration(**fields))

    assert response.status_code == 422, response.text
    await _nothing_happened(dev_app)


@pytest.mark.parametrize("body", ["null", "[]", "42", '"text"', "true", "{", "{}"])
async def test_body_that_is_not_an_object_is_422(dev_app: RunningApp, body: str) -> None:
    response = await dev_app.client.post(
        REGISTER, content=body.encode(), headers={"content-type": "application/json"}
    )

    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("verify-otp", {"email": "a@example.com", "purpose": "email_verification"}),
        ("password-reset/confirm", {"email": "a@example.com", "new_password": STRONG_PASSWORD}),
    ],
)
async def test_ten_kilobyte_code_is_422_and_not_echoed(
    dev_app: RunningApp, route: str, body: dict[str, Any]
) -> None:
    code = "1" * 10_000

    response = await dev_app.client.post(f"{API}/{route}", json={**body, "code": code})

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "code"]
    assert code not in response.text


async def test_password_over_the_input_cap_is_422_without_hashing(dev_app: RunningApp) -> None:
    # Under the body limit but over the schema's 1024 characters: refused by validation.
    response = await dev_app.client.post(REGISTER, json=_registration(password="p" * 5000))

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "password"]
    await _nothing_happened(dev_app)


async def test_invalid_utf8_body_is_a_client_error(dev_app: RunningApp) -> None:
    response = await dev_app.client.post(
        REGISTER, content=b'{"email": "\xff\xfe"}', headers={"content-type": "application/json"}
    )

    assert 400 <= response.status_code < 500, response.text
