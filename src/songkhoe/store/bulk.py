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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from songkhoe.fhir.outcome import FhirError

from .engine import Store, Tx, check_id, checked
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


def read_resources(path: Path) -> Iterator[tuple[str, bytes | dict[str, Any]]]:
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


def _parse(raw: bytes | dict[str, Any]) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None


def _write_batch(tx: Tx, batch: list[dict[str, Any]]) -> int:
    """Write validated resources in bulk; returns how many were unchanged."""
    backend, conn = tx.backend, tx.conn
    keys = [(r["resourceType"], r["id"]) for r in batch]
    existing: dict[tuple[str, str], tuple[int, int, bytes | None]] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        marks = ", ".join("(?, ?)" for _ in chunk)
        rows = backend.execute(conn, "SELECT r.type, r.id, r.rid, r.version, h.content FROM resources r "
                               "JOIN history h ON h.rid = r.rid AND h.version = r.version "
                               f"WHERE (r.type, r.id) IN (VALUES {marks})",
                               [x for key in chunk for x in key]).fetchall()
        for t, i, rid, version, content in rows:
            existing[(t, i)] = (rid, version, bytes(content) if content is not None else None)
    fresh: list[dict[str, Any]] = []
    changed: list[tuple[dict[str, Any], int, int]] = []
    unchanged = 0
    for resource in batch:
        key = (resource["resourceType"], resource["id"])
        if key not in existing:
            fresh.append(resource)
            continue
        rid, version, content = existing[key]
        if content is not None and _same(orjson.loads(content), resource):
            unchanged += 1
        else:
            changed.append((resource, rid, version))
    rids = [tx.new_rid() for _ in fresh]
    backend.load_rows(conn, "resources", ("rid", "type", "id", "version", "last_updated", "deleted"),
                      [(rid, r["resourceType"], r["id"], 1, tx.now, False) for r, rid in zip(fresh, rids)])
    for resource, rid in zip(fresh, rids):
        tx.stage(resource, rid, 1, "PUT")
    if changed:
        backend.executemany(conn, "UPDATE resources SET version = ?, last_updated = ?, deleted = ? "
                            "WHERE rid = ?", [(v + 1, tx.now, False, rid) for _, rid, v in changed])
        for resource, rid, version in changed:
            tx.unindex(rid)
            tx.stage(resource, rid, version + 1, "PUT")
    tx.flush()
    return unchanged


def _same(stored: dict[str, Any], incoming: dict[str, Any]) -> bool:
    """Equal apart from the store-set meta.versionId and meta.lastUpdated."""
    def strip(res: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in (res.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
        out = {k: v for k, v in res.items() if k != "meta"}
        return {**out, "meta": meta} if meta else out
    return strip(stored) == strip(incoming)


def load(store: Store, items: Iterable[tuple[str, bytes | dict[str, Any]]], *,
         progress: Callable[[int], None] | None = None) -> LoadSummary:
    """Validate and load (source, raw resource) items in batches."""
    summary = LoadSummary()
    batch: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()

    def flush() -> None:
        if batch:
            with store.transaction() as tx:
                summary.unchanged += _write_batch(tx, batch)
            summary.loaded += len(batch)
            if progress:
                progress(len(batch))
            batch.clear()
            seen.clear()

    for source, raw in items:
        try:
            resource = checked(_parse(raw))
            if "id" in resource:
                check_id(resource["id"])
            else:
                resource["id"] = new_id()
        except (FhirError, ValueError) as exc:
            reason = exc.message if isinstance(exc, FhirError) else str(exc)
            if isinstance(exc, FhirError):
                reason = "; ".join(f"{i.expression}: {i.diagnostics}" if i.expression else i.diagnostics
                                   for i in exc.issues)
            summary.rejected.append(Rejection(source, reason))
            continue
        key = (resource["resourceType"], resource["id"])
        if key in seen:  # the same resource twice in one batch: the later one wins
            flush()
        seen.add(key)
        batch.append(resource)
        if len(batch) >= BATCH:
            flush()
    flush()
    summary.loaded -= summary.unchanged
    return summary
