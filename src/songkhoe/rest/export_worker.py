"""The Bulk Data export worker: runs queued ``$export`` jobs, writing NDJSON files.

Bulk Data Access IG 2.0.0 (http://hl7.org/fhir/uv/bulkdata/STU2/export.html), the server side
of "Bulk Data Status Request" and "Bulk Data Output File Request". Each server process runs
one worker (a thread started by the app's lifespan, ``BulkExport.start``); workers of all
processes share the queue in the database (``store.jobs``):

- a job runs under the access context of the caller who started it, rebuilt from the job's
  row (``access_json``/``access_from_json``: subject, role, Organization, scopes, patient,
  purpose…), so a commune health worker's export holds their commune's people only, also
  when another process, after a restart, finishes it. A job started under a research purpose
  (v3-ActReason ``HRESCH`` and narrower) is limited to the people whose Consent permits
  research at its transaction time (``auth.consent.research_cohort``, docs/security.md);
- the job's transaction time is fixed once, when it first runs (``Jobs.snapshot_time``);
- each type is read in keyset pages (``store.export``) and written to
  ``<directory>/<job>/<Type>-<n>.ndjson``, at most ``file_resources`` resources per file;
  after each page the file is flushed, and once per ``save_every`` seconds at most the job's row
  records the resume point (type, last row, file and its length) and the progress shown to
  the client; a cancellation is noticed there too. A job left by a dead process resumes: the
  unfinished file is cut back to its recorded length (or rewritten from its first row if it
  is shorter than that) and reading continues after the last row recorded;
- a heartbeat thread refreshes the running job's row every ``stale_after / 4`` seconds; a
  job whose row has not been refreshed for ``stale_after`` seconds is taken over by any
  worker; a worker that stops cleanly puts its job back in the queue;
- a cancelled job (its row deleted) is noticed at the next page: the worker stops and
  removes the job's files; finished jobs' files are removed ``retention`` seconds later;
- when a job completes or fails an AuditEvent is recorded (subtype DICOM 110106 Export, as
  the kick-off; "export complete: N resources in M files"), as the caller, through
  ``AuditLog.record``.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from songkhoe.auth import AccessContext, ScopeSet
from songkhoe.auth.audit import Event
from songkhoe.auth.consent import RESEARCH, research_cohort
from songkhoe.auth.policy import ContextAccess
from songkhoe.auth.scopes import Scope
from songkhoe.fhir.outcome import Issue, operation_outcome
from songkhoe.store.access import acting_as
from songkhoe.store.backends import default_sqlite_path
from songkhoe.store.export import Selection, read_page
from songkhoe.store.jobs import COMPLETED, FAILED, Job, Jobs, now_us
from songkhoe.store.ranges import from_us

_log = logging.getLogger("songkhoe.export")

ENV_DIR = "SONGKHOE_EXPORT_DIR"
#: Environment overrides of ``ExportConfig`` fields (``songkhoe serve`` reads them).
ENV = {"file_resources": "SONGKHOE_EXPORT_FILE_RESOURCES", "page": "SONGKHOE_EXPORT_PAGE",
       "pause": "SONGKHOE_EXPORT_PAUSE", "stale_after": "SONGKHOE_EXPORT_STALE_SECONDS",
       "retention": "SONGKHOE_EXPORT_RETENTION_SECONDS"}
ERROR_TYPE = "OperationOutcome"


@dataclass(frozen=True)
class ExportConfig:
    """Where export files go and how a worker paces itself."""

    directory: Path
    file_resources: int = 100_000  # resources per NDJSON file at most
    page: int = 1000  # resources read per statement
    pause: float = 0.0  # seconds between pages: spares a busy database (IG: "distribute
    #                     processing over time to avoid loads that could impact clinical use")
    stale_after: float = 60.0  # seconds without a heartbeat before another worker takes over
    retention: float = 86_400.0  # seconds a finished job's files are kept (manifest Expires)
    retry_after: int = 2  # seconds a polling client is asked to wait (Retry-After)
    save_every: float = 1.0  # seconds between records of the resume point (0: every page)
    poll: float = 2.0  # seconds between looks for jobs queued by other processes

    @classmethod
    def of(cls, value: ExportConfig | str | os.PathLike[str]) -> ExportConfig:
        """A configuration: as given, or for a directory with the environment's overrides."""
        if isinstance(value, ExportConfig):
            return value
        overrides: dict[str, Any] = {}
        for name, var in ENV.items():
            text = os.environ.get(var)
            if text:
                overrides[name] = (int if name in ("file_resources", "page") else float)(text)
        return cls(Path(value), **overrides)


