"""auth/emails.py: one canonical form per address; unusable addresses refused."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given
from hypothesis import strategies as st

from taxease_auth.auth.emails import (
    PLAIN_ADDRESS,
    InvalidEmail,
    canonical_email,
    email_fingerprint,
    mask_email,
)
from taxease_auth.store.models import EMAIL_MAX_LENGTH

pytestmark = pytest.mark.database_independent


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("user@example.com", "user@example.com"),
        ("User@Example.COM", "user@example.com"),
        ("  user@example.com  ", "user@example.com"),
        ("user+tag@example.com", "user+tag@example.com"),
        ("User+Tag@Example.com", "user+tag@example.com"),
        ("user@bücher.de", "user@xn--bcher-kva.de"),
        ("user@BÜCHER.de", "user@xn--bcher-kva.de"),
        ("user@bu\u0308cher.de", "user@xn--bcher-kva.de"),  # decomposed ü (NFD)
        ("user@xn--bcher-kva.de", "user@xn--bcher-kva.de"),
        ("first.last@sub.example.co.uk", "first.last@sub.example.co.uk"),
    ],
    ids=repr,
)
def test_variants_of_one_address_have_one_canonical_form(given: str, canonical: str) -> None:
    assert canonical_email(given) == canonical


def test_canonical_form_is_stable() -> None:
    once = canonical_email("  User+Tag@BÜCHER.de ")

    assert canonical_email(once) == once


@pytest.mark.parametrize(
    "given",
    [
        "user@example.com\r\nBcc: evil@example.net",
        "user@example.com\nBcc: evil@example.net",
        "user\r@example.com",
        "user\x00@example.com",
        "user@example.com\x7f",
    ],
    ids=repr,
)
def test_control_characters_are_refused(given: str) -> None:
    with pytest.raises(InvalidEmail, match="control characters"):
        canonical_email(given)


@pytest.mark.parametrize(
    "given",
    [
        "üser@example.com",
        "ｕｓｅｒ@example.com",  # full-width local part
        "us\u0435r@example.com",  # Cyrillic ie in the local part
    ],
    ids=repr,
)
def test_non_ascii_local_part_is_refused(given: str) -> None:
    with pytest.raises(InvalidEmail):
        canonical_email(given)


@pytest.mark.parametrize(
    "given",
    [
        "a@b@example.com",
        "user@@example.com",
        "user",
        "@example.com",
        "user@",
        "",
        '"quoted"@example.com',
        "user@[127.0.0.1]",
        "user@example",
        "user@example.com.",
        "user..dots@example.com",
    ],
    ids=repr,
)
def test_malformed_addresses_are_refused(given: str) -> None:
    with pytest.raises(InvalidEmail):
        canonical_email(given)


def test_local_part_of_64_characters_is_accepted() -> None:
    local = "a" * 64

    assert canonical_email(f"{local}@example.com") == f"{local}@example.com"


def test_local_part_longer_than_64_characters_is_refused() -> None:
    # RFC 5321 §4.5.3.1.1: 64 octets at most; SES refuses such a recipient.
    with pytest.raises(InvalidEmail):
        canonical_email("a" * 65 + "@example.com")


def test_address_longer_than_254_characters_is_refused() -> None:
    domain = ".".join(["d" * 60] * 4) + ".com"  # 247 characters: a valid domain
    assert len(canonical_email(f"a@{domain}")) == 249

    with pytest.raises(InvalidEmail):
        canonical_email(f"{'u' * 8}@{domain}")  # 256 characters


def test_mask_keeps_the_domain_and_hides_the_local_part() -> None:
    assert mask_email("alice@example.com") == "a***@example.com"
    assert mask_email("not-an-address") == "***"


# --- the plain-address fast path --------------------------------------------------------------


def _validator_answer(address: str) -> str | None:
    """What email_validator alone makes of ``address`` (the slow path), None when refused."""
    try:
        checked = validate_email(
            address,
            check_deliverability=False,
            allow_smtputf8=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            strict=True,
        )
    except EmailNotValidError:
        return None
    assert checked.ascii_email is not None
    canonical = checked.ascii_email.lower()
    return canonical if len(canonical) <= EMAIL_MAX_LENGTH else None


def _canonical_or_none(address: str) -> str | None:
    try:
        return canonical_email(address)
    except InvalidEmail:
        return None


# Case, every atext special, hyphens in labels, dots in the local part: all on the fast path.
_PLAIN_CHARS = st.sampled_from("aZ09!#$%&'*+/=?^_`{|}~-.")


@given(address=st.from_regex(PLAIN_ADDRESS, fullmatch=True))
def test_fast_path_agrees_with_email_validator_on_plain_addresses(address: str) -> None:
    assert _canonical_or_none(address) == _validator_answer(address)


@given(
    local=st.text(_PLAIN_CHARS, min_size=1, max_size=70),
    labels=st.lists(st.text(st.sampled_from("aZ09-"), min_size=1, max_size=5), min_size=1),
    tld=st.sampled_from(["com", "co", "c0", "test", "local", "x", "localhost", "onion", "1"]),
)
def test_fast_path_agrees_with_email_validator_near_its_edges(
    local: str, labels: list[str], tld: str
) -> None:
    address = f"{local}@{'.'.join([*labels, tld])}"
    assert _canonical_or_none(address) == _validator_answer(address)


@pytest.mark.parametrize(
    "address",
    ["ab--cd@ab--cd.com", "x@a.test", "x@sub.localhost", "x@a-.com", "x@-a.com", "a..b@x.com",
     ".a@x.com", "a.@x.com", "x@xn--abc.com", "x@b.c1", f"{'a' * 65}@x.com"],
)  # fmt: skip
def test_addresses_the_fast_path_leaves_to_email_validator_are_refused(address: str) -> None:
    with pytest.raises(InvalidEmail):
        canonical_email(address)


def test_fingerprint_is_the_documented_construction() -> None:
    """Audit rows and rate-limit keys stay findable only while the construction stays this."""
    import hashlib
    import hmac

    secret = "testing-secret-key-testing-secret-key-0001"
    key = hmac.new(secret.encode(), b"taxease-auth/email-fingerprint/v1", hashlib.sha256).digest()
    expected = hmac.new(key, b"a@example.com", hashlib.sha256).hexdigest()[:32]

    assert email_fingerprint(secret, "a@example.com") == expected


def test_every_c0_control_character_and_del_is_refused_anywhere() -> None:
    for code in (*range(32), 127):
        for address in (f"{chr(code)}user@example.com", f"us{chr(code)}er@example.com"):
            with pytest.raises(InvalidEmail, match="control characters"):
                canonical_email(address)
    assert canonical_email("user@example.com") == "user@example.com"
