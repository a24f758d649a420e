"""SES feedback: outbox delivery state, mail events and the suppression list (DESIGN.md §10).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 13:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("email_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivery_state", sa.String(length=16), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_email_outbox_provider_message_id"), ["provider_message_id"], unique=False
        )
    # Rows SES already took before this revision: their fate is not known, but they were accepted.
    op.execute(
        "UPDATE email_outbox SET delivery_state = 'accepted' "
        "WHERE status = 'sent' AND provider_message_id IS NOT NULL"
    )
    op.create_table(
        "mail_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=True),
        sa.Column("subtype", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("diagnostic", sa.String(length=500), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("feedback_id", sa.String(length=255), nullable=True),
        sa.Column("sqs_message_id", sa.String(length=128), nullable=True),
        sa.Column("dedupe_key", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["email_outbox.id"],
            name=op.f("fk_mail_events_outbox_id_email_outbox"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_events")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_mail_events_dedupe_key")),
    )
    with op.batch_alter_table("mail_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mail_events_outbox_id"), ["outbox_id"], unique=False)
    op.create_table(
        "suppressed_addresses",
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_event_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("email", name=op.f("pk_suppressed_addresses")),
    )


def downgrade() -> None:
    op.drop_table("suppressed_addresses")
    with op.batch_alter_table("mail_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mail_events_outbox_id"))
    op.drop_table("mail_events")
    op.execute("UPDATE email_outbox SET status = 'expired' WHERE status = 'suppressed'")
    with op.batch_alter_table("email_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_outbox_provider_message_id"))
        batch_op.drop_column("delivery_state")
