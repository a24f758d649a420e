"""The delivery worker's circuit breaker (DESIGN.md §4, "account-wide"): open after an error
that stops every mail, one probe every ``probe_seconds`` meanwhile, closed by the first
success. Its state is the ``taxease_mail_circuit_open`` gauge."""

from __future__ import annotations

import asyncio

from taxease_auth import metrics


class CircuitBreaker:
    """Open after an account-wide error: nothing is sent but one probe every ``probe_seconds``
    (event-loop time)."""

    def __init__(self, probe_seconds: float) -> None:
        self.probe_seconds = probe_seconds
        self.is_open = False
        self._probe_at = 0.0

    def open(self) -> None:
        self.is_open = True
        self._schedule_probe()
        metrics.MAIL_CIRCUIT_OPEN.set(1)

    def close(self) -> None:
        self.is_open = False
        metrics.MAIL_CIRCUIT_OPEN.set(0)

    def _schedule_probe(self) -> None:
        self._probe_at = asyncio.get_running_loop().time() + self.probe_seconds

    def seconds_to_probe(self) -> float:
        """0 when a probe is due now (or the breaker is closed)."""
        if not self.is_open:
            return 0.0
        return max(0.0, self._probe_at - asyncio.get_running_loop().time())

    def probe_failed(self) -> None:
        self._schedule_probe()
