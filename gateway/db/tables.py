"""Tables owned by the gateway package (prefix ``gw_``)."""

from __future__ import annotations

import sqlalchemy as sa

# The schema this release needs: its last migration's revision. Written here rather than read
# from the migrations, so that starting a node does not import Alembic; a test checks that
# the two agree. A node refuses an older schema (``gateway.services.check_database``).
SCHEMA_REVISION = "0014"
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

audit_events = sa.Table(
    "gw_audit_events",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("node", sa.String(255), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("action", sa.String(100), nullable=False, index=True),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("details", sa.Text, nullable=False),  # canonical JSON
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

# One row (id = 1) holding the chain head; every append locks it, so appends serialize.
audit_head = sa.Table(
    "gw_audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

sessions = sa.Table(
    "gw_sessions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # ssh | http
    sa.Column("user", sa.String(255), nullable=False, index=True),
    sa.Column("target", sa.String(255), nullable=False, index=True),
    sa.Column("account", sa.String(255), nullable=False),
    sa.Column("grant_id", sa.String(40), nullable=True, index=True),
    sa.Column("node", sa.String(255), nullable=False),
    sa.Column("client_addr", sa.String(255), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True, index=True),
    sa.Column("end_reason", sa.String(255), nullable=True),
    sa.Column("bytes_up", sa.BigInteger, nullable=False, default=0),  # client -> target
    sa.Column("bytes_down", sa.BigInteger, nullable=False, default=0),  # target -> client
)

# Cross-node fan-out: kills and access changes. Rows are hints for live nodes; the database
# stays the source of truth (nodes re-check sessions when one arrives).
cluster_events = sa.Table(
    "gw_cluster_events",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("origin", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
)

# Signatures of accepted SIEM signals, so a replay is refused on every node. Rows older than
# the timestamp window are pruned: a replay that old fails the window check anyway.
signals_seen = sa.Table(
    "gw_signals_seen",
    metadata,
    sa.Column("signature", sa.String(64), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
)

# Provisioned things on targets (prefix ``prov_``): one row per ephemeral account or
# elevation, moving creating -> active -> revoking -> removed | failed. ``live_key`` is
# "<target>/<kind>/<account>/<grant>" while the row is not terminal and NULL after, so two
# nodes can never both create the same thing.
prov_items = sa.Table(
    "prov_items",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("target", sa.String(64), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # account | elevation
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("uid", sa.Integer, nullable=True),
    sa.Column("grant_id", sa.String(40), nullable=False, index=True),
    sa.Column("user", sa.String(255), nullable=False),
    sa.Column("groups", sa.Text, nullable=False),  # JSON list
    sa.Column("sudo", sa.Text, nullable=False),  # JSON list
    sa.Column("added_groups", sa.Text, nullable=False),  # JSON: what elevation added
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("reason", sa.String(255), nullable=True),  # why it is being taken away
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("owner", sa.String(255), nullable=True),  # node working on it
    sa.Column("live_key", sa.String(255), nullable=True, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# Every UID ever handed out on a target; rows are never deleted, so no UID is given twice
# (a new account never inherits a deleted one's files).
prov_uids = sa.Table(
    "prov_uids",
    metadata,
    sa.Column("target", sa.String(64), primary_key=True),
    sa.Column("uid", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("item_id", sa.String(40), nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

# Where each audit sink (and the notification dispatcher) has got to: the last sequence
# number delivered, and which node streams it now (a lease, so one node streams per sink).
stream_cursors = sa.Table(
    "gw_stream_cursors",
    metadata,
    sa.Column("name", sa.String(80), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# The notification outbox: one row per (channel, notice), written in the transaction that
# moves the dispatcher's cursor; sent, retried with backoff, or kept as a dead letter.
notifications = sa.Table(
    "gw_notifications",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),  # the idempotency key
    sa.Column("event", sa.String(40), nullable=False),
    sa.Column("thread", sa.String(80), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # JSON: the notice and its recipients
    sa.Column("state", sa.String(16), nullable=False, index=True),  # pending | sent | dead
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("channel", "key", name="uq_gw_notifications_channel_key"),
)

# People who sign in through an OpenID provider: which user a provider's subject is, and
# whether the provider has stopped recognising them (their refresh token is in the vault).
oidc_identities = sa.Table(
    "gw_oidc_identities",
    metadata,
    sa.Column("provider", sa.String(32), primary_key=True),
    sa.Column("subject", sa.String(255), primary_key=True),
    sa.Column("user", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("signed_in_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("deprovisioned_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("deprovision_reason", sa.Text, nullable=True),
)

# SSH device logins waiting for their approval in a browser (gateway.oidc.device); rows are
# removed some minutes after they expire.
device_logins = sa.Table(
    "gw_device_logins",
    metadata,
    sa.Column("code", sa.String(16), primary_key=True),
    sa.Column("user", sa.String(64), nullable=False),
    sa.Column("address", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),  # pending|approved|denied|cancelled
    sa.Column("methods", sa.Text, nullable=False),  # JSON list: the IdP sign-in's amr, acr
)

# What a load balancer may send to any node (``gateway.signins``): browsers signed in to the
# gateway, keyed by the SHA-256 of the cookie value (never the value); removed at sign-out,
# when the user is locked or disabled, and some time after they expire.
browser_sessions = sa.Table(
    "gw_browser_sessions",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("user", sa.String(64), nullable=False, index=True),
    sa.Column("via", sa.String(64), nullable=False),  # password | oidc:<provider>
    sa.Column("methods", sa.Text, nullable=False),  # JSON list: the IdP sign-in's amr, acr
    sa.Column("signed_in_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

# OpenID sign-ins in progress, keyed by the SHA-256 of ``state``; the nonce and the PKCE
# verifier are derived from the browser's binding cookie, so no row holds a secret.
oidc_flows = sa.Table(
    "gw_oidc_flows",
    metadata,
    sa.Column("state_hash", sa.String(64), primary_key=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("redirect_uri", sa.Text, nullable=False),
    sa.Column("next_url", sa.Text, nullable=False),
    sa.Column("binding_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

# Web-target hand-off codes (single use), keyed by the SHA-256 of the code.
web_handoffs = sa.Table(
    "gw_web_handoffs",
    metadata,
    sa.Column("code_hash", sa.String(64), primary_key=True),
    sa.Column("user", sa.String(64), nullable=False),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("grant_id", sa.String(40), nullable=False),
    sa.Column("grant_expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("state_hash", sa.String(64), nullable=False),
    sa.Column("next_path", sa.Text, nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

# Sign-ins to web targets (the target cookie), keyed by the SHA-256 of the cookie value;
# ``ended`` holds the reason once their session was terminated anywhere in the cluster.
web_logins = sa.Table(
    "gw_web_logins",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("user", sa.String(64), nullable=False, index=True),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("grant_id", sa.String(40), nullable=False, index=True),
    sa.Column("grant_expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("ended", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),  # None: before 0014
)

# Failed password logins per throttle key (``gateway.throttle``), shared by every node.
login_throttle = sa.Table(
    "gw_login_throttle",
    metadata,
    sa.Column("key", sa.String(400), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last", sa.DateTime(timezone=True), nullable=False, index=True),
)

# Every node (each worker process of a ``lockgate serve`` is one) and its last heartbeat.
# ``parent`` is the serve process's node name (the row's own name when it runs alone); a
# row silent for ``server.node_lost_after`` is declared lost by another node, which ends its
# sessions. A node that stops cleanly sets ``stopped_at``.
nodes = sa.Table(
    "gw_nodes",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("parent", sa.String(255), nullable=False, index=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("workers", sa.Integer, nullable=False),  # how many the parent runs
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("lost_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("lost_by", sa.String(255), nullable=True),
    sa.Column("lost_reason", sa.String(64), nullable=True),  # node lost | worker lost
    # What a cluster must share (gateway/cluster/liveness.py compares them): the SSH host
    # key's SHA256 fingerprint and the identity-assertion key's kid.
    sa.Column("host_key", sa.String(128), nullable=True),
    sa.Column("assertion_kid", sa.String(128), nullable=True),
)

# Audit events that were owed through a database outage (gateway/owed.py) and have since been
# written: the replay of a journal line whose first replay already landed finds its id here.
owed_applied = sa.Table(
    "gw_owed_applied",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)
