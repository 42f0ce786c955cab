"""recordings carry their user and target as columns, so lists filter in the query

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rec_recordings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("target", sa.String(length=255), nullable=True))
        batch_op.create_index(batch_op.f("ix_rec_recordings_user"), ["user"], unique=False)
        batch_op.create_index(batch_op.f("ix_rec_recordings_target"), ["target"], unique=False)
    table = sa.table(
        "rec_recordings",
        sa.column("session_id", sa.String),
        sa.column("meta", sa.Text),
        sa.column("user", sa.String),
        sa.column("target", sa.String),
    )
    bind = op.get_bind()
    for row in bind.execute(sa.select(table.c.session_id, table.c.meta)).all():
        meta = json.loads(row.meta or "{}")
        bind.execute(
            table.update()
            .where(table.c.session_id == row.session_id)
            .values(
                user=str(meta.get("user", ""))[:255] or None,
                target=str(meta.get("target", ""))[:255] or None,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("rec_recordings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rec_recordings_target"))
        batch_op.drop_index(batch_op.f("ix_rec_recordings_user"))
        batch_op.drop_column("target")
        batch_op.drop_column("user")
