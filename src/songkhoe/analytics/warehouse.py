"""The analytics warehouse: ViewDefinitions materialised as Parquet, refreshed incrementally
from the store's change feed.

SQL on FHIR v2 ViewDefinitions (https://build.fhir.org/ig/FHIR/sql-on-fhir-v2/, run by
:mod:`.duckdb_runner`) over the store's resources (:mod:`songkhoe.store.changes`), written as
Parquet (https://parquet.apache.org/docs/) in Hive-style partitions that DuckDB and Spark read.

A warehouse folder::

    _state.json                                         what is current (the manifest)
    <view>/rows/warehouse_segment=<n>/part-<k>.parquet  the view's columns + warehouse_resource_id
    <view>/superseded/warehouse_segment=<n>/keys.parquet  warehouse_resource_id

A view's rows are **segments**, numbered per view. A *base* segment holds every row of the
view at some feed position (a full build, or a compaction); a *delta* segment holds the rows
of the resources of the view's type that changed in one refresh, and in ``superseded`` the
ids of all of them (new, changed and deleted). Every row carries its resource's id, so a row
of segment *s* is current unless its resource is listed in a later segment's keys — a new
version or a deletion supersedes the older rows, and a refresh after 1% of the data changed
writes about 1% of the rows (:func:`view_sql`). Deltas are merged into a new base when more
than ``max_deltas`` pile up or they cover more than ``delta_share`` of the base (compaction).

``_state.json`` lists the live segments, the feed position they reflect and each view's
digest; it is replaced atomically (written aside, fsynced, renamed) once the new segments are
in place, so a refresh that dies leaves the previous state readable, and the next refresh
removes what it left and starts again from the previous position. Segments replaced by a
new base are kept until the next refresh, for readers that opened the previous state. A view
whose definition changed (its digest) is rebuilt in full, as is every view with ``full``, on
a first refresh, or when the store is another database or went back (a restored copy).

:func:`connect` gives a DuckDB connection in which every view is a SQL VIEW of its current
rows; docs/warehouse.md shows the same for Spark.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import math
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from songkhoe.store import Store
from songkhoe.store.changes import Position, changed, comparable, current, position

from .duckdb_runner import to_parquet
from .viewdefinition import SQL_NAME, ViewDefinition, ViewDefinitionError, parse_view

#: the column every row carries: the id of the resource it comes from
KEY = "warehouse_resource_id"
#: the Hive partition column of segments
SEGMENT = "warehouse_segment"
STATE = "_state.json"
#: the layout written here; a warehouse of another format is rebuilt in full
FORMAT = 1
#: the ViewDefinitions refreshed by default
DEFAULT_VIEWS = Path(__file__).parent / "views"
#: resources per NDJSON chunk read from the store: one Parquet file per chunk and view
CHUNK = 100_000

Progress = Callable[[str], None]
_KEYS = pa.schema([(KEY, pa.string())])
_LINES = 1000  # changed resources per block read for a delta
T = TypeVar("T")


class WarehouseError(RuntimeError):
    """A warehouse that cannot be refreshed or read as asked (the message says why)."""


# -- views ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WarehouseView:
    """A ViewDefinition as the warehouse runs it: ``keyed`` is the definition with the
    :data:`KEY` column added (a select of one row per resource, so the rows are the view's
    own); ``digest`` changes whenever the definition (or :data:`FORMAT`) does."""

    name: str
    resource: str
    columns: tuple[str, ...]
    digest: str
    keyed: ViewDefinition


def load_views(directory: str | os.PathLike[str]) -> dict[str, WarehouseView]:
    """The ViewDefinitions in the ``*.json`` files of ``directory``, by name (the view's
    ``name``, else the file's stem). WarehouseError when there are none, a file is not a
    valid ViewDefinition (naming the element), a name is not a SQL name or appears twice, or
    a view uses a column name the warehouse adds."""
    folder = Path(directory)
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise WarehouseError(f"no ViewDefinitions (*.json) in {folder}: give the folder "
                             "holding them with --views DIR")
    views: dict[str, WarehouseView] = {}
    for path in files:
        try:
            definition = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
            view = parse_view(definition)
        except (ValueError, ViewDefinitionError) as exc:  # the element, for an invalid view
            raise WarehouseError(f"{path}: {exc}") from None
        name = view.name or path.stem
        if SQL_NAME.fullmatch(name) is None:
            raise WarehouseError(f"{path}: the view's name {name!r} is not a SQL name "
                                 "([A-Za-z][A-Za-z0-9_]*)")
        if name in views:
            raise WarehouseError(f"{path}: a second view named {name!r}")
        taken = {KEY, SEGMENT} & set(view.column_names)
        if taken:
            raise WarehouseError(f"{path}: the column {sorted(taken)[0]!r} is the warehouse's "
                                 "own; rename the view's column")
        keyed = parse_view({**definition, "select": [
            *definition["select"], {"column": [{"name": KEY, "path": "id", "type": "id"}]}]})
        canonical = json.dumps(definition, sort_keys=True, default=str, ensure_ascii=False)
        digest = hashlib.sha256(f"{FORMAT}\n{canonical}".encode()).hexdigest()
        views[name] = WarehouseView(name, view.resource, view.column_names, digest, keyed)
    return views


# -- reading ---------------------------------------------------------------------------------------

def connect(directory: str | os.PathLike[str],
            con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (``con``, or a new in-memory one) in which each view of the
    warehouse is a SQL VIEW of its current rows, by the view's name. The views read the files
    of the state at this call; connect again after a refresh to see its rows."""
    folder = Path(directory).resolve()
    state = read_state(folder)
    if state is None:
        raise WarehouseError(f"no warehouse in {folder}: run `songkhoe warehouse refresh "
                             f"--dir {folder}` first")
    db = con if con is not None else duckdb.connect()
    for name, view in state["views"].items():
        db.execute(f"CREATE OR REPLACE VIEW {_ident(name)} AS {view_sql(folder, view)}")
    return db


def view_sql(folder: Path, view: dict[str, Any]) -> str:
    """The query of a view's current rows (its columns, in order) from its entry in the state:
    the rows of every segment, less those whose resource a later segment lists."""
    rows = [str(folder / f) for s in view["segments"] for f in s["files"]]
    keys = [str(folder / s["keys"]) for s in view["segments"] if s["keys"]]
    columns = ", ".join(f"r.{_ident(c)}" for c in view["columns"])
    source = f"{_parquet(rows)} AS r"
    if not keys:
        return f"SELECT {columns} FROM {source}"
    return (f"SELECT {columns} FROM {source} LEFT JOIN (SELECT {KEY}, max({SEGMENT}) AS latest "
            f"FROM {_parquet(keys)} GROUP BY {KEY}) AS k ON k.{KEY} = r.{KEY} "
            f"WHERE k.latest IS NULL OR k.latest <= r.{SEGMENT}")


def _parquet(files: list[str]) -> str:
    listed = ", ".join(_literal(f) for f in files)
    return (f"read_parquet([{listed}], hive_partitioning = true, "
            f"hive_types = {{'{SEGMENT}': BIGINT}})")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- refreshing ------------------------------------------------------------------------------------

@dataclass
class ViewReport:
    """What a refresh did to one view: ``mode`` full | delta | unchanged. A delta's files
    (``files``: its rows; ``keys``: the ids of every resource it changed, deleted ones too;
    paths relative to the warehouse folder) stay readable until the next refresh, even when
    a compaction merged them away."""

    mode: str
    resources: int = 0  # resources of the view's type read
    deleted: int = 0  # of which deleted (delta)
    rows: int = 0  # rows written
    seconds: float = 0.0
    compacted: bool = False
    files: list[str] = field(default_factory=list)
    keys: str | None = None


@dataclass
class RefreshReport:
    views: dict[str, ViewReport] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)  # resources read per type
    read_seconds: float = 0.0  # of which reading the store and writing NDJSON
    seconds: float = 0.0


