"""Reading a submitted form: the body (urlencoded, bounded), the code as people paste it, and
field errors from the JSON API's own request models, so a page accepts exactly what the API
accepts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl

from fastapi import Request
from pydantic import BaseModel, ValidationError

# The largest form (sign-up) is well under this; BodySizeLimit caps the request anyway.
MAX_FORM_FIELDS = 20
# What people put around a pasted code: spaces (also no-break and thin), hyphens and dashes.
_CODE_SEPARATORS = re.compile(r"[\s\u00a0\u2009\u202f\-\u2010-\u2015]")


async def read_form(request: Request) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body (the last value of a
    repeated field). Another content type gives an empty form, which fails the CSRF check."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        pairs = parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:  # more fields than any page has
        return {}
    return dict(pairs)


def clean_code(typed: str) -> str:
    """A code as typed or pasted ("123 456", "123-456") without its separators. Anything else
    is kept, so the API's rule (ASCII digits only, never Unicode digits) still refuses it."""
    return _CODE_SEPARATORS.sub("", typed)


def field_errors(
    model: type[BaseModel], data: Mapping[str, object]
) -> tuple[BaseModel | None, set[str]]:
    """``model`` validated from ``data``, or None and the names of the fields that failed."""
    try:
        return model.model_validate(dict(data)), set()
    except ValidationError as error:
        return None, {str(item["loc"][0]) for item in error.errors() if item["loc"]}
