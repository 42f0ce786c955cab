"""Tables owned by the policy package (prefix ``pol_``)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Time = sa.DateTime(timezone=True)

users = sa.Table(
    "pol_users",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("roles", sa.Text, nullable=False),  # JSON list
    sa.Column("password_hash", sa.Text, nullable=True),
    sa.Column("totp_enabled", sa.Boolean, nullable=False, default=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", Time, nullable=False),
)

user_keys = sa.Table(
    "pol_user_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "user_id",
        sa.String(40),
        sa.ForeignKey("pol_users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("public_key", sa.Text, nullable=False),  # "TYPE BASE64" (comment dropped)
)

targets = sa.Table(
    "pol_targets",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("host", sa.String(255), nullable=True),
    sa.Column("port", sa.Integer, nullable=False),
    sa.Column("host_key", sa.Text, nullable=True),
    sa.Column("url", sa.Text, nullable=True),
    sa.Column("tls_verify", sa.Boolean, nullable=False, default=True),
    sa.Column("labels", sa.Text, nullable=False),  # JSON object
    sa.Column("accounts", sa.Text, nullable=False),  # JSON list
    sa.Column("default_account", sa.String(64), nullable=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("tls_ca", sa.Text, nullable=True),  # PEM bundle (web targets)
    sa.Column("tls_fingerprint", sa.String(64), nullable=True),  # SHA-256 hex
    sa.Column("preserve_host", sa.Boolean, nullable=False, default=False),
    sa.Column("sensitive_params", sa.Text, nullable=False, default="[]"),  # JSON list
    sa.Column("record_bodies", sa.Integer, nullable=False, default=0),
    sa.Column("provision", sa.String(16), nullable=False, default="none"),
    sa.Column("uid_min", sa.Integer, nullable=False, default=50000),
    sa.Column("uid_max", sa.Integer, nullable=False, default=59999),
    sa.Column("home_archive", sa.String(255), nullable=False, default=""),
)

requests = sa.Table(
    "pol_requests",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("user", sa.String(64), nullable=False, index=True),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("duration_s", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("ticket", sa.String(128), nullable=False),
    sa.Column("ticket_summary", sa.Text, nullable=False),  # the ticket system's answer
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("approvals", sa.Text, nullable=False),  # JSON list of decisions
    sa.Column("grant_id", sa.String(40), nullable=True),
    sa.Column("extends_grant", sa.String(40), nullable=True),
    sa.Column("break_glass", sa.Boolean, nullable=False, default=False),
    sa.Column("version", sa.Integer, nullable=False),
)

grants = sa.Table(
    "pol_grants",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("user", sa.String(64), nullable=False, index=True),
    sa.Column("target", sa.String(64), nullable=False, index=True),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("not_before", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("request_id", sa.String(40), nullable=False),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("revoked_at", Time, nullable=True),
    sa.Column("revoked_by", sa.String(64), nullable=True),
    sa.Column("revoke_reason", sa.Text, nullable=True),
    sa.Column("break_glass", sa.Boolean, nullable=False, default=False),
    sa.Column("version", sa.Integer, nullable=False),
)

locks = sa.Table(
    "pol_locks",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("name", sa.String(64), nullable=False, index=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=True),
    sa.Column("lifted_at", Time, nullable=True),
    sa.Column("lifted_by", sa.String(64), nullable=True),
)

tokens = sa.Table(
    "pol_api_tokens",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("user", sa.String(64), nullable=False, index=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),  # SHA-256 hex of the secret part
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=True),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
)
