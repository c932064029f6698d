"""Shared benchmark plumbing: database URLs, the machine description, JSON figure lines."""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

PG_ADMIN = os.environ.get("SONGKHOE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def fresh_db(backend: str, name: str) -> str:
    """A URL of an empty database for a benchmark run."""
    if backend == "sqlite":
        path = Path("/tmp") / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def emit(**figure: object) -> None:
    """One JSON line per figure, with the machine it ran on."""
    print(json.dumps({**figure, "machine": machine()}, ensure_ascii=False), flush=True)


def post_all(url: str, bodies: list[bytes], clients: int, headers: dict[str, str]) -> float:
    """POST every body to ``url`` from ``clients`` threads; the seconds it took (each answer
    must be a 200)."""
    import httpx

    queue = list(range(len(bodies)))
    lock = threading.Lock()
    failures: list[str] = []

    def client() -> None:
        with httpx.Client(timeout=120, headers=headers) as c:
            while True:
                with lock:
                    if not queue:
                        return
                    n = queue.pop()
                r = c.post(url, content=bodies[n])
                if r.status_code != 200:
                    failures.append(r.text[:300])

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    assert not failures, failures[:3]
    return seconds


def wrk_figures(out: str) -> dict[str, float]:
    """Requests/s, p50/p90/p99 (ms) and non-2xx answers from ``wrk --latency`` output."""
    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50_ms": ms(lat["50"]), "p90_ms": ms(lat["90"]), "p99_ms": ms(lat["99"]),
            "non_2xx": int(errors.group(1)) if errors else 0}
