"""index generations: a sealed recording's index is written in batches under a new
generation number and switched to at once, instead of in one long transaction

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_ROWS = ("rec_text", "rec_keyframes", "rec_events")


def upgrade() -> None:
    # Plain ADD COLUMN (no table copy), so the SQLite full-text triggers on rec_text stay.
    with op.batch_alter_table("rec_recordings") as batch:
        batch.add_column(
            sa.Column("index_generation", sa.Integer, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("index_next", sa.Integer, nullable=False, server_default="0"))
    for table in _ROWS:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("generation", sa.Integer, nullable=False, server_default="0")
            )


def downgrade() -> None:
    for table in _ROWS:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("generation")
    with op.batch_alter_table("rec_recordings") as batch:
        batch.drop_column("index_next")
        batch.drop_column("index_generation")
