"""The queue of Bulk Data export jobs (schema version 6: ``bulk_jobs``, ``bulk_job_patients``).

Bulk Data Access IG 2.0.0, "Bulk Data Export Operation Request Flow"
(http://hl7.org/fhir/uv/bulkdata/STU2/export.html): a kick-off request only records a job
(``create``); a worker in some server process takes it (``claim``), fixes its transaction time
(``snapshot_time``, ``begin``), writes its files and records where it is after each page
(``save``), and finally completes or fails it (``finish``). Everything a job needs lives in its
row, so a job survives the process that accepted it and the one that ran it:

- ``claim`` takes the oldest job that is queued, or ``running`` without a heartbeat since
  ``stale_before`` (its worker died), atomically: PostgreSQL ``SELECT … FOR UPDATE SKIP
  LOCKED`` then ``UPDATE`` in one transaction; SQLite the same under its single write lock;
- every write of a worker names the worker (``WHERE worker = ?``): a job that was cancelled
  (its row deleted) or taken over answers False, and the worker stops;
- ``heartbeat`` refreshes the job a worker runs (from a thread of its own, so that a long
  statement does not make a live worker look dead).

The store knows nothing of HTTP or tokens: the caller's access context and the parameters
are opaque JSON here (``songkhoe.rest.export_worker`` gives them meaning).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from .ids import new_id

_log = logging.getLogger("songkhoe.export")

QUEUED, RUNNING, COMPLETED, FAILED = "queued", "running", "completed", "failed"
_COLUMNS = ("id, status, owner, request, access, params, transaction_time, progress, output, "
            "error, worker, heartbeat, created, updated")


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class Job:
    """One row of ``bulk_jobs``, JSON columns decoded."""

    id: str
    status: str
    owner: str | None
    request: str
    access: dict[str, Any] | None
    params: dict[str, Any]
    transaction_time: int | None  # µs
    progress: dict[str, Any] | None
    output: list[dict[str, Any]]
    error: dict[str, Any] | None
    worker: str | None
    heartbeat: int | None  # µs
    created: int  # µs
    updated: int  # µs


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _job(row: Any) -> Job:
    def load(v: Any) -> Any:
        return None if v is None else orjson.loads(v)

    return Job(row[0], row[1], row[2], row[3], load(row[4]), load(row[5]) or {}, row[6],
               load(row[7]), load(row[8]) or [], load(row[9]), row[10], row[11], row[12],
               row[13])


class Jobs:
    """The ``bulk_jobs`` table of one store, one short transaction per call."""

    def __init__(self, store: Any) -> None:
        self.backend = store.backend
        self.postgres = self.backend.name == "postgres"

    def _run(self, conn: Any, sql: str, args: Iterable[Any] = ()) -> Any:
        return self.backend.execute(conn, sql, list(args))

    # --- kick-off, status, cancel -----------------------------------------------------------

    def create(self, *, owner: str | None, request: str, access: dict[str, Any] | None,
               params: dict[str, Any], patients: Iterable[str] = ()) -> Job:
        """A new queued job; ``patients`` limits it to these people (``bulk_job_patients``)."""
        job_id = new_id()
        t = now_us()
        with self.backend.transaction(write=True) as conn:
            self._run(conn, f"INSERT INTO bulk_jobs ({_COLUMNS}) VALUES "
                            "(?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL, NULL, ?, ?)",
                      [job_id, QUEUED, owner, request, _json(access), _json(params), t, t])
            self._insert_patients(conn, job_id, patients)
        job = self.get(job_id)
        assert job is not None
        return job

    def _insert_patients(self, conn: Any, job_id: str, patients: Iterable[str]) -> None:
        rows = [(job_id, p) for p in sorted(set(patients))]
        if rows:
            self.backend.load_rows(conn, "bulk_job_patients", ("job", "patient"), rows)

    def set_patients(self, job_id: str, worker: str, patients: Iterable[str]) -> bool:
        """Replace the people job ``job_id`` is limited to (False: no longer ``worker``'s)."""
        with self.backend.transaction(write=True) as conn:
            if not self._holds(conn, job_id, worker):
                return False
            self._run(conn, "DELETE FROM bulk_job_patients WHERE job = ?", [job_id])
            self._insert_patients(conn, job_id, patients)
        return True

    def patients(self, job_id: str) -> list[str]:
        """The people job ``job_id`` is limited to, in id order."""
        with self.backend.transaction(write=False) as conn:
            rows = self._run(conn, "SELECT patient FROM bulk_job_patients WHERE job = ? "
                                   "ORDER BY patient", [job_id]).fetchall()
        return [r[0] for r in rows]

    def get(self, job_id: str) -> Job | None:
        with self.backend.transaction(write=False) as conn:
            row = self._run(conn, f"SELECT {_COLUMNS} FROM bulk_jobs WHERE id = ?",
                            [job_id]).fetchone()
        return _job(row) if row else None

    def delete(self, job_id: str) -> bool:
        """Remove a job (cancelled, or its files expired); its worker stops at its next save."""
        with self.backend.transaction(write=True) as conn:
            self._run(conn, "DELETE FROM bulk_job_patients WHERE job = ?", [job_id])
            return int(self._run(conn, "DELETE FROM bulk_jobs WHERE id = ?",
                                 [job_id]).rowcount or 0) > 0

    def expired(self, before_us: int) -> list[str]:
        """Ids of the finished jobs last changed before ``before_us``."""
        with self.backend.transaction(write=False) as conn:
            rows = self._run(conn, "SELECT id FROM bulk_jobs WHERE status IN (?, ?) AND "
                                   "updated < ?", [COMPLETED, FAILED, before_us]).fetchall()
        return [r[0] for r in rows]

    # --- workers ----------------------------------------------------------------------------

    def claim(self, worker: str, *, stale_before: int) -> Job | None:
        """Take the oldest queued job, or a running one whose worker fell silent."""
        waiting = ("SELECT id, status, worker FROM bulk_jobs WHERE status = ? OR (status = ? "
                   "AND (heartbeat IS NULL OR heartbeat < ?)) ORDER BY created LIMIT 1")
        args = [QUEUED, RUNNING, stale_before]
        with self.backend.transaction(write=False) as conn:  # idle workers take no write lock
            if self._run(conn, waiting, args).fetchone() is None:
                return None
        t = now_us()
        with self.backend.transaction(write=True) as conn:
            lock = " FOR UPDATE SKIP LOCKED" if self.postgres else ""
            row = self._run(conn, waiting + lock, args).fetchone()
            if row is None:
                return None
            if row[1] == RUNNING:
                _log.warning("export job %s: worker %s fell silent; %s takes it over",
                             row[0], row[2], worker)
            self._run(conn, "UPDATE bulk_jobs SET status = ?, worker = ?, heartbeat = ?, "
                            "updated = ? WHERE id = ?", [RUNNING, worker, t, t, row[0]])
        return self.get(row[0])

    def _holds(self, conn: Any, job_id: str, worker: str) -> bool:
        return self._run(conn, "SELECT 1 FROM bulk_jobs WHERE id = ? AND worker = ? AND "
                               "status = ?", [job_id, worker, RUNNING]).fetchone() is not None

    def begin(self, job_id: str, worker: str, transaction_time: int) -> bool:
        """Fix the job's transaction time (once: a resumed job keeps its own)."""
        with self.backend.transaction(write=True) as conn:
            cur = self._run(conn, "UPDATE bulk_jobs SET transaction_time = ?, updated = ? "
                                  "WHERE id = ? AND worker = ? AND status = ? AND "
                                  "transaction_time IS NULL",
                            [transaction_time, now_us(), job_id, worker, RUNNING])
            return int(cur.rowcount or 0) > 0

    def save(self, job_id: str, worker: str, progress: dict[str, Any],
             output: list[dict[str, Any]]) -> bool:
        """Record where the job is; False when it is no longer ``worker``'s to run."""
        t = now_us()
        with self.backend.transaction(write=True) as conn:
            cur = self._run(conn, "UPDATE bulk_jobs SET progress = ?, output = ?, heartbeat = ?, "
                                  "updated = ? WHERE id = ? AND worker = ? AND status = ?",
                            [_json(progress), _json(output), t, t, job_id, worker, RUNNING])
            return int(cur.rowcount or 0) > 0

    def finish(self, job_id: str, worker: str, *, status: str, output: list[dict[str, Any]],
               error: dict[str, Any] | None, progress: dict[str, Any] | None = None) -> bool:
        """Complete or fail the job (False: cancelled meanwhile, or taken over)."""
        assert status in (COMPLETED, FAILED)
        t = now_us()
        with self.backend.transaction(write=True) as conn:
            cur = self._run(conn, "UPDATE bulk_jobs SET status = ?, output = ?, error = ?, "
                                  "progress = COALESCE(?, progress), worker = NULL, "
                                  "heartbeat = NULL, updated = ? WHERE id = ? AND worker = ? "
                                  "AND status = ?",
                            [status, _json(output), _json(error), _json(progress), t, job_id,
                             worker, RUNNING])
            done = int(cur.rowcount or 0) > 0
            if done:
                self._run(conn, "DELETE FROM bulk_job_patients WHERE job = ?", [job_id])
            return done

    def release(self, job_id: str, worker: str) -> None:
        """Put a job back in the queue (a worker that stops cleanly), to resume elsewhere."""
        with self.backend.transaction(write=True) as conn:
            self._run(conn, "UPDATE bulk_jobs SET status = ?, worker = NULL, heartbeat = NULL, "
                            "updated = ? WHERE id = ? AND worker = ? AND status = ?",
                      [QUEUED, now_us(), job_id, worker, RUNNING])

    def heartbeat(self, job_id: str, worker: str) -> None:
        """Show that ``worker`` is alive and still running job ``job_id``."""
        with self.backend.transaction(write=True) as conn:
            self._run(conn, "UPDATE bulk_jobs SET heartbeat = ? WHERE id = ? AND worker = ? "
                            "AND status = ?", [now_us(), job_id, worker, RUNNING])

    # --- the transaction time ---------------------------------------------------------------

    def snapshot_time(self, *, wait: float = 10.0) -> int:
        """A transaction time (µs) for a new export: every write stamped at or before it is
        committed when this returns, and every later write is stamped after it (the IG's
        "might need to wait for any pending transactions to resolve").

        SQLite: writers are serialised and a write is stamped once it holds the lock, so the
        time is taken holding the lock. PostgreSQL: a write is stamped after its BEGIN, so the
        time is taken first, then this waits until no session of the same database user has a
        transaction begun at or before it — at most ``wait`` seconds (a session idle in a
        transaction is not waited for longer; logged). Assumes the clocks of the server
        processes and of PostgreSQL agree (NTP)."""
        if not self.postgres:
            with self.backend.transaction(write=True):
                return now_us() - 1
        t = now_us() - 1
        deadline = time.monotonic() + wait
        pause = 0.005
        while True:
            with self.backend.transaction(write=False) as conn:
                pending = int(self._run(
                    conn, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = "
                          "current_database() AND usename = current_user AND pid <> "
                          "pg_backend_pid() AND backend_type = 'client backend' AND "
                          "xact_start <= to_timestamp(CAST(? AS DOUBLE PRECISION) / 1000000)",
                    [t]).fetchone()[0])
            if pending == 0:
                return t
            if time.monotonic() > deadline:
                _log.warning("export: %d transactions begun before the export's transaction "
                             "time are still open after %.0f s; not waiting longer", pending,
                             wait)
                return t
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