def refresh(store: Store, directory: str | os.PathLike[str],
            views: str | os.PathLike[str] | None = None, *, full: bool = False,
            progress: Progress | None = None, chunk: int = CHUNK, max_deltas: int = 8,
            delta_share: float = 0.25, threads: int | None = None) -> RefreshReport:
    """Bring the warehouse in ``directory`` up to the store's current position: views whose
    definition is unchanged get a delta segment of the resources changed since the last
    refresh, the others (all with ``full``) a new base. ``views``: the folder of
    ViewDefinitions (default :data:`DEFAULT_VIEWS`); ``progress`` receives a line per step;
    ``threads``: DuckDB's threads (set on the process's database; default one per core)."""
    say = progress or (lambda line: None)
    started = time.perf_counter()
    folder = Path(directory).resolve()
    definitions = load_views(views if views is not None else DEFAULT_VIEWS)
    with _exclusive(folder):
        old = read_state(folder)
        _remove_leftovers(folder, old)
        end = position(store)
        start = _start(old, end, say)
        number = (old["refresh"] + 1) if old else 1
        entries: dict[str, dict[str, Any]] = {}
        plans: dict[str, str] = {}
        for name, view in definitions.items():
            entry = (old or {}).get("views", {}).get(name)
            if full or start is None or entry is None or entry["digest"] != view.digest:
                plans[name] = "full"
                if entry is not None and not full and start is not None:
                    say(f"{name}: its definition changed, rebuilding it in full")
            else:
                plans[name] = "delta"
            entries[name] = {"resource": view.resource, "digest": view.digest,
                             "columns": list(view.columns),
                             "next": entry["next"] if entry else _unused(folder, name),
                             "segments": list(entry["segments"]) if entry and plans[name] ==
                             "delta" else []}
        report = RefreshReport()
        work = folder / "_work"
        work.mkdir()
        db = _duckdb()
        if threads:
            db.execute(f"SET threads = {int(threads)}")
        run = _Run(store, folder, work, db, definitions, entries, report, say, chunk)
        try:
            for rtype in sorted({v.resource for v in definitions.values()}):
                run.type(rtype, plans, start, end)
            state = {"format": FORMAT, "refresh": number, "position": end.to_json(),
                     "views": entries, "retired": _retired(old, number, entries)}
            run.synced()
            _commit(folder, work, state, old, run.disk)
            committed = copy.deepcopy(state)
            for name, entry in entries.items():
                if _needs_compaction(entry, max_deltas, delta_share):
                    report.views[name].compacted = True
                    run.compact(name, entry)
            if any(r.compacted for r in report.views.values()):
                state["retired"] = _retired(committed, number, entries)
                run.synced()
                _commit(folder, work, state, committed, run.disk)
        finally:
            run.disk.shutdown()  # waits for the files being synced before they are removed
            db.close()
            shutil.rmtree(work, ignore_errors=True)
    report.seconds = time.perf_counter() - started
    say(f"refresh {number} done in {report.seconds:.2f} s (store read "
        f"{report.read_seconds:.2f} s)")
    return report


