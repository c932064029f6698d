"""Database backends: SQLite (embedded default, WAL) and PostgreSQL (production, psycopg 3).

Both expose the same small surface to the store: a transaction context yielding a DB-API
connection-like object, ``?``-placeholder SQL (rewritten for psycopg), bulk row loading
(``executemany`` batches on SQLite, ``COPY`` on PostgreSQL) and schema creation/migration.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from .schema import POSTGRES_TYPES, SCHEMA_VERSION, SQLITE_TYPES, Types, migration_statements

Row = Sequence[Any]


class Backend:
    """What the store needs from a database."""

    name: str
    types: Types

    def transaction(self, *, write: bool) -> Any:  # context manager yielding a connection
        raise NotImplementedError

    def execute(self, conn: Any, sql: str, params: Sequence[Any] = (), *,
                prepare: bool | None = None) -> Any:
        """Run ``sql`` (``?`` placeholders); ``prepare``: PostgreSQL's choice of a prepared
        statement (None: after the statement's second run; False: planned for its values
        every time)."""
        raise NotImplementedError

    def executemany(self, conn: Any, sql: str, rows: Iterable[Row]) -> None:
        raise NotImplementedError

    def load_rows(self, conn: Any, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """Insert many rows the fastest way the database offers."""
        placeholders = ", ".join("?" * len(columns))
        self.executemany(conn, f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})",
                         rows)

    def allocate_rids(self, conn: Any, n: int, above: int = 0) -> list[int]:
        """``n`` fresh resource row ids, all greater than ``above`` where that matters."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def refresh_statistics(self) -> None:
        """After a bulk load: the planner's statistics brought up to the data (nothing on
        SQLite, whose statements are written for a database without statistics)."""

    def duplicate_key(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a row refused for a key another transaction committed while
        this one wrote (never on SQLite, whose writers take turns)."""
        return False

    def vacuum(self, tables: Sequence[str]) -> None:
        """After a run that replaced many rows of ``tables``: their dead row versions removed
        and their statistics refreshed, as autovacuum would in its own time (nothing on
        SQLite, which reuses freed pages as it writes and plans without statistics)."""

    def migrate(self) -> None:
        """Create or upgrade the schema (refuses a newer one)."""
        with self.transaction(write=True) as conn:
            self.execute(conn, "CREATE TABLE IF NOT EXISTS schema_meta "
                               "(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = self.execute(conn, "SELECT value FROM schema_meta WHERE key = 'version'").fetchone()
            current = int(row[0]) if row else 0
            for statement in migration_statements(current, self.types):
                self.execute(conn, statement)
            if current != SCHEMA_VERSION:
                self.execute(conn, "DELETE FROM schema_meta WHERE key = 'version'")
                self.execute(conn, "INSERT INTO schema_meta (key, value) VALUES ('version', ?)",
                             (str(SCHEMA_VERSION),))


class SqliteBackend(Backend):
    """SQLite in WAL mode; a small connection pool; writers serialised by BEGIN IMMEDIATE.

    Writers queue on a lock of their own before ``BEGIN IMMEDIATE`` — a thread lock within a
    process and ``flock`` on ``<db>-writer.lock`` across processes — so a waiting writer wakes
    the moment the lock is free, instead of SQLite's busy handler polling with growing sleeps.

    Durability: ``synchronous=NORMAL`` — a commit survives a crash of the process (the WAL is
    written), and is on disk after the next checkpoint's fsync. Checkpoints run in a background
    thread each second instead of inside whichever commit crosses SQLite's threshold, which
    halves the commit time of a write (measured: 1.9 → 1.0 ms for a 17-resource Bundle).
    """

    CHECKPOINT_SECONDS = 1.0
    #: WAL size above which the writer restarts the log (``_restart_large_wal``): a bulk load
    #: of 100,000 people grew it to 9.9 GB beside a 2 GB database
    WAL_RESTART_BYTES = 256 << 20
    WAL_KEPT_BYTES = 64 << 20  # ``journal_size_limit``: what a restarted WAL keeps on disk
    #: how long a restart may wait for older readers (holding writers back), and the longest
    #: pause before trying again after restarts that could not finish (1 s, doubling)
    RESTART_WAIT_SECONDS = 2.0
    RESTART_BACKOFF_SECONDS = 60.0

    name = "sqlite"
    types = SQLITE_TYPES

    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._idle: list[sqlite3.Connection] = []  # most recently used last: its cache is warm
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._writer = threading.Lock()
        self._writer_file = None if path == ":memory:" else open(f"{path}-writer.lock", "a")
        self._checkpointer: threading.Thread | None = None
        self._next_restart = 0.0  # (monotonic) no restart of the WAL before then
        self._restart_pause = 1.0  # seconds before the next try after one that failed
        self._checkpointing = threading.Lock()  # a restart waits for this process's pass

    def _checkpoint_loop(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=60.0)
        try:
            while not self._closing.wait(self.CHECKPOINT_SECONDS):
                with self._checkpointing:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def _restart_large_wal(self, conn: sqlite3.Connection) -> None:
        """Right after a commit, in the writers' turn: past ``WAL_RESTART_BYTES`` the log is
        restarted. While writers commit without pause, the passive checkpoints never reach
        the end of the log, so it never starts over; ``RESTART`` copies what they have not,
        with no writer running, and the next writer begins the WAL anew (truncated to
        ``WAL_KEPT_BYTES``). It waits for this process's checkpointer thread to finish its
        pass, and at most ``RESTART_WAIT_SECONDS`` for older readers; after one that could
        not finish the next waits 1 s, then twice as long each time up to
        ``RESTART_BACKOFF_SECONDS``, so a long reader does not stall writers again and again.
        (Done by the writer, not by the checkpointer thread: queued for the writers' turn,
        that thread waited behind writers taking it back to back, and the WAL still reached
        2 GB.)"""
        if self.path == ":memory:" or time.monotonic() < self._next_restart:
            return
        try:
            if os.path.getsize(f"{self.path}-wal") <= self.WAL_RESTART_BYTES:
                return
        except OSError:
            return
        conn.execute(f"PRAGMA busy_timeout={round(self.RESTART_WAIT_SECONDS * 1000)}")
        try:
            with self._checkpointing:
                busy = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
        except sqlite3.OperationalError:  # locked past the wait
            busy = 1
        finally:
            conn.execute("PRAGMA busy_timeout=60000")
        if busy:
            self._next_restart = time.monotonic() + self._restart_pause
            self._restart_pause = min(self._restart_pause * 2, self.RESTART_BACKOFF_SECONDS)
        else:
            self._restart_pause = 1.0

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=60.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA mmap_size=1073741824")  # pages shared through the OS, not per connection
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
        conn.execute(f"PRAGMA journal_size_limit={self.WAL_KEPT_BYTES}")
        with self._lock:
            self._all.append(conn)
            if self._checkpointer is None and self.path != ":memory:":
                self._checkpointer = threading.Thread(target=self._checkpoint_loop,
                                                      name="songkhoe-checkpoint", daemon=True)
                self._checkpointer.start()
        return conn

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """BEGIN … COMMIT on a pooled connection; writers one at a time (see the class)."""
        if not write:
            with self._begin(write=False) as conn:
                yield conn
            return
        with self._writer:
            if self._writer_file is not None:
                fcntl.flock(self._writer_file, fcntl.LOCK_EX)
            try:
                with self._begin(write=True) as conn:
                    yield conn
            finally:
                if self._writer_file is not None:
                    fcntl.flock(self._writer_file, fcntl.LOCK_UN)

    @contextmanager
    def _begin(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """A connection from a small LIFO pool (not one per thread: a server's thread pool
        would otherwise keep dozens of cold page caches), inside BEGIN … COMMIT."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            if write:
                self._restart_large_wal(conn)
        finally:
            with self._lock:
                self._idle.append(conn)

    def execute(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any] = (), *,
                prepare: bool | None = None) -> Any:
        return conn.execute(sql, params)

    def executemany(self, conn: sqlite3.Connection, sql: str, rows: Iterable[Row]) -> None:
        conn.executemany(sql, rows)

    def allocate_rids(self, conn: sqlite3.Connection, n: int, above: int = 0) -> list[int]:
        # The caller holds SQLite's single write lock (BEGIN IMMEDIATE) and every insert takes
        # its rid from here, so ids above both MAX(rid) and those already handed out in this
        # transaction (``above``, possibly not yet inserted) are free.
        top = conn.execute("SELECT COALESCE(MAX(rid), 0) FROM resources").fetchone()[0]
        start = max(top, above) + 1
        return list(range(start, start + n))

    def close(self) -> None:
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        with self._lock:
            if self._all:
                self._all[0].execute("PRAGMA wal_checkpoint(PASSIVE)")
            for conn in self._all:
                conn.close()
            self._all.clear()
            self._idle.clear()
        if self._writer_file is not None:
            self._writer_file.close()


