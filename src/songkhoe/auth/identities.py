"""Who may sign in: people (users) with a role and an Organization, and system clients.

Roles (issue 5) and the SMART scopes each may hold at most (the ceiling a token's scopes are
cut down to, ``scopes.ScopeSet.within``); the Organization subtree and, later, Consent narrow
the rows further inside the store.

Staff accounts belong to an Organization (``org``) and may name their Practitioner. A
``citizen`` account is a person's own, patient-facing account: it speaks for exactly one
Patient (``patient``, schema v3 ``auth_users.patient``) and has no Organization; its tokens
carry that Patient as the SMART launch context (``patient`` claim) and hold patient-context
scopes only, so it reads and searches its own compartment and nothing else. Every other role
must not name a Patient.

Clients (RFC 6749 §2) are public (SMART apps with PKCE, no secret), confidential with a
secret (``client_secret_basic``/``client_secret_post``), or authenticate with a signed JWT
assertion against their registered public keys (``private_key_jwt``, RFC 7523 §2.2,
SMART Backend Services). A client registered with a ``role`` and ``org`` may use the
``client_credentials`` grant and then acts as a system identity.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from .db import Db
from .passwords import Clock, Throttle, check_strength, hash_password, verify_password
from .scopes import ScopeSet

ROLES: dict[str, str] = {
    "health_worker": "user/*.cruds",  # commune health worker: records check-ups
    "doctor": "user/*.cruds",
    "specialist": "user/*.rs user/Observation.cu user/DiagnosticReport.cu user/Communication.cu",
    "programme_manager": "user/*.rs",
    "researcher": "user/*.rs",  # de-identified extracts come later (research room)
    "administrator": "user/*.cruds system/*.cruds",
    "citizen": "patient/*.rs",  # a person's own records: read and search, nothing else
    "system": "system/*.cruds",
}
CITIZEN = "citizen"
PERSON_ONLY_ROLES = frozenset({CITIZEN})  # roles a system client may not hold


class AuthError(Exception):
    """A refused sign-in or token request: ``error`` is the RFC 6749 §5.2 code."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True)
class User:
    username: str
    role: str
    org: str | None
    practitioner: str | None
    must_change: bool
    locked: bool
    failures: int
    patient: str | None = None  # the Patient a citizen account speaks for


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    secret_hash: str | None
    jwks: dict[str, Any] | None
    redirect_uris: tuple[str, ...]
    scope: str
    role: str | None
    org: str | None

    @property
    def public(self) -> bool:
        return self.secret_hash is None and self.jwks is None


def check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")


def patient_id(patient: str | None) -> str | None:
    """A Patient id as given (``123`` or ``Patient/123``), checked; None stays None."""
    if patient is None:
        return None
    from songkhoe.fhir.outcome import FhirError
    from songkhoe.store.engine import check_id

    pid = patient.removeprefix("Patient/")
    try:
        check_id(pid)
    except FhirError as exc:
        raise ValueError(f"Patient id {exc.issues[0].diagnostics}") from None
    return pid


def check_account(role: str, org: str | None, practitioner: str | None,
                  patient: str | None) -> None:
    """A citizen has a Patient and no Organization or Practitioner; no one else has a
    Patient."""
    check_role(role)
    if role == CITIZEN:
        if not patient:
            raise ValueError("a citizen account needs the id of the Patient it speaks for "
                             "(--patient)")
        if org or practitioner:
            raise ValueError("a citizen account belongs to a Patient, not to an Organization "
                             "or a Practitioner: leave out --org and --practitioner")
    elif patient:
        raise ValueError(f"only citizen accounts speak for a Patient; a {role} account must "
                         "not have one (leave out --patient)")


