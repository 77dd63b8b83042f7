"""Alembic environment: migrations always run on the connection `store.migrate` hands over."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through jackfield.shell.store.migrate, not the alembic CLI")

context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
