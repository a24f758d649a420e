"""Checking a submitted code against its stored row (DESIGN.md §4, §5): the newest live code,
a constant-time compare, the attempt counted, single use by a conditional update.

The check writes only to the caller's transaction (the attempt, the consumption, the audit
row); what is counted in memory (/metrics, the debug line) waits for ``counted``, called once
that transaction committed, so a check that was rolled back and done again counts once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from taxease_auth import metrics
from taxease_auth.auth import otp as codes
from taxease_auth.auth.audit_trail import AuditTrail
from taxease_auth.auth.emails import mask_email
from taxease_auth.clock import Clock
from taxease_auth.config import Settings
from taxease_auth.errors import InvalidCode
from taxease_auth.store import otps
from taxease_auth.store.models import Purpose
from taxease_auth.store.otps import CodeRow
from taxease_auth.store.sql import Transaction

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CodeSubmission:
    """A code as a client submitted it, for one email and purpose (and login challenge)."""

    email: str
    code: str
    purpose: Purpose
    client_ip: str
    challenge_id: str | None = None
    user_agent: str | None = None  # a login code starts a session: shown in its list
    # email_verification only (ignored for the other purposes): that registration's code.
    registration_id: str | None = None


def _metric_outcome(label: str) -> str:
    """A code check's outcome as /metrics shows it: ``verified``, ``malformed`` (the input
    alone) or ``rejected``. "no live code" only happens for an address without a code (an
    unknown one among them) and "wrong", "locked", "expired" or "already used" only for one
    with a code: counted apart, they told whether an account exists (Review 17.3). The audit
    trail keeps the precise reason."""
    return label if label in ("verified", "malformed") else "rejected"


class CodeChecker:
    def __init__(self, settings: Settings, clock: Clock, audit: AuditTrail) -> None:
        self._settings = settings
        self._clock = clock
        self._audit = audit

    async def check(
        self, tx: Transaction, submitted: CodeSubmission, *, consume: bool
    ) -> CodeRow | InvalidCode:
        """The matching live code (consumed when asked), or the InvalidCode to raise after the
        transaction commits (a wrong attempt must be counted even though the call fails).
        The outcome is audited in ``tx``."""
        outcome = await self._match(tx, submitted, consume=consume)
        if isinstance(outcome, CodeRow):
            await self._audit.record(
                tx,
                "code_verified",
                submitted.email,
                submitted.client_ip,
                "success",
                purpose=submitted.purpose,
            )
        else:
            await self._audit.record(
                tx,
                "code_locked" if outcome.reason == "locked" else "code_failed",
                submitted.email,
                submitted.client_ip,
                "failure",
                purpose=submitted.purpose,
                detail=outcome.reason,
            )
        return outcome

    @staticmethod
    def counted(submitted: CodeSubmission, outcome: CodeRow | InvalidCode) -> None:
        """Count a check in /metrics once its transaction committed."""
        label = outcome.reason if isinstance(outcome, InvalidCode) else "verified"
        metrics.CODES_CHECKED.labels(
            purpose=submitted.purpose, outcome=_metric_outcome(label)
        ).inc()
        if isinstance(outcome, InvalidCode):
            # DEBUG: each rejection is in the audit trail (with its reason) and counted in
            # taxease_codes_checked_total; at INFO a guessing flood writes a line per guess.
            logger.debug(
                "%s code rejected for %s: %s", submitted.purpose, mask_email(submitted.email), label
            )

    async def _match(
        self, tx: Transaction, submitted: CodeSubmission, *, consume: bool
    ) -> CodeRow | InvalidCode:
        max_attempts = self._settings.otp_max_attempts
        if not codes.is_well_formed(submitted.code, self._settings.otp_length):
            return InvalidCode("malformed")
        candidate = await otps.newest_candidate(
            tx,
            email=submitted.email,
            purpose=submitted.purpose,
            challenge_id=submitted.challenge_id,
            registration_id=(
                submitted.registration_id
                if submitted.purpose is Purpose.EMAIL_VERIFICATION
                else None
            ),
        )
        now = self._clock.now()
        if candidate is None:
            return InvalidCode("no live code")
        if candidate.expires_at <= now:
            return InvalidCode("expired")
        if candidate.attempts >= max_attempts:
            return InvalidCode("too many attempts")
        if not codes.code_matches(
            self._settings.verification_keys,
            email=submitted.email,
            purpose=submitted.purpose,
            code=submitted.code,
            stored_hash=candidate.code_hash,
        ):
            # The attempt that uses up the code's last try locks it: "locked" in the audit.
            locks = candidate.attempts + 1 >= max_attempts
            await otps.count_wrong_attempt(tx, candidate.id, max_attempts=max_attempts)
            return InvalidCode("locked" if locks else "wrong")
        if consume and not await otps.consume(tx, candidate.id, now=now, max_attempts=max_attempts):
            return InvalidCode("already used")
        return candidate
