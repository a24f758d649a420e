"""Tables: users, one-time codes and the mail outbox (DESIGN.md §3).

The same schema serves SQLite and PostgreSQL: portable types only, timestamps always UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

EMAIL_MAX_LENGTH = 254
NAME_MAX_LENGTH = 100
REGISTRATION_ID_MAX_LENGTH = 32  # 16 bytes in base64url are 22 characters
LOCALE_MAX_LENGTH = 8  # "en", "fr-CA"
IP_MAX_LENGTH = 45  # the longest textual IPv6 address, "ffff:...:255.255.255.255"


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python on every database.

    SQLite has no time zones: it stores naive UTC and this type restores the zone on the way out,
    so comparisons never mix naive and aware values.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime()}


class Purpose(StrEnum):
    EMAIL_VERIFICATION = "email_verification"
    LOGIN = "login"
    PASSWORD_RESET = "password_reset"


class MailKind(StrEnum):
    """What an outbox row carries: a code for a purpose, or a notice without a code."""

    EMAIL_VERIFICATION = "email_verification"
    LOGIN = "login"
    PASSWORD_RESET = "password_reset"
    ACCOUNT_EXISTS = "account_exists"
    PASSWORD_CHANGED = "password_changed"
    CHOOSE_PASSWORD = "choose_password"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    EXPIRED = "expired"
    # Final: the worker did not send, the address is on the suppression list (DESIGN.md §10).
    SUPPRESSED = "suppressed"


class DeliveryState(StrEnum):
    """What became of a mail after SES accepted it, from SES's events (DESIGN.md §10)."""

    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    DELAYED = "delayed"
    REJECTED = "rejected"


class SuppressionReason(StrEnum):
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH), unique=True)
    # NULL: verified without a password (two registrations raced for the address, DESIGN.md
    # §11); login then fails like a wrong password until the owner sets one by reset.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    first_name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    last_name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    email_verified_at: Mapped[datetime | None]
    # Bumped by a password reset: every token carrying an older version stops working.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]
    # The language of the account's mail (DESIGN.md §12), set at registration; NULL: none was
    # asked for, DEFAULT_LOCALE applies.
    locale: Mapped[str | None] = mapped_column(String(LOCALE_MAX_LENGTH))


class Otp(Base):
    __tablename__ = "otps"
    __table_args__ = (Index("ix_otps_email_purpose_created", "email", "purpose", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH))
    purpose: Mapped[str] = mapped_column(String(32))
    # HMAC-SHA256 over (email, purpose, code) keyed from SECRET_KEY; the code is never stored.
    code_hash: Mapped[str] = mapped_column(String(64))
    # The retention purge deletes by expiry (hourly, a small slice of the table).
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used: Mapped[bool] = mapped_column(Boolean, default=False)
    used_at: Mapped[datetime | None]
    # Set when a newer code for the same email and purpose replaced this one.
    retired_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    # A registration's code activates exactly the password and names it was issued with.
    pending_password_hash: Mapped[str | None] = mapped_column(String(255))
    pending_first_name: Mapped[str | None] = mapped_column(String(NAME_MAX_LENGTH))
    pending_last_name: Mapped[str | None] = mapped_column(String(NAME_MAX_LENGTH))
    # A login code belongs to the challenge that the correct password opened.
    challenge_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # A registration's code belongs to the registration that /register answered with this id
    # (16 random bytes, base64url); found through the (email, purpose, created_at) index.
    registration_id: Mapped[str | None] = mapped_column(String(REGISTRATION_ID_MAX_LENGTH))
    # The mail link's token (DESIGN.md §12, /c/{token}) as a keyed hash, never the token; NULL
    # when the mail carries no link, or once a reset link was followed (single use).
    link_token_hash: Mapped[str | None] = mapped_column(String(64), index=True)


