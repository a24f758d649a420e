"""The session routes under /api/v1/auth: refresh, logout, the list of sessions and ending
one (DESIGN.md §11). Thin: the rules live in ``auth/sessions.py``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status

from taxease_auth.api.deps import CurrentSession, caller
from taxease_auth.api.schemas import (
    ErrorResponse,
    RefreshRequest,
    SessionId,
    SessionResponse,
    TokenResponse,
)
from taxease_auth.auth.sessions import EndReason, Sessions

router = APIRouter(prefix="/api/v1/auth", tags=["sessions"])

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


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


@router.post(
    "/token/refresh",
    response_model=TokenResponse,
    responses={**_UNAUTHORIZED, **_RATE_LIMITED},
)
async def refresh_token(body: RefreshRequest, request: Request) -> Response:
    """A new access token and refresh token for a refresh token, which is then spent. One
    answer (401) for unknown, used, expired and ended; a used token sent again after a short
    grace ends its session."""
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
