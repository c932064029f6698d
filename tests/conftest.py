"""Shared fixtures: every storage test runs on both backends.

PostgreSQL comes from ``SONGKHOE_TEST_PG`` (default: the server at 127.0.0.1:5432, user
postgres). Each test gets its own schema, dropped afterwards. Where no server answers, the
PostgreSQL variants are skipped with a visible reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_URL = os.environ.get("SONGKHOE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("select 1")
        return None
    except Exception as exc:  # any failure to connect means: skip, and say why
        return f"PostgreSQL not reachable at {PG_URL}: {exc}"


_PG_UNAVAILABLE = _pg_available()


def pytest_report_header(config: pytest.Config) -> str:
    return f"postgresql: {_PG_UNAVAILABLE or PG_URL}"


@contextmanager
def pg_schema(options: str = "") -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema (plus ``options``, URL-encoded
    ``-c`` settings), dropped afterwards; skips when PostgreSQL is unavailable."""
    if _PG_UNAVAILABLE:
        pytest.skip(_PG_UNAVAILABLE)
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'create schema "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}{options}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'drop schema if exists "{schema}" cascade')


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    with pg_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'songkhoe.db'}"
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
def store(db_url: str):  # type: ignore[no-untyped-def]
    """An open Store on each backend (fresh schema)."""
    from songkhoe.store import open_store

    s = open_store(db_url)
    try:
        yield s
    finally:
        s.close()
