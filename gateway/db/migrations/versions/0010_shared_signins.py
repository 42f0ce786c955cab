"""shared sign-in state: browser sessions, OIDC flows, web-target hand-offs and sign-ins,
login throttling (so any node may answer a person's next request)

Revision ID: 0010
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _index(table: str, *columns: str) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        for column in columns:
            batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column], unique=False)


def upgrade() -> None:
    op.create_table(
        "gw_browser_sessions",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("user", sa.String(length=64), nullable=False),
        sa.Column("via", sa.String(length=64), nullable=False),
        sa.Column("methods", sa.Text(), nullable=False),
        sa.Column("signed_in_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_gw_browser_sessions")),
    )
    _index("gw_browser_sessions", "user", "expires_at")
    op.create_table(
        "gw_oidc_flows",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("next_url", sa.Text(), nullable=False),
        sa.Column("binding_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_gw_oidc_flows")),
    )
    _index("gw_oidc_flows", "created_at")
    op.create_table(
        "gw_web_handoffs",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("user", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("grant_id", sa.String(length=40), nullable=False),
        sa.Column("grant_expires_at", _TS, nullable=False),
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("next_path", sa.Text(), nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_gw_web_handoffs")),
    )
    _index("gw_web_handoffs", "expires_at")
    op.create_table(
        "gw_web_logins",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("user", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("grant_id", sa.String(length=40), nullable=False),
        sa.Column("grant_expires_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("ended", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_gw_web_logins")),
    )
    _index("gw_web_logins", "user", "grant_id", "expires_at")
    op.create_table(
        "gw_login_throttle",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("until", _TS, nullable=True),
        sa.Column("last", _TS, nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_gw_login_throttle")),
    )
    _index("gw_login_throttle", "last")


def downgrade() -> None:
    for table in (
        "gw_login_throttle",
        "gw_web_logins",
        "gw_web_handoffs",
        "gw_oidc_flows",
        "gw_browser_sessions",
    ):
        op.drop_table(table)
