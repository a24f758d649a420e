"""The public surface, pinned (STYLE.md point 13): a route or a documented status that changes
by accident fails here. Change the lists on purpose, together with DESIGN.md §1."""

from __future__ import annotations

from typing import Any

from tests.conftest import RunningApp

# (method, path) -> the statuses the OpenAPI document promises. 422 is FastAPI's validation
# answer on every route with a body.
SURFACE: dict[tuple[str, str], set[str]] = {
    ("post", "/api/v1/auth/register"): {"201", "422", "429"},
    ("post", "/api/v1/auth/verify-otp"): {"200", "400", "422", "429"},
    ("post", "/api/v1/auth/request-otp"): {"202", "422", "429"},
    ("post", "/api/v1/auth/resend-otp"): {"202", "422", "429"},
    ("post", "/api/v1/auth/login"): {"200", "202", "401", "403", "422", "429"},
    ("post", "/api/v1/auth/password-reset/request"): {"202", "422", "429"},
    ("post", "/api/v1/auth/password-reset/confirm"): {"200", "400", "422", "429"},
    ("get", "/api/v1/auth/me"): {"200", "401"},
    ("post", "/api/v1/auth/token/refresh"): {"200", "401", "422", "429"},
    ("post", "/api/v1/auth/logout"): {"204", "401"},
    ("post", "/api/v1/auth/logout-all"): {"204", "401"},
    ("get", "/api/v1/auth/sessions"): {"200", "401"},
    ("delete", "/api/v1/auth/sessions/{session_id}"): {"204", "401", "404", "422"},
    ("get", "/.well-known/jwks.json"): {"200"},
    ("get", "/.well-known/openid-configuration"): {"200"},
    ("get", "/healthz"): {"200"},
    ("get", "/readyz"): {"200", "503"},
    ("get", "/metrics"): {"200"},
}


async def _document(app: RunningApp) -> dict[str, Any]:
    response = await app.client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


async def test_routes_and_documented_statuses_match_the_pinned_surface(
    dev_app: RunningApp,
) -> None:
    operations = _operations(await _document(dev_app))

    documented = {key: set(operation["responses"]) for key, operation in operations.items()}

    assert documented == SURFACE


async def test_operation_ids_are_stable_route_names(dev_app: RunningApp) -> None:
    operations = _operations(await _document(dev_app))

    ids = {key: operation["operationId"] for key, operation in operations.items()}

    assert ids[("post", "/api/v1/auth/verify-otp")] == "verify_otp"
    assert ids[("post", "/api/v1/auth/password-reset/confirm")] == "password_reset_confirm"
    assert len(set(ids.values())) == len(ids)


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = document["components"]["schemas"][name]
    return schema


async def test_every_request_body_has_an_example(dev_app: RunningApp) -> None:
    document = await _document(dev_app)
    bodies = {
        key: operation["requestBody"]["content"]["application/json"]["schema"]
        for key, operation in _operations(document).items()
        if "requestBody" in operation
    }
    assert len(bodies) == 8

    for key, reference in bodies.items():
        schema = _resolve(document, reference)
        if "examples" in schema:
            continue
        missing = [
            name for name in schema["required"] if "examples" not in schema["properties"][name]
        ]
        assert not missing, f"{key}: no example for {missing}"


async def test_code_field_is_documented_as_digit_text(dev_app: RunningApp) -> None:
    document = await _document(dev_app)

    code = document["components"]["schemas"]["VerifyOtpRequest"]["properties"]["code"]

    assert code["type"] == "string"
    assert code["pattern"].startswith("^[0-9]")
