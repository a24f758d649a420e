"""Rate limits and failure budgets (the ``limits`` library, moving windows).

Every budget is counted on what the client submitted — the canonical email (as a keyed
fingerprint, so the storage never holds addresses) and the client address — whether or not an
account exists, so hitting a limit tells nothing about the account. Budgets someone else can
trip for your address (code requests, wrong codes, wrong passwords) delay you for at most their
window after the attack stops; the README lists each with its window.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.util import WindowStats

from taxease_auth import metrics
from taxease_auth.auth.client_keys import client_budget_key
from taxease_auth.auth.emails import email_fingerprint
from taxease_auth.config import Settings
from taxease_auth.errors import RateLimited


@dataclass(frozen=True, slots=True)
class Budget:
    """A named set of limits; ``name`` namespaces the storage keys. A ``per_client`` budget is
    keyed on client addresses, an IPv6 one by its prefix (``client_keys.client_budget_key``)."""

    name: str
    items: tuple[RateLimitItem, ...]
    per_client: bool = False


def _budget(name: str, spec: str) -> Budget:
    return Budget(name, tuple(parse_many(spec)))


def _client_budget(name: str, spec: str) -> Budget:
    return Budget(name, tuple(parse_many(spec)), per_client=True)


class _MovingWindow(Protocol):
    async def hit(self, item: RateLimitItem, *identifiers: str) -> bool: ...

    async def test(self, item: RateLimitItem, *identifiers: str) -> bool: ...

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats: ...


_Key = tuple[int | str, ...]
_Hits = tuple[float, ...] | list[float]
# Windows of up to this many hits are tuples (LocalMovingWindow says why).
TUPLE_MAX_AMOUNT = 64

logger = logging.getLogger(__name__)


class LocalMovingWindow:
    """The ``limits`` moving window for ``memory://``, without its in-memory storage's costs.

    Same answers as ``MovingWindowRateLimiter`` over ``MemoryStorage``: ``hit`` refuses when
    ``amount`` hits lie in the last ``expiry`` seconds and otherwise records one; ``test`` says
    whether one more would pass; ``get_window_stats`` gives the end of the window (when the
    oldest hit in it leaves) and what is left. What differs is the bookkeeping. MemoryStorage
    keeps every hit as an object, inserts it at the front of a list (a copy of the whole window
    per hit: 1e5 pointers moved for a busy client address), and expires old hits in a task that
    makes one trip to a worker thread per key, again and again while hits arrive: with
    thousands of addresses' budgets, `make bench` found that task and the list copies costing
    more CPU than the requests. Here each key holds the times of its newest ``amount`` hits
    (only those decide anything), oldest first, and a key whose newest hit has left its window
    is dropped, oldest first, in O(1) per call. Everything runs on the event loop, with no
    await between reading and recording a hit, so concurrent requests cannot both take the
    last slot.

    A window of up to ``TUPLE_MAX_AMOUNT`` hits (every per-address budget, and most keys hold
    one or two hits) is a tuple, replaced at each hit: CPython stops tracking a tuple of floats
    at its first collection, and the budgets of tens of thousands of addresses live for up to
    a day. As lists, every full collection walked them: pauses of 10-40 ms that made
    request-otp's p99 in `make bench`. A larger window is a list (appending to it is O(1)).

    **Bounded** (RATE_LIMIT_MEMORY_MAX_KEYS): with ``max_keys`` keys held (one per budget
    limit and identifier), a new key first evicts the key whose newest hit is oldest, counted
    in ``taxease_rate_limit_evictions_total`` (and logged once). A refused hit, and a ``test``
    that refuses, count as hits for this order: a budget under attack stays while the attack
    goes on, so a flood of new keys cannot wipe the budgets that are refusing it. What an
    eviction costs is the evicted key's count: a client idle for longest starts afresh.
    """

    def __init__(self, max_keys: int | None = None) -> None:
        # Per window length: key -> hit times, oldest first; keys ordered by their newest hit
        # (or refusal).
        self._windows: dict[int, OrderedDict[_Key, _Hits]] = {}
        self._max_keys = max_keys
        # (window length, key) -> time of its newest refusal, for keys refused since their
        # newest recorded hit: their place in the eviction order.
        self._refused_at: dict[tuple[int, _Key], float] = {}
        self._evicted = False

    def _hits(self, item: RateLimitItem, identifiers: tuple[str, ...], now: float) -> tuple[
        OrderedDict[_Key, _Hits], _Key, _Hits | None
    ]:  # fmt: skip
        expiry = item.get_expiry()
        keys = self._windows.get(expiry)
        if keys is None:
            keys = self._windows[expiry] = OrderedDict()
        cutoff = now - expiry
        while keys:
            oldest = next(iter(keys.values()))
            if oldest[-1] >= cutoff:  # a hit exactly one window old still refuses (as limits)
                break
            gone, _ = keys.popitem(last=False)
            if self._refused_at:
                self._refused_at.pop((expiry, gone), None)
        # Not item.key_for(): its string building costs more than the rest of a hit. Within
        # one window length, the amount and the identifiers (budget name first) tell keys apart.
        key: _Key = (item.amount, *identifiers)
        return keys, key, keys.get(key)

    async def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        now = time.time()
        keys, key, hits = self._hits(item, identifiers, now)
        if hits is None:
            if self._max_keys is not None and self.key_count() >= self._max_keys:
                self._evict_oldest()
            keys[key] = (now,) if item.amount <= TUPLE_MAX_AMOUNT else [now]
            return True
        drop = 0  # only the newest ``amount`` hits can matter
        if len(hits) >= item.amount:
            if hits[-item.amount] >= now - item.get_expiry():
                self._refused(item, keys, key, now)
                return False
            drop = len(hits) - item.amount + 1
        if isinstance(hits, list):
            del hits[:drop]
            hits.append(now)
        else:
            keys[key] = (*hits[drop:], now)
        keys.move_to_end(key)
        return True

    async def test(self, item: RateLimitItem, *identifiers: str) -> bool:
        now = time.time()
        keys, key, hits = self._hits(item, identifiers, now)
        if self._in_window(hits, now - item.get_expiry()) <= item.amount - 1:
            return True
        self._refused(item, keys, key, now)
        return False

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        now = time.time()
        _, _, hits = self._hits(item, identifiers, now)
        count = self._in_window(hits, now - item.get_expiry())
        start = hits[-count] if hits and count else now
        return WindowStats(start + item.get_expiry(), item.amount - count)

    def key_count(self) -> int:
        """Keys held, over every window length."""
        return sum(len(keys) for keys in self._windows.values())

    def _refused(
        self, item: RateLimitItem, keys: OrderedDict[_Key, _Hits], key: _Key, now: float
    ) -> None:
        """A refusal keeps the key's budget in memory as a hit would (last to be evicted)."""
        keys.move_to_end(key)
        if self._max_keys is not None:
            self._refused_at[(item.get_expiry(), key)] = now

    def _evict_oldest(self) -> None:
        """Drop the key whose newest hit (or refusal) is oldest: the first of one window
        length's keys, whichever of those firsts is oldest."""
        oldest: tuple[float, int] | None = None
        for expiry, keys in self._windows.items():
            if not keys:
                continue
            key, hits = next(iter(keys.items()))
            at = max(hits[-1], self._refused_at.get((expiry, key), hits[-1]))
            if oldest is None or at < oldest[0]:
                oldest = (at, expiry)
        if oldest is None:
            return
        expiry = oldest[1]
        key, _ = self._windows[expiry].popitem(last=False)
        self._refused_at.pop((expiry, key), None)
        metrics.RATE_LIMIT_EVICTIONS.inc()
        if not self._evicted:
            self._evicted = True
            logger.warning(
                "rate limits: RATE_LIMIT_MEMORY_MAX_KEYS (%d) reached, the budgets idle for "
                "longest are being dropped (counted in taxease_rate_limit_evictions_total); "
                "memory:// is for one process: use Redis (RATE_LIMIT_STORAGE_URL) in production",
                self._max_keys,
            )

    @staticmethod
    def _in_window(hits: _Hits | None, cutoff: float) -> int:
        """How many of ``hits`` (oldest first) are later than ``cutoff``."""
        if not hits:
            return 0
        if hits[0] > cutoff:
            return len(hits)
        count = 0
        for at in reversed(hits):
            if at <= cutoff:
                break
            count += 1
        return count


