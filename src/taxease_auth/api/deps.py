"""Annotated dependency aliases: route signatures read like prose."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from taxease_auth.api.client_ip import client_address
from taxease_auth.auth.service import AuthService
from taxease_auth.config import Settings
from taxease_auth.errors import InvalidToken
from taxease_auth.store.models import User

# The dependencies below are ``async def`` although they never await: FastAPI runs a plain
# ``def`` dependency in a worker thread, and three thread trips per request cost more than
# the requests' own work (`make bench`).


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _service(request: Request) -> AuthService:
    service: AuthService = request.app.state.auth_service
    return service


async def _client_ip(request: Request, settings: Annotated[Settings, Depends(_settings)]) -> str:
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.get("x-forwarded-for"), settings.trusted_proxies)


SettingsDep = Annotated[Settings, Depends(_settings)]
AuthServiceDep = Annotated[AuthService, Depends(_service)]
ClientIp = Annotated[str, Depends(_client_ip)]

_bearer = HTTPBearer(auto_error=False, description="The access token from /login or /verify-otp.")


async def _current_user(
    service: AuthServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None:
        raise InvalidToken("missing")
    return await service.current_user(credentials.credentials)


CurrentUser = Annotated[User, Depends(_current_user)]
