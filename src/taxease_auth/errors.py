"""Domain errors. The service raises the precise one; ``api/errors.py`` decides what a client
may learn (several of these deliberately share one answer).

    AuthError
    ├── InvalidCode            wrong, expired, used, retired, dead or unknown: one 400 outside
    ├── InvalidCredentials     unknown email or wrong password: one 401 outside
    ├── EmailNotVerified       correct password, address not yet verified: 403
    ├── InvalidToken           missing, malformed, expired, forged or revoked bearer token: 401
    ├── WeakPassword           the password policy refused it: 422 with the reason
    └── RateLimited            a rate budget is spent: 429 with Retry-After
"""

from __future__ import annotations


class AuthError(Exception):
    """Base of every error the auth service raises on purpose."""


class InvalidCode(AuthError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # for logs only: "expired", "wrong", "used", ...


class InvalidCredentials(AuthError):
    pass


class EmailNotVerified(AuthError):
    pass


class InvalidToken(AuthError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WeakPassword(AuthError):
    def __init__(self, reason: str, *, field: str = "password") -> None:
        super().__init__(reason)
        self.reason = reason  # shown to the client: NIST asks to say why a password is refused
        self.field = field


class RateLimited(AuthError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after  # seconds, for the Retry-After header
