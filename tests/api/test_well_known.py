"""/.well-known/jwks.json and /.well-known/openid-configuration: an ordinary JWT library finds
the keys and verifies access tokens with them alone (no shared secret)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.api.conftest import login_token, verified_user
from tests.conftest import (
    STRONG_PASSWORD,
    TEST_SECRET_KEY,
    RunningApp,
    SettingsFactory,
    StartApp,
)
from tests.support import free_port
from tests.support.cli import (
    Running,
    code_printed_for,
    db_upgrade,
    process_environment,
    serving,
)

OTHER_KEY = "another-secret-key-another-secret-key-2"


async def test_jwks_publishes_the_current_key_with_caching_headers(dev_app: RunningApp) -> None:
    response = await dev_app.client.get("/.well-known/jwks.json")

    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    [key] = response.json()["keys"]
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
    assert "d" not in key  # never the private part


async def test_jwks_publishes_previous_keys_too(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(
        make_settings(secret_key=OTHER_KEY, previous_secret_keys=[TEST_SECRET_KEY])
    )
    old = await start_app(make_settings())

    keys = (await app.client.get("/.well-known/jwks.json")).json()["keys"]
    [old_key] = (await old.client.get("/.well-known/jwks.json")).json()["keys"]

    assert len(keys) == 2
    assert keys[1] == old_key


async def test_openid_configuration_names_issuer_keys_and_token_endpoint(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(public_base_url="https://auth.taxease.example"))

    response = await app.client.get("/.well-known/openid-configuration")

    assert response.status_code == 200
    assert response.json() == {
        "issuer": "https://auth.taxease.example",
        "jwks_uri": "https://auth.taxease.example/.well-known/jwks.json",
        "token_endpoint": "https://auth.taxease.example/api/v1/auth/token/refresh",
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "subject_types_supported": ["public"],
    }


async def test_token_verifies_with_the_published_key_in_process(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "jwks@example.com")
    token = await login_token(dev_app.client, "jwks@example.com", STRONG_PASSWORD)
    [key] = (await dev_app.client.get("/.well-known/jwks.json")).json()["keys"]

    claims = jwt.decode(
        token,
        jwt.PyJWK(key).key,
        algorithms=["EdDSA"],
        audience="taxease",
        issuer="http://127.0.0.1:8001",
    )

    assert claims["email"] == "jwks@example.com"


# --- an outside verifier, over HTTP, against a real `taxease-auth serve` ----------------------


@pytest.fixture
def server(empty_database_url: str, tmp_path: Path) -> Iterator[Running]:
    port = free_port()
    env = process_environment(
        empty_database_url,
        SECRET_KEY=TEST_SECRET_KEY,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
    )
    db_upgrade(env)
    with serving(env, tmp_path, port) as running:
        yield running


def test_pyjwkclient_verifies_a_token_with_the_servers_jwks_alone(server: Running) -> None:
    email = "outside@example.com"
    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
        registered = client.post(
            "/api/v1/auth/register",
            json={
                "email": email,
                "password": STRONG_PASSWORD,
                "first_name": "Out",
                "last_name": "Side",
                "accept_terms": True,
            },
        )
        assert registered.status_code == 201, registered.text
        code = code_printed_for(server.stdout, email)
        verified = client.post(
            "/api/v1/auth/verify-otp",
            json={"email": email, "code": code, "purpose": "email_verification"},
        )
        assert verified.status_code == 200, verified.text
        login = client.post(
            "/api/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD}
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        discovery = client.get("/.well-known/openid-configuration").json()

    # What another TaxEase backend does: no SECRET_KEY, only the discovery document and JWKS.
    keys = jwt.PyJWKClient(discovery["jwks_uri"], cache_keys=True)
    signing_key = keys.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=discovery["id_token_signing_alg_values_supported"],
        audience="taxease",
        issuer=discovery["issuer"],
    )

    assert discovery["issuer"] == server.base_url
    assert claims["email"] == email
    assert claims["amr"] == ["pwd"]
    assert claims["sid"]
    # A token with a forged signature fails the same outside check.
    header, payload, _ = token.split(".")
    forged = f"{header}.{payload}.{'A' * 86}"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            forged,
            signing_key.key,
            algorithms=["EdDSA"],
            audience="taxease",
            issuer=server.base_url,
        )
