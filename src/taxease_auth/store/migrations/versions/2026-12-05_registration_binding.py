"""Registration binding (DESIGN.md §11): each registration's code row carries its
registration id, and an address verified without a password has none (password_hash NULL).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 13:15:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("otps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("registration_id", sa.String(length=32), nullable=True))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column("password_hash", existing_type=sa.String(length=255), nullable=True)


def downgrade() -> None:
    # An account verified without a password cannot go back to a NOT NULL column: it gets
    # an empty hash, which never verifies (the owner sets one through the reset flow).
    op.execute("UPDATE users SET password_hash = '' WHERE password_hash IS NULL")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column("password_hash", existing_type=sa.String(length=255), nullable=False)
    with op.batch_alter_table("otps", schema=None) as batch_op:
        batch_op.drop_column("registration_id")
