"""Annotated dependency aliases: route signatures read like prose."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from taxease_auth.api.client_ip import client_address
from taxease_auth.auth.service import AuthService
from taxease_auth.auth.sessions import Authenticated, Sessions
from taxease_auth.config import Settings
from taxease_auth.errors import InvalidToken
from taxease_auth.store.users import UserRow

# The auth routes take the request itself and read the service and the client address from
# it with ``caller``: as dependencies, FastAPI's resolution of the two (and of the settings
# behind the address) cost more CPU than verify-otp's own work (bench/cpu.py). The dependencies
# below are ``async def`` although they never await: FastAPI runs a plain ``def`` dependency in
# a worker thread.


def caller(request: Request) -> tuple[AuthService, str]:
    """The auth service and the client's address (after TRUSTED_PROXIES)."""
    state = request.app.state
    settings: Settings = state.settings
    peer = request.client.host if request.client else None
    forwarded_for = request.headers.getlist("x-forwarded-for")  # every line, in order
    address = client_address(peer, forwarded_for, settings.trusted_proxies)
    service: AuthService = state.auth_service
    return service, address


async def _service(request: Request) -> AuthService:
    service: AuthService = request.app.state.auth_service
    return service


AuthServiceDep = Annotated[AuthService, Depends(_service)]

_bearer = HTTPBearer(auto_error=False, description="The access token from /login or /verify-otp.")


# What a route that reads the bearer token itself (``bearer_user``) puts in its OpenAPI
# operation: the scheme ``_bearer`` registers for the routes that depend on it.
BEARER_SECURITY: dict[str, Any] = {"security": [{"HTTPBearer": []}]}


async def bearer_user(request: Request) -> UserRow:
    """The account of the request's bearer token, or InvalidToken: what CurrentUser gives,
    without a dependency. /me is the route other backends call on every request they cannot
    verify offline: FastAPI's resolution of two dependency levels cost more CPU than the
    check itself (`make bench`, me)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:  # as HTTPBearer reads the header
        raise InvalidToken("missing")
    sessions: Sessions = request.app.state.sessions
    return (await sessions.authenticate(token)).user


async def _current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> UserRow:
    if credentials is None:
        raise InvalidToken("missing")
    sessions: Sessions = request.app.state.sessions
    return (await sessions.authenticate(credentials.credentials)).user


async def _in_session(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Authenticated:
    if credentials is None:
        raise InvalidToken("missing")
    sessions: Sessions = request.app.state.sessions
    caller = await sessions.authenticate(credentials.credentials)
    # A pre-upgrade HS256 token names no session: it cannot list or end sessions.
    if caller.session_id is None:
        raise InvalidToken("no session")
    return caller


# The bearer token's account (its session live; a pre-upgrade token not revoked).
CurrentUser = Annotated[UserRow, Depends(_current_user)]
# The same, for a token that names its session (every token issued since sessions exist).
CurrentSession = Annotated[Authenticated, Depends(_in_session)]
