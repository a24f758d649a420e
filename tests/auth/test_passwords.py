"""auth/passwords.py: the length policy (in code points, after NFKC) and argon2id hashing.

The other policy rules (common list, personal information, patterns): test_password_policy.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from taxease_auth.auth.passwords import PasswordHasher, check_password_policy, normalize_password
from taxease_auth.config import Settings
from taxease_auth.errors import WeakPassword
from tests.conftest import FAST_HASHING, STRONG_PASSWORD

pytestmark = pytest.mark.database_independent


def _text(length: int) -> str:
    """``length`` characters of a passphrase: no pattern the policy refuses besides length."""
    return ((STRONG_PASSWORD + " and more words ") * (length // 40 + 1))[:length]


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"_env_file": None, "development_mode": True, **FAST_HASHING}
    values.update(overrides)
    return Settings(**values)


def test_default_minimum_is_twelve_characters() -> None:
    settings = _settings()

    check_password_policy(_text(12), settings)
    with pytest.raises(WeakPassword, match="at least 12") as refused:
        check_password_policy(_text(11), settings)
    assert refused.value.field == "password"


def test_default_maximum_is_128_characters() -> None:
    settings = _settings()

    check_password_policy(_text(128), settings)
    with pytest.raises(WeakPassword, match="at most 128"):
        check_password_policy(_text(129), settings)


def test_minimum_follows_password_min_length() -> None:
    settings = _settings(password_min_length=16)

    with pytest.raises(WeakPassword):
        check_password_policy(_text(15), settings)
    check_password_policy(_text(16), settings)


def test_minimum_can_never_be_set_below_eight() -> None:
    with pytest.raises(ValueError, match="password_min_length"):
        _settings(password_min_length=7)


def test_refusal_names_the_field_it_was_given() -> None:
    with pytest.raises(WeakPassword) as refused:
        check_password_policy("short", _settings(), field="new_password")

    assert refused.value.field == "new_password"


def test_length_counts_code_points_not_bytes() -> None:
    # Twelve characters of three UTF-8 bytes each: long enough.
    check_password_policy("密码长度按字符计算而非字", _settings())
    with pytest.raises(WeakPassword):
        check_password_policy("密码长度按字符计算而非", _settings())


def test_refusal_reason_never_holds_the_password() -> None:
    with pytest.raises(WeakPassword) as refused:
        check_password_policy("hunter2hunt", _settings())

    assert "hunter2" not in str(refused.value)


def test_normalisation_is_nfkc() -> None:
    assert normalize_password("ﬁ ｆｕｌｌ") == "fi full"


async def test_hash_is_argon2id_and_verifies() -> None:
    hasher = PasswordHasher(_settings())

    stored = await hasher.hash(STRONG_PASSWORD)

    assert stored.startswith("$argon2id$")
    assert STRONG_PASSWORD not in stored
    assert (await hasher.verify(STRONG_PASSWORD, stored))[0] is True
    assert (await hasher.verify("correct horse battery stapler", stored))[0] is False


async def test_same_password_hashes_differently_each_time() -> None:
    hasher = PasswordHasher(_settings())

    assert await hasher.hash(STRONG_PASSWORD) != await hasher.hash(STRONG_PASSWORD)


async def test_hash_uses_the_configured_cost() -> None:
    hasher = PasswordHasher(
        _settings(
            password_hash_memory_kib=9216, password_hash_time_cost=2, password_hash_parallelism=2
        )
    )

    stored = await hasher.hash(STRONG_PASSWORD)

    assert "$m=9216,t=2,p=2$" in stored


async def test_equivalent_unicode_forms_verify_against_one_hash() -> None:
    hasher = PasswordHasher(_settings())

    stored = await hasher.hash("passphrase with ﬁ ligature")

    assert (await hasher.verify("passphrase with fi ligature", stored))[0] is True


async def test_hash_made_with_weaker_parameters_is_upgraded_on_verify() -> None:
    weak = PasswordHasher(_settings())
    strong = PasswordHasher(_settings(password_hash_time_cost=2))
    stored = await weak.hash(STRONG_PASSWORD)

    matches, upgraded = await strong.verify(STRONG_PASSWORD, stored)

    assert matches is True
    assert upgraded is not None
    assert "t=2" in upgraded
    assert (await strong.verify(STRONG_PASSWORD, upgraded)) == (True, None)
