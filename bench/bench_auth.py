"""What security costs: the issue-2 HTTP throughput figures with authentication, row-level
access and audit on, against the same runs with ``--insecure-no-auth``.

Target (issue 5): authorisation and audit together cost < 15% of throughput.

Each backend gets one database: the demo province's Organizations (Ministry → Department →
commune stations), a health worker of one station, and N Patients managed by that station.
Then, alternating the two server modes ``--rounds`` times (so that load from elsewhere on the
machine falls on both alike), it measures

- read by id: ``wrk`` (Debian package ``wrk``) requesting random Patients, with the health
  worker's bearer token when secured — every request verifies the ES256 token, checks the
  Patient's owner row against the station's subtree, and appends a hash-chained AuditEvent;
- transaction Bundles: the 17-resource check-up Bundle of ``bench_transactions`` (its Patient
  managed by the station), 4 clients — owner rows written, the commit-time scope check, an
  AuditEvent per Bundle.

    python bench/bench_auth.py [--backend sqlite|postgres] [--patients 20000] [--seconds 15]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import orjson
from common import emit, fresh_db, post_all, wrk_figures
from checkup import checkup_bundle
from tests.server import ServerProcess

from songkhoe.auth import Auth
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
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", "-s",
                          str(work / "read.lua"), base],
                         check=True, capture_output=True, text=True).stdout
    figures = wrk_figures(out)
    assert figures["non_2xx"] == 0, out
    return {k: figures[k] for k in ("requests_per_s", "p50_ms", "p99_ms")}


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
    return {"resources_per_s": count * 17 / post_all(server.base, bodies, 4, headers)}


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
    for key in ("requests_per_s", "p50_ms", "p99_ms", "resources_per_s"):
        off = sorted(r[key] for r in results[False])[rounds // 2]
        on = sorted(r[key] for r in results[True])[rounds // 2]
        emit(name=f"security_cost_{key}", backend=backend, insecure=round(off, 2),
             secured=round(on, 2), cost_percent=round((1 - on / off) * 100, 1)
             if key.endswith("per_s") else round((on / off - 1) * 100, 1),
             rounds=rounds, patients=patients, read_seconds=seconds, bundles=count,
             median_of=rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--patients", type=int, default=20000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bundles", type=int, default=300)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    for backend in args.backend or ["sqlite", "postgres"]:
        run(backend, args.patients, args.seconds, args.rounds, args.bundles)
