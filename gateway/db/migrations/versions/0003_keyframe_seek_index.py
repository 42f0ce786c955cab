"""keyframe seek index: (session_id, t) instead of session_id alone

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rec_keyframes", schema=None) as batch_op:
        batch_op.create_index("ix_rec_keyframes_session_t", ["session_id", "t"], unique=False)
        batch_op.drop_index("ix_rec_keyframes_session_id")


def downgrade() -> None:
    with op.batch_alter_table("rec_keyframes", schema=None) as batch_op:
        batch_op.create_index("ix_rec_keyframes_session_id", ["session_id"], unique=False)
        batch_op.drop_index("ix_rec_keyframes_session_t")
