"""What security costs: the issue-2 HTTP throughput figures with authentication, row-level
access and audit on, against the same runs with ``--insecure-no-auth``.

Target (issue 5): authorisation and audit together cost < 15% of throughput.

Each backend gets one database: the demo province's Organizations (Ministry → Department →
commune stations), a health worker of one station, and N Patients managed by that station.
Then, alternating the two server modes ``--rounds`` times (so that load from elsewhere on the
machine falls on both alike), it measures

- read by id: ``wrk`` (Debian package ``wrk``) requesting random Patients, with the health
  worker's bearer token when secured — every request verifies the ES256 token, checks the
  Patient's owner row against the station's subtree, and appends a hash-chained AuditEvent
  (to the log's own database: on SQLite a file beside the store's, removed with it here);
- the server's CPU time per read (``ServerProcess.cpu_seconds`` around the ``wrk`` run; on
  PostgreSQL without the database server's own): on a machine shared with other work the
  throughput ratio moves with the load, CPU per read much less; ``1 - insecure / secured``
  of it is the throughput a CPU-bound server loses;
- transaction Bundles: the 17-resource check-up Bundle of ``bench_transactions`` (its Patient
  managed by the station), 4 clients — owner rows written, the commit-time scope check, an
  AuditEvent per Bundle; and the server's CPU time per Bundle (PostgreSQL's own left out).

``--parts``: where the secured read's extra server CPU goes, without sockets or ``wrk``: the
ASGI app called in process (16 concurrent requests on one event loop), process CPU time per
read for four apps over the same database, alternating: insecure; secured; secured with the
AuditEvents built but not queued or written (``audit write``); and also without row-level
rules (``access rules``; what is left is the guard: token, scopes, routing, the AuditEvent's
``Event``). Medians of ``--rounds``.

    python bench/bench_auth.py [--backend sqlite|postgres] [--patients 20000] [--seconds 15]
    python bench/bench_auth.py --parts [--backend sqlite|postgres] [--patients 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop
from common import emit, fresh_db, post_all, wrk_figures
from checkup import checkup_bundle
from tests.server import ServerProcess

from songkhoe.auth import Auth, ScopeSet
from songkhoe.auth.audit_db import audit_path
from songkhoe.auth.identities import ROLES
from songkhoe.rest import create_app
from songkhoe.store import open_store
from songkhoe.store.bulk import load
from songkhoe.synth.facilities import station_id

LUA = """
local ids = {}
for line in io.lines("%s") do ids[#ids + 1] = line end
math.randomseed(42)
wrk.headers["Authorization"] = "%s"
request = function()
  return wrk.format("GET", "/fhir/Patient/" .. ids[math.random(#ids)])
end
"""
STATION = station_id(1)
PASSWORD = "bench password 2026"


def _organizations() -> list[tuple[str, dict]]:
    orgs = [("moh", None), ("so-01", "moh"), (STATION, "so-01"), ("tyt-00004", "so-01")]
    out = []
    for id_, parent in orgs:
        body: dict = {"resourceType": "Organization", "id": id_, "name": id_}
        if parent:
            body["partOf"] = {"reference": f"Organization/{parent}"}
        out.append((f"org:{id_}", body))
    return out


def prepare(backend: str, patients: int) -> str:
    url = fresh_db(backend, "songkhoe_bench_auth")
    if backend == "sqlite":  # and the audit log's own file (``auth.audit_db``)
        log_file = audit_path(url.removeprefix("sqlite://"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{log_file}{suffix}").unlink(missing_ok=True)
    rng = random.Random(7)
    resources = _organizations()
    for n in range(patients):
        patient = checkup_bundle(rng)["entry"][0]["resource"]
        patient["id"] = f"p{n}"
        patient["managingOrganization"] = {"reference": f"Organization/{STATION}"}
        resources.append((f"gen:{n}", patient))
    store = open_store(url)
    summary = load(store, resources)
    assert summary.loaded == len(resources) and not summary.rejected
    Auth(store).identities.add_user("ytx-bench", PASSWORD, "health_worker", STATION)
    store.close()
    return url


def _token(server: ServerProcess) -> str:
    r = httpx.post(f"http://127.0.0.1:{server.port}/auth/token", data={
        "grant_type": "password", "username": "ytx-bench", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return f"Bearer {r.json()['access_token']}"


def reads(server: ServerProcess, bearer: str, patients: int, seconds: int) -> dict:
    work = Path(tempfile.mkdtemp())
    (work / "ids.txt").write_text("\n".join(f"p{n}" for n in range(patients)) + "\n")
    (work / "read.lua").write_text(LUA % (work / "ids.txt", bearer))
    base = f"http://127.0.0.1:{server.port}"
    subprocess.run(["wrk", "-t1", "-c8", "-d2s", "-s", str(work / "read.lua"), base],
                   check=True, capture_output=True)
    cpu = server.cpu_seconds()
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", "-s",
                          str(work / "read.lua"), base],
                         check=True, capture_output=True, text=True).stdout
    cpu = server.cpu_seconds() - cpu
    figures = wrk_figures(out)
    assert figures["non_2xx"] == 0, out
    count = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {**{k: figures[k] for k in ("requests_per_s", "p50_ms", "p99_ms")},
            "server_cpu_us_per_read": cpu / count * 1e6}


def bundles(server: ServerProcess, bearer: str, count: int, seed: int) -> dict:
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        bundle = checkup_bundle(rng)
        bundle["entry"][0]["resource"]["managingOrganization"] = {
            "reference": f"Organization/{STATION}"}
        bodies.append(orjson.dumps(bundle))
    headers = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}
    if bearer:
        headers["Authorization"] = bearer
    cpu = server.cpu_seconds()
    seconds = post_all(server.base, bodies, 4, headers)
    return {"resources_per_s": count * 17 / seconds,
            "server_cpu_ms_per_bundle": (server.cpu_seconds() - cpu) / count * 1e3}


def run(backend: str, patients: int, seconds: int, rounds: int, count: int) -> None:
    url = prepare(backend, patients)
    results: dict[bool, list[dict]] = {False: [], True: []}
    for n in range(rounds):
        for secure in (False, True):
            server = ServerProcess(url, workers=2, secure=secure).start()
            try:
                bearer = _token(server) if secure else "none"
                figure = reads(server, bearer, patients, seconds)
                figure.update(bundles(server, bearer if secure else "", count, seed=n))
            finally:
                server.stop()
            results[secure].append(figure)
    for key in ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_read",
                "resources_per_s", "server_cpu_ms_per_bundle"):
        off = sorted(r[key] for r in results[False])[rounds // 2]
        on = sorted(r[key] for r in results[True])[rounds // 2]
        # throughput lost; for CPU per read, the throughput a CPU-bound server would lose
        cost = 1 - on / off if key.endswith("per_s") else (
            1 - off / on if key.startswith("server_cpu") else on / off - 1)
        emit(name=f"security_cost_{key}", backend=backend, insecure=round(off, 2),
             secured=round(on, 2), cost_percent=round(cost * 100, 1),
             rounds=rounds, patients=patients, read_seconds=seconds, bundles=count,
             median_of=rounds)


def _get(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> Any:
    """One GET through the ASGI app; fails unless it answers 200."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 8000)}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message

    return app(scope, receive, send)


def parts(backend: str, patients: int, rounds: int, per_round: int = 3000) -> None:
    url = prepare(backend, patients)
    store = open_store(url)
    auth = Auth(store)
    token = auth.tokens.issue(subject="ytx-bench", kind="user", role="health_worker",
                              org=STATION, scope=ScopeSet.parse(ROLES["health_worker"]),
                              client_id=None)[0]
    no_rules = Auth(store)
    with_rules = no_rules.verify_with_rules
    no_rules.verify_with_rules = lambda t, a=None: (with_rules(t, a)[0], None)  # type: ignore
    apps = {"insecure": create_app(store), "secured": create_app(store, auth=auth),
            "no audit write": create_app(store, auth=auth),
            "no audit write, no access rules": create_app(store, auth=no_rules)}
    for name in ("no audit write", "no audit write, no access rules"):
        apps[name].state.audit_writer.queue = lambda event: None
    rng = random.Random(3)
    cpu: dict[str, list[float]] = {name: [] for name in apps}

    async def measure() -> None:
        for _ in range(rounds):
            for name, app in apps.items():
                headers = [(b"host", b"bench"), (b"accept", b"*/*")]
                if name != "insecure":
                    headers.append((b"authorization", f"Bearer {token}".encode()))
                ids = iter([f"p{rng.randrange(patients)}" for _ in range(per_round)])

                async def client(app: Any, ids: Any, headers: list[Any]) -> None:
                    for pid in ids:
                        await _get(app, f"/fhir/Patient/{pid}", headers)

                start = time.process_time()
                await asyncio.gather(*(client(app, ids, headers) for _ in range(16)))
                if app.state.audit_writer is not None:
                    await app.state.audit_writer.drain()
                cpu[name].append((time.process_time() - start) / per_round * 1e6)

    uvloop.run(measure())
    median = {name: sorted(v)[rounds // 2] for name, v in cpu.items()}
    emit(name="security_cost_parts_us_per_read", backend=backend, patients=patients,
         rounds=rounds, reads_per_round=per_round,
         **{name: round(v, 1) for name, v in median.items()},
         audit_write=round(median["secured"] - median["no audit write"], 1),
         access_rules=round(median["no audit write"]
                            - median["no audit write, no access rules"], 1),
         guard=round(median["no audit write, no access rules"] - median["insecure"], 1))
    store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--patients", type=int, default=20000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bundles", type=int, default=300)
    parser.add_argument("--parts", action="store_true",
                        help="in-process CPU per read: where the security cost goes")
    args = parser.parse_args()
    if args.parts:
        for backend in args.backend or ["sqlite", "postgres"]:
            parts(backend, args.patients, args.rounds)
        raise SystemExit(0)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    for backend in args.backend or ["sqlite", "postgres"]:
        run(backend, args.patients, args.seconds, args.rounds, args.bundles)
