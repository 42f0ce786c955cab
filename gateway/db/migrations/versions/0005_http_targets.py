"""web targets carry their upstream TLS, Host and recording settings

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pol_targets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tls_ca", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("tls_fingerprint", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("preserve_host", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("sensitive_params", sa.Text(), nullable=False, server_default="[]")
        )
        batch_op.add_column(
            sa.Column("record_bodies", sa.Integer(), nullable=False, server_default="0")
        )
    # The defaults only fill existing rows; the package's table declares none.
    with op.batch_alter_table("pol_targets", schema=None) as batch_op:
        batch_op.alter_column("preserve_host", server_default=None)
        batch_op.alter_column("sensitive_params", server_default=None)
        batch_op.alter_column("record_bodies", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("pol_targets", schema=None) as batch_op:
        batch_op.drop_column("record_bodies")
        batch_op.drop_column("sensitive_params")
        batch_op.drop_column("preserve_host")
        batch_op.drop_column("tls_fingerprint")
        batch_op.drop_column("tls_ca")
