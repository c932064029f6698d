"""``$viewdefinition-run``: a SQL-on-FHIR v2 ViewDefinition run over the caller's data, its
rows streamed as JSON, NDJSON, CSV or Parquet.

SQL on FHIR v2 (2.1.0-pre), OperationDefinition ViewDefinitionRun
(https://build.fhir.org/ig/FHIR/sql-on-fhir-v2/OperationDefinition-ViewDefinitionRun.html,
``http://sql-on-fhir.org/OperationDefinition/$viewdefinition-run``):

- **Where.** R4 mode: ``[base]/$viewdefinition-run`` ("In R4 mode, operation can only be on
  system level"); the same at ``[base]/ViewDefinition/$viewdefinition-run`` (the type level
  of R6 mode). ``GET`` with query parameters or ``POST`` with a ``Parameters`` resource (its
  URL may carry parameters too). No instance level: the R4 store refuses the ViewDefinition
  type, so none is stored.
- **Parameters.** ``viewResource`` (the view, POST only) or ``viewReference`` (one of the
  views the server holds: the store, R4, keeps no ViewDefinition resources, so these are the
  warehouse's library, ``analytics/views/``, named ``ViewDefinition/[name]`` or by canonical
  ``url``; GET too) — exactly one, ``_format`` (``json``, ``ndjson``, ``csv``, ``parquet``;
  else the ``Accept`` header: ``application/json``, ``application/x-ndjson``, ``text/csv``,
  ``application/octet-stream`` or ``application/vnd.apache.parquet``; neither: 400),
  ``header`` (CSV header line, default true), ``patient`` (``Patient/[id]``) and ``group``
  (``Group/[id]``, repeatable): only rows of resources in the R4 Patient compartment of that
  Patient, or of the Groups' ``member.entity`` Patients that are not ``inactive`` (both: the
  Patient must be a member), ``_since`` (resources whose ``meta.lastUpdated`` is after it),
  ``_limit`` (at most that many rows), ``resource`` (POST only: run over these resources
  instead of the server's). Not supported, 400 ``not-supported``: ``source`` (no external
  source). An unknown or repeated
  parameter is a 400.
- **Errors** (notes, "Error Handling"): a malformed request 400; a ViewDefinition that is not
  valid, and a view that cannot be applied to a resource (a column that is not a collection
  gives several values, a ``where`` that is not boolean), 422, their ``expression`` the
  element of ``viewResource`` at fault; an unknown or hidden Patient or Group 400
  ``not-found``.
- **Whose data.** The resources of the view's type that the caller may read and search
  (SMART scopes ``r`` and ``s`` on the type, else 403), read by the store under the caller's
  access, so hidden rows never reach the view (``store.export`` keyset pages of the type, or
  of the compartments of the people asked for). A researcher reads no person's record (403
  for a type people own, as ``$export``); a token with a research purpose (``HRESCH`` and
  narrower) gets the rows of the people whose Consent permits research now
  (``auth.consent.research_cohort``); a break-the-glass token may not run views (403). Inline
  ``resource`` runs read nothing from the store.
- **Streaming** ("MAY use chunked transfer encoding"). Resources are read in chunks of
  ``ViewRunConfig.chunk`` to a temporary NDJSON file; DuckDB runs the view over each
  (``analytics.duckdb_runner.execute``, on a cursor of one in-memory database per app; DuckDB
  and Arrow are imported by the first run) and its rows go out at once. The first chunk runs
  before the answer starts, so its errors get their status; an error in a later chunk aborts
  the response (the client sees it cut short) and is logged and audited. The temporary folder
  is removed when the answer ends, fails or its client goes away.
- **Audit.** The request is audited by the guard (its detail names the view's type and
  format); when the stream ends one more AuditEvent (subtype ``operation``) records how many
  rows left, or why the run stopped.

Output: JSON an array of objects, NDJSON one object per row (``application/x-ndjson``), both
with every column, ``null`` when empty; CSV (RFC 4180: CRLF, strings quoted; ``text/csv;
header=present|absent``) with a collection as the JSON text of its list; Parquet
(``application/vnd.apache.parquet``) with the runner's column types, one row group per chunk.
"""

