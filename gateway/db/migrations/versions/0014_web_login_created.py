"""web sign-ins know when they were made: ending the sign-ins of a terminated session ends
only those made until then, not one the person made again meanwhile

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gw_web_logins") as batch:
        batch.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gw_web_logins") as batch:
        batch.drop_column("created_at")
