"""Where the delivery worker's pace comes from: SES_MAX_SEND_RATE when set, else the
backend's MaxSendRate (asked at start, then every ``RATE_REFRESH_SECONDS``), else none (the
console: unpaced). The rate found is handed to the worker's ``SendPacer`` and shown as
``taxease_mail_send_rate_limit``."""

from __future__ import annotations

import asyncio
import logging
import math

from taxease_auth import metrics
from taxease_auth.mail.backends.base import MailBackend, ReportsSendRate, SendError
from taxease_auth.mail.pacing import SendPacer

logger = logging.getLogger(__name__)

# When SES cannot tell its MaxSendRate: the sandbox's rate, under every account's real one.
FALLBACK_SEND_RATE = 1.0
RATE_REFRESH_SECONDS = 600.0
RATE_RETRY_SECONDS = 60.0


class SendRateSource:
    """Sets ``pacer``'s rate from ``override`` (SES_MAX_SEND_RATE), else from ``backend``.
    ``worker_id`` names the worker in the logs."""

    def __init__(
        self,
        *,
        backend: MailBackend,
        pacer: SendPacer,
        override: float | None,
        worker_id: str,
    ) -> None:
        self._backend = backend
        self._pacer = pacer
        self._override = override
        self._worker_id = worker_id
        self.known = False  # True once a refresh set a rate (or none)
        self._refresh_at = 0.0  # event-loop time

    def due(self) -> bool:
        """Whether the rate should be asked again (never with an override or no backend
        rate)."""
        return asyncio.get_running_loop().time() >= self._refresh_at

    async def refresh(self) -> None:
        """Set the pace from SES_MAX_SEND_RATE, else from the backend (at start, then every
        ``RATE_REFRESH_SECONDS``). A failed lookup keeps the rate known so far, or paces at
        the sandbox's 1/s until SES answers (asked again after ``RATE_RETRY_SECONDS``)."""
        loop = asyncio.get_running_loop()
        rate: float | None
        if self._override is not None:
            rate = self._override
            self._refresh_at = math.inf
        elif isinstance(self._backend, ReportsSendRate):
            try:
                rate = await self._backend.max_send_rate()
            except SendError as error:
                previous = self._pacer.rate if self.known else None
                rate = previous if previous is not None else FALLBACK_SEND_RATE
                self._refresh_at = loop.time() + RATE_RETRY_SECONDS
                logger.warning(
                    "could not read SES's MaxSendRate (%s): pacing at %s/s, asking again in %.0f s",
                    error.reason,
                    rate,
                    RATE_RETRY_SECONDS,
                )
            else:
                self._refresh_at = loop.time() + RATE_REFRESH_SECONDS
        else:
            rate = None
            self._refresh_at = math.inf
        changed = rate != self._pacer.rate or not self.known
        self._pacer.set_rate(rate)
        self.known = True
        metrics.MAIL_SEND_RATE_LIMIT.set(rate or 0)
        if changed:
            logger.info(
                "delivery worker %s: MaxSendRate %s, sending at most %s",
                self._worker_id,
                f"{rate}/s" if rate else "none",
                f"{self._pacer.turns_per_second:.3g}/s" if self._pacer.turns_per_second else "-",
            )