@lru_cache(maxsize=2048)
def _pg_numbered(sql: str) -> str:
    """``?`` placeholders → PostgreSQL's ``$1``, ``$2``… (the store's SQL has no ``?``
    literals)."""
    parts = sql.split("?")
    return "".join(part + (f"${n}" if n < len(parts) else "")
                   for n, part in enumerate(parts, 1))


class PostgresBackend(Backend):
    """PostgreSQL through a psycopg 3 connection pool, READ COMMITTED with row locks."""

    name = "postgres"
    types = POSTGRES_TYPES

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        from psycopg import RawCursor
        from psycopg_pool import ConnectionPool

        self._raw_cursor = RawCursor
        self.url = url
        self._types: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        self.pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True,
                                   kwargs={"autocommit": True, "prepare_threshold": 2},
                                   configure=_no_jit)

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Any]:
        """A write is one explicit transaction (BEGIN … COMMIT, rolled back on error); a read
        runs in autocommit, so a read by id costs one round trip instead of three."""
        with self.pool.connection() as conn:
            if write:
                with conn.transaction():
                    yield conn
            else:
                yield conn

    def execute(self, conn: Any, sql: str, params: Sequence[Any] = (), *,
                prepare: bool | None = None) -> Any:
        """Results in binary format: stored JSON (``bytea``) arrives as its bytes instead of
        hex text the server encodes and the client decodes (a programme block's records,
        7 MB: 71 → 54 ms). The statement goes with PostgreSQL's own ``$n`` placeholders
        (``RawCursor``): psycopg parses a ``%s`` statement for its placeholders on every
        call when it has more than 50 parameters — every statement over a chunk of 500
        rows — and that parse was ~4% of a programme run's CPU."""
        return self._raw_cursor(conn).execute(_pg_numbered(sql), params, binary=True,
                                              prepare=prepare)

    def executemany(self, conn: Any, sql: str, rows: Iterable[Row]) -> None:
        with self._raw_cursor(conn) as cur:
            cur.executemany(_pg_numbered(sql), rows)

    def load_rows(self, conn: Any, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """``COPY … FROM STDIN`` in binary format: each value goes as its bytes, where the
        text format sent stored JSON (``bytea``) hex-encoded for the server to decode again
        (6,700 history rows of a programmes block: 163–198 → 74–89 ms)."""
        types = self._column_types(conn, table, tuple(columns))
        with conn.cursor() as cur:
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
                          ) as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)

    def _column_types(self, conn: Any, table: str, columns: tuple[str, ...]) -> list[str]:
        """The SQL types of ``columns`` of ``table`` (as the connection's search path finds
        it), which a binary ``COPY`` must be given; read once per backend."""
        key = (table, columns)
        found = self._types.get(key)
        if found is None:
            named = dict(conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                "attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                (table,)).fetchall())
            found = self._types[key] = [named[c] for c in columns]
        return found

    def allocate_rids(self, conn: Any, n: int, above: int = 0) -> list[int]:
        rows = conn.execute("SELECT nextval('rid_seq') FROM generate_series(1, %s)", (n,)).fetchall()
        return [r[0] for r in rows]

    def duplicate_key(self, exc: BaseException) -> bool:
        from psycopg.errors import UniqueViolation

        return isinstance(exc, UniqueViolation)

    def refresh_statistics(self) -> None:
        """``ANALYZE``, as autovacuum would later: a table never analyzed is planned as
        tiny, and a probe by key can become a hash of a whole table (``owners`` at 5,000
        people: 63 ms against 0.2 ms, docs/performance.md "Security")."""
        with self.pool.connection() as conn:
            conn.execute("ANALYZE")

    def vacuum(self, tables: Sequence[str]) -> None:
        """``VACUUM (ANALYZE)`` of ``tables``. Until it runs, the versions a big run replaced
        stay in the tables and their indexes, and the visibility map does not cover their
        pages: a full recomputation of 20,000 people after a first run cost PostgreSQL 300
        µs a person instead of 140 (docs/performance.md "Programmes")."""
        with self.pool.connection() as conn:
            conn.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")

    def close(self) -> None:
        self.pool.close()


def _no_jit(conn: Any) -> None:
    """JIT compilation off for the session: the store's statements are short, and
    PostgreSQL compiles any statement estimated above ``jit_above_cost`` anew at every
    execution — a programme run's per-person aggregate over 500 people took 32 ms with it,
    23 ms without (docs/performance.md "Programmes"). Set per session, not in the URL, whose
    own ``options`` (a ``search_path``) it would replace."""
    conn.execute("SET jit = off")


def default_sqlite_path() -> Path:
    """The embedded database in the user's data directory (XDG_DATA_HOME on Linux)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "songkhoe" / "songkhoe.db"


def open_backend(url: str | None) -> Backend:
    """A backend for ``sqlite:///path``, ``sqlite://`` (memory), ``postgresql://…`` or None."""
    if url is None:
        return SqliteBackend(str(default_sqlite_path()))
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        # sqlite:///abs/path.db (also sqlite:////abs/path.db), sqlite:rel/path.db, sqlite:// = memory
        rest = unquote(url[len("sqlite:"):])
        path = "/" + rest.lstrip("/") if rest.startswith("///") else rest.removeprefix("//")
        return SqliteBackend(path or ":memory:")
    if parsed.scheme in ("postgresql", "postgres"):
        return PostgresBackend(url)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///path/to/file.db or "
                     "postgresql://user@host:port/dbname")
