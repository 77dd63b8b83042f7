"""The initial schema: objects, server_state, reconcile_passes, tool_calls, view mcp_servers.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The view differs per dialect only in how it reads JSON. One row per server and instance that
# reports it; a server no instance reports yet shows with a NULL status.
_VIEW = {
    "sqlite": """
CREATE VIEW mcp_servers AS
SELECT o.name AS name,
       json_extract(o.document, '$.spec.transport') AS transport,
       COALESCE(json_extract(o.document, '$.spec.url'),
                json_extract(o.document, '$.spec.command')) AS url_or_command,
       json_extract(o.document, '$.spec.description') AS description,
       json_extract(o.document, '$.spec.enabled') AS enabled,
       s.instance_id AS instance_id,
       s.state AS status,
       s.last_connected AS last_connected,
       json_object('capabilities', json(s.capabilities),
                   'tool_count', json_array_length(s.tools)) AS metadata
FROM objects AS o LEFT JOIN server_state AS s ON s.name = o.name
WHERE o.kind = 'MCPServer'
""",
    "postgresql": """
CREATE VIEW mcp_servers AS
SELECT o.name AS name,
       o.document -> 'spec' ->> 'transport' AS transport,
       COALESCE(o.document -> 'spec' ->> 'url', o.document -> 'spec' ->> 'command')
           AS url_or_command,
       o.document -> 'spec' ->> 'description' AS description,
       (o.document -> 'spec' ->> 'enabled')::boolean AS enabled,
       s.instance_id AS instance_id,
       s.state AS status,
       s.last_connected AS last_connected,
       json_build_object('capabilities', s.capabilities,
                         'tool_count', json_array_length(s.tools)) AS metadata
FROM objects AS o LEFT JOIN server_state AS s ON s.name = o.name
WHERE o.kind = 'MCPServer'
""",
}


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "objects",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("spec_hash", sa.String(80), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("observed_generation", sa.Integer, nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("revision", sa.String(80), nullable=False),
        sa.Column("updated_at", _when(), nullable=False),
    )
    op.create_table(
        "server_state",
        sa.Column("instance_id", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("transport", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("since", _when(), nullable=False),
        sa.Column("last_connected", _when(), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("restarts", sa.Integer, nullable=False),
        sa.Column("tools", sa.JSON, nullable=False),
        sa.Column("capabilities", sa.JSON, nullable=True),
        sa.Column("updated_at", _when(), nullable=False),
    )
    op.create_table(
        "reconcile_passes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("instance_id", sa.String(255), nullable=False),
        sa.Column("revision", sa.String(80), nullable=False),
        sa.Column("git_commit", sa.String(64), nullable=True),
        sa.Column("started_at", _when(), nullable=False),
        sa.Column("finished_at", _when(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("changes", sa.JSON, nullable=False),
        sa.Column("errors", sa.JSON, nullable=False),
    )
    op.create_index("ix_reconcile_passes_finished_at", "reconcile_passes", ["finished_at"])
    op.create_table(
        "tool_calls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", _when(), nullable=False),
        sa.Column("agent_session", sa.String(255), nullable=True),
        sa.Column("hub_session", sa.String(255), nullable=True),
        sa.Column("server", sa.String(63), nullable=False),
        sa.Column("tool", sa.String(255), nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("bytes_in", sa.Integer, nullable=False),
        sa.Column("bytes_out", sa.Integer, nullable=False),
        sa.Column("arguments_hash", sa.String(80), nullable=False),
        sa.Column("arguments", sa.Text, nullable=True),
        sa.Column("result", sa.Text, nullable=True),
    )
    op.create_index("ix_tool_calls_at", "tool_calls", ["at"])
    op.create_index("ix_tool_calls_server", "tool_calls", ["server"])
    op.execute(_VIEW[op.get_bind().dialect.name])


def downgrade() -> None:
    op.execute("DROP VIEW mcp_servers")
    for table in ("tool_calls", "reconcile_passes", "server_state", "objects"):
        op.drop_table(table)
