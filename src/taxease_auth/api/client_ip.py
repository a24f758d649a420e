"""The client's address: the socket peer, or X-Forwarded-For when the peer is a trusted proxy.

X-Forwarded-For is written by every hop, so only its right end is trustworthy: walk it from the
right, skipping addresses in TRUSTED_PROXIES; the first other address is the client. Anything
unparsable stops the walk (a client could have sent it), and the last trusted hop is used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN_CLIENT = "unknown"


@lru_cache(maxsize=8)
def parse_networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """'10.0.0.1', '10.0.0.0/8', '::1' -> networks (ValueError on a malformed entry)."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[str]) -> str:
    """The client's address, from the socket ``peer`` and the request's X-Forwarded-For header
    lines (``forwarded_for``: every line, in the order received; empty when there is none).

    All lines are read as one list of hops, first line first: a proxy may add a line of its own
    instead of appending to the client's (HAProxy's ``option forwardfor``), and reading only one
    line would let a forged line in front of it choose the client's address. Without a trusted
    peer the header is ignored and the peer is the client; ``UNKNOWN_CLIENT`` without a peer.
    """
    if peer is None:
        return UNKNOWN_CLIENT
    networks = parse_networks(tuple(trusted))
    if not networks or not forwarded_for or not _trusted(peer, networks):
        return peer
    hops = [part.strip() for line in forwarded_for for part in line.split(",")]
    client = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break
        client = hop
        if not _trusted(hop, networks):
            break
    return client
