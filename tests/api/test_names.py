"""Names at the API: only letters, marks, spaces, apostrophes, hyphens and periods reach a mail.

The review (issue 17 item 5) registered a victim's address with a first name holding line
separators, so the victim got a TaxEase-signed mail saying what the attacker wrote.
"""

from __future__ import annotations

import unicodedata

import pytest

from tests.api.conftest import otp_rows, register
from tests.auth.test_names import ACCEPTED
from tests.conftest import RunningApp

# One witness per class the review named; tests/auth/test_names.py goes through them all.
REFUSED = {
    "line separator": "\u2028",
    "paragraph separator": "\u2029",
    "bidi override": "\u202e",
    "bidi isolate": "\u2066",
    "zero width space": "\u200b",
    "zero width joiner": "\u200d",
    "byte order mark": "\ufeff",
    "word joiner": "\u2060",
    "soft hyphen (Cf)": "\u00ad",
    "control": "\x1b",
    "C1 control": "\u0085",
    "digit": "7",
    "colon": ":",
    "plus": "+",
    "at sign": "@",
    "less-than": "<",
    "no-break space": "\u00a0",
}
FIELDS = ["first_name", "last_name"]
ATTACK = "there\u2028\u2028Your TaxEase account is locked. Call +1-555-0100"


def _refused_fields(body: dict[str, object]) -> list[tuple[object, ...]]:
    detail = body["detail"]
    assert isinstance(detail, list)
    return [tuple(item["loc"]) for item in detail]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("char", REFUSED.values(), ids=REFUSED.keys())
async def test_a_name_with_a_refused_character_is_422_naming_the_field(
    dev_app: RunningApp, field: str, char: str
) -> None:
    email = "names@example.com"
    response = await register(dev_app.client, email, **{field: f"Ad{char}a"})

    assert response.status_code == 422
    assert _refused_fields(response.json()) == [("body", field)]
    [error] = response.json()["detail"]
    assert error["type"] == "value_error"
    assert "letters, spaces, apostrophes, hyphens and periods" in error["msg"]
    assert await dev_app.outbox() == []


@pytest.mark.parametrize("field", FIELDS)
async def test_the_reviewers_greeting_is_refused_and_nothing_is_mailed(
    dev_app: RunningApp, field: str
) -> None:
    response = await register(dev_app.client, "victim@example.com", **{field: ATTACK})

    assert response.status_code == 422
    assert _refused_fields(response.json()) == [("body", field)]
    assert "Call" not in response.text  # the refusal does not echo the name either
    assert await dev_app.outbox() == []


@pytest.mark.parametrize("name", [*ACCEPTED, unicodedata.normalize("NFD", "José")])
async def test_real_names_register_and_are_kept_composed(dev_app: RunningApp, name: str) -> None:
    email = "someone@example.com"

    response = await register(dev_app.client, email, first_name=name, last_name=f" {name} ")

    assert response.status_code == 201, response.text
    [row] = await otp_rows(dev_app, email)
    composed = unicodedata.normalize("NFC", name)
    assert (row.pending_first_name, row.pending_last_name) == (composed, composed)


@pytest.mark.parametrize("field", FIELDS)
async def test_an_empty_name_is_still_refused(dev_app: RunningApp, field: str) -> None:
    response = await register(dev_app.client, "empty@example.com", **{field: "  "})

    assert response.status_code == 422
    assert _refused_fields(response.json()) == [("body", field)]
