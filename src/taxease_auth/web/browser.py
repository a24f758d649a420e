"""What a browser carries between pages, read and written in one place (DESIGN.md §12):

- the session cookie ``__Host-taxease_session``: sealed session id, access and refresh token;
- the flow cookie ``__Host-taxease_flow``: sealed state of a flow in progress (the address a
  code was sent to, its purpose, the login challenge, the registration id), so no address or
  challenge travels in a URL or a hidden field a page could leak;
- the CSRF cookie ``__Host-taxease_csrf``: random, the base of every form's token;
- the language cookie ``taxease_locale`` (not secret: the language switch's choice).

All are ``HttpOnly``, ``SameSite=Lax``, ``Path=/``, and ``Secure`` with the ``__Host-`` prefix
outside development mode (``make run`` is plain HTTP: the prefix requires ``Secure``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response

from taxease_auth.config import Settings
from taxease_auth.web.locale import LOCALE_COOKIE
from taxease_auth.web.seal import Sealer, new_csrf_cookie

SESSION = "taxease_session"
FLOW = "taxease_flow"
CSRF = "taxease_csrf"
# A flow lasts as long as someone may reasonably take to read a mail and type its code.
FLOW_MAX_AGE_SECONDS = 3600
LOCALE_MAX_AGE_SECONDS = 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class PageSession:
    """A signed-in browser's session: what a login answered."""

    session_id: str | None
    access_token: str
    refresh_token: str


class Browser:
    """Reads and writes the page cookies of one app (its settings and keys)."""

    def __init__(self, settings: Settings) -> None:
        self._secure = not settings.development_mode
        self._sealer = Sealer(settings.verification_keys)

    def name(self, base: str) -> str:
        return f"__Host-{base}" if self._secure else base

    def _set(self, response: Response, base: str, value: str, max_age: int | None) -> None:
        response.set_cookie(
            self.name(base),
            value,
            max_age=max_age,
            path="/",
            secure=self._secure,
            httponly=True,
            samesite="lax",
        )

    def _clear(self, response: Response, base: str) -> None:
        response.delete_cookie(
            self.name(base), path="/", secure=self._secure, httponly=True, samesite="lax"
        )

    # --- CSRF ----------------------------------------------------------------------------------

    def csrf_cookie(self, request: Request) -> str | None:
        return request.cookies.get(self.name(CSRF))

    def ensure_csrf(self, request: Request) -> str:
        """This browser's form token; a first visit gets its CSRF cookie set."""
        cookie = self.csrf_cookie(request)
        if not cookie:
            cookie = new_csrf_cookie()
            request.state.new_csrf_cookie = cookie
        return self._sealer.csrf_token(cookie)

    def send_csrf_cookie(self, request: Request, response: Response) -> None:
        cookie = getattr(request.state, "new_csrf_cookie", None)
        if cookie:
            self._set(response, CSRF, cookie, None)

    def csrf_valid(self, request: Request, submitted: str | None) -> bool:
        return self._sealer.csrf_valid(self.csrf_cookie(request), submitted)

    # --- the signed-in session -----------------------------------------------------------------

    def session(self, request: Request) -> PageSession | None:
        value = self._sealer.open(SESSION, request.cookies.get(self.name(SESSION)))
        if value is None:
            return None
        return PageSession(value.get("sid"), str(value.get("at")), str(value.get("rt")))

    def set_session(self, response: Response, session: PageSession) -> None:
        sealed = self._sealer.seal(
            SESSION,
            {"sid": session.session_id, "at": session.access_token, "rt": session.refresh_token},
        )
        self._set(response, SESSION, sealed, None)  # ends with the browser session

    def clear_session(self, response: Response) -> None:
        self._clear(response, SESSION)

    # --- a flow in progress --------------------------------------------------------------------

    def flow(self, request: Request) -> dict[str, Any]:
        return self._sealer.open(FLOW, request.cookies.get(self.name(FLOW))) or {}

    def set_flow(self, response: Response, flow: dict[str, Any]) -> None:
        self._set(response, FLOW, self._sealer.seal(FLOW, flow), FLOW_MAX_AGE_SECONDS)

    def clear_flow(self, response: Response) -> None:
        self._clear(response, FLOW)

    # --- language --------------------------------------------------------------------------------

    def set_locale(self, response: Response, tag: str) -> None:
        # Not sealed and not a secret; readable by the server only (no script needs it).
        response.set_cookie(
            LOCALE_COOKIE,
            tag,
            max_age=LOCALE_MAX_AGE_SECONDS,
            path="/",
            secure=self._secure,
            httponly=True,
            samesite="lax",
        )
