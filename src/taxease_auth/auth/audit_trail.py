"""Recording an account flow's security event in the caller's transaction: the address by its
keyed fingerprint, never in clear."""

from __future__ import annotations

from collections.abc import Callable

from taxease_auth.clock import Clock
from taxease_auth.store import audit
from taxease_auth.store.sql import Transaction


class AuditTrail:
    def __init__(self, clock: Clock, fingerprint: Callable[[str], str]) -> None:
        self._clock = clock
        self._fingerprint = fingerprint

    async def record(
        self,
        tx: Transaction,
        event: str,
        email: str,
        client_ip: str,
        outcome: str,
        *,
        purpose: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Add the event to ``tx``: it commits or rolls back with the action it records."""
        await audit.record(
            tx,
            now=self._clock.now(),
            event=event,
            email_hash=self._fingerprint(email),
            ip=client_ip,
            outcome=outcome,
            purpose=purpose,
            detail=detail,
        )
