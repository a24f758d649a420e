"""auth/emails.py: one canonical form per address; unusable addresses refused."""

from __future__ import annotations

import pytest

from taxease_auth.auth.emails import InvalidEmail, canonical_email, mask_email


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
