"""tool_calls.confirmation: the question a caller was asked before a call, and the answer.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # JSON text ({"answer": ..., "question": ...}), masked like `result`; NULL: nobody was asked
    op.add_column("tool_calls", sa.Column("confirmation", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tool_calls") as batch:  # SQLite rebuilds the table
        batch.drop_column("confirmation")
