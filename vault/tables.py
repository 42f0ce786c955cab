"""Tables owned by the vault package (prefix ``vault_``)."""

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

credentials = sa.Table(
    "vault_credentials",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("target", sa.String(80), nullable=False),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),
    sa.Column("public", sa.Text, nullable=False),  # JSON: nothing secret
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.UniqueConstraint("target", "account", name="uq_vault_credentials_target_account"),
)

totp_state = sa.Table(
    "vault_totp_state",
    metadata,
    sa.Column("user", sa.String(64), primary_key=True),
    sa.Column("last_counter", sa.BigInteger, nullable=False),
)
