"""auth/passwords.py, check_password_policy: NIST 800-63B's rules beyond length.

Refused: passwords on zxcvbn's common-password list, passwords holding the user's email or
name, repetitions and simple sequences. Allowed: every character, no composition rules.
Length itself is covered in test_passwords.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from taxease_auth.auth.passwords import (
    PERSONAL_INFORMATION,
    REPETITIVE_OR_SEQUENTIAL,
    TOO_COMMON,
    check_password_policy,
    common_password_words,
    common_passwords,
)
from taxease_auth.config import Settings
from taxease_auth.errors import WeakPassword
from tests.conftest import FAST_HASHING, STRONG_PASSWORD

pytestmark = pytest.mark.database_independent


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"_env_file": None, "development_mode": True, **FAST_HASHING}
    values.update(overrides)
    return Settings(**values)


def _reason(password: str, **context: Any) -> str | None:
    """The reason the policy refuses ``password``, or None when it is accepted."""
    try:
        check_password_policy(password, _settings(), **context)
    except WeakPassword as refused:
        return refused.reason
    return None


# --- the common-password list --------------------------------------------------------------


def test_list_is_zxcvbns_thirty_thousand_common_passwords() -> None:
    # zxcvbn (a dev dependency) is the source auth/common_passwords.txt copies.
    from zxcvbn.frequency_lists import FREQUENCY_LISTS  # type: ignore[import-untyped]

    listed = common_passwords()

    assert len(listed) == 30_000
    assert all(word.casefold() in listed for word in FREQUENCY_LISTS["passwords"])
    assert "correct horse battery staple" not in listed
    assert common_passwords() is listed  # loaded once


def test_the_digests_a_server_loads_are_those_of_the_words() -> None:
    # common_passwords.bin is written from common_passwords.txt (python -m
    # taxease_auth.auth.passwords): a list edited without rewriting it fails here.
    assert common_passwords().to_bytes() == common_password_words().to_bytes()
    assert len(common_password_words()) == len(common_passwords()) == 30_000


@pytest.mark.parametrize("password", ["password1234", "1qaz2wsx3edc", "qwerty123456"])
def test_password_on_the_common_list_is_refused(password: str) -> None:
    assert password in common_passwords()

    assert _reason(password) == TOO_COMMON


def test_common_list_check_ignores_case() -> None:
    assert "password1234" in common_passwords()

    assert _reason("PassWord1234") == TOO_COMMON


def test_common_list_check_applies_to_the_nfkc_form() -> None:
    # Full-width letters and digits are the same password once normalised.
    assert _reason("ｐａｓｓｗｏｒｄ１２３４") == TOO_COMMON


def test_short_common_passwords_are_caught_when_the_minimum_is_lowered() -> None:
    settings = _settings(password_min_length=8)
    assert "baseball" in common_passwords()

    with pytest.raises(WeakPassword, match=TOO_COMMON):
        check_password_policy("baseball", settings)


def test_a_common_password_inside_a_longer_passphrase_is_fine() -> None:
    # NIST asks for an exact-match blocklist; a phrase that merely contains "dragon" is not one.
    assert "dragon" in common_passwords()

    assert _reason("the dragon sleeps under the mountain") is None


# --- email and names -----------------------------------------------------------------------


def test_password_equal_to_the_email_is_refused() -> None:
    assert _reason("anna.smith@example.com", email="anna.smith@example.com") == PERSONAL_INFORMATION


def test_password_containing_the_email_is_refused_whatever_the_case() -> None:
    assert (
        _reason("My ANNA.SMITH@Example.com 2024!", email="anna.smith@example.com")
        == PERSONAL_INFORMATION
    )


def test_password_containing_the_local_part_is_refused() -> None:
    assert _reason("winter-annasmith-2024", email="annasmith@example.com") == PERSONAL_INFORMATION


def test_local_part_without_its_tag_is_refused_too() -> None:
    assert (
        _reason("winter-annasmith-2024", email="annasmith+taxes@example.com")
        == PERSONAL_INFORMATION
    )


def test_local_part_shorter_than_four_characters_may_appear() -> None:
    # "bob" is too short to mean anything inside a passphrase; the whole address still counts.
    assert _reason("bobsled down the frozen hill", email="bob@example.com") is None
    assert _reason("mail bob@example.com tomorrow", email="bob@example.com") == PERSONAL_INFORMATION


def test_password_containing_the_first_or_last_name_is_refused() -> None:
    names = ("Margaret", "Okonkwo")

    assert _reason("margaret loves the sea", names=names) == PERSONAL_INFORMATION
    assert _reason("the OKONKWO family house", names=names) == PERSONAL_INFORMATION
    assert _reason("blue whales sing at dawn", names=names) is None


def test_names_shorter_than_three_characters_may_appear() -> None:
    assert _reason("glowing embers at night", names=("Al", "Wu")) is None


def test_names_compare_after_nfkc_and_case_folding() -> None:
    assert _reason("straße und meer am abend", names=("STRASSE",)) == PERSONAL_INFORMATION


def test_without_email_or_names_only_the_other_rules_apply() -> None:
    # The historical signature (password, settings, field=...) keeps working.
    check_password_policy(STRONG_PASSWORD, _settings())
    check_password_policy(STRONG_PASSWORD, _settings(), field="new_password")


# --- repetitive and sequential -------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "aaaaaaaaaaaa",  # one character repeated
        "            ",  # spaces are characters too
        "ababababababab",  # a short block repeated
        "abcdabcdabcd",
        "dragondragon",  # a common password repeated
        "123456789012",  # digits in order, wrapping past 9
        "987654321098",
        "abcdefghijkl",  # the alphabet
        "ZYXWVUTSRQPO",  # backwards, any case
        "qwertyuiopas",  # the keyboard's rows
        "mnbvcxzlkjhgf",
        "абвгдежзийкл",  # consecutive letters in any script
    ],
)
def test_repetitive_or_sequential_password_is_refused(password: str) -> None:
    assert _reason(password) == REPETITIVE_OR_SEQUENTIAL


@pytest.mark.parametrize(
    "password",
    [
        STRONG_PASSWORD,
        "Tr0ub4dor&3 but much longer",
        "correct horse correct horse ",  # a long phrase said twice is not a pattern
        "1357 9bdf hjln",
        "xkcd-936-was-right",
    ],
)
def test_passwords_without_a_pattern_are_accepted(password: str) -> None:
    assert _reason(password) is None


# --- what NIST says to allow ---------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "all lowercase words, no digits at all",
        "ЗИМНИЙ ВЕЧЕР У КАМИНА",
        "雪の降る夜に静かな図書館で本を読む",
        "spaces   and\ttabs   inside",
        "🐢🦊🌵 emoji are characters 🎉",
        "مرحبا بالعالم الجميل هنا",
    ],
)
def test_any_characters_without_composition_rules_are_accepted(password: str) -> None:
    assert _reason(password) is None


def test_every_refusal_names_the_field_and_never_repeats_the_password() -> None:
    cases = [
        ("password1234", {}),
        ("anna.smith@example.com!", {"email": "anna.smith@example.com"}),
        ("aaaaaaaaaaaa", {}),
    ]
    for password, context in cases:
        with pytest.raises(WeakPassword) as refused:
            check_password_policy(password, _settings(), field="new_password", **context)
        assert refused.value.field == "new_password"
        assert password not in str(refused.value)
        assert password not in refused.value.reason


def test_length_is_checked_before_the_other_rules() -> None:
    # A short common password hears about length, the rule it can act on first.
    assert _reason("password") == "Password must be at least 12 characters"
