"""``songkhoe programmes check|run|worklist|export``: validate the definitions; derive every
output in batch (after a bulk import, or after a definition changed); an Organization's
worklist; the definitions as FHIR R4 PlanDefinition Bundles."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .definition import DATA, DefinitionError, Programme, load_dir

if TYPE_CHECKING:
    from .batch import Ran

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
    from concurrent.futures import ProcessPoolExecutor

    from songkhoe.store import open_store
    from songkhoe.store.backends import default_sqlite_path

    from .batch import Ran, tidy

    try:
        definitions(args.dir)
    except DefinitionError as exc:
        print(f"songkhoe programmes: {exc}", file=sys.stderr)
        return 2
    since = None
    if args.since:
        since = datetime.fromisoformat(args.since)
        if since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
    url = args.db or f"sqlite:///{default_sqlite_path()}"
    store = open_store(url)
    try:
        with store.reading() as tx:
            people = tx.patient_ids(since)
    finally:
        store.close()
    started = time.monotonic()
    ran = Ran()
    step = max(args.chunk * 4, 1000)
    parts = [people[i:i + step] for i in range(0, len(people), step)]
    with ProcessPoolExecutor(max(1, args.workers)) as pool:
        for part in pool.map(run_part, [(url, args.dir, p, args.chunk, args.full)
                                        for p in parts]):
            ran.add(part)
            _progress(ran.people, len(people), started)
    tidy(url, ran)
    seconds = time.monotonic() - started
    sys.stderr.write("\n" if sys.stderr.isatty() else "")
    what = ", ".join(f"{n:,} {t}" for t, n in sorted(ran.written.items())) or "nothing"
    print(f"{len(people):,} people in {seconds:.1f} s ({ran.evaluated:,} evaluated, the others "
          f"unchanged since their last run); written: {what}")
    return 0


def run_part(job: tuple[str, str | None, list[str], int, bool]) -> Ran:
    """One worker's share: its own connection, blocks of ``chunk`` people. A worker keeps the
    definitions it loaded for its next share, and with them what their conditions
    remembered (``definition.Memo``), as long as the files are the same."""
    from songkhoe.store import open_store

    from .batch import run_batch

    url, folder, people, chunk, full = job
    store = open_store(url)
    try:
        return run_batch(store, _kept_definitions(folder), people, chunk=chunk, full=full)
    finally:
        store.close()


_KEPT: dict[tuple[str | None, bytes], dict[str, Programme]] = {}


def _kept_definitions(folder: str | None) -> dict[str, Programme]:
    where = Path(folder or os.environ.get(ENV_PROGRAMMES) or DATA)
    texts = b"".join(p.name.encode() + p.read_bytes() for p in sorted(where.glob("*.toml")))
    key = (folder, hashlib.sha256(texts).digest())
    if key not in _KEPT:
        _KEPT.clear()
        _KEPT[key] = definitions(folder)
    return _KEPT[key]


def show_worklist(args: argparse.Namespace) -> int:
    from datetime import date

    from songkhoe.fhir.outcome import FhirError
    from songkhoe.store import open_store
    from songkhoe.store.backends import default_sqlite_path

    from .worklist import worklist

    programmes = definitions(args.dir)
    if args.programme not in programmes:
        print(f"songkhoe programmes: unknown programme {args.programme!r}; known: "
              f"{', '.join(programmes)}", file=sys.stderr)
        return 2
    today = date.fromisoformat(args.today) if args.today else date.today()
    store = open_store(args.db or f"sqlite:///{default_sqlite_path()}")
    try:
        with store.reading() as tx:
            page = worklist(tx, programmes[args.programme], args.list, today=today,
                            org=args.org, count=args.count)
    except FhirError as exc:
        print(f"songkhoe programmes: {exc.issues[0].diagnostics}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(f"{page.total:,} people on the {args.list} list of {args.programme}"
          f"{' in ' + args.org if args.org else ''} on {today.isoformat()}")
    for e in page.entries:
        late = f"{e.days_overdue} days late" if e.days_overdue else ""
        call = f"call: {e.call_outcome} {e.call_day}" if e.call_outcome else ""
        print(f"  {e.patient:<28} {e.name:<28} {e.birth_date or '':<10} {e.phone or '':<12} "
              f"due {e.next_due or '—':<10} last {e.last_visit or 'never':<10} {late} {call}"
              .rstrip())
    return 0


def export(args: argparse.Namespace) -> int:
    """Write each programme as a FHIR R4 Bundle (PlanDefinition and its artifacts), validated:
    to ``DIR/<id>.json``, or to stdout for a single programme without ``--out``."""
    import json

    from songkhoe.fhir.outcome import FhirError
    from songkhoe.store.engine import checked

    from .plandefinition import export as export_bundle

    try:
        programmes = definitions(args.dir)
    except DefinitionError as exc:
        print(f"songkhoe programmes: {exc}", file=sys.stderr)
        return 2
    unknown = [i for i in args.ids if i not in programmes]
    if unknown:
        print(f"songkhoe programmes: no programme {', '.join(unknown)}; defined: "
              f"{', '.join(programmes)}", file=sys.stderr)
        return 2
    chosen = [programmes[i] for i in dict.fromkeys(args.ids)] or list(programmes.values())
    if args.out is None and len(chosen) != 1:
        print("songkhoe programmes: several programmes need --out DIR", file=sys.stderr)
        return 2
    texts = {}
    for p in chosen:
        bundle = export_bundle(p)
        try:
            checked(bundle)
        except FhirError as exc:
            print(f"songkhoe programmes: {p.file}: the export is not valid FHIR R4: {exc}",
                  file=sys.stderr)
            return 2
        texts[p.id] = json.dumps(bundle, ensure_ascii=False, indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(next(iter(texts.values())))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for pid, text in texts.items():
        (out / f"{pid}.json").write_text(text, encoding="utf-8")
        print(out / f"{pid}.json")
    return 0


def _progress(done: int, total: int, started: float) -> None:
    if sys.stderr.isatty():
        rate = done / max(time.monotonic() - started, 1e-9)
        sys.stderr.write(f"\r  {done:>12,} / {total:,} people  {rate:>8,.0f}/s")
        sys.stderr.flush()


def add_commands(commands: Any) -> None:
    from .worklist import LISTS

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
    r.add_argument("--chunk", type=int, default=500, help="people per block (one read and "
                                                         "one write transaction)")
    r.add_argument("--full", action="store_true",
                   help="evaluate everyone, also people whose records and the definitions did "
                        "not change since their last run (after upgrading songkhoe)")
    r.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes (default: one per core)")
    r.set_defaults(run=run)
    e = sub.add_parser("export", help="write programmes as FHIR R4 PlanDefinition Bundles")
    e.add_argument("ids", nargs="*", metavar="ID", help="programme ids (default: all)")
    e.add_argument("--out", metavar="DIR", help="write DIR/<id>.json (default: stdout, for "
                                                "one programme)")
    e.add_argument("--dir", help="folder of definitions (default: the shipped programmes)")
    e.set_defaults(run=export)
    w = sub.add_parser("worklist", help="a worklist of an Organization (due, overdue, "
                                        "referral, lost)")
    w.add_argument("list", choices=LISTS)
    w.add_argument("--programme", required=True)
    w.add_argument("--org", help="Organization id (its whole subtree); default: everyone")
    w.add_argument("--today", metavar="DATE", help="the day the list is for (default: today)")
    w.add_argument("--count", type=int, default=50)
    w.add_argument("--db", help="database URL (default: the embedded file)")
    w.add_argument("--dir", help="folder of definitions (default: the shipped programmes)")
    w.set_defaults(run=show_worklist)
