"""How the security modules reach their tables (``store/schema.py`` version 2): through the
store's backend, one short transaction per operation, with ``?`` placeholders on both
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


class Db:
    def __init__(self, store: Any) -> None:
        self.backend = store.backend

    @contextmanager
    def write(self) -> Iterator[Any]:
        with self.backend.transaction(write=True) as conn:
            yield _Conn(self.backend, conn)

    @contextmanager
    def read(self) -> Iterator[Any]:
        with self.backend.transaction(write=False) as conn:
            yield _Conn(self.backend, conn)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self.read() as c:
            return c.one(sql, params)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.read() as c:
            return c.all(sql, params)

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self.write() as c:
            return c.run(sql, params)


class _Conn:
    def __init__(self, backend: Any, conn: Any) -> None:
        self.backend = backend
        self.conn = conn
        self.postgres = backend.name == "postgres"

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.backend.execute(self.conn, sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.backend.execute(self.conn, sql, params).fetchall())

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self.backend.execute(self.conn, sql, params)
        return int(cur.rowcount or 0)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.backend.executemany(self.conn, sql, rows)
