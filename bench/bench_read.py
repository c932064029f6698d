"""Read by id over HTTP: requests/s and latency percentiles, measured with wrk.

Loads N Patients through the bulk path, starts ``songkhoe serve`` (2 workers), and runs
``wrk`` (Debian package ``wrk``) with a Lua script that requests random ids from the loaded
set. Target (issue 2): ≥ 3,000 requests/s with p99 < 10 ms on 2 cores, each backend.

    python bench/bench_read.py [--backend sqlite|postgres] [--patients 20000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

from common import emit, fresh_db, wrk_figures
from checkup import checkup_bundle
from tests.server import ServerProcess

from songkhoe.store import open_store
from songkhoe.store.bulk import load

LUA = """
local ids = {}
for line in io.lines("%s") do ids[#ids + 1] = line end
math.randomseed(42)
request = function()
  return wrk.format("GET", "/fhir/Patient/" .. ids[math.random(#ids)])
end
"""


def run(backend: str, patients: int, seconds: int, connections: int) -> None:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    url = fresh_db(backend, "songkhoe_bench_read")
    rng = random.Random(7)
    resources = []
    for n in range(patients):
        patient = checkup_bundle(rng)["entry"][0]["resource"]
        patient["id"] = f"p{n}"
        resources.append((f"gen:{n}", patient))
    store = open_store(url)
    summary = load(store, resources)
    store.close()
    assert summary.loaded == patients and not summary.rejected
    work = Path(tempfile.mkdtemp())
    (work / "ids.txt").write_text("\n".join(f"p{n}" for n in range(patients)) + "\n")
    (work / "read.lua").write_text(LUA % (work / "ids.txt"))
    server = ServerProcess(url, workers=2).start()
    try:
        subprocess.run(["wrk", "-t1", "-c8", "-d3s", "-s", str(work / "read.lua"),
                        f"http://127.0.0.1:{server.port}"], check=True, capture_output=True)
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
                              "-s", str(work / "read.lua"), f"http://127.0.0.1:{server.port}"],
                             check=True, capture_output=True, text=True).stdout
    finally:
        server.stop()
    f = wrk_figures(out)
    emit(name="read_by_id_http", backend=backend, requests_per_s=round(f["requests_per_s"]),
         p50_ms=f["p50_ms"], p90_ms=f["p90_ms"], p99_ms=f["p99_ms"], non_2xx=f["non_2xx"],
         patients=patients, seconds=seconds, connections=connections, workers=2, load_generator="wrk -t2 (same machine)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--patients", type=int, default=20000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    for backend in args.backend or ["sqlite", "postgres"]:
        run(backend, args.patients, args.seconds, args.connections)