class RateLimits:
    def __init__(self, settings: Settings, storage: Storage) -> None:
        self._limiter: _MovingWindow = (
            LocalMovingWindow(max_keys=settings.rate_limit_memory_max_keys)
            if isinstance(storage, MemoryStorage)
            else MovingWindowRateLimiter(storage)
        )
        self._storage = storage
        self._keys = settings.verification_keys
        cooldown = settings.otp_resend_cooldown_seconds
        self.code_cooldown = _budget("code-cooldown", f"1/{cooldown} seconds") if cooldown else None
        self.code_issue_per_email = _budget("code-email", settings.rate_limit_otp_issue_per_email)
        self._ipv6_prefix = settings.rate_limit_ipv6_prefix
        self.code_issue_per_ip = _client_budget("code-ip", settings.rate_limit_otp_issue_per_ip)
        self.verify_failures_per_email = _budget(
            "verify-fail-email", settings.rate_limit_verify_failures_per_email
        )
        self.verify_per_ip = _client_budget("verify-ip", settings.rate_limit_verify_per_ip)
        self.login_failures_per_email = _budget(
            "login-fail-email", settings.rate_limit_login_failures_per_email
        )
        self.login_per_ip = _client_budget("login-ip", settings.rate_limit_login_per_ip)
        self.register_per_ip = _client_budget("register-ip", settings.rate_limit_register_per_ip)
        # Refresh tokens are unguessable: these bound the load, not guessing.
        self.refresh_per_ip = _client_budget("refresh-ip", settings.rate_limit_refresh_per_ip)
        self.refresh_per_session = _budget(
            "refresh-session", settings.rate_limit_refresh_per_session
        )

    def email_key(self, email: str) -> str:
        return email_fingerprint(self._keys[0], email)

    async def spend(self, budget: Budget | None, *keys: str) -> None:
        """Count one event; RateLimited (with the wait) when any limit of the budget is spent."""
        if budget is None:
            return
        keys = self._keys_of(budget, keys)
        for item in budget.items:
            if not await self._limiter.hit(item, budget.name, *keys):
                metrics.RATE_LIMITED.labels(budget=budget.name).inc()
                raise RateLimited(await self._retry_after(item, budget.name, *keys))

    def _keys_of(self, budget: Budget, keys: tuple[str, ...]) -> tuple[str, ...]:
        """The storage keys of ``keys``: client addresses by their budget key (an IPv6
        client's prefix), anything else as it is."""
        if not budget.per_client:
            return keys
        return tuple(client_budget_key(key, self._ipv6_prefix) for key in keys)

    async def healthy(self) -> bool:
        return bool(await self._storage.check())

    async def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        stats = await self._limiter.get_window_stats(item, *identifiers)
        return max(1, math.ceil(stats.reset_time - time.time()))
