"""Store fixtures: every store test runs on SQLite and on PostgreSQL (each in a fresh schema).

Import `postgres_url_fixture, store_url_fixture, store_fixture` into a test module to get the
fixtures `postgres_url`, `store_url` and `store` (named apart, so parameters shadow nothing).
PostgreSQL comes from JACKFIELD_TEST_POSTGRES_URL; when it cannot be reached the test is skipped
locally and fails in CI, so a broken CI database never passes silently.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from jackfield.shell.store import Store
from tests.conftest import IN_CI

POSTGRES_URL = os.environ.get(
    "JACKFIELD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@functools.cache
def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or None; asked once per session."""
    engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as e:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {e.__class__.__name__}: {e}"
    finally:
        engine.dispose()
    return None


def _admin(statement: str) -> None:
    engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(statement))
    finally:
        engine.dispose()


@pytest.fixture(name="postgres_url")
def postgres_url_fixture() -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped afterwards."""
    problem = postgres_problem()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"{problem} (CI must provide it: set JACKFIELD_TEST_POSTGRES_URL)")
        pytest.skip(problem)
    schema = f"test_{secrets.token_hex(6)}"
    _admin(f"CREATE SCHEMA {schema}")
    url = sa.make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        _admin(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(
    name="store_url", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def store_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'jackfield.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(name="store")
async def store_fixture(store_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(store_url)
    try:
        yield opened
    finally:
        await opened.close()


def dump(url: str) -> str:
    """Every row of every table and view, as one text (for 'is this value stored anywhere')."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        names = [*inspector.get_table_names(), *inspector.get_view_names()]
        out: list[Any] = []
        with engine.connect() as connection:
            for name in names:
                rows = connection.execute(sa.text(f'SELECT * FROM "{name}"')).all()
                out.append((name, [tuple(r) for r in rows]))
        return repr(out)
    finally:
        engine.dispose()


def query(url: str, sql: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return [dict(r) for r in connection.execute(sa.text(sql)).mappings()]
    finally:
        engine.dispose()
