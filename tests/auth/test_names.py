"""clean_name: letters, marks, spaces, apostrophes, hyphens and periods; nothing else."""

from __future__ import annotations

import unicodedata

import pytest

from taxease_auth.auth.names import MAX_MARKS_IN_A_ROW, clean_name
from taxease_auth.store.models import NAME_MAX_LENGTH

pytestmark = pytest.mark.database_independent

# Every class the review named (issue 17 item 5), with a witness of each.
REFUSED = {
    "line separator U+2028": "\u2028",
    "paragraph separator U+2029": "\u2029",
    "bidi embedding U+202A": "\u202a",
    "bidi embedding U+202B": "\u202b",
    "bidi pop U+202C": "\u202c",
    "bidi override U+202D": "\u202d",
    "bidi override U+202E": "\u202e",
    "bidi isolate U+2066": "\u2066",
    "bidi isolate U+2067": "\u2067",
    "bidi isolate U+2068": "\u2068",
    "bidi isolate pop U+2069": "\u2069",
    "zero width space U+200B": "\u200b",
    "zero width non-joiner U+200C": "\u200c",
    "zero width joiner U+200D": "\u200d",
    "left-to-right mark U+200E": "\u200e",
    "right-to-left mark U+200F": "\u200f",
    "byte order mark U+FEFF": "\ufeff",
    "word joiner U+2060": "\u2060",
    "soft hyphen U+00AD (Cf)": "\u00ad",
    "arabic letter mark U+061C (Cf)": "\u061c",
    "interlinear annotation U+FFF9 (Cf)": "\ufff9",
    "NUL": "\x00",
    "tab": "\t",
    "line feed": "\n",
    "carriage return": "\r",
    "DEL": "\x7f",
    "next line U+0085 (Cc)": "\u0085",
    "CSI U+009B (Cc)": "\u009b",
    "digit": "1",
    "arabic-indic digit": "\u0663",
    "full-width digit": "\uff11",
    "roman numeral U+2160 (Nl)": "\u2160",
    "colon": ":",
    "plus": "+",
    "at sign": "@",
    "less-than": "<",
    "greater-than": ">",
    "ampersand": "&",
    "double quote": '"',
    "slash": "/",
    "comma": ",",
    "exclamation mark": "!",
    "parenthesis": "(",
    "underscore": "_",
    "euro sign": "\u20ac",
    "emoji": "\U0001f600",
    "no-break space U+00A0": "\u00a0",
    "thin space U+2009": "\u2009",
    "ideographic space U+3000": "\u3000",
    "en dash U+2013": "\u2013",
    "private use U+E000": "\ue000",
    "unassigned U+0378": "\u0378",
}

ACCEPTED = [
    "Zoë",
    "O'Brien",
    "O\u2019Brien",
    "Jean-Luc",
    "Mary Ann",
    "St. John",
    "Nguyễn",
    "José",
    "محمد",  # Arabic
    "王小明",  # CJK
    "Ольга",
    "Ὀδυσσεύς",
    "\u02bbOlelo",  # Hawaiian okina U+02BB: a modifier letter (Lm)
    "हिन्दी",  # Devanagari: letters and combining signs
    ".",  # people with one name often give "." as the other
]


# Inside a name, and at either end, except the ASCII whitespace that trimming removes there.
PLACED = [
    pytest.param(name, id=f"{label}, {where}")
    for label, char in REFUSED.items()
    for where, name in (("inside", f"Ad{char}a"), ("start", f"{char}Ada"), ("end", f"Ada{char}"))
    if where == "inside" or char not in "\t\n\r"
]


@pytest.mark.parametrize("name", PLACED)
def test_every_listed_character_class_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="letters, spaces, apostrophes, hyphens and periods"):
        clean_name(name)


@pytest.mark.parametrize("name", ACCEPTED)
def test_real_names_pass_unchanged(name: str) -> None:
    assert clean_name(name) == name


def test_a_decomposed_name_is_stored_composed() -> None:
    decomposed = unicodedata.normalize("NFD", "José Nguyễn")
    assert decomposed != "José Nguyễn"

    assert clean_name(decomposed) == "José Nguyễn"


def test_the_reviewers_greeting_attack_is_refused() -> None:
    attack = "there\u2028\u2028Your TaxEase account is locked. Call +1-555-0100"

    with pytest.raises(ValueError, match="U\\+2028"):
        clean_name(attack)


def test_ascii_whitespace_around_a_name_is_trimmed() -> None:
    assert clean_name("  Ada \t\n") == "Ada"


@pytest.mark.parametrize("blank", ["", " ", " \t\r\n "])
def test_a_name_empty_once_trimmed_is_refused(blank: str) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        clean_name(blank)


def test_length_cap_counts_composed_characters() -> None:
    longest = "é" * NAME_MAX_LENGTH

    assert clean_name(unicodedata.normalize("NFD", longest)) == longest
    with pytest.raises(ValueError, match=f"at most {NAME_MAX_LENGTH}"):
        clean_name(longest + "e")


@pytest.mark.parametrize("name", ["\u0301Ada", "Ada \u0301", "O'\u0301Brien"])
def test_a_mark_that_follows_no_letter_is_refused(name: str) -> None:
    # It would combine with whatever the mail puts before the name, or float alone.
    with pytest.raises(ValueError, match="combining mark"):
        clean_name(name)


def test_marks_stacked_past_the_cap_are_refused() -> None:
    stacked = "Z" + "\u0336" * MAX_MARKS_IN_A_ROW
    assert clean_name(stacked) == stacked

    with pytest.raises(ValueError, match="combining mark"):
        clean_name(stacked + "\u0336")


def test_the_error_never_quotes_the_name() -> None:
    with pytest.raises(ValueError, match="U\\+003C") as refused:
        clean_name("secret-ish <value>")

    assert "secret" not in str(refused.value)
