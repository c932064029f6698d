"""``songkhoe programmes check|run``: validate the definitions; derive every output in batch
(after a bulk import, or after a definition changed)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .definition import DATA, DefinitionError, Programme, load_dir

#: a folder of definition files to use instead of the shipped ones
ENV_PROGRAMMES = "SONGKHOE_PROGRAMMES"


def definitions(folder: str | None = None) -> dict[str, Programme]:
    """The programmes in ``folder``, else ``$SONGKHOE_PROGRAMMES``, else the shipped ones."""
    return load_dir(Path(folder or os.environ.get(ENV_PROGRAMMES) or DATA))


def check(args: argparse.Namespace) -> int:
    try:
        programmes = definitions(args.dir)
    except DefinitionError as exc:
        print(f"songkhoe programmes: {exc}", file=sys.stderr)
        return 2
    for p in programmes.values():
        print(f"{p.id:<24} {p.version:<8} {p.kind:<10} {len(p.items)} items, "
              f"{len(p.classifications)} classifications, {len(p.scores)} scores, "
              f"{len(p.actions)} actions  {p.title.vi}")
    return 0


def run(args: argparse.Namespace) -> int:
    from songkhoe.store import open_store
    from songkhoe.store.backends import default_sqlite_path

    from .apply import run_batch

    try:
        programmes = definitions(args.dir)
    except DefinitionError as exc:
        print(f"songkhoe programmes: {exc}", file=sys.stderr)
        return 2
    since = None
    if args.since:
        since = datetime.fromisoformat(args.since)
        if since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
    store = open_store(args.db or f"sqlite:///{default_sqlite_path()}")
    try:
        with store.transaction(derive=False) as tx:
            people = tx.patient_ids(since)
        started = time.monotonic()
        written: Counter[str] = Counter()
        done = 0
        step = max(args.chunk * 10, 1000)
        for start in range(0, len(people), step):
            part = run_batch(store, programmes, people[start:start + step], chunk=args.chunk)
            written.update(r["resourceType"] for r in part.written)
            done += min(step, len(people) - start)
            _progress(done, len(people), started)
        seconds = time.monotonic() - started
    finally:
        store.close()
    sys.stderr.write("\n" if sys.stderr.isatty() else "")
    what = ", ".join(f"{n:,} {t}" for t, n in sorted(written.items())) or "nothing"
    print(f"{len(people):,} people in {seconds:.1f} s; written: {what}")
    return 0


def _progress(done: int, total: int, started: float) -> None:
    if sys.stderr.isatty():
        rate = done / max(time.monotonic() - started, 1e-9)
        sys.stderr.write(f"\r  {done:>12,} / {total:,} people  {rate:>8,.0f}/s")
        sys.stderr.flush()


def add_commands(commands: Any) -> None:
    p = commands.add_parser("programmes", help="screening and chronic-care programmes")
    sub = p.add_subparsers(dest="action", required=True)
    c = sub.add_parser("check", help="load and validate the programme definitions")
    c.add_argument("dir", nargs="?", help=f"folder of *.toml (default: ${ENV_PROGRAMMES} or "
                                          "the shipped programmes)")
    c.set_defaults(run=check)
    r = sub.add_parser("run", help="derive classifications, risks, referrals, enrolments and "
                                   "due dates for everyone (idempotent)")
    r.add_argument("--db", help="database URL (default: the embedded file)")
    r.add_argument("--since", metavar="DATE",
                   help="only people with a record written since DATE (ISO 8601)")
    r.add_argument("--dir", help="folder of definitions (default: the shipped programmes)")
    r.add_argument("--chunk", type=int, default=200, help="people per transaction")
    r.set_defaults(run=run)
