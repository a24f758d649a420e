"""Accepting a request for a code (request-otp, resend, a password reset request), for the
JSON API and the pages alike: one path, so both spend the same budgets and answer with the
same timing."""

from __future__ import annotations

from taxease_auth.auth.service import AuthService
from taxease_auth.store.models import Purpose


async def accept_code_request(
    service: AuthService,
    email: str,
    purpose: Purpose,
    client_ip: str,
    *,
    challenge_id: str | None = None,
    registration_id: str | None = None,
    locale: str | None = None,
) -> None:
    """Spend the issuing budgets (or raise RateLimited), wait for issuing capacity, and queue
    the code to be issued after the answer is sent: its timing cannot tell a known address
    from an unknown. ``locale``: the language the request asked for, for that mail only
    (else the account's, DESIGN.md §12)."""
    await service.admit_code_request(email, purpose, client_ip=client_ip)
    await service.wait_for_issuing_capacity()
    service.queue_requested_code(
        email,
        purpose,
        client_ip=client_ip,
        challenge_id=challenge_id,
        registration_id=registration_id,
        locale=locale,
    )
