"""Rate limits and failure budgets (the ``limits`` library, moving windows).

Every budget is counted on what the client submitted — the canonical email (as a keyed
fingerprint, so the storage never holds addresses) and the client address — whether or not an
account exists, so hitting a limit tells nothing about the account. Budgets someone else can
trip for your address (code requests, wrong codes, wrong passwords) delay you for at most their
window after the attack stops; the README lists each with its window.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter

from taxease_auth.auth.emails import email_fingerprint
from taxease_auth.config import Settings
from taxease_auth.errors import RateLimited


@dataclass(frozen=True, slots=True)
class Budget:
    """A named set of limits; ``name`` namespaces the storage keys."""

    name: str
    items: tuple[RateLimitItem, ...]


def _budget(name: str, spec: str) -> Budget:
    return Budget(name, tuple(parse_many(spec)))


class RateLimits:
    def __init__(self, settings: Settings, storage: Storage) -> None:
        self._limiter = MovingWindowRateLimiter(storage)
        self._storage = storage
        self._keys = settings.verification_keys
        cooldown = settings.otp_resend_cooldown_seconds
        self.code_cooldown = _budget("code-cooldown", f"1/{cooldown} seconds") if cooldown else None
        self.code_issue_per_email = _budget("code-email", settings.rate_limit_otp_issue_per_email)
        self.code_issue_per_ip = _budget("code-ip", settings.rate_limit_otp_issue_per_ip)
        self.verify_failures_per_email = _budget(
            "verify-fail-email", settings.rate_limit_verify_failures_per_email
        )
        self.verify_per_ip = _budget("verify-ip", settings.rate_limit_verify_per_ip)
        self.login_failures_per_email = _budget(
            "login-fail-email", settings.rate_limit_login_failures_per_email
        )
        self.login_per_ip = _budget("login-ip", settings.rate_limit_login_per_ip)
        self.register_per_ip = _budget("register-ip", settings.rate_limit_register_per_ip)

    def email_key(self, email: str) -> str:
        return email_fingerprint(self._keys[0], email)

    async def spend(self, budget: Budget | None, *keys: str) -> None:
        """Count one event; RateLimited (with the wait) when any limit of the budget is spent."""
        if budget is None:
            return
        for item in budget.items:
            if not await self._limiter.hit(item, budget.name, *keys):
                raise RateLimited(await self._retry_after(item, budget.name, *keys))

    async def ensure_left(self, budget: Budget, *keys: str) -> None:
        """RateLimited if the budget is already spent; counts nothing (failure budgets are only
        charged on failure, with ``charge``)."""
        for item in budget.items:
            if not await self._limiter.test(item, budget.name, *keys):
                raise RateLimited(await self._retry_after(item, budget.name, *keys))

    async def charge(self, budget: Budget, *keys: str) -> None:
        """Count one failure against a budget, without refusing anything now."""
        for item in budget.items:
            await self._limiter.hit(item, budget.name, *keys)

    async def healthy(self) -> bool:
        return bool(await self._storage.check())

    async def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        stats = await self._limiter.get_window_stats(item, *identifiers)
        return max(1, math.ceil(stats.reset_time - time.time()))
