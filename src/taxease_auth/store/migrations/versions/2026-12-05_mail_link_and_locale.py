"""The mail link and the account's language (DESIGN.md §12): each code row may carry the keyed
hash of its link's token, and each account the locale its mail is written in.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 16:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("otps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("link_token_hash", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_otps_link_token_hash", ["link_token_hash"], unique=False)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("locale", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("locale")
    with op.batch_alter_table("otps", schema=None) as batch_op:
        batch_op.drop_index("ix_otps_link_token_hash")
        batch_op.drop_column("link_token_hash")