_database: duckdb.DuckDBPyConnection | None = None
_database_lock = threading.Lock()


def _duckdb() -> duckdb.DuckDBPyConnection:
    """A cursor of this process's in-memory DuckDB database, made at first use: making a
    database costs 25–50 ms, and 200–300 ms on a busy machine, which would weigh on every
    small refresh of a process that refreshes again and again."""
    global _database
    with _database_lock:
        if _database is None:
            _database = duckdb.connect()
        return _database.cursor()


def _start(old: dict[str, Any] | None, end: Position, say: Progress) -> Position | None:
    """The position to read changes from, or None for a full build of every view."""
    if old is None:
        say("no previous state: building every view in full")
        return None
    if old.get("format") != FORMAT:
        say(f"the warehouse has format {old.get('format')}, this songkhoe writes {FORMAT}: "
            "building every view in full")
        return None
    start = Position.from_json(old["position"])
    if not comparable(start, end):
        say("the store is another database than last time, or went back (a restored copy): "
            "building every view in full")
        return None
    return start


class _Run:
    """The segments one refresh writes into ``work`` (moved into place by :func:`_commit`)."""

    def __init__(self, store: Store, folder: Path, work: Path, db: duckdb.DuckDBPyConnection,
                 views: dict[str, WarehouseView], entries: dict[str, dict[str, Any]],
                 report: RefreshReport, say: Progress, chunk: int) -> None:
        self.store, self.folder, self.work, self.db = store, folder, work, db
        self.views, self.entries, self.report, self.say = views, entries, report, say
        self.chunk = chunk
        self.disk = ThreadPoolExecutor(max_workers=4, thread_name_prefix="warehouse-fsync")
        self.syncing: list[Future[None]] = []

    def sync(self, path: Path) -> None:
        """Put ``path`` on disk in the background (``fsync`` releases the GIL, so the next
        view runs meanwhile); :meth:`synced` waits for every one."""
        self.syncing.append(self.disk.submit(_fsync, path))

    def synced(self) -> None:
        """Wait until every file given to :meth:`sync` is on disk (raises its error): before a
        state that names them is written."""
        syncing, self.syncing = self.syncing, []
        for future in syncing:
            future.result()

    def type(self, rtype: str, plans: dict[str, str], start: Position | None,
             end: Position) -> None:
        """The segments of the views of ``rtype``: a base for those rebuilt, a delta for the
        others."""
        names = [n for n, v in self.views.items() if v.resource == rtype]
        rebuilt = [n for n in names if plans[n] == "full"]
        kept = [n for n in names if plans[n] == "delta"]
        if rebuilt:
            self.full(rtype, rebuilt)
        if kept:
            assert start is not None
            self.delta(rtype, kept, start, end)

    def full(self, rtype: str, names: list[str]) -> None:
        """A base segment of each view in ``names`` from every live resource of ``rtype``."""
        started = time.perf_counter()
        segments = {n: self._segment(n, base=True) for n in names}
        reading = 0.0
        total = 0
        for path, count, seconds in _prefetched(self._chunks(rtype, current(self.store, rtype))):
            reading += seconds
            total += count
            for name in names:
                self._rows(name, segments[name], path, count)
            path.unlink()
        if total == 0:  # an empty Parquet file still gives the view its columns
            empty = self.work / f"{rtype}.empty.ndjson"
            empty.touch()
            for name in names:
                self._rows(name, segments[name], empty, 0)
        self._read(rtype, total, reading)
        for name in names:
            self._finish(name, segments[name], "full", started, reading)

    def delta(self, rtype: str, names: list[str], start: Position, end: Position) -> None:
        """A delta segment of each view in ``names``: the rows of the resources of ``rtype``
        changed from ``start`` to ``end``, and their ids (deleted ones too)."""
        started = time.perf_counter()
        keys_path = self.work / f"{rtype}.keys.parquet"
        deleted = 0
        with pq.ParquetWriter(keys_path, _KEYS) as keys:
            ids: list[str] = []

            def live() -> Iterator[tuple[int, bytes]]:
                """The changed resources' lines in blocks (a write and a step of ``_chunks`` a
                block, not a line: 22,000 writes were ~10% of a refresh), of a size that
                divides ``chunk``, so that a file still holds at most ``chunk``."""
                nonlocal deleted
                block = math.gcd(_LINES, self.chunk)
                lines: list[bytes] = []
                for _, id, content in changed(self.store, [rtype], start, end):
                    ids.append(id)
                    if len(ids) == self.chunk:
                        keys.write_batch(pa.record_batch([ids], schema=_KEYS))
                        ids.clear()
                    if content is None:
                        deleted += 1
                        continue
                    lines.append(content)
                    if len(lines) == block:
                        yield len(lines), b"\n".join(lines) + b"\n"
                        lines = []
                if lines:
                    yield len(lines), b"\n".join(lines) + b"\n"
            chunks = list(self._chunks(rtype, live()))
            if ids:
                keys.write_batch(pa.record_batch([ids], schema=_KEYS))
        self.sync(keys_path)
        reading = sum(seconds for _, _, seconds in chunks)
        total = sum(count for _, count, _ in chunks) + deleted
        self._read(rtype, total, reading)
        if total == 0:
            for name in names:
                self.report.views[name] = ViewReport("unchanged")
                self.say(f"{name} ({rtype}): no changes")
            return
        for name in names:
            segment = self._segment(name, base=False)
            for path, count, _ in chunks:
                self._rows(name, segment, path, count)
            target = self._made(name, "superseded", segment)
            target.mkdir()
            os.link(keys_path, target / "keys.parquet")  # the same ids for every view
            segment["keys"] = f"{name}/superseded/{SEGMENT}={segment['segment']}/keys.parquet"
            segment["resources"] += deleted
            self._finish(name, segment, "delta", started, reading, deleted)
        for path, _, _ in chunks:
            path.unlink()

    def compact(self, name: str, entry: dict[str, Any]) -> None:
        """Merge the view's segments into one new base (its current rows)."""
        started = time.perf_counter()
        segment = self._segment(name, base=True)
        target = self._made(name, "rows", segment)
        columns = ", ".join(_ident(c) for c in [*entry["columns"], KEY])
        query = view_sql(self.folder, {**entry, "columns": [*entry["columns"], KEY]})
        self.db.execute(f"COPY (SELECT {columns} FROM ({query})) TO {_literal(str(target))} "
                        "(FORMAT parquet, FILE_SIZE_BYTES '256MB', FILENAME_PATTERN 'part-{i}')")
        for path in sorted(target.iterdir()):
            self.sync(path)
            segment["files"].append(f"{name}/rows/{SEGMENT}={segment['segment']}/{path.name}")
            segment["rows"] += pq.ParquetFile(path).metadata.num_rows
        replaced = len(entry["segments"])
        entry["segments"] = [segment]
        self.say(f"{name}: compacted {replaced} segments into segment {segment['segment']}, "
                 f"{segment['rows']:,} rows in {time.perf_counter() - started:.2f} s")

    # -- parts

    def _segment(self, name: str, *, base: bool) -> dict[str, Any]:
        entry = self.entries[name]
        segment = {"segment": entry["next"], "base": base, "files": [], "keys": None,
                   "rows": 0, "resources": 0}
        entry["next"] += 1
        return segment

    def _made(self, name: str, kind: str, segment: dict[str, Any]) -> Path:
        """Where a segment's folder of ``kind`` (rows, superseded) is made, before
        :func:`_commit` moves it to ``<name>/<kind>/warehouse_segment=<n>``."""
        return self.work / f"{name}.{kind}.{segment['segment']}"

    def _chunks(self, rtype: str,
                blocks: Iterator[tuple[int, bytes]]) -> Iterator[tuple[Path, int, float]]:
        """NDJSON files of at most ``chunk`` resources from ``blocks``: (path, resources,
        seconds spent reading and writing it)."""
        n = 0
        out: BinaryIO | None = None
        count = 0
        seconds = 0.0
        path = self.work / f"{rtype}.0.ndjson"
        mark = time.perf_counter()
        for size, data in blocks:
            if out is None:
                path = self.work / f"{rtype}.{n}.ndjson"
                out = path.open("wb")
            out.write(data)
            count += size
            if count >= self.chunk:
                out.close()
                seconds += time.perf_counter() - mark
                yield path, count, seconds
                n, out, count, seconds = n + 1, None, 0, 0.0
                mark = time.perf_counter()
        if out is not None:
            out.close()
            yield path, count, seconds + time.perf_counter() - mark

    def _rows(self, name: str, segment: dict[str, Any], ndjson: Path, resources: int) -> None:
        """Run the view over one NDJSON chunk into the segment's next Parquet file."""
        number = segment["segment"]
        target = self._made(name, "rows", segment)
        target.mkdir(exist_ok=True)
        part = f"part-{len(segment['files'])}.parquet"
        segment["rows"] += to_parquet(self.views[name].keyed, ndjson, target / part, con=self.db)
        self.sync(target / part)
        segment["files"].append(f"{name}/rows/{SEGMENT}={number}/{part}")
        segment["resources"] += resources

    def _read(self, rtype: str, resources: int, seconds: float) -> None:
        self.report.read[rtype] = self.report.read.get(rtype, 0) + resources
        self.report.read_seconds += seconds

    def _finish(self, name: str, segment: dict[str, Any], mode: str, started: float,
                reading: float, deleted: int = 0) -> None:
        entry = self.entries[name]
        entry["segments"].append(segment)
        seconds = time.perf_counter() - started
        self.report.views[name] = ViewReport(mode, segment["resources"], deleted,
                                             segment["rows"], seconds,
                                             files=list(segment["files"]), keys=segment["keys"])
        what = "full build" if mode == "full" else "changes"
        gone = f" ({deleted:,} deleted)" if deleted else ""
        self.say(f"{name} ({self.views[name].resource}): {what}, {segment['resources']:,} "
                 f"resources read{gone}, {segment['rows']:,} rows written to segment "
                 f"{segment['segment']} in {seconds:.2f} s (store read {reading:.2f} s)")


