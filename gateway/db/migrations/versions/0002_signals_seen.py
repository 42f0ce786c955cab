"""signals seen (replay protection for SIEM signals)

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gw_signals_seen",
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("signature", name=op.f("pk_gw_signals_seen")),
    )
    with op.batch_alter_table("gw_signals_seen", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gw_signals_seen_at"), ["at"], unique=False)


def downgrade() -> None:
    op.drop_table("gw_signals_seen")
