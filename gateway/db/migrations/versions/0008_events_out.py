"""events out: audit stream cursors, the notification outbox, ticket summaries

Revision ID: 0008
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gw_stream_cursors",
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_gw_stream_cursors")),
    )

    op.create_table(
        "gw_notifications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("thread", sa.String(length=80), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gw_notifications")),
        sa.UniqueConstraint("channel", "key", name="uq_gw_notifications_channel_key"),
    )
    with op.batch_alter_table("gw_notifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gw_notifications_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_gw_notifications_next_at"), ["next_at"], unique=False)
    with op.batch_alter_table("pol_requests", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("ticket_summary", sa.Text(), nullable=False, server_default="")
        )
    # The default only fills existing rows; the package's table declares none.
    with op.batch_alter_table("pol_requests", schema=None) as batch_op:
        batch_op.alter_column("ticket_summary", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("pol_requests", schema=None) as batch_op:
        batch_op.drop_column("ticket_summary")
    op.drop_table("gw_notifications")
    op.drop_table("gw_stream_cursors")
