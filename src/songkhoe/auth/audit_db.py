"""Where the audit log lives: a database of its own beside the record store's (issue 5;
docs/security.md "Audit", docs/architecture.md "The audit log lives apart from the records").

- SQLite: its own file beside the store's — ``songkhoe.db`` → ``songkhoe-audit.db`` — in WAL
  mode like the store. An audit commit then neither makes the store's readers reload their
  page caches (SQLite rereads a WAL database's pages once another connection has committed)
  nor takes the store's write lock or grows its WAL and checkpoints.
- PostgreSQL: the store's own database by default (``audit_log`` of the store's schema
  versions 2 and 4, through the store's pool), or any other database given as
  ``audit_db`` (``songkhoe serve --audit-db URL``): another database or server, so that the
  log's WAL flushes and index pages are not the records' server's work.

A separate audit database holds ``audit_log`` exactly as the store's schema made it (the
entry as canonical JSON, ``prev_hash``/``hash`` of the chain, the search columns and their
indexes, ``audit.search_columns``) and ``audit_meta`` (its schema version).

Moving the entries (the migration): when the log lives apart and the store still has an
``audit_log`` table (written before the log moved), its entries are copied in order, 10,000
at a time, after the audit database's last entry, then the store's table is dropped. The
copy refuses to join two different logs: the store's entry at the audit head's number must
carry the same hash, and the first copied entry must follow the head. It runs under the
audit database's write lock, so server processes starting together move the entries once; a
crash between the copy and the drop is finished at the next start (entries up to the head
are not copied again).
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from songkhoe.store.backends import Backend, SqliteBackend, open_backend
from songkhoe.store.schema import Types

from .audit import COLUMNS
from .db import Db

AUDIT_VERSION = 1
MOVE_CHUNK = 10_000
ROWS_PER_INSERT = 256  # × 18 columns: within SQLite's 32,766 parameters of a statement
#: Every column of ``audit_log``, in the order the append writes them.
ALL_COLUMNS = ("seq", "recorded", "content", "prev_hash", "hash", *COLUMNS)
#: The indexes of ``audit_log`` (the store's schema version 4 made the same).
INDEXES = (
    "CREATE INDEX IF NOT EXISTS audit_log_agent ON audit_log (agent, seq)",
    "CREATE INDEX IF NOT EXISTS audit_log_entity ON audit_log (entity, seq) "
    "WHERE entity IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS audit_log_patient ON audit_log (patient, seq) "
    "WHERE patient IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS audit_log_policy ON audit_log (policy, seq) "
    "WHERE policy IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS audit_log_token ON audit_log (token, seq) "
    "WHERE token IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS audit_log_failed ON audit_log (seq) WHERE outcome <> '0'",
)


class LogsDiffer(RuntimeError):
    """The store's entries and the audit database's are not one chain: nothing is moved."""


class SqliteFile(SqliteBackend):
    """The audit log's own SQLite file, on the store's pool and writer queue
    (``SqliteBackend``: WAL, ``synchronous=NORMAL`` — a commit survives the process and is on
    disk at the next checkpoint — writers queued on ``flock`` of ``<file>-writer.lock``, so a
    server process's writer wakes the moment another process's batch is committed; a write
    request waits for its entry). Its own connections: a smaller cache, and SQLite checkpoints
    in the committing connection — the writer thread, never the event loop — so no
    checkpointer thread."""

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=60.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-16384")
        with self._lock:
            self._all.append(conn)
        return conn

    def load_rows(self, conn: sqlite3.Connection, table: str, columns: Sequence[str],
                  rows: Sequence[Sequence[Any]]) -> None:
        """Rows inserted by multi-row ``INSERT … VALUES``, up to ``ROWS_PER_INSERT`` a
        statement, in chunks of powers of two (few distinct statements, each compiled once
        and cached). ``executemany`` gives up Python's lock and takes it back for every row,
        and in a server the event loop wants it each time: one statement per chunk takes it
        back once (server CPU per secured read 210–213 → 193–202 µs, docs/performance.md
        "Security")."""
        row = f"({', '.join('?' * len(columns))})"
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        at = 0
        while at < len(rows):
            size = 1 << (min(len(rows) - at, ROWS_PER_INSERT).bit_length() - 1)
            chunk = rows[at:at + size]
            conn.execute(head + ", ".join([row] * size), [v for r in chunk for v in r])
            at += size


class AuditDb(Db):
    """The audit log's database (``Db``'s surface, on a backend of its own or the store's);
    ``apart``: not the store's database, so ``org_tree`` is not in it."""

    def __init__(self, backend: Backend, *, apart: bool, owned: bool) -> None:
        self.backend = backend
        self.apart = apart
        self._owned = owned  # opened here: closed by ``close``

    def append_rows(self, c: Any, rows: Sequence[Sequence[Any]]) -> None:
        """Insert whole ``audit_log`` rows (``ALL_COLUMNS``) the fastest way: ``COPY`` on
        PostgreSQL (one stream, rows adapted in C), ``executemany`` on SQLite (one statement
        over the rows as one JSON parameter cost about twice the CPU)."""
        self.backend.load_rows(c.conn, "audit_log", ALL_COLUMNS, rows)

    def close(self) -> None:
        for store, db in list(_OPENED.items()):
            if db is self:
                del _OPENED[store]
        if self._owned:
            self.backend.close()


