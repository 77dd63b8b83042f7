"""Alembic migrations of the store, run by `Store.open` (no alembic.ini: see store.migrate)."""
