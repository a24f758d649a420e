"""What a per-client budget counts on: the client address, or an IPv6 client's prefix.

An IPv6 host is routinely handed a whole /64 (2^64 addresses), so a budget keyed on the full
address would give such a client a fresh budget per request. Per-client budgets therefore key
an IPv6 address on its network prefix (RATE_LIMIT_IPV6_PREFIX bits, /64 by default). An
IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, as a dual-stack socket reports an IPv4 peer)
is the IPv4 address it maps, so it shares that address's budget. Only the budgets use this
key: the audit trail and the logs keep the full address.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

IPV6_PREFIX_MIN = 32
IPV6_PREFIX_MAX = 128


def client_budget_key(address: str, ipv6_prefix: int) -> str:
    """The key of ``address`` in the per-client budgets.

    IPv4 addresses, and anything that is not an address (``unknown``), are returned as they
    are; an IPv6 address becomes its ``/ipv6_prefix`` network in compressed form
    (``2001:db8:1:2::/64``), an IPv4-mapped one its IPv4 address.
    """
    if ":" not in address:  # IPv4 or not an address: the common case costs one scan
        return address
    return _ipv6_key(address, ipv6_prefix)


# Bounded: a flood of distinct addresses recycles entries instead of growing the cache.
@lru_cache(maxsize=4096)
def _ipv6_key(address: str, ipv6_prefix: int) -> str:
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    # The zone ("%eth0") names an interface of the server, not the client: not part of the key.
    host_bits = IPV6_PREFIX_MAX - ipv6_prefix
    network = ipaddress.IPv6Network(((int(ip) >> host_bits) << host_bits, ipv6_prefix))
    return network.with_prefixlen
