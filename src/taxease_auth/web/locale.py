"""Which language a page is written in (DESIGN.md §12, "Locales"): the page's language switch
(cookie ``taxease_locale``) > ``Accept-Language`` > DEFAULT_LOCALE."""

from __future__ import annotations

from taxease_auth.locales import SUPPORTED_LOCALES, supported_locale

LOCALE_COOKIE = "taxease_locale"
# Accept-Language is read up to this many entries: a header of thousands costs nothing.
_MAX_LANGUAGE_RANGES = 20


def _accepted(header: str) -> list[str]:
    """Accept-Language's ranges, best first (q=0 left out); ties keep the header's order."""
    ranges: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:_MAX_LANGUAGE_RANGES]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag.strip() and quality > 0:
            ranges.append((-quality, position, tag.strip()))
    return [tag for _, _, tag in sorted(ranges)]


def choose_locale(cookie: str | None, accept_language: str | None, default: str) -> str:
    """The supported locale for a request. An unknown cookie value is ignored."""
    if cookie in SUPPORTED_LOCALES:
        return cookie
    for tag in _accepted(accept_language or ""):
        if tag == "*":
            break
        chosen = supported_locale(tag, default="")
        if chosen:
            return chosen
    return default
