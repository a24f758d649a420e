"""Settings: every variable the service reads, validated once at start-up.

Names follow the integration guide (``AWS_SES_FROM_EMAIL``, ``OTP_EXPIRY_MINUTES``...) and
DESIGN.md §2. Nothing here reads the environment at import time: callers build ``Settings()``
(environment + optional ``.env``) or pass values explicitly, as the tests do.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from limits import parse_many
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from taxease_auth.locales import SUPPORTED_LOCALES

logger = logging.getLogger(__name__)

# Used only in development mode when SECRET_KEY is unset. Deliberately not secret-looking:
# production mode refuses to start with it (or with no key at all).
DEVELOPMENT_SECRET_KEY = "insecure-development-key-never-use-in-production"
DEVELOPMENT_SENDER = "TaxEase <no-reply@taxease.localhost>"
MIN_SECRET_KEY_LENGTH = 32
# Where `make run` serves, and the token issuer without PUBLIC_BASE_URL (DESIGN.md §12).
DEVELOPMENT_BASE_URL = "http://127.0.0.1:8001"
DEFAULT_TOKEN_ISSUER = "taxease-auth"


class EmailBackendName(StrEnum):
    SES = "ses"
    SMTP = "smtp"
    CONSOLE = "console"


class SmtpSecurity(StrEnum):
    STARTTLS = "starttls"
    TLS = "tls"
    NONE = "none"


class LogFormat(StrEnum):
    CONSOLE = "console"
    JSON = "json"


class ConfigError(Exception):
    """The configuration is invalid; the message names the variables to fix."""


CommaList = Annotated[list[str], NoDecode]


def _weak_key(key: str) -> bool:
    """A signing key too short, or the public development key: refused in production."""
    return key == DEVELOPMENT_SECRET_KEY or len(key) < MIN_SECRET_KEY_LENGTH


def _http_url(value: str) -> bool:
    parsed = urlsplit(value)
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


def _loopback_url(value: str) -> bool:
    host = urlsplit(value).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        # `.env.example` lists every variable, many empty: empty means "use the default".
        env_ignore_empty=True,
    )

    # --- the guide's variables -----------------------------------------------------------
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_region: str = "ca-central-1"
    aws_ses_from_email: str | None = None
    otp_expiry_minutes: int = Field(default=5, ge=1, le=1440)
    otp_length: int = Field(default=6, ge=6, le=10)
    development_mode: bool = False
    developer_otp: SecretStr | None = None
    skip_email_verification: bool = False

    # --- service ---------------------------------------------------------------------------
    app_name: str = Field(default="TaxEase", min_length=1, max_length=64)
    # Language of mail sent without a locale, or with one not supported: en or fr-CA.
    default_locale: str = "en"
    # The time zone pages and mails print times in (an IANA zone name, DESIGN.md §12).
    display_timezone: str = Field(default="America/Toronto", max_length=64)
    secret_key: SecretStr | None = None
    previous_secret_keys: CommaList = Field(default_factory=list)
    access_token_expire_minutes: int = Field(default=15, ge=1, le=24 * 60)
    # Access tokens (DESIGN.md §11): `iss` is TOKEN_ISSUER, else PUBLIC_BASE_URL, else a
    # default per mode (``token_issuer_value``); `aud` is TOKEN_AUDIENCE.
    token_issuer: str | None = Field(default=None, max_length=255)
    token_audience: str = Field(default="taxease", min_length=1, max_length=255)
    # The address people reach the service at (links in mail, the token issuer; §12).
    public_base_url: str | None = Field(default=None, max_length=255)
    # Sessions: a refresh token sent again this long after its first use gets that use's
    # answer again (a client retrying a lost answer); later, reuse ends the session.
    refresh_reuse_grace_seconds: int = Field(default=10, ge=0, le=300)
    session_idle_days: int = Field(default=14, ge=1, le=365)
    session_max_days: int = Field(default=60, ge=1, le=3650)
    login_otp_required: bool = False
    trusted_proxies: CommaList = Field(default_factory=list)
    # Outside development mode, /metrics on the API's port answers only to
    # "Authorization: Bearer <METRICS_TOKEN>" (unset: 404); `serve --metrics-port` needs none.
    metrics_token: SecretStr | None = None
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.CONSOLE
    # One line per request (method, route template, status, ms, client): replaces uvicorn's,
    # which would log query strings.
    access_log: bool = True
    # Bodies are refused (413) above this size before any parsing. The largest body the request
    # schemas allow, every character escaped as a JSON surrogate pair, is under 19 KiB.
    max_request_body_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)

    # --- data ------------------------------------------------------------------------------
    database_url: str = "sqlite:///./taxease_auth.sqlite3"
    # PostgreSQL connections per process (store/budget.py; docs/deploy.md has the sizing rule).
    # The defaults fit `serve --workers 4` plus one `worker` under max_connections 100:
    # 5 x (15 + 2 + 1) = 90 of the 97 left after the 3 superuser slots.
    # The request path's asyncpg pool (with the delivery worker's claims), opened on demand,
    # closed after 5 idle minutes. Below the requests in flight, answers queue for a
    # connection: at 32 concurrent requests, 15 put verify-otp's p99 at 100-140 ms, 32 at 25 ms
    # (`make bench --database postgresql`): give one process more where the budget allows.
    database_pool_size: int = Field(default=15, ge=1, le=1000)
    # The ORM's pool (readiness, housekeeping, the CLI) and what it may open beyond it.
    database_orm_pool_size: int = Field(default=2, ge=1, le=100)
    database_orm_max_overflow: int = Field(default=1, ge=0, le=100)
    # Connecting through PgBouncer in transaction mode: asyncpg's and SQLAlchemy's prepared
    # statement caches off (a statement prepared on one server connection is unknown on the
    # next), and no start-up budget check (it would read the server behind PgBouncer).
    database_pgbouncer: bool = False
    # PostgreSQL: verify-otp batches (auth/verify_batch.py) checked at once, each in its own
    # transaction on its own connection; one batch at a time serialised the checks on one
    # connection (`make bench --database postgresql`: 0.13x the reference). SQLite has one
    # writer: one batch at a time there, whatever this says.
    code_check_batches_in_flight: int = Field(default=3, ge=1, le=16)

    # --- codes and limits ------------------------------------------------------------------
    otp_max_attempts: int = Field(default=5, ge=1, le=20)
    otp_resend_cooldown_seconds: int = Field(default=60, ge=0, le=3600)
    rate_limit_storage_url: str = "memory://"
    # memory:// only: rate-limit keys one process holds at most (the longest idle are dropped
    # past it). Measured 285 bytes a key with one hit, 430 with five: 64,000 keys stay under
    # 30 MB (README, "Rate limits").
    rate_limit_memory_max_keys: int = Field(default=64_000, ge=100, le=10_000_000)
    # Budgets in the `limits` notation ("10/hour;50/day": every limit applies). Counted on the
    # submitted canonical email or the client address, whether or not an account exists.
    rate_limit_otp_issue_per_email: str = "5/hour;20/day"
    rate_limit_otp_issue_per_ip: str = "30/hour"
    rate_limit_verify_failures_per_email: str = "10/hour;50/day"
    rate_limit_verify_per_ip: str = "100/hour"
    rate_limit_login_failures_per_email: str = "10/15minutes"
    rate_limit_login_per_ip: str = "100/15minutes"
    rate_limit_register_per_ip: str = "10/hour"
    # Per-client budgets key an IPv6 client on this many leading bits (a host is usually handed
    # a /64); IPv4-mapped IPv6 addresses count as IPv4. The audit trail keeps full addresses.
    rate_limit_ipv6_prefix: int = Field(default=64, ge=32, le=128)
    rate_limit_refresh_per_ip: str = "300/minute"
    rate_limit_refresh_per_session: str = "10/minute"
    # Production refuses settings under which one account's code is guessed with a higher
    # probability per day (auth/guessing.py, checked at start-up; the README's security section).
    otp_max_guess_probability_per_day: float = Field(default=1e-3, gt=0, le=1)

    # --- passwords -------------------------------------------------------------------------
    password_min_length: int = Field(default=12, ge=8, le=64)
    password_max_length: int = Field(default=128, ge=64, le=1024)
    # argon2id defaults: RFC 9106's second recommended option (64 MiB, t=3, p=4), well above
    # OWASP's minimum (19 MiB, t=2, p=1). Tests lower them where timing is not the subject.
    password_hash_memory_kib: int = Field(default=65536, ge=8192)
    password_hash_time_cost: int = Field(default=3, ge=1)
    password_hash_parallelism: int = Field(default=4, ge=1, le=16)

    # --- mail ------------------------------------------------------------------------------
    email_backend: EmailBackendName | None = None
    # SES's own rule for a configuration set's name; it also goes into an SMTP header as is.
    aws_ses_configuration_set: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    aws_endpoint_url: str | None = None
    ses_max_send_rate: float | None = Field(default=None, gt=0)
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: SmtpSecurity = SmtpSecurity.STARTTLS
    # PEM bundle of the CA certificates to trust for the SMTP server instead of the system's
    # (a private relay, a test server with its own certificate).
    smtp_ca_file: str | None = None
    # Connect and per-command timeout: a stalled server costs a delivery slot this long at most.
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    embedded_worker: bool = True
    # At least one SES call's worst case (2 attempts x (5 s connect + 10 s read)) plus margin,
    # so a slow send is never claimed again by another worker while it is still in flight.
    outbox_lease_seconds: int = Field(default=60, ge=45)
    # Sends one delivery worker runs at once: enough to reach MaxSendRate when each SES call
    # takes a round trip (50/s at 100 ms needs 5), bounded so threads and sockets stay few.
    outbox_worker_concurrency: int = Field(default=10, ge=1, le=100)
    # After an account-wide SES error (paused, unverified sender...) sending stops; one mail
    # probes SES again every this many seconds, and the first success resumes delivery.
    mail_breaker_probe_seconds: float = Field(default=30.0, gt=0, le=3600)
    outbox_retention_days: int = Field(default=7, ge=1)
    audit_retention_days: int = Field(default=90, ge=1)
    # How often the delivery worker applies the retention rules (`taxease-auth purge`);
    # 0: never (run the purge command from cron instead).
    housekeeping_interval_seconds: int = Field(default=3600, ge=0)
    # --- SES feedback (DESIGN.md §10) -------------------------------------------------------
    # The SQS queue the configuration set's SNS topic feeds; unset: no feedback consumer.
    ses_feedback_queue_url: str | None = None
    # When set, SNS envelopes from any other topic are ignored (and deleted).
    ses_feedback_topic_arn: str | None = None
    # Bounce and complaint rates are taken over this many most recent accepted mails.
    mail_reputation_window: int = Field(default=1000, ge=10)
    # Half of SES's review levels (5 % bounces, 0.1 % complaints): warn long before SES acts.
    mail_bounce_rate_warn: float = Field(default=0.025, gt=0, le=1)
    mail_complaint_rate_warn: float = Field(default=0.0005, gt=0, le=1)

    @field_validator("previous_secret_keys", "trusted_proxies", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator(
        "rate_limit_otp_issue_per_email",
        "rate_limit_otp_issue_per_ip",
        "rate_limit_verify_failures_per_email",
        "rate_limit_verify_per_ip",
        "rate_limit_login_failures_per_email",
        "rate_limit_login_per_ip",
        "rate_limit_register_per_ip",
        "rate_limit_refresh_per_ip",
        "rate_limit_refresh_per_session",
    )
    @classmethod
    def _parsable_limits(cls, value: str) -> str:
        try:
            items = parse_many(value)
        except ValueError:
            items = []
        if not items:
            raise ValueError(
                f"{value!r} is not a rate limit such as '10/hour' or '5/minute;50/day'"
            )
        return value

    @field_validator("default_locale")
    @classmethod
    def _supported_default_locale(cls, value: str) -> str:
        wanted = value.strip().replace("_", "-").lower()
        for tag in SUPPORTED_LOCALES:
            if tag.lower() == wanted:
                return tag
        raise ValueError(f"{value!r} is not one of {', '.join(SUPPORTED_LOCALES)}")

    @field_validator("display_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone name such as America/Toronto") from None
        return value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in logging.getLevelNamesMapping():
            raise ValueError(f"unknown log level {value!r}")
        return level

    @field_validator("database_url")
    @classmethod
    def _parsable_database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("not a database URL (sqlite:///path or postgresql://...)") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError("only sqlite and postgresql URLs are supported")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """Every cross-variable problem at once, so one restart fixes them all."""
        problems = self._production_problems() if not self.development_mode else []
        developer_otp = self.active_developer_otp
        if developer_otp is not None and not re.fullmatch(
            rf"[0-9]{{{self.otp_length}}}", developer_otp
        ):
            problems.append(f"DEVELOPER_OTP must be exactly OTP_LENGTH ({self.otp_length}) digits")
        if self.password_min_length > self.password_max_length:
            problems.append("PASSWORD_MIN_LENGTH must not exceed PASSWORD_MAX_LENGTH")
        if self.mail_backend is not EmailBackendName.CONSOLE and not self.sender:
            problems.append(
                f"AWS_SES_FROM_EMAIL is required with EMAIL_BACKEND={self.mail_backend}"
            )
        if self.mail_backend is EmailBackendName.SMTP and not self.smtp_host:
            problems.append("SMTP_HOST is required with EMAIL_BACKEND=smtp")
        if bool(self.smtp_username) != bool(self.smtp_password):
            problems.append("SMTP_USERNAME and SMTP_PASSWORD must be set together")
        if self.session_idle_days > self.session_max_days:
            problems.append("SESSION_IDLE_DAYS must not exceed SESSION_MAX_DAYS")
        if self.public_base_url is not None and not _http_url(self.public_base_url):
            problems.append("PUBLIC_BASE_URL must be an http:// or https:// URL with a host")
        if self.smtp_ca_file and not Path(self.smtp_ca_file).is_file():
            problems.append(f"SMTP_CA_FILE {self.smtp_ca_file!r} is not a readable file")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _production_problems(self) -> list[str]:
        problems = []
        key = self.secret_key.get_secret_value() if self.secret_key else ""
        if not key:
            problems.append("SECRET_KEY is required when DEVELOPMENT_MODE is false")
        elif _weak_key(key):
            problems.append(
                f"SECRET_KEY must be a random value of at least {MIN_SECRET_KEY_LENGTH} characters "
                '(python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
        # A previous key still verifies tokens and codes: a weak or public one would let anyone
        # forge them, so each gets SECRET_KEY's checks. Positions only: never echo a key.
        weak = [
            str(position)
            for position, previous in enumerate(self.previous_secret_keys, start=1)
            if _weak_key(previous)
        ]
        if weak:
            problems.append(
                f"PREVIOUS_SECRET_KEYS entry {', '.join(weak)} must be a random value of at least "
                f"{MIN_SECRET_KEY_LENGTH} characters, and never the development key"
            )
        if (
            self.public_base_url is not None
            and _http_url(self.public_base_url)
            and not self.public_base_url.startswith("https://")
            and not _loopback_url(self.public_base_url)
        ):
            problems.append(
                "PUBLIC_BASE_URL must be https:// unless its host is a loopback address"
            )
        metrics_token = self.metrics_token.get_secret_value() if self.metrics_token else ""
        if metrics_token and len(metrics_token) < MIN_SECRET_KEY_LENGTH:
            problems.append(
                f"METRICS_TOKEN must be a random value of at least {MIN_SECRET_KEY_LENGTH} "
                "characters (anyone who guesses it reads /metrics)"
            )
        if self.mail_backend is EmailBackendName.CONSOLE:
            problems.append(
                "EMAIL_BACKEND=console prints codes to the terminal; "
                "it is refused when DEVELOPMENT_MODE is false"
            )
        return problems

    # --- derived values --------------------------------------------------------------------

    @property
    def mail_backend(self) -> EmailBackendName:
        if self.email_backend is not None:
            return self.email_backend
        return EmailBackendName.CONSOLE if self.development_mode else EmailBackendName.SES

    @property
    def aws_credentials(self) -> dict[str, str]:
        """AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY as boto3 keyword arguments, or nothing,
        so that boto3's own chain (environment, shared files, instance role) applies."""
        if self.aws_access_key_id and self.aws_secret_access_key:
            return {
                "aws_access_key_id": self.aws_access_key_id,
                "aws_secret_access_key": self.aws_secret_access_key.get_secret_value(),
            }
        return {}

    @property
    def sender(self) -> str | None:
        if self.aws_ses_from_email:
            return self.aws_ses_from_email
        return DEVELOPMENT_SENDER if self.development_mode else None

    @property
    def signing_key(self) -> str:
        if self.secret_key is not None and self.secret_key.get_secret_value():
            return self.secret_key.get_secret_value()
        return DEVELOPMENT_SECRET_KEY

    @property
    def verification_keys(self) -> list[str]:
        """The current key first, then the previous ones that still verify."""
        return [self.signing_key, *self.previous_secret_keys]

    @property
    def token_issuer_value(self) -> str:
        """The `iss` of access tokens: TOKEN_ISSUER, else PUBLIC_BASE_URL, else the
        development address in development mode, else ``taxease-auth`` (DESIGN.md §12)."""
        if self.token_issuer:
            return self.token_issuer
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        return DEVELOPMENT_BASE_URL if self.development_mode else DEFAULT_TOKEN_ISSUER

    @property
    def active_developer_otp(self) -> str | None:
        """DEVELOPER_OTP, honoured in development mode only."""
        if self.development_mode and self.developer_otp is not None:
            return self.developer_otp.get_secret_value()
        return None

    @property
    def skips_email_verification(self) -> bool:
        return self.development_mode and self.skip_email_verification

    @property
    def async_database_url(self) -> str:
        """DATABASE_URL with the driver this service uses (aiosqlite or asyncpg)."""
        url = make_url(self.database_url)
        driver = "sqlite+aiosqlite" if url.get_backend_name() == "sqlite" else "postgresql+asyncpg"
        return url.set(drivername=driver).render_as_string(hide_password=False)

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.database_url).get_backend_name() == "sqlite"

    def startup_warnings(self) -> list[str]:
        """What an operator must hear about at start-up (never contains a secret)."""
        warnings = []
        if not self.development_mode:
            if self.developer_otp is not None:
                warnings.append(
                    "DEVELOPER_OTP is set but IGNORED: it works in development mode only"
                )
            if self.skip_email_verification:
                warnings.append(
                    "SKIP_EMAIL_VERIFICATION is set but IGNORED: it works in development mode only"
                )
        if (
            self.mail_backend is EmailBackendName.SMTP
            and self.smtp_security is SmtpSecurity.NONE
            and self.smtp_username
        ):
            warnings.append("SMTP_SECURITY=none: SMTP_USERNAME and SMTP_PASSWORD travel in clear")
        if self.development_mode:
            warnings.append("DEVELOPMENT_MODE is on: never run this configuration in production")
            if self.active_developer_otp is not None:
                warnings.append("DEVELOPER_OTP replaces every generated code (development only)")
        return warnings


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and ``.env``), or ConfigError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None


def describe_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        variable = ".".join(str(part).upper() for part in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{variable}: {message}" if variable else message)
    return "invalid configuration: " + "; ".join(lines)
