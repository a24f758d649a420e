"""Adding the pages to an app: their routes, ``/static/``, the page headers and the objects
the routes read from ``app.state`` (built from the settings; no I/O)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from taxease_auth.config import Settings
from taxease_auth.web import link_routes, routes
from taxease_auth.web.browser import Browser
from taxease_auth.web.headers import PageHeaders
from taxease_auth.web.pages import Pages

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the pages (DESIGN.md §12) from ``app``."""
    browser = Browser(settings)
    app.state.browser = browser
    app.state.pages = Pages(settings, browser)
    app.include_router(routes.router)
    app.include_router(link_routes.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(PageHeaders)
