"""Bulk loading of NDJSON files and Bundles through the database's fast path.

Resources are read as a stream (one NDJSON line, or one Bundle entry, at a time), validated
exactly as a REST write is, and written in batches: one transaction per batch, rows loaded
with ``COPY`` on PostgreSQL and batched ``executemany`` on SQLite. A rejected line is reported
with its reason and never leaves a partial resource. A resource that carries an id is stored
under it (update-as-create); re-loading an identical resource writes nothing, so re-running a
file is idempotent. Resources without an id get a new server id on every run.
"""

from __future__ import annotations

import io
import queue
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from songkhoe.fhir.outcome import FhirError

from .api import Prepared
from .backends import open_backend
from .engine import Store, Tx, check_id, prepare
from .ids import new_id

BATCH = 2000


@dataclass
class Rejection:
    source: str  # file:line
    reason: str


@dataclass
class LoadSummary:
    loaded: int = 0
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def add(self, other: LoadSummary) -> None:
        self.loaded += other.loaded
        self.unchanged += other.unchanged
        self.rejected += other.rejected


def read_resources(path: Path) -> Iterator[tuple[str, bytes | dict[str, Any] | None]]:
    """(``file:line`` or ``file#entry``, raw line or resource) for every resource in a file."""
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
        handle.seek(0)
        if head.startswith(b"{") and b'"Bundle"' in head and b"\n{" not in head.strip():
            bundle = orjson.loads(handle.read())
            if isinstance(bundle, dict) and bundle.get("resourceType") == "Bundle":
                for n, entry in enumerate(bundle.get("entry") or []):
                    yield f"{path.name}#entry[{n}]", (entry or {}).get("resource")
                return
            handle.seek(0)
        for n, line in enumerate(io.BufferedReader(handle), start=1):  # type: ignore[arg-type]
            if line.strip():
                yield f"{path.name}:{n}", line


