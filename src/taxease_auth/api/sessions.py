"""The session routes under /api/v1/auth: refresh, logout, the list of sessions and ending
one (DESIGN.md §11). Thin: the rules live in ``auth/sessions.py``."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from taxease_auth.api.deps import CurrentSession, caller
from taxease_auth.api.routing import api_router
from taxease_auth.api.schemas import (
    ErrorResponse,
    RefreshRequest,
    SessionId,
    SessionResponse,
    TokenResponse,
)
from taxease_auth.auth.sessions import EndReason, Sessions

router = api_router(prefix="/api/v1/auth", tags=["sessions"])

_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Invalid token"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such live session of this account"},
}
_RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorResponse,
        "description": "A rate budget is spent; Retry-After says when to try again",
        "headers": {"Retry-After": {"description": "Seconds", "schema": {"type": "integer"}}},
    }
}


# Tokens in an answer: no cache may keep it (RFC 6749 §5.1).
_NOT_STORED = {"Cache-Control": "no-store"}

# token/refresh reads its body itself (``_refresh_body``), so its OpenAPI operation states what
# FastAPI would have derived from a ``RefreshRequest`` parameter: the body and the 422.
_REFRESH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": RefreshRequest.model_json_schema()}},
    }
}
_INVALID_BODY: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "Validation Error",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
        },
    }
}


def _refresh_body(raw: bytes) -> RefreshRequest:
    """The body as FastAPI would validate a ``RefreshRequest`` parameter, or the same
    RequestValidationError (a 422 of FastAPI's shape, ``loc`` starting with ``body``).

    Read by hand: FastAPI's body handling (content type, JSON, the dependency solver) was a
    sixth of a refresh's CPU, the route being the one every client calls every
    ACCESS_TOKEN_EXPIRE_MINUTES (`make bench`, refresh)."""
    try:
        return RefreshRequest.model_validate_json(raw)
    except ValidationError as error:
        errors = [
            {"type": "json_invalid", "loc": ("body", 0), "msg": "JSON decode error", "input": {}}
            if item["type"] == "json_invalid"
            else {**item, "loc": ("body", *item["loc"])}
            for item in error.errors(include_url=False)
        ]
        raise RequestValidationError(errors) from None


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


@router.post(
    "/token/refresh",
    response_model=TokenResponse,
    responses={**_UNAUTHORIZED, **_INVALID_BODY, **_RATE_LIMITED},
    openapi_extra=_REFRESH_BODY,
)
async def refresh_token(request: Request) -> Response:
    """A new access token and refresh token for a refresh token, which is then spent. One
    answer (401) for unknown, used, expired and ended; a used token sent again after a short
    grace ends its session."""
    body = _refresh_body(await request.body())
    _, client_ip = caller(request)
    pair = await _sessions(request).refresh(body.refresh_token, client_ip=client_ip)
    answer = TokenResponse(
        access_token=pair.access_token, expires_in=pair.expires_in, refresh_token=pair.refresh_token
    )
    # Serialised once, here (returned as a model, FastAPI validates it again: `make bench`).
    return Response(answer.model_dump_json(), media_type="application/json", headers=_NOT_STORED)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=_UNAUTHORIZED)
async def logout(session: CurrentSession, request: Request) -> Response:
    """End the bearer token's session: its refresh token stops working, and so does the
    access token here at once (other backends: when it expires)."""
    assert session.session_id is not None
    await _sessions(request).end(session, session.session_id, EndReason.LOGOUT)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/logout-all", status_code=status.HTTP_204_NO_CONTENT, responses=_UNAUTHORIZED)
async def logout_all(session: CurrentSession, request: Request) -> Response:
    """End every session of the account, this one included."""
    await _sessions(request).end_all(session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/sessions", response_model=list[SessionResponse], responses=_UNAUTHORIZED)
async def list_sessions(session: CurrentSession, request: Request) -> list[SessionResponse]:
    """The account's live sessions, newest first; ``current`` marks the caller's."""
    live = await _sessions(request).live(session)
    return [
        SessionResponse(
            id=row.id,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            ip=row.ip,
            user_agent=row.user_agent,
            current=row.id == session.session_id,
        )
        for row in live
    ]


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_UNAUTHORIZED, **_NOT_FOUND},
)
async def end_session(session_id: SessionId, session: CurrentSession, request: Request) -> Response:
    """End one of the account's sessions (a lost laptop's). Another account's session, or one
    already ended, is a 404."""
    if not await _sessions(request).end(session, session_id, EndReason.REVOKED):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Session not found")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