def _prefetched(items: Iterator[T]) -> Iterator[T]:
    """``items``, each produced in a thread of its own while the caller works on the one
    before: the store is read and the next chunk written while DuckDB runs the views over
    the previous one (both release the GIL while they work)."""
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        handoff.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put(("end", None))
        except BaseException as exc:  # handed to the caller, raised there
            handoff.put(("error", exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # ends the store's read transaction

    producer = threading.Thread(target=produce, name="warehouse-read", daemon=True)
    producer.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while producer.is_alive():
            try:
                handoff.get(timeout=0.1)
            except queue.Empty:
                pass
        producer.join()


def _needs_compaction(entry: dict[str, Any], max_deltas: int, share: float) -> bool:
    segments = entry["segments"]
    base = max((i for i, s in enumerate(segments) if s["base"]), default=-1)
    deltas = segments[base + 1:]
    covered = segments[base]["resources"] if base >= 0 else 0
    return bool(deltas) and (len(deltas) > max_deltas or
                             sum(d["resources"] for d in deltas) > share * max(covered, 1))


# -- the folder ------------------------------------------------------------------------------------

def read_state(folder: Path) -> dict[str, Any] | None:
    """The manifest of the warehouse in ``folder`` (``_state.json``), None if there is none."""
    path = folder / STATE
    if not path.exists():
        return None
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _segment_dirs(entry: dict[str, Any], name: str) -> set[str]:
    """The folders (relative) of a view's segments in a state entry."""
    out = set()
    for s in entry["segments"]:
        out.add(f"{name}/rows/{SEGMENT}={s['segment']}")
        if s["keys"]:
            out.add(f"{name}/superseded/{SEGMENT}={s['segment']}")
    return out


def _retired(old: dict[str, Any] | None, number: int,
             entries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Segment folders of ``old`` that ``entries`` no longer use, marked with the refresh that
    retired them (kept until a later refresh commits), plus those retired by this refresh
    before."""
    if old is None:
        return []
    live = set().union(*(_segment_dirs(e, n) for n, e in entries.items()))
    out = [r for r in old.get("retired", []) if r["refresh"] == number]
    listed = {r["path"] for r in out}
    for name, entry in old["views"].items():
        for path in sorted(_segment_dirs(entry, name) - live - listed):
            out.append({"path": path, "refresh": number})
    return out


def _unused(folder: Path, name: str) -> int:
    """The first segment number above those in a view's folders (a view defined again keeps
    its retired segments for a while)."""
    numbers = [int(p.name.partition("=")[2]) for kind in ("rows", "superseded")
               for p in (folder / name / kind).glob(f"{SEGMENT}=*")]
    return max(numbers, default=0) + 1


def _remove_leftovers(folder: Path, state: dict[str, Any] | None) -> None:
    """Remove what a refresh that died left behind: its work folder and segment folders the
    state does not know (moved into place before it could commit)."""
    shutil.rmtree(folder / "_work", ignore_errors=True)
    known = {r["path"] for r in (state or {}).get("retired", [])}
    for name, entry in (state or {}).get("views", {}).items():
        known |= _segment_dirs(entry, name)
    for view in folder.iterdir():
        if not view.is_dir() or SQL_NAME.fullmatch(view.name) is None:
            continue
        for kind in ("rows", "superseded"):
            for seg in (view / kind).glob(f"{SEGMENT}=*"):
                if f"{view.name}/{kind}/{seg.name}" not in known:
                    shutil.rmtree(seg)


def _commit(folder: Path, work: Path, state: dict[str, Any], old: dict[str, Any] | None,
            disk: ThreadPoolExecutor) -> None:
    """Move the new segments (their files already on disk) into place, replace the state
    atomically, then delete the segments retired by earlier refreshes. The folders' entries
    are synced on ``disk``'s threads, side by side (3–4 ms each on this machine's disk)."""
    made = [m for m in sorted(work.iterdir()) if m.is_dir()]  # <view>.<kind>.<n>: _Run._made
    list(disk.map(_fsync, made))
    moved: set[Path] = set()
    for segment in made:
        name, kind, number = segment.name.split(".")
        (folder / name / kind).mkdir(parents=True, exist_ok=True)
        segment.rename(folder / name / kind / f"{SEGMENT}={number}")
        moved.add(folder / name / kind)
    list(disk.map(_fsync, sorted(moved | {p.parent for p in moved})))
    text = json.dumps(state, indent=1, ensure_ascii=False).encode()
    temporary = folder / f"{STATE}.new"
    with temporary.open("wb") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(folder / STATE)
    _fsync(folder)
    keep = {r["path"] for r in state["retired"]}
    for r in (old or {}).get("retired", []):
        if r["path"] not in keep:
            shutil.rmtree(folder / r["path"], ignore_errors=True)
    for view in folder.iterdir():  # folders of views no longer defined, once empty
        if view.is_dir() and view.name not in state["views"] and view.name != "_work":
            for kind in ("rows", "superseded"):
                _rmdir_if_empty(view / kind)
            _rmdir_if_empty(view)


def _rmdir_if_empty(path: Path) -> None:
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """One refresh at a time per folder (``flock`` on ``_lock``); the folder must be empty or
    a warehouse, so that leftovers are never looked for among someone else's files."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / "_lock"
    if not lock.exists() and any(folder.iterdir()):
        raise WarehouseError(f"{folder} is neither empty nor a warehouse: give an empty or "
                             "new folder")
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WarehouseError(f"another refresh of {folder} is running") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