def audit_path(store_path: str) -> str:
    """The audit file of the SQLite store at ``store_path``."""
    if store_path == ":memory:":
        return store_path
    path = Path(store_path)
    return str(path.with_name(f"{path.stem}-audit{path.suffix or '.db'}"))


#: The audit database opened last for each store (``of``).
_OPENED: weakref.WeakKeyDictionary[Any, AuditDb] = weakref.WeakKeyDictionary()


def of(store: Any) -> AuditDb:
    """The audit database an ``Auth`` opened for ``store``, else the one at its default
    place (an app without security still answers AuditEvent searches)."""
    found = _OPENED.get(store)
    return found if found is not None else open_audit(store)


def open_audit(store: Any, url: str | None = None) -> AuditDb:
    """The audit database of ``store``: ``url`` if given, else its default place (above);
    created, and the store's older entries moved into it, when it is apart."""
    backend = store.backend
    if url is None or url == getattr(backend, "url", None):
        if backend.name == "postgres":  # its schema is the store's
            _OPENED[store] = AuditDb(backend, apart=False, owned=False)
            return _OPENED[store]
        db = AuditDb(SqliteFile(audit_path(backend.path)), apart=True, owned=True)
    elif url.startswith("sqlite:"):
        rest = unquote(url[len("sqlite:"):])  # as ``store.backends.open_backend`` reads it
        path = "/" + rest.lstrip("/") if rest.startswith("///") else rest.removeprefix("//")
        if path and path != ":memory:" and path == getattr(backend, "path", None):
            raise ValueError(f"the audit log needs a database of its own, not the store's "
                             f"file {path}: leave --audit-db out for {audit_path(path)}")
        db = AuditDb(SqliteFile(path or ":memory:"), apart=True, owned=True)
    else:
        db = AuditDb(open_backend(url), apart=True, owned=True)
    try:
        _create(db)
        move_entries(backend, db)
    except BaseException:
        db.close()
        raise
    _OPENED[store] = db
    return db


def _create(db: AuditDb) -> None:
    t: Types = db.backend.types
    columns = ", ".join(f"{c} {t.text}" for c in COLUMNS)
    with db.write() as c:
        c.run(f"CREATE TABLE IF NOT EXISTS audit_log (seq {t.bigint} PRIMARY KEY, "
              f"recorded {t.bigint} NOT NULL, content {t.text} NOT NULL, "
              f"prev_hash {t.text} NOT NULL, hash {t.text} NOT NULL, {columns})")
        for statement in INDEXES:
            c.run(statement)
        c.run(f"CREATE TABLE IF NOT EXISTS audit_meta (key {t.text} PRIMARY KEY, "
              f"value {t.text} NOT NULL)")
        if c.one("SELECT value FROM audit_meta WHERE key = 'version'") is None:
            c.run("INSERT INTO audit_meta (key, value) VALUES ('version', ?)",
                  (str(AUDIT_VERSION),))


def _has_log(backend: Backend, conn: Any) -> bool:
    if backend.name == "postgres":
        return backend.execute(conn, "SELECT to_regclass('audit_log')").fetchone()[0] is not None
    return backend.execute(conn, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                 "name = 'audit_log'").fetchone() is not None


def move_entries(store: Backend, db: AuditDb) -> int:
    """Move the store's ``audit_log`` entries into ``db`` (see the module); how many."""
    with store.transaction(write=False) as s:
        if not _has_log(store, s):
            return 0
    moved = 0
    names = ", ".join(ALL_COLUMNS)
    with db.write() as c:
        if c.postgres:
            c.run("LOCK TABLE audit_log IN EXCLUSIVE MODE")
        head = c.one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        seq, prev = (int(head[0]), head[1]) if head else (0, None)
        with store.transaction(write=False) as s:
            if not _has_log(store, s):  # another process moved them meanwhile
                return 0
            if seq:
                mine = store.execute(s, "SELECT seq, hash FROM audit_log WHERE seq <= ? "
                                        "ORDER BY seq DESC LIMIT 1", (seq,)).fetchone()
                theirs = mine and c.one("SELECT hash FROM audit_log WHERE seq = ?",
                                        (int(mine[0]),))
                if mine and (theirs is None or theirs[0] != mine[1]):
                    raise LogsDiffer(f"the store's audit entry {mine[0]} differs from the "
                                     f"audit database's: two different logs, nothing moved")
            after = seq
            while True:
                rows = store.execute(s, f"SELECT {names} FROM audit_log WHERE seq > ? "
                                        f"ORDER BY seq LIMIT {MOVE_CHUNK}", (seq,)).fetchall()
                if not rows:
                    break
                if seq == after and after and (int(rows[0][0]) != seq + 1
                                                or rows[0][3] != prev):
                    raise LogsDiffer(f"the store's audit entry {rows[0][0]} does not follow "
                                     f"the audit database's entry {seq}: nothing moved")
                db.append_rows(c, [tuple(r) for r in rows])
                seq, prev = int(rows[-1][0]), rows[-1][4]
                moved += len(rows)
    with store.transaction(write=True) as s:
        store.execute(s, "DROP TABLE IF EXISTS audit_log")
    return moved