def default_directory(db_url: str | None) -> Path:
    """Beside the database: ``<file>.db-exports`` for SQLite (as ``<file>.db-writer.lock``),
    else ``exports`` in the user's data directory."""
    if db_url and db_url.startswith("sqlite:"):
        rest = db_url[len("sqlite:"):]
        path = "/" + rest.lstrip("/") if rest.startswith("///") else rest.removeprefix("//")
        if path and path != ":memory:":
            return Path(f"{path}-exports")
    return default_sqlite_path().parent / "exports"


# --- the caller's access context, kept with the job -------------------------------------------


def owner_of(ctx: AccessContext | None) -> str | None:
    return f"{ctx.kind}:{ctx.subject}" if ctx is not None else None


def access_json(ctx: AccessContext | None) -> dict[str, Any] | None:
    """What rebuilds ``ctx`` after a restart (the token itself is not kept)."""
    if ctx is None:
        return None
    return {"subject": ctx.subject, "kind": ctx.kind, "role": ctx.role, "org": ctx.org,
            "scopes": [[s.context, s.type, "".join(sorted(s.actions)), [list(p) for p in
                                                                       s.params]]
                       for s in ctx.scopes.clinical],
            "other_scopes": sorted(ctx.scopes.other), "client_id": ctx.client_id,
            "patient": ctx.patient, "practitioner": ctx.practitioner, "purpose": ctx.purpose,
            "break_glass": ctx.break_glass, "address": ctx.address, "token_id": ctx.token_id}


def access_from_json(data: dict[str, Any] | None) -> AccessContext | None:
    if data is None:
        return None
    scopes = ScopeSet(tuple(Scope(c, t, frozenset(a), tuple((k, v) for k, v in p))
                            for c, t, a, p in data["scopes"]), frozenset(data["other_scopes"]))
    return AccessContext(subject=data["subject"], kind=data["kind"], role=data["role"],
                         org=data["org"], scopes=scopes, client_id=data["client_id"],
                         patient=data["patient"], practitioner=data["practitioner"],
                         purpose=data["purpose"], break_glass=data["break_glass"],
                         address=data["address"], token_id=data["token_id"])


def is_research(ctx: AccessContext | None) -> bool:
    return ctx is not None and ctx.purpose in RESEARCH


# --- the worker --------------------------------------------------------------------------------


class _Stopped(Exception):
    """The job is no longer this worker's (cancelled or taken over), or the worker stops."""


@dataclass
class _Run:
    """One job being run: its state is the ``progress`` JSON saved after each page."""

    job: Job
    ctx: AccessContext | None
    access: ContextAccess | None
    until: int
    folder: Path
    state: dict[str, Any]
    output: list[dict[str, Any]] = field(default_factory=list)
    saved: float = 0.0  # time.monotonic() of the last save


def initial_state() -> dict[str, Any]:
    return {"type": 0, "after": None, "part": 1, "count": 0, "bytes": 0, "part_after": None,
            "written": 0, "reading": None}