class Identities:
    """Users and clients in the store's database."""

    def __init__(self, db: Db, clock: Clock, throttle: Throttle | None = None) -> None:
        self.db = db
        self.clock = clock
        self.throttle = throttle or Throttle()

    # --- users -------------------------------------------------------------------------------

    def add_user(self, username: str, password: str, role: str, org: str | None = None, *,
                 practitioner: str | None = None, patient: str | None = None,
                 must_change: bool = False) -> User:
        """A new account. ``patient``: the Patient id a ``citizen`` account speaks for
        (required for citizens, refused for every other role)."""
        patient = patient_id(patient)
        check_account(role, org, practitioner, patient)
        check_strength(password)
        if self.user(username):
            raise ValueError(f"user {username!r} already exists")
        self.db.run("INSERT INTO auth_users (username, password_hash, role, org, practitioner, "
                    "patient, must_change, locked, failures, last_failure, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, NULL, ?)",
                    (username, hash_password(password), role, org, practitioner, patient,
                     int(must_change), int(self.clock())))
        user = self.user(username)
        assert user is not None
        return user

    def user(self, username: str) -> User | None:
        row = self.db.one("SELECT username, role, org, practitioner, must_change, locked, "
                          "failures, patient FROM auth_users WHERE username = ?", (username,))
        if row is None:
            return None
        return User(row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5]), int(row[6]),
                    row[7])

    def set_patient(self, username: str, patient: str) -> None:
        """Link a citizen account to another Patient (a merged or re-registered record)."""
        user = self.user(username)
        if user is None:
            raise ValueError(f"no user {username!r}")
        pid = patient_id(patient)
        check_account(user.role, user.org, user.practitioner, pid)
        self.db.run("UPDATE auth_users SET patient = ? WHERE username = ?", (pid, username))

    def users(self) -> list[User]:
        rows = self.db.all("SELECT username FROM auth_users ORDER BY username")
        return [u for (name,) in rows if (u := self.user(name)) is not None]

    def set_password(self, username: str, password: str, *, must_change: bool = False) -> None:
        check_strength(password)
        n = self.db.run("UPDATE auth_users SET password_hash = ?, must_change = ?, failures = 0, "
                        "last_failure = NULL WHERE username = ?",
                        (hash_password(password), int(must_change), username))
        if not n:
            raise ValueError(f"no user {username!r}")

    def set_locked(self, username: str, locked: bool) -> None:
        n = self.db.run("UPDATE auth_users SET locked = ?, failures = 0, last_failure = NULL "
                        "WHERE username = ?", (int(locked), username))
        if not n:
            raise ValueError(f"no user {username!r}")

    def authenticate(self, username: str, password: str) -> User:
        """The user, if the password is right and the throttle allows an attempt now.

        Unknown users and wrong passwords get the same answer (no account enumeration)."""
        now = self.clock()
        row = self.db.one("SELECT password_hash, failures, last_failure, locked FROM auth_users "
                          "WHERE username = ?", (username,))
        if row is None:
            verify_password(_DUMMY_HASH, password)  # same time as a real check
            raise AuthError("invalid_grant", "wrong username or password")
        stored, failures, locked = row[0], int(row[1]), bool(row[3])
        last_failure = row[2] / 1e6 if row[2] is not None else None  # stored in µs
        if locked:
            raise AuthError("invalid_grant", "this account is locked: ask an administrator "
                                             "to unlock it")
        wait = self.throttle.wait(failures, last_failure, now)
        if wait > 0:
            raise AuthError("invalid_grant", f"too many failed sign-ins: try again in "
                                             f"{int(wait) + 1} s")
        if not verify_password(stored, password):
            failures += 1
            lock = self.throttle.locks(failures)
            self.db.run("UPDATE auth_users SET failures = ?, last_failure = ?, locked = ? "
                        "WHERE username = ?", (failures, int(now * 1e6), int(lock), username))
            if lock:
                raise AuthError("invalid_grant", "wrong username or password; the account is "
                                                 "now locked after repeated failures")
            raise AuthError("invalid_grant", "wrong username or password")
        if failures:
            self.db.run("UPDATE auth_users SET failures = 0, last_failure = NULL "
                        "WHERE username = ?", (username,))
        user = self.user(username)
        assert user is not None
        return user

    # --- clients -----------------------------------------------------------------------------

    def add_client(self, client_id: str, *, name: str | None = None, secret: str | None = None,
                   jwks: dict[str, Any] | None = None, redirect_uris: tuple[str, ...] = (),
                   scope: str = "", role: str | None = None, org: str | None = None) -> Client:
        if role is not None:
            check_role(role)
            if role in PERSON_ONLY_ROLES:
                raise ValueError(f"role {role} is for people's own accounts, not for clients")
        ScopeSet.parse(scope)  # refuse bad scopes at registration
        if self.client(client_id):
            raise ValueError(f"client {client_id!r} already exists")
        self.db.run("INSERT INTO auth_clients (client_id, name, secret_hash, jwks, redirect_uris, "
                    "scope, role, org, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (client_id, name or client_id, hash_password(secret) if secret else None,
                     json.dumps(jwks) if jwks else None, " ".join(redirect_uris), scope, role,
                     org, int(self.clock())))
        client = self.client(client_id)
        assert client is not None
        return client

    def client(self, client_id: str) -> Client | None:
        row = self.db.one("SELECT client_id, name, secret_hash, jwks, redirect_uris, scope, role, "
                          "org FROM auth_clients WHERE client_id = ?", (client_id,))
        if row is None:
            return None
        return Client(row[0], row[1], row[2], json.loads(row[3]) if row[3] else None,
                      tuple(row[4].split()), row[5], row[6], row[7])

    def check_client_secret(self, client: Client, secret: str) -> bool:
        return client.secret_hash is not None and verify_password(client.secret_hash, secret)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


_DUMMY_HASH = hash_password(secrets.token_hex(16))
