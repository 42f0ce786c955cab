"""Tables owned by the recorder package (prefix ``rec_``)."""

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

recordings = sa.Table(
    "rec_recordings",
    metadata,
    sa.Column("session_id", sa.String(40), primary_key=True),
    sa.Column("path", sa.Text, nullable=False),  # relative to the recordings root
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("duration", sa.Float, nullable=False, default=0.0),  # seconds
    sa.Column("size", sa.BigInteger, nullable=False, default=0),  # bytes on disk
    sa.Column("sha256", sa.String(64), nullable=True),  # of the whole sealed file
    sa.Column("chain_head", sa.String(64), nullable=True),  # last chunk hash
    sa.Column("meta", sa.Text, nullable=False),  # JSON: user, target, account, kind...
    # Copies of meta's user and target, so lists filter by viewer in the query.
    sa.Column("user", sa.String(255), nullable=True, index=True),
    sa.Column("target", sa.String(255), nullable=True, index=True),
    sa.Column("end_reason", sa.Text, nullable=True),
    sa.Column("indexed_to", sa.BigInteger, nullable=False, default=0),  # file offset indexed
    # Which rows of rec_text, rec_keyframes and rec_events are this recording's index: those
    # of generation ``index_generation``. A sealed index is written in batches under a new
    # number (the last one handed out, ``index_next``) and switched to in one short
    # transaction, so no reader sees half of one and no writer waits behind all of it.
    sa.Column("index_generation", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("index_next", sa.Integer, nullable=False, default=0, server_default="0"),
)


def _generation() -> sa.Column[int]:
    """Which index of its recording a row belongs to (``rec_recordings.index_generation``)."""
    return sa.Column("generation", sa.Integer, nullable=False, default=0, server_default="0")


# Searchable text: lines that appeared on screen and command lines typed at a prompt.
text_lines = sa.Table(
    "rec_text",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("session_id", sa.String(40), nullable=False, index=True),
    sa.Column("t", sa.Float, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # screen | command
    sa.Column("line", sa.Text, nullable=False),
    _generation(),
)

# Screen snapshots for seeking: the screen at ``t`` and the file offset replay resumes from.
keyframes = sa.Table(
    "rec_keyframes",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("session_id", sa.String(40), nullable=False),
    sa.Column("t", sa.Float, nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("screen", sa.Text, nullable=False),  # JSON: width, height, lines, cursor
    _generation(),
    # A seek asks for the last keyframe at or before t: an index lookup, not a scan of the
    # thousands of keyframes of a long recording.
    sa.Index("ix_rec_keyframes_session_t", "session_id", "t"),
)

# Timeline items for the viewer and audit: commands, markers, SFTP operations, forwards.
events = sa.Table(
    "rec_events",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("session_id", sa.String(40), nullable=False, index=True),
    sa.Column("t", sa.Float, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("data", sa.Text, nullable=False),  # JSON
    _generation(),
)
