"""Audit log append cost: microseconds per ``AuditLog.record`` (one AuditEvent, one short
write transaction: read the chain head, insert the hash-chained row and its search columns).

The log is in its own database (``auth.audit_db``: on SQLite a file beside the store's). A
realistic mix of events (reads of Patients and Observations, searches with a patient
parameter, creates, refused requests, one break-the-glass session in fifty) is appended
after ``--prefill`` entries, so that the search indexes are not empty. Run it on the code
before and after a change to the audit table to see what indexing costs per entry.

``--batch N`` appends N entries per transaction (``AuditLog.record_many``), as the server's
writer does with the entries of answered requests; the figures are then per entry.

    python bench/bench_audit.py [--backend sqlite|postgres] [--prefill 20000] [--events 5000]
                                [--batch 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path
from typing import Any

from common import emit, fresh_db

from songkhoe.auth import AccessContext, Auth, ScopeSet
from songkhoe.auth.audit import Event
from songkhoe.auth.audit_db import audit_path
from songkhoe.store import open_store

USERS = [(f"user{i:04d}", random.Random(i).choice(["doctor", "health_worker", "specialist"]),
          f"tyt-{i % 300:05d}") for i in range(2000)]


def events(rng: random.Random, n: int) -> list[Event]:
    scopes = ScopeSet.parse("user/*.cruds")
    out = []
    for _ in range(n):
        name, role, org = rng.choice(USERS)
        btg = rng.random() < 0.02
        access = AccessContext(subject=name, kind="user", role=role, org=org, scopes=scopes,
                               client_id="web" if rng.random() < 0.5 else None,
                               purpose="ETREAT" if btg else None, break_glass=btg,
                               address=f"10.{rng.randrange(256)}.{rng.randrange(256)}.7",
                               token_id=f"jti-{rng.randrange(10**9)}")
        pid = f"p{rng.randrange(10**6)}"
        kind = rng.random()
        if kind < 0.4:
            e = Event("read", "GET", f"/fhir/Patient/{pid}", 200, entity=f"Patient/{pid}",
                      access=access, address=access.address)
        elif kind < 0.6:
            oid = f"o{rng.randrange(10**7)}"
            e = Event("read", "GET", f"/fhir/Observation/{oid}", 200,
                      entity=f"Observation/{oid}", access=access, address=access.address)
        elif kind < 0.85:
            e = Event("search-type", "GET", "/fhir/Observation", 200,
                      query=f"patient={pid}&code=http://loinc.org|8480-6&_count=50",
                      access=access, address=access.address)
        elif kind < 0.95:
            e = Event("create", "POST", "/fhir/Observation", 201,
                      entity=f"Observation/n{rng.randrange(10**7)}", access=access,
                      address=access.address)
        else:
            e = Event("read", "GET", f"/fhir/Patient/{pid}", 403, entity=f"Patient/{pid}",
                      access=access, address=access.address, detail="forbidden")
        out.append(e)
    return out


def run(backend: str, prefill: int, n: int, size: int = 1) -> None:
    rng = random.Random(2026)
    url = fresh_db(backend, "songkhoe_bench_audit")
    if backend == "sqlite":  # the log's own file beside the store's (``auth.audit_db``)
        log_file = audit_path(url.removeprefix("sqlite://"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{log_file}{suffix}").unlink(missing_ok=True)
    store = open_store(url)
    try:
        auth = Auth(store)
        log: Any = auth.audit
        for e in events(rng, prefill):
            log.record(e)
        batch = events(rng, n)
        times = []
        cpu = time.process_time()
        for start in range(0, n, size):
            group = batch[start:start + size]
            t0 = time.perf_counter()
            log.record_many(group)
            times += [(time.perf_counter() - t0) / len(group)] * len(group)
        cpu = time.process_time() - cpu
        assert log.verify() is None
        times.sort()
        emit(figure="audit append", backend=backend, prefill=prefill, events=n, batch=size,
             mean_us=round(statistics.fmean(times) * 1e6, 1),
             p50_us=round(times[len(times) // 2] * 1e6, 1),
             p99_us=round(times[int(len(times) * 0.99)] * 1e6, 1),
             client_cpu_us=round(cpu / n * 1e6, 1))
    finally:
        store.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--prefill", type=int, default=20000)
    p.add_argument("--events", type=int, default=5000)
    p.add_argument("--batch", type=int, default=1, help="entries per transaction")
    a = p.parse_args()
    run(a.backend, a.prefill, a.events, a.batch)


if __name__ == "__main__":
    main()