from __future__ import annotations

import functools
import io
import logging
import shutil
import tempfile
import threading
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from songkhoe.analytics.rows import ViewEvaluationError
from songkhoe.analytics.viewdefinition import ViewDefinition, ViewDefinitionError, parse_view
from songkhoe.analytics.warehouse import DEFAULT_VIEWS
from songkhoe.auth import AccessContext
from songkhoe.auth.audit import Event
from songkhoe.auth.consent import research_cohort
from songkhoe.fhir import definitions
from songkhoe.fhir.outcome import FhirError, Issue
from songkhoe.fhir.primitives import check_instant
from songkhoe.rest.errors import error_response, internal_error_response
from songkhoe.rest.export_worker import is_research
from songkhoe.rest.routing import ID_PATTERN
from songkhoe.store.access import CURRENT, Access, acting_as, owned
from songkhoe.store.engine import normalise
from songkhoe.store.export import Selection, read_page, read_people_page
from songkhoe.store.jobs import Jobs
from songkhoe.store.ranges import date_range, from_us

_log = logging.getLogger("songkhoe.rest")

OPERATION = "viewdefinition-run"
#: the output format codes (OutputFormatCodes) served, and their media types
MEDIA = {"json": "application/json", "ndjson": "application/x-ndjson",
         "csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}
#: ``Accept`` media types and the format each asks for (notes, "Output Format")
ACCEPTED = {"application/json": "json", "application/x-ndjson": "ndjson",
            "application/ndjson": "ndjson", "text/csv": "csv",
            "application/octet-stream": "parquet", "application/vnd.apache.parquet": "parquet"}
#: how many times each parameter may be given (OperationDefinition ``max``)
_MAX = {"_format": 1, "header": 1, "viewReference": 1, "viewResource": 1, "patient": 1,
        "group": None, "source": 1, "resource": None, "_limit": 1, "_since": 1}
_BODY_ONLY = ("viewResource", "resource")  # resources: not in a query string (notes, "GET")
#: the people a run's ``patient``/``group`` statement names at once (SQL parameters)
PEOPLE_BLOCK = 500
_NOT_SERVED = frozenset({"AuditEvent"})  # the audit log is not in the store (``audit_events``)
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
_FHIR_JSON = ("application/fhir+json", "application/json")


@dataclass(frozen=True)
class ViewRunConfig:
    """Where a run's temporary files go (None: the system's temporary directory), how many
    resources DuckDB runs the view over at a time (at least: whole pages), and how many each
    store statement reads."""

    directory: Path | None = None
    chunk: int = 20_000
    page: int = 1000


@dataclass
class Plan:
    """What a request asks for, checked."""

    view: ViewDefinition
    format: str
    header: bool = True
    limit: int | None = None
    since: int | None = None  # µs, exclusive
    patient: str | None = None
    groups: list[str] = field(default_factory=list)
    resources: list[dict[str, Any]] | None = None  # inline: the server's data is not read

    def describe(self) -> str:
        parts = [f"$viewdefinition-run: a view of {self.view.resource} as {self.format}"]
        if self.resources is not None:
            parts.append(f"{len(self.resources)} resources given")
        if self.patient:
            parts.append(f"patient {self.patient}")
        parts += [f"group {g}" for g in self.groups]
        if self.limit is not None:
            parts.append(f"_limit {self.limit}")
        return ", ".join(parts)


def _bad(text: str, expression: str | None = None, code: str = "invalid") -> FhirError:
    return FhirError(400, Issue(code, text, expression))


def _view_error(err: ViewDefinitionError) -> FhirError:
    where = f"viewResource.{err.path}" if err.path else "viewResource"
    if isinstance(err, ViewEvaluationError):
        return FhirError(422, Issue("processing", f"The view cannot be applied: {err.reason}",
                                    where))
    return FhirError(422, Issue("invalid", f"The ViewDefinition is invalid: {err.reason}",
                                where))


# --- the request's parameters ------------------------------------------------------------------


def body_parameters(resource: Any) -> list[tuple[str, Any]]:
    """The (name, value) pairs of a ``Parameters`` resource: a Reference's ``reference``, a
    primitive's value, or the ``resource`` of a parameter that carries one."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Parameters":
        raise _bad("The body of a POST is a Parameters resource", "Parameters", "structure")
    out: list[tuple[str, Any]] = []
    for n, p in enumerate(resource.get("parameter") or []):
        where = f"Parameters.parameter[{n}]"
        name = p.get("name") if isinstance(p, dict) else None
        values = [(k, v) for k, v in (p.items() if isinstance(p, dict) else ())
                  if k.startswith("value") or k == "resource"]
        if not isinstance(name, str) or len(values) != 1:
            raise _bad("each parameter needs a name and one value[x] or resource", where,
                       "structure")
        key, value = values[0]
        if key == "valueReference":
            value = value.get("reference") if isinstance(value, dict) else None
            if not isinstance(value, str):
                raise _bad(f"{name}: a Reference with a 'reference'", f"{where}.valueReference")
        out.append((name, value))
    return out


def plan_of(params: list[tuple[str, Any]], accept: str | None, method: str) -> Plan:
    """The run a request's parameters ask for (400/422 naming the parameter at fault)."""
    seen: dict[str, int] = {}
    for name, _ in params:
        if name not in _MAX:
            raise _bad(f"{name} is not a parameter of $viewdefinition-run", name, "not-supported")
        seen[name] = seen.get(name, 0) + 1
        limit = _MAX[name]
        if limit is not None and seen[name] > limit:
            raise _bad(f"{name} may be given once", name)
        if name in _BODY_ONLY and method != "POST":
            raise _bad(f"{name} carries a resource: POST a Parameters resource", name)
    if "source" in seen:
        raise _bad("source is not supported: views run over this server's data or the "
                   "resources given", "source", "not-supported")
    values = dict(params)
    if ("viewResource" in values) == ("viewReference" in values):
        raise _bad("give the view as viewResource (POST) or name one of the server's views "
                   f"as viewReference ({', '.join(sorted(library()))})",
                   "viewResource", "required" if "viewResource" not in values else "invalid")
    if "viewReference" in values:
        definition = _referenced(values["viewReference"])
    else:
        definition = values["viewResource"]
        if not isinstance(definition, dict):
            raise _bad("viewResource: expected a ViewDefinition resource", "viewResource",
                       "structure")
    try:
        view = parse_view(normalise(definition))
    except ViewDefinitionError as err:
        raise _view_error(err) from None
    out = Plan(view, _format(values.get("_format"), accept))
    if "header" in values:
        out.header = _boolean(values["header"], "header")
    if "_limit" in values:
        out.limit = _count(values["_limit"], "_limit")
    if "_since" in values:
        text = str(values["_since"]).strip().replace(" ", "+")  # an unencoded '+' is a space
        problem = check_instant(text)
        if problem:
            raise _bad(f"_since: {problem}", "_since")
        out.since = date_range(text)[0]
    if "patient" in values:
        out.patient = _reference(values["patient"], "Patient", "patient")
    out.groups = list(dict.fromkeys(_reference(v, "Group", "group")
                                    for n, v in params if n == "group"))
    given = [v for n, v in params if n == "resource"]
    if given:
        if out.patient or out.groups or out.since is not None:
            raise _bad("patient, group and _since select the server's data; they do not "
                       "apply to the resources given", "resource", "not-supported")
        for n, r in enumerate(given):
            if not isinstance(r, dict) or not isinstance(r.get("resourceType"), str):
                raise _bad("resource: expected a FHIR resource", f"resource[{n}]", "structure")
        out.resources = [normalise(r) for r in given]
    elif not definitions.is_resource_type(view.resource):
        raise FhirError(422, Issue("invalid", f"{view.resource!r} is not an R4 resource type",
                                   "viewResource.resource"))
    elif view.resource in _NOT_SERVED:
        raise _bad(f"{view.resource} is the audit log, which views do not read (search it at "
                   f"[base]/{view.resource})", "viewResource.resource", "not-supported")
    elif (out.patient or out.groups) and not owned(view.resource):
        raise _bad(f"patient and group limit a run to people's records; {view.resource} "
                   "belongs to no one", "viewResource.resource")
    return out


@functools.cache
def library() -> dict[str, dict[str, Any]]:
    """The ViewDefinitions this server holds, the warehouse's (``analytics/views/``), by
    name; an R4 store keeps no ViewDefinition resources, so these are the ones a
    ``viewReference`` names."""
    out = {}
    for path in sorted(DEFAULT_VIEWS.glob("*.json")):
        definition = orjson.loads(path.read_bytes())
        out[definition.get("name") or path.stem] = definition
    return out


def _referenced(value: Any) -> dict[str, Any]:
    """The library's view a ``viewReference`` names: ``ViewDefinition/[name]`` (relative or
    absolute) or the view's canonical ``url`` (400 ``not-found`` naming the others)."""
    text = str(value).strip()
    views = library()
    for definition in views.values():
        if text == definition.get("url"):
            return definition
    kind, _, name = text.rstrip("/").rpartition("/")
    if kind.rpartition("/")[2] == "ViewDefinition" and name in views:
        return views[name]
    raise FhirError(400, Issue("not-found", f"viewReference: no view {text!r} on this server; "
                               f"it holds ViewDefinition/{{{', '.join(sorted(views))}}}",
                               "viewReference"))


def _format(value: Any, accept: str | None) -> str:
    if value is not None:
        code = str(value).strip()
        found = code if code in MEDIA else ACCEPTED.get(code.lower())
        if found is None:
            raise _bad(f"Format {code!r} is not supported. Supported formats: "
                       f"{', '.join(MEDIA)}", "_format", "not-supported")
        return found
    for item in (accept or "").split(","):
        found = ACCEPTED.get(item.split(";")[0].strip().lower())
        if found:
            return found
    raise _bad(f"_format is required (one of {', '.join(MEDIA)}), or an Accept header naming "
               f"one of {', '.join(ACCEPTED)}", "_format", "required")


def _boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise _bad(f"{name}: expected true or false, got {value!r}", name)


def _count(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isdigit():
        number = int(value)
    else:
        raise _bad(f"{name}: expected a whole number, got {value!r}", name)
    if number < 0:
        raise _bad(f"{name}: expected 0 or more, got {number}", name)
    return number


def _reference(value: Any, rtype: str, name: str) -> str:
    parts = str(value).rsplit("/", 2)[-2:]
    if len(parts) != 2 or parts[0] != rtype or not ID_PATTERN.fullmatch(parts[1]):
        raise _bad(f"{name}: expected a reference {rtype}/[id], got {value!r}", name)
    return parts[1]


# --- who may run what --------------------------------------------------------------------------


def check_access(ctx: AccessContext | None, access: Access | None, rtype: str) -> None:
    """A run over the server's ``rtype`` needs scopes to read and search it and a role that
    may (403 otherwise); emergency access is for one person's care, not for views."""
    if ctx is None:
        return  # security off
    if ctx.break_glass:
        raise FhirError(403, "An emergency-access (break-the-glass) token may not run views: "
                             "it is for one person's care", code="forbidden")
    if not (ctx.scopes.permits(rtype, "r") and ctx.scopes.permits(rtype, "s")):
        raise FhirError(403, f"This access token's scopes ({ctx.scopes}) do not allow reading "
                             f"and searching {rtype}", code="forbidden")
    if access is not None and not access.rule(rtype, "s").allowed:
        why = ("a researcher reads no identified record, and people own "
               if ctx.role == "researcher" and owned(rtype) else f"role {ctx.role} may not read ")
        raise FhirError(403, f"This access token may not run a view of {rtype}: {why}{rtype}",
                        code="forbidden", expression="viewResource.resource")


def people(store: Any, plan: Plan, ctx: AccessContext | None, access: Access | None,
           at: int) -> list[str] | None:
    """The Patients whose compartments a run is limited to (None: no limit), each visible to
    the caller: ``patient``, the members of ``group``, and for a research purpose only those
    whose Consent permits research at ``at`` (µs)."""
    rtype = plan.view.resource
    chosen: list[str] | None = None
    with acting_as(access):
        if plan.groups:
            chosen = sorted({m for g in plan.groups for m in _members(store, g)})
        if plan.patient is not None:
            _visible(store, "Patient", plan.patient, "patient")
            if chosen is not None and plan.patient not in chosen:
                raise _bad(f"patient: Patient/{plan.patient} is not a member of "
                           f"{', '.join('Group/' + g for g in plan.groups)}", "patient")
            chosen = [plan.patient]
        if is_research(ctx) and owned(rtype):
            assert ctx is not None and ctx.purpose is not None
            candidates = chosen if chosen is not None else _visible_patients(store)
            with store.reading() as tx:
                chosen = research_cohort(tx, candidates, at=from_us(at), purpose=ctx.purpose)
    return chosen


def _visible(store: Any, rtype: str, rid: str, name: str) -> dict[str, Any]:
    """``rtype/rid`` as the caller sees it; unknown or hidden: a 400 naming ``name``."""
    try:
        resource: dict[str, Any] = store.read(rtype, rid).resource
        return resource
    except FhirError as err:
        if err.status in (404, 410):
            raise FhirError(400, Issue("not-found", f"{rtype}/{rid} is not known",
                                       name)) from None
        raise


def _members(store: Any, group: str) -> list[str]:
    """The ids of a Group's Patient members (``member.entity``, not ``inactive``)."""
    out = []
    for member in _visible(store, "Group", group, "group").get("member") or []:
        if member.get("inactive") is True:
            continue
        parts = str((member.get("entity") or {}).get("reference") or "").rsplit("/", 2)[-2:]
        if len(parts) == 2 and parts[0] == "Patient":
            out.append(parts[1])
    return out


def _visible_patients(store: Any) -> list[str]:
    """The ids of every Patient the current access may see, keyset-paged by the store."""
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = store.search("Patient", [("_count", "1000"),
                                        *([("_cursor", cursor)] if cursor else [])])
        ids += [s.id for s in page.matches]
        cursor = page.next_cursor
        if not cursor:
            return ids


# --- reading the resources ---------------------------------------------------------------------


def type_pages(store: Any, access: Access | None, selection: Selection,
               page: int) -> Iterator[list[bytes]]:
    """Every resource of a type the caller may see, in keyset pages (``store.export``)."""
    after: tuple[int, int] | None = None
    while True:
        with acting_as(access), store.reading() as tx:
            rows = read_page(tx, selection, after, page)
        if not rows:
            return
        yield [content for _, _, content in rows]
        after = (rows[-1][0], rows[-1][1])


def people_pages(store: Any, access: Access | None, rtype: str, patients: list[str],
                 until: int, since: int | None, page: int) -> Iterator[list[bytes]]:
    """The resources of ``rtype`` in the R4 Patient compartments of ``patients`` the caller
    may see, each once: the people in blocks of ``PEOPLE_BLOCK``, each block read in keyset
    pages from their ``owners`` rows (``store.export.read_people_page``), as a Group-level
    ``$export`` reads them."""
    seen: set[int] = set()
    people = sorted(set(patients))
    for start in range(0, len(people), PEOPLE_BLOCK):
        block = people[start:start + PEOPLE_BLOCK]
        after: tuple[str, int] | None = None
        while True:
            with acting_as(access), store.reading() as tx:
                rows = read_people_page(tx, rtype, block, until, since, after, page)
            if not rows:
                break
            fresh = [(rid, content) for _, rid, content in rows if rid not in seen]
            seen.update(rid for rid, _ in fresh)
            yield [content for _, content in fresh]
            after = (rows[-1][0], rows[-1][1])
            # the next page names only the people not yet done: an index range per person
            # read, rather than reading the finished people's rows again to skip them
            block = block[bisect_left(block, after[0]):]


def inline_pages(resources: list[dict[str, Any]]) -> Iterator[list[bytes]]:
    yield [orjson.dumps(r) for r in resources]


# --- the run: chunks through DuckDB, rows out --------------------------------------------------


class _Sink(io.RawIOBase):
    """A write-only stream that keeps what was written until it is taken (Parquet's)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        self.size += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.size

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class Encoder:
    """A run's rows (Arrow tables, one per chunk) as the bytes of one output format; ``con``
    (DuckDB) writes the JSON of the rows, five times faster than Python (``bench/``)."""

    def __init__(self, fmt: str, header: bool, columns: tuple[tuple[str, str], ...],
                 con: Any) -> None:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.csv as pa_csv  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        self.pa, self.csv, self.pq = pa, pa_csv, pq
        self.format = fmt
        self.header = header
        self.con = con
        #: each column as the JSON of a row has it: a JSON column (no declared type, not a
        #: primitive; DuckDB gives its text) as the JSON value itself
        self.json_select = ", ".join(f'CAST("{n}" AS JSON) AS "{n}"' if t == "JSON" else f'"{n}"'
                                     for n, t in columns)
        self.started = False  # something was encoded (the CSV header, the JSON "[")
        self.any_row = False
        self.sink = _Sink()
        self.parquet: Any = None

    def encode(self, table: Any) -> bytes:
        first, self.started = not self.started, True
        if self.format == "parquet":
            if self.parquet is None:
                self.parquet = self.pq.ParquetWriter(self.sink, table.schema)
            if table.num_rows:
                self.parquet.write_table(table)
            return self.sink.take()
        if self.format == "csv":
            out = io.BytesIO()
            self.csv.write_csv(self._flat(table), out, self.csv.WriteOptions(
                include_header=self.header and first, eol="\r\n", quoting_header="none"))
            return out.getvalue()
        rows = self._json_rows(table)
        if self.format == "ndjson":
            return "".join(f"{row}\n" for row in rows).encode()
        text = ("," if self.any_row and rows else "") + ",".join(rows)
        self.any_row = self.any_row or bool(rows)
        return (("[" if first else "") + text).encode()

    def finish(self) -> bytes:
        if self.format == "parquet":
            self.parquet.close()
            return self.sink.take()
        return b"]" if self.format == "json" else b""

    def _json_rows(self, table: Any) -> list[str]:
        """The JSON text of each row, an object of every column in order."""
        self.con.register("_rows", table)
        try:
            result = self.con.sql(f"SELECT CAST(to_json(s) AS VARCHAR) FROM (SELECT "
                                  f"{self.json_select} FROM _rows) AS s").to_arrow_table()
        finally:
            self.con.unregister("_rows")
        rows: list[str] = result.column(0).to_pylist()
        return rows

    def _flat(self, table: Any) -> Any:
        """The table with each list column as the JSON text of its lists (CSV has no lists)."""
        pa = self.pa
        for i, f in enumerate(table.schema):
            if pa.types.is_list(f.type):
                text = [None if v is None else orjson.dumps(v).decode()
                        for v in table.column(i).to_pylist()]
                table = table.set_column(i, f.name, pa.array(text, pa.string()))
        return table


class Run:
    """One run: resources read chunk by chunk into a temporary NDJSON file, the view run over
    each by DuckDB (on a connection of its own from ``connect``), its rows encoded. ``step``
    and ``close`` may be called from any thread."""

    def __init__(self, plan: Plan, pages: Iterator[list[bytes]], config: ViewRunConfig,
                 connect: Callable[[], Any]) -> None:
        self.plan = plan
        self.pages = pages
        self.config = config
        self.connect = connect
        self.con: Any = None
        self.folder = Path(tempfile.mkdtemp(prefix="songkhoe-vdrun-", dir=config.directory))
        self.lock = threading.Lock()  # one step at a time; the files stay while one runs
        self.encoder: Encoder | None = None
        self.read = 0  # resources read
        self.rows = 0  # rows written
        self.finished = False
        self.closed = False

    def step(self) -> bytes | None:
        """The next piece of the output; None once it is all out (or the run was closed)."""
        try:
            with self.lock:
                if self.finished or self.closed:
                    return None
                return self._step()
        finally:
            if self.closed:  # closed while this step ran: the files go now
                self.close()

    def _step(self) -> bytes:
        from songkhoe.analytics.duckdb_runner import execute  # DuckDB loads with the first run

        limit = self.plan.limit
        if limit is not None and self.rows >= limit and self.encoder is not None:
            return self._finish()
        path = self.folder / "chunk.ndjson"
        count = 0
        with path.open("wb") as out:
            for page in self.pages:
                for content in page:
                    out.write(content)
                    out.write(b"\n")
                count += len(page)
                if count >= self.config.chunk:
                    break
        if count == 0 and self.encoder is not None:
            return self._finish()
        self.read += count
        if self.con is None:
            self.con = self.connect()
        try:
            result = execute(self.plan.view, path, con=self.con)
        except ViewDefinitionError as err:
            raise _view_error(err) from None
        table = result.table
        if limit is not None:
            table = table.slice(0, limit - self.rows)
        self.rows += table.num_rows
        if self.encoder is None:
            self.encoder = Encoder(self.plan.format, self.plan.header, result.compiled.columns,
                                   self.con)
        piece = self.encoder.encode(table)
        if count == 0:  # nothing to read at all: the empty result, whole
            piece += self._finish()
        return piece

    def _finish(self) -> bytes:
        assert self.encoder is not None
        self.finished = True
        return self.encoder.finish()

    def close(self) -> None:
        """Remove the temporary files and close the connection: now, or when the step running
        ends (never blocks)."""
        self.closed = True
        if self.lock.acquire(blocking=False):
            try:
                shutil.rmtree(self.folder, ignore_errors=True)
                if self.con is not None:
                    self.con.close()
                    self.con = None
            finally:
                self.lock.release()


# --- HTTP ----------------------------------------------------------------------------------------


class ViewRun:
    """The ``$viewdefinition-run`` endpoints of one app."""

    def __init__(self, store: Any, config: ViewRunConfig | None = None, *,
                 prefix: str = "/fhir") -> None:
        self.store = store
        self.config = config or ViewRunConfig()
        self.prefix = prefix.rstrip("/")
        self._database: Any = None  # DuckDB, in memory, opened by the first run
        self._lock = threading.Lock()

    def routes(self) -> list[Route]:
        p = self.prefix  # every method: the handler answers 405 itself
        return [Route(f"{p}/${OPERATION}", self.run, methods=_METHODS),
                Route(f"{p}/ViewDefinition/${OPERATION}", self.run, methods=_METHODS)]

    async def run(self, request: Request) -> Response:
        try:
            if request.method not in ("GET", "POST"):
                raise FhirError(405, f"{request.method} is not allowed on ${OPERATION}; "
                                     "allowed: GET, POST", code="not-supported")
            params: list[tuple[str, Any]] = list(request.query_params.multi_items())
            if request.method == "POST":
                params += body_parameters(await self._body(request))
            wanted = plan_of(params, request.headers.get("accept"), request.method)
            ctx: AccessContext | None = request.scope.get("songkhoe.access")
            access = CURRENT.get()  # the caller's rules, set by the guard
            if wanted.resources is None:
                check_access(ctx, access, wanted.view.resource)
            run = await run_in_threadpool(self._start, wanted, ctx, access)
        except FhirError as err:
            return error_response(err)
        except Exception as exc:  # noqa: BLE001 - a bug: logged, answered 500
            return internal_error_response(exc, f"{request.method} {request.url.path}")
        try:
            first = await run_in_threadpool(run.step)
        except FhirError as err:
            run.close()
            return error_response(err)
        except Exception as exc:  # noqa: BLE001 - a bug: logged, answered 500
            run.close()
            return internal_error_response(exc, f"{request.method} {request.url.path}")
        request.scope.setdefault("songkhoe.audit", {})["detail"] = wanted.describe()
        media = MEDIA[wanted.format]
        if wanted.format == "csv":
            media += "; header=" + ("present" if wanted.header else "absent")
        return StreamingResponse(self._stream(request, run, first, ctx), media_type=media,
                                 background=BackgroundTask(run.close))

    def _start(self, wanted: Plan, ctx: AccessContext | None, access: Access | None) -> Run:
        """The run, its source of resources chosen (blocking: reads the store)."""
        if wanted.resources is not None:
            return Run(wanted, inline_pages(wanted.resources), self.config, self._cursor)
        rtype, page = wanted.view.resource, self.config.page
        until = Jobs(self.store).snapshot_time()
        chosen = people(self.store, wanted, ctx, access, until)
        if chosen is None:
            selection = Selection(rtype, until=until, since=wanted.since)
            pages = type_pages(self.store, access, selection, page)
        else:
            pages = people_pages(self.store, access, rtype, chosen, until, wanted.since, page)
        return Run(wanted, pages, self.config, self._cursor)

    def _cursor(self) -> Any:
        """A connection of its own to this app's DuckDB database: opening a database costs
        40-200 ms, a cursor next to nothing (measured on the 2-core machine)."""
        with self._lock:
            if self._database is None:
                import duckdb

                self._database = duckdb.connect()
            return self._database.cursor()

    async def _stream(self, request: Request, run: Run, first: bytes | None,
                      ctx: AccessContext | None) -> AsyncIterator[bytes]:
        status, detail = 500, "stopped: the client went away"
        try:
            piece: bytes | None = first
            while piece is not None:
                if piece:
                    yield piece
                piece = await run_in_threadpool(run.step)
            status, detail = 200, "complete"
        except FhirError as err:  # a later chunk's error: the answer is cut short
            status, detail = err.status, f"failed after {run.rows} rows: {err.message}"
            _log.warning("%s %s: %s", request.method, request.url.path, detail)
            raise
        except Exception as exc:
            detail = f"failed after {run.rows} rows: {type(exc).__name__}"
            _log.exception("%s %s: %s", request.method, request.url.path, detail)
            raise
        finally:  # nothing awaited here: a client that went away cancels every await
            run.close()
            self._audit(request, ctx, status,
                        f"$viewdefinition-run {detail}: {run.rows} rows from {run.read} "
                        f"resources")

    @staticmethod
    def _audit(request: Request, ctx: AccessContext | None, status: int, detail: str) -> None:
        """One more AuditEvent when the rows are out (security on)."""
        writer = request.app.state.audit_writer
        if writer is None:
            return
        client = request.client
        writer.queue(Event(interaction="operation", method=request.method,
                           path=request.url.path, status=status,
                           query=request.url.query, access=ctx,
                           address=client.host if client else None, detail=detail))

    async def _body(self, request: Request) -> Any:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in _FHIR_JSON:
            raise FhirError(415, f"A POST carries a Parameters resource as {_FHIR_JSON[0]}",
                            code="not-supported")
        limit = request.app.state.fhir.max_body_bytes
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise FhirError(413, f"The request body exceeds this server's limit of {limit} "
                                     "bytes", code="too-costly")
            chunks.append(chunk)
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as exc:
            raise FhirError(400, f"The body is not JSON: {exc}", code="structure") from None

