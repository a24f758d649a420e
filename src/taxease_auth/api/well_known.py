"""The public keys and the discovery document, so that ordinary JWT/OIDC libraries verify
access tokens with no shared secret (DESIGN.md §11). Both answers are the same for everyone and
cost no database work."""

from __future__ import annotations

from fastapi import Request, Response
from pydantic import BaseModel, Field

from taxease_auth.api.routing import api_router
from taxease_auth.auth.tokens import TokenService
from taxease_auth.config import Settings

router = api_router(prefix="/.well-known", tags=["keys"])

# Verifiers may keep the keys this long; a rotated-in key is published before it signs
# anything only if the deploy waits this long, so a new SECRET_KEY's tokens can be refused
# by a verifier's stale cache for up to 5 minutes: PyJWKClient fetches again on an unknown kid.
JWKS_MAX_AGE = 300
REFRESH_PATH = "/api/v1/auth/token/refresh"


class Jwk(BaseModel):
    kty: str = Field(examples=["OKP"])
    crv: str = Field(examples=["Ed25519"])
    x: str
    kid: str = Field(description="RFC 7638 thumbprint of the key.")
    use: str = Field(examples=["sig"])
    alg: str = Field(examples=["EdDSA"])


class JwkSet(BaseModel):
    keys: list[Jwk]


class OpenIdConfiguration(BaseModel):
    issuer: str
    jwks_uri: str
    token_endpoint: str = Field(description="POST {refresh_token} here for a new pair.")
    id_token_signing_alg_values_supported: list[str]
    subject_types_supported: list[str]


@router.get("/jwks.json", response_model=JwkSet)
async def jwks(request: Request, response: Response) -> JwkSet:
    """Every public key that verifies access tokens: the current key first, then those of
    PREVIOUS_SECRET_KEYS."""
    tokens: TokenService = request.app.state.tokens
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    return JwkSet.model_validate(tokens.jwks())


@router.get("/openid-configuration", response_model=OpenIdConfiguration)
async def openid_configuration(request: Request, response: Response) -> OpenIdConfiguration:
    """Where the keys are, and the issuer tokens carry."""
    tokens: TokenService = request.app.state.tokens
    settings: Settings = request.app.state.settings
    # PUBLIC_BASE_URL when set; otherwise the address this request reached (its Host header,
    # so the answer is not cached for others).
    base = (settings.public_base_url or str(request.base_url)).rstrip("/")
    if settings.public_base_url:
        response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    else:
        response.headers["Cache-Control"] = "no-store"
    return OpenIdConfiguration(
        issuer=tokens.issuer,
        jwks_uri=f"{base}/.well-known/jwks.json",
        token_endpoint=f"{base}{REFRESH_PATH}",
        id_token_signing_alg_values_supported=["EdDSA"],
        subject_types_supported=["public"],
    )
