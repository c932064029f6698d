"""Transaction Bundles of check-up data over HTTP: resources stored per second.

Each Bundle is Patient + Encounter + 15 Observations (17 resources, urn:uuid references).
Several clients post pre-serialised Bundles concurrently to a real ``songkhoe serve`` process.
Target (issue 2): ≥ 3,000 resources/s on 2 cores, each backend.

    python bench/bench_transactions.py [--backend sqlite|postgres] [--bundles 600] [--clients 4]
"""

from __future__ import annotations

import argparse
import random
import time

import httpx
import orjson

from common import emit, fresh_db, post_all
from checkup import checkup_bundle
from tests.server import ServerProcess


def run(backend: str, bundles: int, clients: int, workers: int) -> None:
    rng = random.Random(2026)
    bodies = [orjson.dumps(checkup_bundle(rng)) for _ in range(bundles)]
    per_bundle = 17
    server = ServerProcess(fresh_db(backend, "songkhoe_bench_tx"), workers=workers).start()
    try:
        warm = httpx.post(server.base, content=bodies[0], timeout=60,
                          headers={"Content-Type": "application/fhir+json"})
        assert warm.status_code == 200, warm.text
        server_cpu = server.cpu_seconds()
        client_cpu = time.process_time()
        seconds = post_all(server.base, bodies[1:], clients, {
            "Content-Type": "application/fhir+json", "Prefer": "return=minimal"})
        server_cpu = server.cpu_seconds() - server_cpu
        client_cpu = time.process_time() - client_cpu
    finally:
        server.stop()
    resources = (bundles - 1) * per_bundle
    emit(name="transaction_bundles", backend=backend, resources_per_s=round(resources / seconds),
         bundles=bundles - 1, resources=resources, seconds=round(seconds, 2), clients=clients,
         workers=workers, server_cpu_us_per_resource=round(server_cpu / resources * 1e6),
         client_cpu_us_per_resource=round(client_cpu / resources * 1e6))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--bundles", type=int, default=600)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for backend in args.backend or ["sqlite", "postgres"]:
        run(backend, args.bundles, args.clients, args.workers)
