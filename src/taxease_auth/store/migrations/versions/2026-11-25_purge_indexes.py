"""Indexes for the hot queries found missing: the outbox claim's full order, the retention
purge's email_outbox.otp_id (ON DELETE SET NULL) and otps.expires_at.

- The claim orders by (next_attempt_at, id): with id in the index, PostgreSQL reads the first
  due row straight from it instead of sorting every row that ties on next_attempt_at.
- Without an index on email_outbox.otp_id, every code the purge deletes makes PostgreSQL scan
  the whole outbox to set its mails' otp_id to NULL (measured: 7 ms per code at 100,000
  outbox rows, so purging a day of codes took minutes); with it, one index lookup.
- otps.expires_at lets the hourly purge read the slice of expired codes, not the whole table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 18:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("email_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_email_outbox_status_next_attempt")
        batch_op.create_index(
            "ix_email_outbox_status_next_attempt_id",
            ["status", "next_attempt_at", "id"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_email_outbox_otp_id"), ["otp_id"], unique=False)
    with op.batch_alter_table("otps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_otps_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("otps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_otps_expires_at"))
    with op.batch_alter_table("email_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_outbox_otp_id"))
        batch_op.drop_index("ix_email_outbox_status_next_attempt_id")
        batch_op.create_index(
            "ix_email_outbox_status_next_attempt", ["status", "next_attempt_at"], unique=False
        )
