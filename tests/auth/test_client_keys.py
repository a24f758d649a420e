"""auth/client_keys.py: per-client budgets count an IPv6 client by its prefix."""

from __future__ import annotations

import pytest

from taxease_auth.auth.client_keys import client_budget_key

pytestmark = pytest.mark.database_independent


@pytest.mark.parametrize(
    ("address", "prefix", "key"),
    [
        ("203.0.113.7", 64, "203.0.113.7"),
        ("unknown", 64, "unknown"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", 64, "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:0:0:0:FFFF", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 128, "2001:db8:1:2:aaaa:bbbb:cccc:dddd/128"),
        ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 32, "2001:db8::/32"),
        ("fe80::1%eth0", 64, "fe80::/64"),
        ("::ffff:203.0.113.7", 64, "203.0.113.7"),
        ("::ffff:cb00:7107", 64, "203.0.113.7"),
        ("not:an:address", 64, "not:an:address"),
    ],
)
def test_the_budget_key_of_an_address(address: str, prefix: int, key: str) -> None:
    assert client_budget_key(address, prefix) == key


def test_two_hosts_of_one_64_share_a_key_and_the_next_64_does_not() -> None:
    one = client_budget_key("2001:db8:0:1::a", 64)

    assert client_budget_key("2001:db8:0:1:ffff:ffff:ffff:ffff", 64) == one
    assert client_budget_key("2001:db8:0:2::a", 64) != one