def _parse(raw: bytes | dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if raw is None:
        raise ValueError("the Bundle entry has no resource")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None


#: times a batch is written before a resource created by other writers meanwhile fails it
ATTEMPTS = 3


def _written(store: Store, batch: list[Prepared]) -> int:
    """``_write_batch`` in a transaction of its own (programmes run in batch after it). New
    rows go by ``COPY``, which PostgreSQL refuses, once the other commits, for a resource
    another transaction was creating at the same time (two imports of the same people): the
    batch is then written again, and finds that resource stored. (A REST write takes the same
    race by ``INSERT … ON CONFLICT``.)"""
    attempt = 1
    while True:
        try:
            with store.transaction(derive=False) as tx:
                return _write_batch(tx, batch)
        except Exception as exc:
            if attempt == ATTEMPTS or not store.backend.duplicate_key(exc):
                raise
            attempt += 1


def _write_batch(tx: Tx, batch: list[Prepared]) -> int:
    """Write prepared resources in bulk; returns how many were unchanged."""
    backend, conn = tx.backend, tx.conn
    keys = [(p.resource["resourceType"], p.resource["id"]) for p in batch]
    existing: dict[tuple[str, str], tuple[int, int, bytes | None]] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        marks = ", ".join("(?, ?)" for _ in chunk)
        # joined from the keys, so SQLite looks each up in UNIQUE (type, id); a row-value
        # "IN (VALUES …)" made it scan every resource for each chunk
        rows = backend.execute(conn, f"WITH k(type, id) AS (VALUES {marks}) "
                               "SELECT r.type, r.id, r.rid, r.version, h.content FROM k "
                               "JOIN resources r ON r.type = k.type AND r.id = k.id "
                               "JOIN history h ON h.rid = r.rid AND h.version = r.version",
                               [x for key in chunk for x in key]).fetchall()
        for t, i, rid, version, content in rows:
            existing[(t, i)] = (rid, version, bytes(content) if content is not None else None)
    fresh: list[Prepared] = []
    changed: list[tuple[Prepared, int, int]] = []
    unchanged = 0
    for prepared, key in zip(batch, keys):
        if key not in existing:
            fresh.append(prepared)
            continue
        rid, version, content = existing[key]
        if content is not None and _same(orjson.loads(content), prepared.resource):
            unchanged += 1
        else:
            changed.append((prepared, rid, version))
    rids = [tx.new_rid() for _ in fresh]
    backend.load_rows(conn, "resources", ("rid", "type", "id", "version", "last_updated", "deleted"),
                      [(rid, p.resource["resourceType"], p.resource["id"], 1, tx.now, False)
                       for p, rid in zip(fresh, rids)])
    for prepared, rid in zip(fresh, rids):
        tx.stage(prepared.resource, rid, 1, "PUT", prepared.index)
    if changed:
        locked = _locked_versions(tx, [rid for _, rid, _ in changed])
        changed = [(p, rid, locked.get(rid, v)) for p, rid, v in changed]
        backend.executemany(conn, "UPDATE resources SET version = ?, last_updated = ?, deleted = ? "
                            "WHERE rid = ?", [(v + 1, tx.now, False, rid) for _, rid, v in changed])
        for prepared, rid, version in changed:
            tx.unindex(rid)
            tx.stage(prepared.resource, rid, version + 1, "PUT", prepared.index)
    tx.flush()
    return unchanged


def _locked_versions(tx: Tx, rids: list[int]) -> dict[int, int]:
    """PostgreSQL: the rows about to get a new version locked (``FOR UPDATE``, in row order,
    as ``Tx._currents`` locks them), with their current versions: a version is not written
    twice, and a Patient moved here waits for its records' writers (``access``). Only the
    changed rows: a re-import of unchanged data locks nothing. (SQLite: the writer's lock.)"""
    if tx.backend.name != "postgres":
        return {}
    out: dict[int, int] = {}
    for start in range(0, len(rids), 500):
        chunk = rids[start:start + 500]
        out.update(tx.backend.execute(
            tx.conn, f"SELECT rid, version FROM resources WHERE rid IN "
                     f"({', '.join('?' * len(chunk))}) ORDER BY rid FOR UPDATE", chunk).fetchall())
    return out


def _same(stored: dict[str, Any], incoming: dict[str, Any]) -> bool:
    """Equal apart from the store-set meta.versionId and meta.lastUpdated."""
    def strip(res: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in (res.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
        out = {k: v for k, v in res.items() if k != "meta"}
        return {**out, "meta": meta} if meta else out
    return strip(stored) == strip(incoming)


def _prepared(source: str, raw: bytes | dict[str, Any] | None) -> Prepared | Rejection:
    """Parse, validate, normalise and index one item, or say why it is rejected."""
    try:
        prepared = prepare(_parse(raw))
        resource = prepared.resource
        if "id" in resource:
            check_id(resource["id"])
        else:
            resource["id"] = new_id()
        return prepared
    except ValueError as exc:
        return Rejection(source, str(exc))
    except FhirError as exc:
        return Rejection(source, "; ".join(f"{i.expression}: {i.diagnostics}" if i.expression
                                           else i.diagnostics for i in exc.issues))


def load(store: Store, items: Iterable[tuple[str, bytes | dict[str, Any] | None]], *,
         progress: Callable[[int], None] | None = None) -> LoadSummary:
    """Validate and load (source, raw resource) items in batches, one transaction each."""
    summary = LoadSummary()
    batch: list[Prepared] = []
    seen: set[tuple[str, str]] = set()

    def flush() -> None:
        if batch:
            summary.unchanged += _written(store, batch)
            summary.loaded += len(batch)
            if progress:
                progress(len(batch))
            batch.clear()
            seen.clear()

    for source, raw in items:
        prepared = _prepared(source, raw)
        if isinstance(prepared, Rejection):
            summary.rejected.append(prepared)
            continue
        key = (prepared.resource["resourceType"], prepared.resource["id"])
        if key in seen:  # the same resource twice in one batch: the later one wins
            flush()
        seen.add(key)
        batch.append(prepared)
        if len(batch) >= BATCH:
            flush()
    flush()
    summary.loaded -= summary.unchanged
    store.backend.refresh_statistics()
    return summary


def _route(raw: bytes | dict[str, Any] | None, workers: int, turn: int) -> int:
    """The worker for an item: by (type, id), so one resource always goes to the same worker
    and its versions keep file order; items without an id (or not JSON) in turn."""
    try:
        doc = raw if isinstance(raw, dict) or raw is None else orjson.loads(raw)
        key = (doc["resourceType"], doc["id"]) if isinstance(doc, dict) else None
    except (orjson.JSONDecodeError, KeyError, TypeError):
        key = None
    return hash(key) % workers if key is not None else turn % workers


def _load_worker(url: str, inbox: Any, outbox: Any, done: Any) -> None:
    from . import open_store

    store = open_store(url)

    def items() -> Iterator[tuple[str, bytes | dict[str, Any] | None]]:
        while (chunk := inbox.get()) is not None:
            yield from chunk

    def count(n: int) -> None:
        with done.get_lock():
            done.value += n

    try:
        outbox.put(load(store, items(), progress=count))
    finally:
        store.close()


def load_parallel(url: str, items: Iterable[tuple[str, bytes | dict[str, Any] | None]], *,
                  workers: int, progress: Callable[[int], None] | None = None,
                  chunk: int = 500) -> LoadSummary:
    """``load`` in ``workers`` processes, each with its own connection and transactions, so that
    parsing, validation and indexing use every core. Same results as ``load``."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    done = ctx.Value("q", 0)
    inboxes = [ctx.Queue(maxsize=16) for _ in range(workers)]
    outbox = ctx.Queue()
    procs = [ctx.Process(target=_load_worker, args=(url, inbox, outbox, done), daemon=True)
             for inbox in inboxes]
    for proc in procs:
        proc.start()
    pending: list[list[tuple[str, bytes | dict[str, Any] | None]]] = [[] for _ in range(workers)]
    reported = 0

    def report() -> None:
        nonlocal reported
        if progress and done.value > reported:
            progress(done.value - reported)
            reported = done.value

    try:
        for turn, (source, raw) in enumerate(items):
            target = _route(raw, workers, turn)
            pending[target].append((source, raw))
            if len(pending[target]) >= chunk:
                inboxes[target].put(pending[target])
                pending[target] = []
                report()
        for target, rest in enumerate(pending):
            if rest:
                inboxes[target].put(rest)
        for inbox in inboxes:
            inbox.put(None)
        summary = LoadSummary()
        for _ in procs:
            while True:
                try:
                    summary.add(outbox.get(timeout=0.2))
                    break
                except queue.Empty:
                    report()
                    if not any(p.is_alive() for p in procs) and outbox.empty():
                        raise RuntimeError("a load worker died: see its error above") from None
        report()
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    summary.rejected.sort(key=lambda r: _source_order(r.source))
    backend = open_backend(url)
    try:
        backend.refresh_statistics()
    finally:
        backend.close()
    return summary


def _source_order(source: str) -> tuple[str, int]:
    """``a.ndjson:12`` → ('a.ndjson', 12); ``b.json#entry[3]`` → ('b.json', 3)."""
    name, _, number = source.rstrip("]").replace("#entry[", ":").rpartition(":")
    return (name, int(number)) if number.isdigit() else (source, 0)