class EmailOutbox(Base):
    __tablename__ = "email_outbox"
    # The claim's ORDER BY next_attempt_at, id comes straight from this index: the worker
    # reads the first due row, whatever the backlog (and the other status lookups use it too).
    __table_args__ = (
        Index("ix_email_outbox_status_next_attempt_id", "status", "next_attempt_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    # Indexed for ON DELETE SET NULL: without it, each code the purge deletes scans the outbox.
    otp_id: Mapped[int | None] = mapped_column(
        ForeignKey("otps.id", ondelete="SET NULL"), index=True
    )
    subject: Mapped[str] = mapped_column(String(255))
    # The bodies hold a live code: cleared once the row is final (sent, expired).
    html_body: Mapped[str | None] = mapped_column(Text)
    text_body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_expires_at: Mapped[datetime | None]
    leased_by: Mapped[str | None] = mapped_column(String(64))
    # A code must not leave after it expired: the worker marks such rows expired instead.
    send_before: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    # SES's MessageId: its feedback events name it (indexed: every event looks its row up).
    provider_message_id: Mapped[str | None] = mapped_column(String(255), index=True)
    # A DeliveryState once the provider accepted the mail; None before (or never sent).
    delivery_state: Mapped[str | None] = mapped_column(String(16))
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class AuditEvent(Base):
    """A security event: searchable by a keyed hash of the email, never the address itself."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_email_hash_occurred", "email_hash", "occurred_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(index=True)
    event: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str | None] = mapped_column(String(32))
    email_hash: Mapped[str] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(IP_MAX_LENGTH))
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(String(100))


SESSION_ID_MAX_LENGTH = 43  # 32 random bytes, base64url without padding
USER_AGENT_MAX_LENGTH = 256


class Session(Base):
    """A login and the refresh tokens it rotates through (DESIGN.md §11)."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(SESSION_ID_MAX_LENGTH), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(32))
    # As seen at login (after TRUSTED_PROXIES), for the owner's list of sessions.
    ip: Mapped[str | None] = mapped_column(String(IP_MAX_LENGTH))
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_MAX_LENGTH))
    amr: Mapped[str] = mapped_column(String(32))  # comma-separated: "pwd" or "pwd,otp"


class RefreshToken(Base):
    """A refresh token, by its keyed hash only (HMAC-SHA256 keyed from SECRET_KEY)."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    # Indexed: rotating a token clears its predecessor's sealed answer, found by this column.
    replaced_by: Mapped[str | None] = mapped_column(String(64), index=True)
    # The pair its one rotation answered, AES-GCM sealed with a key only this token opens:
    # a client retrying a lost answer within REFRESH_REUSE_GRACE_SECONDS gets it again.
    # Cleared when the next token is rotated.
    grace_answer: Mapped[str | None] = mapped_column(Text)


FEEDBACK_DIAGNOSTIC_MAX_LENGTH = 500


class MailEvent(Base):
    """One SES feedback event for one recipient of one outbox row (purged with its row)."""

    __tablename__ = "mail_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    outbox_id: Mapped[int] = mapped_column(
        ForeignKey("email_outbox.id", ondelete="CASCADE"), index=True
    )
    recipient: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH))
    # bounce | complaint | delivery | delivery_delay | reject | rendering_failure
    event_type: Mapped[str] = mapped_column(String(32))
    # bounceType (Permanent...), complaintFeedbackType (abuse...), delayType (MailboxFull...)
    category: Mapped[str | None] = mapped_column(String(64))
    subtype: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str | None] = mapped_column(String(32))
    diagnostic: Mapped[str | None] = mapped_column(String(FEEDBACK_DIAGNOSTIC_MAX_LENGTH))
    # The event's own time (SES's), and when we recorded it.
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    # For a delay: until when SES keeps trying.
    expires_at: Mapped[datetime | None]
    feedback_id: Mapped[str | None] = mapped_column(String(255))
    sqs_message_id: Mapped[str | None] = mapped_column(String(128))
    # SHA-256 over what makes the event itself (type, SES message id, feedbackId or time,
    # recipient): the same event read twice, from SQS or from SNS, is recorded once.
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)


class SuppressedAddress(Base):
    """An address the worker sends nothing to (DESIGN.md §10, suppression list)."""

    __tablename__ = "suppressed_addresses"

    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH), primary_key=True)
    reason: Mapped[str] = mapped_column(String(16))  # a SuppressionReason
    detail: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    # The event that caused it; kept as a plain id (events are purged with their row).
    source_event_id: Mapped[int | None] = mapped_column(Integer)
