"""Rendering a page: the Jinja2 environment of each locale (templates under ``web/templates``,
the Babel catalogue of ``locales/`` installed for ``_()``), and the context every page shares
(language, CSRF token, the language switch)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from taxease_auth.config import Settings
from taxease_auth.locales import SUPPORTED_LOCALES, babel_identifier, translations
from taxease_auth.web.browser import Browser
from taxease_auth.web.locale import LOCALE_COOKIE, choose_locale

# The language switch names each language in itself.
LANGUAGE_NAMES = {"en": "English", "fr-CA": "Français"}


@dataclass(frozen=True, slots=True)
class Text:
    """A message to show, translated when the page renders: its English text (the msgid, marked
    with ``gettext_noop`` where it is written) and its named placeholders."""

    msgid: str
    params: dict[str, Any] = field(default_factory=dict)


@functools.cache
def _environment(tag: str, timezone: str) -> Environment:
    """The page templates in one locale, printing times in ``timezone`` (DISPLAY_TIMEZONE)."""
    environment = Environment(
        loader=PackageLoader("taxease_auth", "web/templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n", "jinja2.ext.do"],
    )
    environment.install_gettext_translations(translations(tag), newstyle=True)  # type: ignore[attr-defined]
    environment.filters["when"] = functools.partial(
        _when, locale=babel_identifier(tag), timezone=ZoneInfo(timezone)
    )
    return environment


def _when(moment: datetime, *, locale: str, timezone: ZoneInfo) -> str:
    """A stored time (UTC; SQLite gives it back naive) as the locale writes it, in
    ``timezone``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_datetime(moment, "medium", tzinfo=timezone, locale=locale)


class Pages:
    """Renders the page templates for one app."""

    def __init__(self, settings: Settings, browser: Browser) -> None:
        self._settings = settings
        self._browser = browser

    def locale(self, request: Request) -> str:
        return choose_locale(
            request.cookies.get(LOCALE_COOKIE),
            request.headers.get("accept-language"),
            self._settings.default_locale,
        )

    def render(
        self, request: Request, template: str, *, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        """The page, in the request's language, with a CSRF token for its forms."""
        tag = self.locale(request)
        csrf_token = self._browser.ensure_csrf(request)
        context.setdefault("errors", {})
        context.setdefault("values", {})
        context.setdefault("notice", None)
        body = (
            _environment(tag, self._settings.display_timezone)
            .get_template(template)
            .render(
                lang=tag,
                app_name=self._settings.app_name,
                password_min_length=self._settings.password_min_length,
                csrf_token=csrf_token,
                path=request.url.path,
                other_locales=[
                    (other, LANGUAGE_NAMES[other]) for other in SUPPORTED_LOCALES if other != tag
                ],
                first_error=next(iter(context["errors"]), None),
                **context,
            )
        )
        response = HTMLResponse(body, status_code=status_code)
        self._browser.send_csrf_cookie(request, response)
        return response
