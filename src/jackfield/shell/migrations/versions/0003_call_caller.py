"""tool_calls.caller and tool_calls.room: who a call was made for, and in which room.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the caller context's identity and room: the only context values the audit keeps (every
    # other one is a secret); NULL for calls of sessions without a caller and for older rows
    op.add_column("tool_calls", sa.Column("caller", sa.String(255), nullable=True))
    op.add_column("tool_calls", sa.Column("room", sa.String(255), nullable=True))
    op.create_index("ix_tool_calls_caller", "tool_calls", ["caller"])


def downgrade() -> None:
    op.drop_index("ix_tool_calls_caller", table_name="tool_calls")
    with op.batch_alter_table("tool_calls") as batch:  # SQLite rebuilds the table
        batch.drop_column("room")
        batch.drop_column("caller")
