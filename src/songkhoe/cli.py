"""The ``songkhoe`` command: ``serve`` the FHIR server, ``import`` NDJSON/Bundle files."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ENV_DB = "SONGKHOE_DB"


def _app_from_env() -> Any:
    """The ASGI app for a uvicorn worker process (``--workers`` > 1): one store per process."""
    from songkhoe.rest.app import create_app
    from songkhoe.store import open_store

    return create_app(open_store(os.environ.get(ENV_DB) or None))


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from songkhoe.store import open_store
    from songkhoe.store.backends import default_sqlite_path

    db = args.db or f"sqlite:///{default_sqlite_path()}"
    store = open_store(db)  # create or migrate the schema once, before workers start
    shown_host = "localhost" if args.host in ("0.0.0.0", "127.0.0.1", "::") else args.host
    print(f"songkhoe: database {db.split('@')[-1] if '@' in db else db}", flush=True)
    print(f"songkhoe: FHIR server at http://{shown_host}:{args.port}/fhir "
          f"(capability statement: http://{shown_host}:{args.port}/fhir/metadata)", flush=True)
    common = dict(host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                  http="httptools", loop="uvloop")
    if args.workers > 1:
        store.close()
        os.environ[ENV_DB] = db
        uvicorn.run("songkhoe.cli:_app_from_env", factory=True, workers=args.workers, **common)
    else:
        from songkhoe.rest.app import create_app

        uvicorn.run(create_app(store), **common)
    return 0


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
    from songkhoe.store import open_store
    from songkhoe.store.bulk import LoadSummary, load, read_resources

    paths = [Path(p) for p in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"songkhoe import: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    store = open_store(args.db)
    progress = _Progress()
    summary = LoadSummary()
    started = time.monotonic()
    try:
        for path in paths:
            summary.add(load(store, read_resources(path), progress=progress))
    finally:
        progress.finish()
        store.close()
    seconds = time.monotonic() - started
    print(f"loaded {summary.loaded:,}, unchanged {summary.unchanged:,}, "
          f"rejected {len(summary.rejected):,} in {seconds:.1f} s")
    for rejection in summary.rejected[: args.show_rejected]:
        print(f"  rejected {rejection.source}: {rejection.reason}")
    if len(summary.rejected) > args.show_rejected:
        print(f"  … and {len(summary.rejected) - args.show_rejected:,} more")
    return 1 if summary.rejected else 0


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
    p.set_defaults(run=serve)

    p = commands.add_parser("import", help="load NDJSON files or Bundles into the store")
    p.add_argument("files", nargs="+")
    p.add_argument("--db", help="database URL (default: the embedded file)")
    p.add_argument("--show-rejected", type=int, default=20, help="rejections to list")
    p.set_defaults(run=import_files)

    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
