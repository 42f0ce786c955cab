"""OpenID Connect identities: provider subject -> user, and deprovisioning state; SSH device
logins; credential kinds up to 32 characters (oidc_client_secret, oidc_refresh_token)

Revision ID: 0007
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vault_credentials", schema=None) as batch_op:
        batch_op.alter_column(
            "kind", existing_type=sa.String(length=16), type_=sa.String(length=32)
        )
    op.create_table(
        "gw_oidc_identities",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("user", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signed_in_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deprovisioned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deprovision_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("provider", "subject", name=op.f("pk_gw_oidc_identities")),
    )
    with op.batch_alter_table("gw_oidc_identities", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gw_oidc_identities_user"), ["user"], unique=False)

    op.create_table(
        "gw_device_logins",
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("user", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("methods", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_gw_device_logins")),
    )
    with op.batch_alter_table("gw_device_logins", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_gw_device_logins_created_at"), ["created_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("gw_device_logins")
    op.drop_table("gw_oidc_identities")
    with op.batch_alter_table("vault_credentials", schema=None) as batch_op:
        batch_op.alter_column(
            "kind", existing_type=sa.String(length=32), type_=sa.String(length=16)
        )