class ExportWorker:
    """Runs export jobs in a thread; ``run_once`` runs the next one in the caller's thread."""

    def __init__(self, store: Any, config: ExportConfig, audit: Any = None) -> None:
        self.store = store
        self.config = config
        self.audit = audit
        self.jobs = Jobs(store)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._current: str | None = None
        self._purged = 0.0

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        for target, name in ((self._main, "songkhoe-export"), (self._beat, "songkhoe-export-beat")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current page; a job in hand goes back to the queue."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def wake(self) -> None:
        """A job was queued in this process: look now."""
        self._wake.set()

    def _main(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.run_once():
                    self._wake.wait(self.config.poll)
                    self._wake.clear()
            except Exception:  # noqa: BLE001 - the database may be away: log, wait, retry
                _log.exception("export worker %s: unexpected error; retrying", self.id)
                self._stop.wait(self.config.poll)

    def _beat(self) -> None:
        while not self._stop.wait(max(self.config.stale_after / 4, 0.05)):
            job = self._current
            if job is not None:
                try:
                    self.jobs.heartbeat(job, self.id)
                except Exception:  # noqa: BLE001 - logged; the next beat tries again
                    _log.exception("export worker %s: heartbeat failed", self.id)

    def run_once(self) -> bool:
        """Purge expired jobs now and then, then run the next job; False: there was none."""
        if time.monotonic() - self._purged > 60:
            self._purged = time.monotonic()
            self.purge()
        job = self.jobs.claim(self.id, stale_before=now_us() - int(self.config.stale_after * 1e6))
        if job is None:
            return False
        self._current = job.id
        try:
            self.run(job)
        finally:
            self._current = None
        return True

    def purge(self) -> None:
        """Remove the jobs (and files) finished more than ``retention`` seconds ago."""
        for job_id in self.jobs.expired(now_us() - int(self.config.retention * 1e6)):
            self.jobs.delete(job_id)
            shutil.rmtree(self.config.directory / job_id, ignore_errors=True)

    # --- one job -------------------------------------------------------------------------

    def run(self, job: Job) -> None:
        ctx = access_from_json(job.access)
        access = ContextAccess(ctx) if ctx is not None else None
        folder = self.config.directory / job.id
        try:
            until = job.transaction_time
            if until is None:
                until = self.jobs.snapshot_time()
                if job.params.get("research"):
                    self._cohort(job, ctx, access, until)
                if not self.jobs.begin(job.id, self.id, until):
                    raise _Stopped
            folder.mkdir(parents=True, exist_ok=True)
            run = _Run(job, ctx, access, until, folder, dict(job.progress or initial_state()),
                       list(job.output))
            types = job.params["types"]
            while run.state["type"] < len(types):
                self._export_type(run, types[run.state["type"]])
            self._notes(run)
        except _Stopped:
            if self._stop.is_set() and self.jobs.get(job.id) is not None:
                self.jobs.release(job.id, self.id)  # resumed by the next worker to look
            elif self.jobs.get(job.id) is None:  # cancelled: its files go too
                shutil.rmtree(folder, ignore_errors=True)
            return
        except Exception as exc:  # noqa: BLE001 - the job fails; the worker carries on
            _log.exception("export job %s failed", job.id)
            issue = Issue("exception", f"The export failed ({type(exc).__name__}); the details "
                                       "are in the server log")
            # audited before the status shows it, as every answer is (rest.guard)
            self._audit(job, ctx, 500, f"export failed: {type(exc).__name__}")
            self.jobs.finish(job.id, self.id, status=FAILED, output=[],
                             error=operation_outcome([issue]))
            shutil.rmtree(folder, ignore_errors=True)
            return
        files = [o for o in run.output if not o.get("error")]
        written = sum(int(o["count"]) for o in files)
        self._audit(job, ctx, 200, f"export complete: {written} resources in {len(files)} files")
        if not self.jobs.finish(job.id, self.id, status=COMPLETED, output=run.output,
                                error=None, progress=run.state):
            shutil.rmtree(folder, ignore_errors=True)  # cancelled at the last moment

    def _selection(self, run: _Run, rtype: str) -> Selection:
        p = run.job.params
        filters = tuple(tuple((k, v) for k, v in q) for q in p.get("filters", {}).get(rtype, []))
        return Selection(rtype, until=run.until, since=p.get("since"), filters=filters,
                         members=p.get("members"), job=run.job.id)

    def _read(self, run: _Run, sel: Selection, after: Any) -> list[tuple[int, int, bytes]]:
        with acting_as(run.access), self.store.reading() as tx:
            return read_page(tx, sel, tuple(after) if after else None, self.config.page)

    def _export_type(self, run: _Run, rtype: str) -> None:
        """Write every resource of ``rtype`` the job selects, resuming from ``run.state``."""
        state, folder = run.state, run.folder
        sel = self._selection(run, rtype)
        state["reading"] = rtype
        handle = None
        wrote = False
        if state["count"]:  # resuming inside a file
            path = folder / f"{rtype}-{state['part']}.ndjson"
            size = path.stat().st_size if path.exists() else -1
            if size < state["bytes"]:  # the file lost its tail (a crash of the machine)
                state["written"] -= state["count"]
                state.update(after=state["part_after"], count=0, bytes=0)
            else:
                handle = self._open(run, path, "r+b")
                handle.truncate(state["bytes"])
                handle.seek(state["bytes"])
        try:
            while True:
                if self._stop.is_set():
                    raise _Stopped
                rows = self._read(run, sel, state["after"])
                if not rows:
                    break
                wrote = True
                for lu, rid, content in rows:
                    if handle is None:
                        state["part_after"] = state["after"]
                        handle = self._open(run, folder / f"{rtype}-{state['part']}.ndjson",
                                            "wb")
                    handle.write(content)
                    handle.write(b"\n")
                    state["count"] += 1
                    state["bytes"] += len(content) + 1
                    state["written"] += 1
                    state["after"] = [lu, rid]
                    if state["count"] >= self.config.file_resources:
                        self._close(run, rtype, handle)
                        handle = None
                if handle is not None:
                    handle.flush()
                if time.monotonic() - run.saved >= self.config.save_every:
                    self._save(run)
                if self.config.pause:
                    self._stop.wait(self.config.pause)
            if handle is not None:
                self._close(run, rtype, handle)
                handle = None
        finally:
            if handle is not None:
                handle.close()
        state.update(type=state["type"] + 1, after=None, part=1, count=0, bytes=0,
                     part_after=None, reading=None)
        if wrote:  # an empty type is read again after a restart rather than saved
            self._save(run)

    def _open(self, run: _Run, path: Path, mode: str) -> Any:
        try:
            return path.open(mode)
        except FileNotFoundError:  # the folder is gone: the job was cancelled?
            if self.jobs.get(run.job.id) is None:
                raise _Stopped from None
            raise

    def _close(self, run: _Run, rtype: str, handle: Any) -> None:
        """Finish the current file: on disk, listed in the output, the next one numbered."""
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        state = run.state
        run.output.append({"type": rtype, "file": f"{rtype}-{state['part']}.ndjson",
                           "count": state["count"]})
        state.update(part=state["part"] + 1, count=0, bytes=0, part_after=None)

    def _save(self, run: _Run) -> None:
        """Record the resume point; the files may hold more than it says (a resumed job cuts
        the unfinished file back to it), never less."""
        if not self.jobs.save(run.job.id, self.id, run.state, run.output):
            raise _Stopped
        run.saved = time.monotonic()

    def _notes(self, run: _Run) -> None:
        """The error file: one OperationOutcome per parameter ignored under
        ``Prefer: handling=lenient`` (IG: "the server SHOULD include a FHIR OperationOutcome
        resource for each of these parameters")."""
        notes = run.job.params.get("notes") or []
        if not notes or any(o.get("error") for o in run.output):
            return
        name = f"{ERROR_TYPE}-1.ndjson"
        with (run.folder / name).open("wb") as handle:
            for code, text, expression in notes:
                handle.write(orjson.dumps(operation_outcome([Issue(code, text, expression,
                                                                    severity="warning")])))
                handle.write(b"\n")
        run.output.append({"type": ERROR_TYPE, "file": name, "count": len(notes), "error": True})

    def _cohort(self, job: Job, ctx: AccessContext | None, access: ContextAccess | None,
                until: int) -> None:
        """Limit a research export to the people whose Consent permits research at its
        transaction time (docs/security.md, "What every research export must do")."""
        assert ctx is not None and ctx.purpose is not None
        with acting_as(access):
            listed = job.params.get("listed")  # a Group's members, or patient=
            candidates = self.jobs.patients(job.id) if listed else self._visible_patients()
            with self.store.reading() as tx:
                people = research_cohort(tx, candidates, at=from_us(until), purpose=ctx.purpose)
        _log.info("export job %s: research cohort of %d people out of %d", job.id, len(people),
                  len(candidates))
        if not self.jobs.set_patients(job.id, self.id, people):
            raise _Stopped

    def _visible_patients(self) -> list[str]:
        """The ids of the Patients the current access may see, keyset-paged by the store."""
        ids: list[str] = []
        cursor: str | None = None
        while True:
            params = [("_count", "1000"), *([("_cursor", cursor)] if cursor else [])]
            page = self.store.search("Patient", params)
            ids += [s.id for s in page.matches]
            cursor = page.next_cursor
            if not cursor:
                return ids

    def _audit(self, job: Job, ctx: AccessContext | None, status: int, detail: str) -> None:
        if self.audit is None:
            return
        p = job.params
        entity = f"Group/{p['group']}" if p.get("group") else None
        event = Event(interaction="export", method=p.get("method", "GET"),
                      path=p.get("path", ""), status=status, query=p.get("query", ""),
                      entity=entity, access=ctx,
                      address=ctx.address if ctx else None, detail=detail)
        try:
            self.audit.record(event)
        except Exception:  # noqa: BLE001 - the job's outcome stands; the log says why
            _log.exception("export job %s: its AuditEvent could not be written: %s", job.id,
                           detail)
