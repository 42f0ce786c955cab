"""node keys: each node's SSH host key fingerprint and assertion key id, so nodes can tell
when a cluster does not share them

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gw_nodes") as batch:
        batch.add_column(sa.Column("host_key", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("assertion_kid", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gw_nodes") as batch:
        batch.drop_column("assertion_kid")
        batch.drop_column("host_key")
