"""Administration commands: ``songkhoe user add|passwd|lock|unlock|list``,
``songkhoe client add``, ``songkhoe keys rotate``, ``songkhoe org import`` and
``songkhoe audit verify``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .identities import PERSON_ONLY_ROLES, ROLES, new_secret, patient_id
from .service import Auth


def _open(args: argparse.Namespace) -> tuple[Any, Auth]:
    from songkhoe.store import open_store
    from songkhoe.store.backends import default_sqlite_path

    store = open_store(args.db or f"sqlite:///{default_sqlite_path()}")
    try:
        return store, Auth(store, audit_db=getattr(args, "audit_db", None))
    except BaseException:
        store.close()
        raise


def _run(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        store, auth = _open(args)
        try:
            return int(fn(auth, args))
        except ValueError as exc:
            print(f"songkhoe {args.command}: {exc}", file=sys.stderr)
            return 2
        finally:
            auth.close()
            store.close()
    return run


def user_add(auth: Auth, args: argparse.Namespace) -> int:
    patient = patient_id(args.patient)
    if patient is not None:
        _check_patient(auth, patient)
    user = auth.identities.add_user(args.username, args.password, args.role, args.org,
                                    practitioner=args.practitioner, patient=patient,
                                    must_change=args.must_change)
    print(f"user {user.username} added ({user.role}, {_attached(user) or 'no Organization'})")
    return 0


def _check_patient(auth: Auth, patient: str) -> None:
    """A citizen account may only be linked to a Patient the store holds (and not deleted)."""
    from songkhoe.fhir.outcome import FhirError

    try:
        auth.store.read("Patient", patient)
    except FhirError as exc:
        why = "was deleted" if exc.status == 410 else "is not in this database"
        raise ValueError(f"Patient/{patient} {why}") from None


def _attached(user: Any) -> str | None:
    """What an account belongs to: its Organization, or a citizen's Patient."""
    if user.patient:
        return f"Patient/{user.patient}"
    return f"Organization/{user.org}" if user.org else None


def user_passwd(auth: Auth, args: argparse.Namespace) -> int:
    password = args.password
    if password is None:
        password = new_secret()[:16]
        auth.identities.set_password(args.username, password, must_change=True)
        print(f"one-time password for {args.username}: {password} (must be changed at the next "
              "sign-in)")
    else:
        auth.identities.set_password(args.username, password, must_change=args.must_change)
        print(f"password of {args.username} changed")
    return 0


def user_lock(auth: Auth, args: argparse.Namespace) -> int:
    locked = args.user_command == "lock"
    auth.identities.set_locked(args.username, locked)
    print(f"user {args.username} {'locked' if locked else 'unlocked'}")
    return 0


def user_list(auth: Auth, args: argparse.Namespace) -> int:
    for u in auth.identities.users():
        state = "locked" if u.locked else ("must change password" if u.must_change else "active")
        where = u.org or (f"Patient/{u.patient}" if u.patient else "-")
        print(f"{u.username}\t{u.role}\t{where}\t{state}")
    return 0


def client_add(auth: Auth, args: argparse.Namespace) -> int:
    secret = args.secret
    if args.generate_secret:
        secret = new_secret()
    jwks = json.loads(Path(args.jwks).read_text()) if args.jwks else None
    if jwks is not None and "keys" not in jwks:
        jwks = {"keys": [jwks]}
    auth.identities.add_client(args.client_id, name=args.name, secret=secret, jwks=jwks,
                               redirect_uris=tuple(args.redirect_uri), scope=args.scope,
                               role=args.role, org=args.org)
    print(f"client {args.client_id} added")
    if args.generate_secret:
        print(f"client secret (shown only now): {secret}")
    return 0


def keys_rotate(auth: Auth, args: argparse.Namespace) -> int:
    key = auth.keys.rotate()
    print(f"new signing key {key.kid}; the previous key verifies tokens for "
          f"{int(auth.keys.grace)} s more")
    return 0


def org_import(auth: Auth, args: argparse.Namespace) -> int:
    from .org_import import import_organizations

    result = import_organizations(auth.store, args.province)
    print(f"Organizations for {result.provinces} provinces and {result.communes:,} communes: "
          f"created {result.created:,}, updated {result.updated:,}, unchanged "
          f"{result.unchanged:,}, rejected {len(result.rejected):,} in {result.seconds:.1f} s")
    for rejection in result.rejected[:20]:
        print(f"  rejected {rejection.source}: {rejection.reason}")
    return 1 if result.rejected else 0


def audit_verify(auth: Auth, args: argparse.Namespace) -> int:
    problem = auth.audit.verify()
    if problem is not None:
        print(f"audit log BROKEN at entry {problem.seq}: {problem.reason}")
        return 1
    count, head = auth.audit.head()
    print(f"audit log intact: {count} entries, head {head}")
    return 0


