"""nodes: one heartbeat row per node (each worker of a serve process is one)

Revision ID: 0009
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gw_nodes",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("parent", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("workers", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lost_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lost_by", sa.String(length=255), nullable=True),
        sa.Column("lost_reason", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_gw_nodes")),
    )
    op.create_index(op.f("ix_gw_nodes_parent"), "gw_nodes", ["parent"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_gw_nodes_parent"), table_name="gw_nodes")
    op.drop_table("gw_nodes")
