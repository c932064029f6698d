"""Shared benchmark plumbing: database URLs, the machine description, JSON figure lines."""

from __future__ import annotations

import json
import os
import platform
import sys
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
