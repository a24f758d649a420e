"""auth/otp.py: uniform ASCII-digit codes, strict format check, keyed hash bound to email and
purpose, key rotation."""

from __future__ import annotations

from collections import Counter

import pytest

from taxease_auth.auth.otp import code_matches, generate_otp, hash_code, is_well_formed

pytestmark = pytest.mark.database_independent

SAMPLES = 100_000
KEY = "testing-secret-key-testing-secret-key-0001"
OLD_KEY = "an-older-secret-key-an-older-secret-key-00"

# Chi-square with 9 degrees of freedom exceeds 60 with probability about 4e-9: a fair generator
# never trips this bound, a biased one (e.g. never a leading 0, or `% 10` of a byte) does.
CHI_SQUARE_BOUND = 60.0


def _chi_square(counts: Counter[str], total: int) -> float:
    expected = total / 10
    return sum((counts[digit] - expected) ** 2 / expected for digit in "0123456789")


@pytest.fixture(scope="module")
def samples() -> list[str]:
    return [generate_otp(6) for _ in range(SAMPLES)]


def test_generated_codes_are_six_ascii_digits(samples: list[str]) -> None:
    assert all(len(code) == 6 and code.isascii() and code.isdigit() for code in samples)


def test_generated_codes_include_leading_zeros(samples: list[str]) -> None:
    leading_zero = sum(code.startswith("0") for code in samples)

    assert SAMPLES * 0.08 < leading_zero < SAMPLES * 0.12


def test_first_digit_is_uniform(samples: list[str]) -> None:
    counts = Counter(code[0] for code in samples)

    assert _chi_square(counts, SAMPLES) < CHI_SQUARE_BOUND


def test_all_digits_are_uniform(samples: list[str]) -> None:
    counts = Counter(digit for code in samples for digit in code)

    assert _chi_square(counts, SAMPLES * 6) < CHI_SQUARE_BOUND


def test_generated_codes_are_not_repeated_much(samples: list[str]) -> None:
    # 10^5 draws from 10^6 values: about 95,000 distinct ones are expected.
    assert len(set(samples)) > 93_000


@pytest.mark.parametrize("length", [6, 8, 10])
def test_generated_code_has_the_requested_length(length: int) -> None:
    code = generate_otp(length)

    assert len(code) == length
    assert is_well_formed(code, length)


@pytest.mark.parametrize("code", ["123456", "000000", "012345", "999999"])
def test_six_ascii_digits_are_well_formed(code: str) -> None:
    assert is_well_formed(code, 6)


@pytest.mark.parametrize(
    "code",
    [
        "12345",
        "1234567",
        "１２３４５６",  # full-width
        "١٢٣٤٥٦",  # Arabic-Indic
        "۱۲۳۴۵۶",  # Extended Arabic-Indic
        "१२३४५६",  # Devanagari
        " 123456",
        "123456 ",
        "123456\n",
        "+12345",
        "-12345",
        "1e5000",
        "12 456",
        "12345a",
        "",
    ],
    ids=repr,
)
def test_anything_else_is_not_well_formed(code: str) -> None:
    assert not is_well_formed(code, 6)


def test_hash_is_hex_sha256_and_does_not_hold_the_code() -> None:
    digest = hash_code(KEY, email="a@example.com", purpose="login", code="123456")

    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert "123456" not in digest
    assert digest == hash_code(KEY, email="a@example.com", purpose="login", code="123456")


def test_hash_binds_the_email() -> None:
    base = hash_code(KEY, email="a@example.com", purpose="login", code="123456")

    assert base != hash_code(KEY, email="b@example.com", purpose="login", code="123456")


def test_hash_binds_the_purpose() -> None:
    hashes = {
        hash_code(KEY, email="a@example.com", purpose=purpose, code="123456")
        for purpose in ("email_verification", "login", "password_reset")
    }

    assert len(hashes) == 3


def test_hash_binds_the_key_and_the_code() -> None:
    base = hash_code(KEY, email="a@example.com", purpose="login", code="123456")

    assert base != hash_code(OLD_KEY, email="a@example.com", purpose="login", code="123456")
    assert base != hash_code(KEY, email="a@example.com", purpose="login", code="123457")


def test_hash_fields_cannot_be_shifted_into_each_other() -> None:
    # The separator keeps "purpose|email" pairs apart: moving text from one field into the
    # next must not give the same message.
    assert hash_code(KEY, email="xa@example.com", purpose="login", code="123456") != hash_code(
        KEY, email="a@example.com", purpose="loginx", code="123456"
    )


def test_code_matches_its_own_hash() -> None:
    stored = hash_code(KEY, email="a@example.com", purpose="login", code="123456")

    assert code_matches(
        [KEY], email="a@example.com", purpose="login", code="123456", stored_hash=stored
    )
    assert not code_matches(
        [KEY], email="a@example.com", purpose="login", code="123457", stored_hash=stored
    )
    assert not code_matches(
        [KEY], email="b@example.com", purpose="login", code="123456", stored_hash=stored
    )
    assert not code_matches(
        [KEY], email="a@example.com", purpose="password_reset", code="123456", stored_hash=stored
    )


def test_code_hashed_under_a_previous_key_still_matches() -> None:
    stored = hash_code(OLD_KEY, email="a@example.com", purpose="login", code="123456")

    assert code_matches(
        [KEY, OLD_KEY], email="a@example.com", purpose="login", code="123456", stored_hash=stored
    )
    assert not code_matches(
        [KEY], email="a@example.com", purpose="login", code="123456", stored_hash=stored
    )


def test_hash_is_the_documented_construction() -> None:
    """HMAC-SHA256 under a key derived from SECRET_KEY: stored hashes stay valid across
    releases only while the construction stays exactly this."""
    import hashlib
    import hmac

    key = hmac.new(KEY.encode(), b"taxease-auth/otp-hash/v1", hashlib.sha256).digest()
    expected = hmac.new(key, b"login\x00a@example.com\x00123456", hashlib.sha256).hexdigest()

    assert hash_code(KEY, email="a@example.com", purpose="login", code="123456") == expected
