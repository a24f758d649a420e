"""The reputation guard: bounce and complaint rates over the last MAIL_REPUTATION_WINDOW mails
SES accepted, as gauges, with a warning once per crossing of the warn levels (DESIGN.md §10).

SES puts an account under review at 5 % bounces or 0.1 % complaints and may pause its sending
(every code with it) at 10 % / 0.5 %; the warn levels default to half the review levels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from taxease_auth import metrics
from taxease_auth.config import Settings
from taxease_auth.store import mail_events
from taxease_auth.store.sql import Database

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rates:
    accepted: int
    permanent_bounces: int
    complaints: int
    bounce_warn: float
    complaint_warn: float

    @property
    def bounce_rate(self) -> float:
        return self.permanent_bounces / self.accepted if self.accepted else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.accepted if self.accepted else 0.0

    @property
    def bounce_too_high(self) -> bool:
        return self.bounce_rate > self.bounce_warn

    @property
    def complaint_too_high(self) -> bool:
        return self.complaint_rate > self.complaint_warn

    def describe(self) -> str:
        return (
            f"bounce rate {self.bounce_rate:.2%} ({self.permanent_bounces} permanent of "
            f"{self.accepted} accepted; warn above {self.bounce_warn:.2%}), complaint rate "
            f"{self.complaint_rate:.3%} ({self.complaints}; warn above {self.complaint_warn:.3%})"
        )


async def measure(database: Database, settings: Settings) -> Rates:
    """The current rates, read from the outbox and its events."""
    async with database.transaction() as tx:
        counts = await mail_events.reputation_counts(tx, window=settings.mail_reputation_window)
    return Rates(
        counts.accepted,
        counts.permanent_bounces,
        counts.complaints,
        settings.mail_bounce_rate_warn,
        settings.mail_complaint_rate_warn,
    )


class ReputationGuard:
    """Keeps the gauges current and warns once each time a rate crosses its warn level."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._bounce_high = False
        self._complaint_high = False

    async def refresh(self, database: Database) -> Rates:
        rates = await measure(database, self._settings)
        metrics.MAIL_BOUNCE_RATE.set(rates.bounce_rate)
        metrics.MAIL_COMPLAINT_RATE.set(rates.complaint_rate)
        if rates.bounce_too_high and not self._bounce_high:
            logger.warning(
                "SES reputation: bounce rate above its warn level, SES reviews accounts at 5%%: "
                "%s. Look at `taxease-auth why` for the bounced addresses.",
                rates.describe(),
            )
        if rates.complaint_too_high and not self._complaint_high:
            logger.warning(
                "SES reputation: complaint rate above its warn level, SES reviews accounts at "
                "0.1%%: %s",
                rates.describe(),
            )
        if self._bounce_high and not rates.bounce_too_high:
            logger.info(
                "SES reputation: bounce rate back under its warn level: %s", rates.describe()
            )
        if self._complaint_high and not rates.complaint_too_high:
            logger.info(
                "SES reputation: complaint rate back under its warn level: %s", rates.describe()
            )
        self._bounce_high = rates.bounce_too_high
        self._complaint_high = rates.complaint_too_high
        return rates