def audit_break_glass(auth: Auth, args: argparse.Namespace) -> int:
    """The break-the-glass review list: every emergency-access token issued and every request
    made with one, newest first — who, when, which record, what came of it, the stated reason
    (the same entries as ``GET [base]/AuditEvent?policy=urn:songkhoe:policy:break-the-glass``)."""
    from songkhoe.fhir.outcome import FhirError

    from .audit import stated_reason
    from .audit_search import AuditSearch, break_glass_params

    params = [*break_glass_params(args.since, args.org), ("_count", "1000")]
    try:
        entries = [e.resource for e in AuditSearch(auth.audit.db, None, auth.db).pages(params)]
    except FhirError as exc:
        raise ValueError(exc.message.replace("search parameter date", "--since")
                         .replace("search parameter agent-org:below", "--org")) from None
    print("recorded\tuser (role, Organization)\trecord\toutcome\ttoken\treason")
    tokens = set()
    for e in entries:
        agent = e["agent"][0]
        who = agent["who"]["identifier"]["value"]
        role = agent.get("role", [{}])[0].get("text", "-")
        org = agent.get("location", {}).get("reference", "-").removeprefix("Organization/")
        token = next((p.rsplit(":", 1)[1] for p in agent.get("policy", ())
                      if p.startswith("urn:songkhoe:token:")), "-")
        tokens.add(token)
        what = e["entity"][0].get("what", {})
        if e["subtype"][0]["code"] == "110122":
            record = "(emergency-access token issued)"
        else:
            record = what.get("reference") or what.get("display", "-")
            if e["entity"][0].get("description"):
                record += f"?{e['entity'][0]['description']}"
        print(f"{e['recorded']}\t{who} ({role}, {org})\t{record}\t{e['outcomeDesc']}\t"
              f"{token[:8]}\t{stated_reason(e) or '(no reason given)'}")
    print(f"{len(entries)} break-the-glass entries, {len(tokens - {'-'})} tokens")
    return 0


def add_commands(commands: Any) -> None:
    def db(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", help="database URL (default: the embedded file)")

    user = commands.add_parser("user", help="manage user accounts")
    sub = user.add_subparsers(dest="user_command", required=True)
    p = sub.add_parser("add", help="add a user")
    db(p)
    p.add_argument("--username", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--role", required=True, choices=[r for r in ROLES if r != "system"])
    p.add_argument("--org", help="Organization id the user belongs to (their scope)")
    p.add_argument("--practitioner", help="Practitioner id (the token's fhirUser)")
    p.add_argument("--patient", help="Patient id a citizen account speaks for (required for "
                                     "--role citizen, refused for other roles)")
    p.add_argument("--must-change", action="store_true", help="force a change at first sign-in")
    p.set_defaults(run=_run(user_add))
    p = sub.add_parser("passwd", help="set or reset a password (no --password: a one-time one)")
    db(p)
    p.add_argument("--username", required=True)
    p.add_argument("--password")
    p.add_argument("--must-change", action="store_true")
    p.set_defaults(run=_run(user_passwd))
    for name in ("lock", "unlock"):
        p = sub.add_parser(name, help=f"{name} an account")
        db(p)
        p.add_argument("--username", required=True)
        p.set_defaults(run=_run(user_lock))
    p = sub.add_parser("list", help="list users")
    db(p)
    p.set_defaults(run=_run(user_list))

    client = commands.add_parser("client", help="manage OAuth clients")
    sub = client.add_subparsers(dest="client_command", required=True)
    p = sub.add_parser("add", help="register a client (SMART app or system)")
    db(p)
    p.add_argument("--client-id", required=True)
    p.add_argument("--name")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--secret", help="client secret (confidential client)")
    g.add_argument("--generate-secret", action="store_true")
    g.add_argument("--jwks", metavar="FILE", help="public JWK Set for private_key_jwt")
    p.add_argument("--redirect-uri", action="append", default=[])
    p.add_argument("--scope", default="", help="the most this client may ask for")
    p.add_argument("--role", choices=[r for r in ROLES if r not in PERSON_ONLY_ROLES],
                   help="role for client_credentials")
    p.add_argument("--org", help="Organization id for client_credentials")
    p.set_defaults(run=_run(client_add))

    org = commands.add_parser("org", help="the health system's Organizations")
    sub = org.add_subparsers(dest="org_command", required=True)
    p = sub.add_parser("import", help="load or update the Ministry of Health, the provincial "
                                      "Departments of Health, the commune health stations (and "
                                      "the modelled hospitals and regional centres)")
    db(p)
    p.add_argument("--province", type=int, nargs="+", default=[], metavar="CODE",
                   help="province codes after the 2025 reform (default: all 34)")
    p.set_defaults(run=_run(org_import))

    keys = commands.add_parser("keys", help="token-signing keys")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    p = sub.add_parser("rotate", help="start signing with a new key")
    db(p)
    p.set_defaults(run=_run(keys_rotate))

    def audit_db(p: argparse.ArgumentParser) -> None:
        db(p)
        p.add_argument("--audit-db", help="the audit log's database URL, when the server was "
                                          "given one (default: beside a SQLite store, in a "
                                          "PostgreSQL store's database)")

    audit = commands.add_parser("audit", help="the audit trail")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    p = sub.add_parser("verify", help="check the hash chain; exit 1 at the first bad entry")
    audit_db(p)
    p.set_defaults(run=_run(audit_verify))
    p = sub.add_parser("break-glass", help="list break-the-glass (emergency access) events "
                                           "for review: who, when, which record, the reason")
    audit_db(p)
    p.add_argument("--since", metavar="DATE", help="only from this date or time on (FHIR "
                                                   "date: 2026-05-01, 2026-05-01T08:00:00+07:00)")
    p.add_argument("--org", metavar="ORG", help="only users of this Organization and those "
                                                "below it")
    p.set_defaults(run=_run(audit_break_glass))
