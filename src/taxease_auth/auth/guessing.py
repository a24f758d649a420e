"""The guessing bound: how likely an attacker at every limit is to guess one account's code.

A code is one of ``10**length`` values. An attacker who never sees the mail can submit at most
``OTP_MAX_ATTEMPTS`` guesses per code, and at most the per-address failure budget per window
across all codes (reissuing does not reset it). Both caps are counted here, per day:

    guesses/day  = min(failure budget per day,
                       codes per day × OTP_MAX_ATTEMPTS × purposes an attacker can guess)
    P(success)  <= guesses/day / 10**OTP_LENGTH

Only ``email_verification`` and ``password_reset`` count as purposes: a ``login`` code is only
issued after the correct password. The code lifetime does not enter: the per-code attempt cap
holds however long a code lives.

Start-up (the command line, the app factory) calls ``refuse_likely_guessing``: in production a
configuration whose bound exceeds ``OTP_MAX_GUESS_PROBABILITY_PER_DAY`` does not start. The rule
lives here, beside the rules it counts, so ``config.py`` knows nothing above it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from limits import RateLimitItem, parse_many

from taxease_auth.config import ConfigError, Settings

SECONDS_PER_DAY = 86_400
GUESSABLE_PURPOSES = 2


@dataclass(frozen=True, slots=True)
class GuessingBound:
    guesses_per_day: float
    probability_per_day: float

    @property
    def probability_per_year(self) -> float:
        return 1 - (1 - self.probability_per_day) ** 365


def per_day(items: Sequence[RateLimitItem]) -> float:
    """The most events a set of moving-window limits lets through in one day."""
    return min(
        (item.amount * math.ceil(SECONDS_PER_DAY / item.get_expiry()) for item in items),
        default=math.inf,
    )


def guessing_bound(
    *,
    otp_length: int,
    max_attempts: int,
    failure_budget: str,
    issue_budget: str,
    resend_cooldown_seconds: int,
) -> GuessingBound:
    codes_per_day = per_day(parse_many(issue_budget))
    if resend_cooldown_seconds > 0:
        codes_per_day = min(codes_per_day, math.ceil(SECONDS_PER_DAY / resend_cooldown_seconds))
    guesses = min(
        per_day(parse_many(failure_budget)),
        codes_per_day * max_attempts * GUESSABLE_PURPOSES,
    )
    return GuessingBound(guesses_per_day=guesses, probability_per_day=guesses / 10**otp_length)


def settings_bound(settings: Settings) -> GuessingBound:
    """The bound the configured code length, attempts, budgets and cooldown give."""
    return guessing_bound(
        otp_length=settings.otp_length,
        max_attempts=settings.otp_max_attempts,
        failure_budget=settings.rate_limit_verify_failures_per_email,
        issue_budget=settings.rate_limit_otp_issue_per_email,
        resend_cooldown_seconds=settings.otp_resend_cooldown_seconds,
    )


def refuse_likely_guessing(settings: Settings) -> None:
    """Raise ConfigError, naming the variables to change, when production settings let an
    attacker at every limit guess one account's code with a probability per day above
    OTP_MAX_GUESS_PROBABILITY_PER_DAY. Development mode is never refused."""
    if settings.development_mode:
        return
    bound = settings_bound(settings)
    if bound.probability_per_day > settings.otp_max_guess_probability_per_day:
        raise ConfigError(
            "invalid configuration: an attacker at the limits guesses a code with probability "
            f"{bound.probability_per_day:.2g}/day, above OTP_MAX_GUESS_PROBABILITY_PER_DAY "
            f"({settings.otp_max_guess_probability_per_day:g}): lower "
            "RATE_LIMIT_VERIFY_FAILURES_PER_EMAIL, RATE_LIMIT_OTP_ISSUE_PER_EMAIL or "
            "OTP_MAX_ATTEMPTS, or raise OTP_LENGTH"
        )
