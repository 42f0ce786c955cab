"""provisioned targets: target mode, UID range, home archive; provisioned things and UIDs

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pol_targets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("provision", sa.String(length=16), nullable=False, server_default="none")
        )
        batch_op.add_column(
            sa.Column("uid_min", sa.Integer(), nullable=False, server_default="50000")
        )
        batch_op.add_column(
            sa.Column("uid_max", sa.Integer(), nullable=False, server_default="59999")
        )
        batch_op.add_column(
            sa.Column("home_archive", sa.String(length=255), nullable=False, server_default="")
        )
    # The defaults only fill existing rows; the package's table declares none.
    with op.batch_alter_table("pol_targets", schema=None) as batch_op:
        batch_op.alter_column("provision", server_default=None)
        batch_op.alter_column("uid_min", server_default=None)
        batch_op.alter_column("uid_max", server_default=None)
        batch_op.alter_column("home_archive", server_default=None)
    op.create_table(
        "prov_items",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("uid", sa.Integer(), nullable=True),
        sa.Column("grant_id", sa.String(length=40), nullable=False),
        sa.Column("user", sa.String(length=255), nullable=False),
        sa.Column("groups", sa.Text(), nullable=False),
        sa.Column("sudo", sa.Text(), nullable=False),
        sa.Column("added_groups", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("live_key", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prov_items")),
        sa.UniqueConstraint("live_key", name=op.f("uq_prov_items_live_key")),
    )
    op.create_index(op.f("ix_prov_items_target"), "prov_items", ["target"])
    op.create_index(op.f("ix_prov_items_grant_id"), "prov_items", ["grant_id"])
    op.create_index(op.f("ix_prov_items_state"), "prov_items", ["state"])
    op.create_table(
        "prov_uids",
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("uid", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("item_id", sa.String(length=40), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("target", "uid", name=op.f("pk_prov_uids")),
    )


def downgrade() -> None:
    op.drop_table("prov_uids")
    op.drop_index(op.f("ix_prov_items_state"), table_name="prov_items")
    op.drop_index(op.f("ix_prov_items_grant_id"), table_name="prov_items")
    op.drop_index(op.f("ix_prov_items_target"), table_name="prov_items")
    op.drop_table("prov_items")
    with op.batch_alter_table("pol_targets", schema=None) as batch_op:
        batch_op.drop_column("home_archive")
        batch_op.drop_column("uid_max")
        batch_op.drop_column("uid_min")
        batch_op.drop_column("provision")
