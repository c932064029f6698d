"""The ``songkhoe`` command: ``serve`` the FHIR server, ``import`` NDJSON/Bundle files,
``synth`` a synthetic population, administer ``user``s and ``client``s, ``org import`` the
health system's Organizations, ``audit verify``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ENV_DB = "SONGKHOE_DB"
ENV_MAX_BODY = "SONGKHOE_MAX_BODY_BYTES"
ENV_NO_AUTH = "SONGKHOE_INSECURE_NO_AUTH"
ENV_EXPORT_DIR = "SONGKHOE_EXPORT_DIR"  # also read by ``songkhoe serve`` as --export-dir's default
ENV_AUDIT_DB = "SONGKHOE_AUDIT_DB"  # serve --audit-db, for the worker processes


def _app_from_env() -> Any:
    """The ASGI app for a uvicorn worker process (``--workers`` > 1): one store per process."""
    from songkhoe.rest.app import create_app
    from songkhoe.store import open_store

    store = open_store(os.environ.get(ENV_DB) or None)
    store.derive = _programmes()
    return create_app(store, max_body_bytes=int(os.environ[ENV_MAX_BODY]),
                      extra_routes=_app_api(store), export=os.environ[ENV_EXPORT_DIR],
                      auth=None if os.environ.get(ENV_NO_AUTH) == "1" else _auth(store))


def _auth(store: Any) -> Any:
    from songkhoe.auth import Auth

    return Auth(store, audit_db=os.environ.get(ENV_AUDIT_DB) or None)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from songkhoe.store import open_store
    from songkhoe.store.backends import default_sqlite_path

    db = args.db or f"sqlite:///{default_sqlite_path()}"
    store = open_store(db)  # create or migrate the schema once, before workers start
    store.derive = _programmes()  # refuses to start on a definition error
    if args.audit_db:
        os.environ[ENV_AUDIT_DB] = args.audit_db
    shown_host = "localhost" if args.host in ("0.0.0.0", "127.0.0.1", "::") else args.host
    print(f"songkhoe: database {db.split('@')[-1] if '@' in db else db}", flush=True)
    from songkhoe.rest.export_worker import default_directory

    export_dir = str(args.export_dir or os.environ.get(ENV_EXPORT_DIR) or default_directory(db))
    print(f"songkhoe: Bulk Data export files in {export_dir}", flush=True)
    auth = None if args.insecure_no_auth else _auth(store)
    if auth is None:
        print("songkhoe: WARNING: security is OFF (--insecure-no-auth): anyone who can reach "
              "this port reads and writes every record, and nothing is audited", flush=True)
    else:
        password = auth.bootstrap_admin()
        if password:
            print(f"songkhoe: first start: administrator 'admin' created with the one-time "
                  f"password {password} (shown only now; it must be changed at first sign-in)",
                  flush=True)
    if args.demo:
        _load_demo(store, args)
        if auth is not None:
            from songkhoe.auth.demo import demo_users

            print("songkhoe: demo users (passwords are new at every demo start):", flush=True)
            for username, password, role, org in demo_users(auth, args.demo_province):
                where = org if "/" in org else f"Organization/{org}"  # a citizen: Patient/id
                print(f"  {username:<12} {password:<14} {role:<18} {where}", flush=True)
    base = f"http://{shown_host}:{args.port}"
    print(f"songkhoe: web app at {base}/app/ — FHIR server at {base}/fhir "
          f"(capability statement: {base}/fhir/metadata)", flush=True)
    common = dict(host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                  http="httptools", loop="uvloop")
    max_body = int(args.max_body_mb * 1_000_000)
    if args.workers > 1:
        store.close()
        os.environ[ENV_DB] = db
        os.environ[ENV_MAX_BODY] = str(max_body)
        os.environ[ENV_NO_AUTH] = "1" if auth is None else "0"
        os.environ[ENV_EXPORT_DIR] = export_dir
        uvicorn.run("songkhoe.cli:_app_from_env", factory=True, workers=args.workers, **common)
    else:
        from songkhoe.rest.app import create_app

        uvicorn.run(create_app(store, max_body_bytes=max_body, auth=auth,
                               extra_routes=_app_api(store), export=export_dir), **common)
    return 0


def _programmes() -> Any:
    """The programmes engine for writes: outputs are derived in the writing transaction."""
    from songkhoe.programs.apply import Online
    from songkhoe.programs.cli import definitions

    return Online(definitions())


def _app_api(store: Any) -> list[Any]:
    """The web app: the app API, the pages and their assets, browser sessions
    (``songkhoe.web.app.WebRoutes``: routes with their public paths and middleware)."""
    from songkhoe.web.app import routes

    return routes(store, store.derive.programmes)


def _load_demo(store: Any, args: argparse.Namespace) -> None:
    """Load the demo population (a few communes of one province) into an empty store."""
    from datetime import date

    from songkhoe.store.bulk import load
    from songkhoe.synth import SynthConfig, items
    from songkhoe.synth.admin import province
    from songkhoe.synth.consent import ILLUSTRATIVE

    if store.search(None, [("_count", "1")]).matches:
        print("songkhoe: the database already holds data; no demo data loaded", flush=True)
        return
    config = SynthConfig(people=args.demo_people, seed=1, provinces=(args.demo_province,),
                         communes_per_province=args.demo_communes, years=2, as_of=date.today(),
                         consent_permit=ILLUSTRATIVE[0], consent_deny=ILLUSTRATIVE[1])
    where = province(args.demo_province).name
    print(f"songkhoe: loading demo data: {config.people:,} people in {args.demo_communes} "
          f"communes of {where}, {config.years} years of check-ups …", flush=True)
    started = time.monotonic()
    progress = _Progress()
    try:
        summary = load(store, items(config, workers=1), progress=progress)
    finally:
        progress.finish()
    print(f"songkhoe: demo data loaded: {summary.loaded:,} resources in "
          f"{time.monotonic() - started:.1f} s", flush=True)
    from songkhoe.programs.batch import run_batch
    from songkhoe.programs.cli import definitions

    started = time.monotonic()
    with store.reading() as tx:
        people = tx.patient_ids()
    derived = run_batch(store, definitions(), people)
    print(f"songkhoe: programmes run for {len(people):,} people: "
          f"{sum(derived.written.values()):,} "
          f"resources derived in {time.monotonic() - started:.1f} s", flush=True)
    for rejection in summary.rejected[:5]:
        print(f"  rejected {rejection.source}: {rejection.reason}", file=sys.stderr)


def _shares(text: str) -> tuple[float, float]:
    """``PERMIT,DENY`` as two numbers."""
    try:
        permit, deny = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PERMIT,DENY such as 0.8,0.05, not {text!r}")
    return permit, deny


def synth(args: argparse.Namespace) -> int:
    from datetime import date

    from songkhoe.synth import SynthConfig, items, write_ndjson

    if not args.out and not args.to:
        print("songkhoe synth: say where to: --out DIR and/or --to DB_URL", file=sys.stderr)
        return 2
    try:
        config = SynthConfig(people=args.people, seed=args.seed, provinces=tuple(args.province),
                             communes_per_province=args.communes, years=args.years,
                             coverage=args.coverage, faults=args.faults,
                             consent_permit=args.consent[0], consent_deny=args.consent[1],
                             as_of=date.fromisoformat(args.as_of))
        from songkhoe.synth.admin import select

        select(list(config.provinces))  # unknown province codes fail here, with the list
    except ValueError as exc:
        print(f"songkhoe synth: {exc}", file=sys.stderr)
        return 2
    status = 0
    if args.out:
        progress = _Progress()
        try:
            summary = write_ndjson(config, Path(args.out), workers=args.workers, progress=progress)
        finally:
            progress.finish()
        kinds = ", ".join(f"{n:,} {t}" for t, n in summary.counts.items())
        print(f"wrote {summary.resources:,} resources ({kinds}), {summary.bytes / 1e6:,.1f} MB "
              f"to {args.out} in {summary.seconds:.1f} s")
        if config.faults:
            print(f"  {summary.duplicates:,} duplicate registrations listed in "
                  f"{Path(args.out) / 'duplicates.csv'}")
    if args.to:
        from songkhoe.store import open_store
        from songkhoe.store.bulk import load

        store = open_store(args.to)
        progress = _Progress()
        started = time.monotonic()
        try:
            loaded = load(store, items(config, workers=args.workers), progress=progress)
        finally:
            progress.finish()
            store.close()
        print(f"loaded {loaded.loaded:,}, unchanged {loaded.unchanged:,}, rejected "
              f"{len(loaded.rejected):,} in {time.monotonic() - started:.1f} s")
        for rejection in loaded.rejected[:20]:
            print(f"  rejected {rejection.source}: {rejection.reason}")
        status = 1 if loaded.rejected else 0
    return status


class _Progress:
    """A one-line progress display on stderr: resources loaded and the rate."""

    def __init__(self) -> None:
        self.done = 0
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()

    def __call__(self, n: int) -> None:
        self.done += n
        rate = self.done / max(time.monotonic() - self.start, 1e-9)
        if self.tty:
            sys.stderr.write(f"\r  {self.done:>12,} resources  {rate:>9,.0f}/s")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def import_files(args: argparse.Namespace) -> int:
    from itertools import chain

    from songkhoe.store import open_store
    from songkhoe.store.backends import default_sqlite_path
    from songkhoe.store.bulk import load_parallel, read_resources

    paths = [Path(p) for p in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"songkhoe import: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    db = args.db or f"sqlite:///{default_sqlite_path()}"
    open_store(db).close()  # create or migrate the schema before the workers start
    progress = _Progress()
    started = time.monotonic()
    try:
        summary = load_parallel(db, chain.from_iterable(read_resources(p) for p in paths),
                                workers=max(1, args.workers), progress=progress)
    finally:
        progress.finish()
    seconds = time.monotonic() - started
    print(f"loaded {summary.loaded:,}, unchanged {summary.unchanged:,}, "
          f"rejected {len(summary.rejected):,} in {seconds:.1f} s")
    for rejection in summary.rejected[: args.show_rejected]:
        print(f"  rejected {rejection.source}: {rejection.reason}")
    if len(summary.rejected) > args.show_rejected:
        print(f"  … and {len(summary.rejected) - args.show_rejected:,} more")
    return 1 if summary.rejected else 0


def warehouse_refresh(args: argparse.Namespace) -> int:
    from songkhoe.analytics.rows import ViewEvaluationError
    from songkhoe.analytics.viewdefinition import ViewDefinitionError
    from songkhoe.analytics.warehouse import WarehouseError, refresh
    from songkhoe.store import open_store

    store = open_store(args.db)
    try:
        refresh(store, args.dir, args.views, full=args.full,
                progress=lambda line: print(line, flush=True))
    except (WarehouseError, ViewDefinitionError, ViewEvaluationError) as exc:
        print(f"songkhoe warehouse refresh: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0


def indicators_command(args: argparse.Namespace) -> int:
    """``songkhoe indicators``: the population indicators over a warehouse, as CSV or JSON
    (docs/indicators.md)."""
    from datetime import date

    from songkhoe.analytics import indicators, warehouse

    try:
        as_of = date.fromisoformat(args.as_of) if args.as_of else date.today()
        con = warehouse.connect(args.warehouse)
    except (ValueError, warehouse.WarehouseError) as exc:
        print(f"songkhoe indicators: {exc}", file=sys.stderr)
        return 2
    try:
        table = indicators.compute(indicators.DuckDBEngine(con),
                                   grains=[args.period] if args.period else indicators.GRAINS,
                                   levels=[args.level] if args.level else indicators.LEVELS,
                                   as_of=as_of)
    finally:
        con.close()
    if args.out:
        with open(args.out, "w", encoding="utf-8", newline="") as out:
            indicators.write(table, out, args.format)
    else:
        indicators.write(table, sys.stdout, args.format)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="songkhoe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("serve", help="run the FHIR server")
    p.add_argument("--db", help="sqlite:///path/to/file.db (default: a file in the user's data "
                                "directory) or postgresql://user@host:port/dbname")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=1, help="server processes")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--max-body-mb", type=float, default=16.0,
                   help="largest request body accepted, in MB (larger: 413); default 16")
    p.add_argument("--demo", action="store_true",
                   help="load a synthetic demo population first if the database is empty")
    p.add_argument("--demo-people", type=int, default=3000, metavar="N")
    p.add_argument("--demo-province", type=int, default=1, metavar="CODE",
                   help="province code of the demo population (default 01, Hà Nội)")
    p.add_argument("--demo-communes", type=int, default=5, metavar="N")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="serve without authentication or audit (tests and local tools only)")
    p.add_argument("--audit-db", metavar="URL",
                   help="the audit log's database (default: beside a SQLite store, "
                        "<name>-audit.db; a PostgreSQL store's own database)")
    p.add_argument("--export-dir", metavar="DIR",
                   help=f"where Bulk Data $export writes its NDJSON files (default: "
                        f"${ENV_EXPORT_DIR}, else beside the database: <file>.db-exports, or "
                        "exports/ in the user's data directory)")
    p.set_defaults(run=serve)

    p = commands.add_parser("import", help="load NDJSON files or Bundles into the store")
    p.add_argument("files", nargs="+")
    p.add_argument("--db", help="database URL (default: the embedded file)")
    p.add_argument("--show-rejected", type=int, default=20, help="rejections to list")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes that parse, validate, index and write (default: one per core)")
    p.set_defaults(run=import_files)

    p = commands.add_parser("synth", help="generate a synthetic Vietnamese population with "
                                          "check-up records (NDJSON files or straight into a store)")
    p.add_argument("--people", type=int, required=True, metavar="N")
    p.add_argument("--seed", type=int, default=1, help="same seed, same output (default 1)")
    p.add_argument("--province", type=int, nargs="+", default=[], metavar="CODE",
                   help="province codes after the 2025 reform (default: all 34)")
    p.add_argument("--communes", type=int, metavar="N", help="only N communes per province")
    p.add_argument("--years", type=int, default=1, help="years of yearly check-ups (default 1)")
    p.add_argument("--coverage", type=float, default=0.8,
                   help="share of adults examined each year (default 0.8)")
    p.add_argument("--as-of", default="2026-11-01", metavar="DATE",
                   help="the check-up years end the day before DATE (default 2026-11-01)")
    p.add_argument("--faults", action="store_true",
                   help="add data-quality faults and duplicate registrations (ground truth in "
                        "DIR/duplicates.csv)")
    p.add_argument("--consent", type=_shares, default=(0.0, 0.0), metavar="PERMIT,DENY",
                   help="shares of adults with a research Consent that permits / denies "
                        "research use, e.g. 0.8,0.05 (default: none)")
    p.add_argument("--out", metavar="DIR", help="write DIR/<ResourceType>.ndjson")
    p.add_argument("--to", metavar="DB_URL", help="load into this database (bulk path)")
    p.add_argument("--workers", type=int, help="processes (default: one per core)")
    p.set_defaults(run=synth)

    p = commands.add_parser("warehouse", help="the analytics warehouse: ViewDefinitions as "
                                              "Parquet, refreshed from the store's changes")
    actions = p.add_subparsers(dest="action", required=True)
    p = actions.add_parser("refresh", help="bring the warehouse up to date: only what changed "
                                           "since the last refresh (docs/warehouse.md)")
    p.add_argument("--db", help="database URL (default: the embedded file)")
    p.add_argument("--dir", required=True, help="the warehouse folder (created if missing)")
    p.add_argument("--views", metavar="DIR",
                   help="folder of ViewDefinition JSON files (default: the built-in views)")
    p.add_argument("--full", action="store_true", help="rebuild every view from the store")
    p.set_defaults(run=warehouse_refresh)

    p = commands.add_parser("indicators", help="population indicators (coverage, raised blood "
                                               "pressure, glucose, obesity, WHO HEARTS, cascade) "
                                               "over a warehouse (docs/indicators.md)")
    p.add_argument("--warehouse", required=True, metavar="DIR",
                   help="the warehouse folder (songkhoe warehouse refresh --dir DIR)")
    p.add_argument("--level", choices=["commune", "province", "nation"],
                   help="only this level (default: all three)")
    p.add_argument("--period", choices=["month", "quarter", "year"],
                   help="only this grain: the last 12 months, 8 quarters or 3 years "
                        "(default: all three)")
    p.add_argument("--as-of", metavar="YYYY-MM-DD",
                   help="the day counted up to (default: today)")
    p.add_argument("--format", choices=["csv", "json"], default="csv")
    p.add_argument("--out", metavar="FILE", help="write here (default: standard output)")
    p.set_defaults(run=indicators_command)

    from songkhoe.auth.cli import add_commands
    from songkhoe.programs.cli import add_commands as add_programme_commands

    add_commands(commands)
    add_programme_commands(commands)
    args = parser.parse_args(argv)
    from songkhoe.store.schema import SchemaTooNew

    try:
        return int(args.run(args))
    except SchemaTooNew as exc:
        print(f"songkhoe: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
