"""The response headers of every page and static file (DESIGN.md §12, "Headers on every
page"), set by one ASGI middleware so that no page, redirect or error can miss them."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
# Pages show codes, the account's data and CSRF tokens: no cache keeps them (static is cached).
NO_STORE = {"cache-control": "no-store"}


# Every page route of ``web/routes.py``.
PAGE_PATHS = frozenset({"/", "/signup", "/verify", "/forgot", "/reset", "/account", "/language"})


def is_page_path(path: str) -> bool:
    """True for the page routes and the static files."""
    return path in PAGE_PATHS or path.startswith(("/static/", "/c/"))


class PageHeaders:
    """Adds PAGE_HEADERS (and ``no-store`` outside /static/) to the answers of page paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_page_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        extra = dict(PAGE_HEADERS)
        if not scope["path"].startswith("/static/"):
            extra.update(NO_STORE)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.decode("latin-1").lower() not in extra
                ]
                headers += [(name.encode(), value.encode()) for name, value in extra.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
