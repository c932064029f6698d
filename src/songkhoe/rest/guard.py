"""Authentication, coarse authorization and audit for every HTTP request (ASGI middleware).

- Public routes (``PUBLIC``: the CapabilityStatement, SMART discovery, the ``/auth``
  endpoints, ``/health``) answer without a token. Everything else needs
  ``Authorization: Bearer <access token>`` (RFC 6750 §2.1); a missing or invalid token is a
  401 with ``WWW-Authenticate: Bearer …`` (RFC 6750 §3) and an OperationOutcome.
- The token's SMART scopes must cover the interaction's resource type and action
  (``interaction_action``); if not, 403. Which *rows* a context may see is decided inside
  the store's queries (organisation subtree, patient compartment, scope queries): the
  request's ``songkhoe.store.access.CURRENT`` is set to the context's ``ContextAccess``, and
  every store transaction of the request applies it.
- A plain read by id is answered ahead of this middleware by ``read.PlainReads`` with the
  same checks and the same AuditEvent (``ReadGate``): one route resolution, no middleware
  hop; whatever it does not admit comes here.
- The verified ``AccessContext`` is put in the ASGI scope (``scope["songkhoe.access"]``) and
  in the ``ACCESS`` context variable, which Bundle entries are checked against
  (``check_entry``); context variables reach store calls made in worker threads.
- Every request, answered or refused, is written to the audit log as an AuditEvent
  (``songkhoe.auth.audit``, batched across concurrent requests by ``audit_batch``) when its
  answer starts. A request that changes something, is refused or fails, or signs in, waits
  for its entry to be committed before any of its answer is sent: if the audit log cannot be
  written, the client gets no answer but a 500. A successful read, search, history,
  ``$everything``, ``$validate`` or CapabilityStatement is answered once its entry is queued
  (``answered_first``), unless the log is failing or its queue is full; ``/health`` never
  waits (it must answer while the log is failing, and shows no data). AuditEvent reads and
  searches first commit the queue, so they show every request answered before them.
"""

from __future__ import annotations

import contextvars
from typing import Any
from urllib.parse import unquote

import orjson

from songkhoe.auth import AccessContext, Auth, InvalidToken
from songkhoe.auth.audit import Event
from songkhoe.auth.policy import ContextAccess
from songkhoe.rest.audit_batch import AuditBatcher
from songkhoe.fhir.outcome import FhirError, Issue, operation_outcome
from songkhoe.rest.routing import Target, resolve
from songkhoe.store.access import CURRENT

ACCESS: contextvars.ContextVar[AccessContext | None] = contextvars.ContextVar(
    "songkhoe_access", default=None)

#: (type, SMART action) per interaction; None: no clinical scope needed (checked per entry).
_ACTIONS = {
    "read": "r", "vread": "r", "history-instance": "r",
    "search-type": "s", "search-system": "s", "search-compartment": "s",
    "history-type": "s", "history-system": "s",
    "create": "c", "update": "u", "patch": "u", "conditional-update": "u",
    "conditional-patch": "u", "delete": "d", "conditional-delete": "d",
}

#: Interactions that change nothing: answered before their AuditEvent is committed.
_READ_ONLY = frozenset({"read", "vread", "search-type", "search-system", "search-compartment",
                        "history-instance", "history-type", "history-system", "capabilities"})
_READ_ONLY_OPERATIONS = frozenset({"everything", "validate"})


def answered_first(target: Target | None, status: int) -> bool:
    """Whether a request may be answered before its AuditEvent is committed: it succeeded
    (refusals, errors and hidden records' 404s wait) and changed nothing."""
    if target is None or status >= 400:
        return False
    if target.interaction == "operation":
        return target.operation in _READ_ONLY_OPERATIONS
    return target.interaction in _READ_ONLY


def interaction_action(target: Target) -> tuple[str | None, str] | None:
    """The resource type and SMART action (c r u d s) ``target`` needs; None for a Bundle
    (its entries are checked one by one) and the CapabilityStatement."""
    i = target.interaction
    if i in ("batch-transaction", "capabilities"):
        return None
    if i == "operation":
        if target.operation == "everything":
            return ("Patient", "r")
        return (target.type, "r")  # $validate reads nothing, but needs a clinical scope
    return (target.type, _ACTIONS[i])


def check(access: AccessContext, target: Target) -> None:
    need = interaction_action(target)
    if need is None:
        return
    type_, action = need
    if not access.scopes.permits(type_, action):
        what = type_ or "all resource types"
        raise FhirError(403, f"The token's scopes ({access.scopes}) do not allow "
                             f"'{action}' on {what}", code="forbidden")
    if target.compartment and not access.scopes.permits(target.compartment[0], "r"):
        raise FhirError(403, f"The token's scopes do not allow reading {target.compartment[0]}",
                        code="forbidden")


def check_entry(target: Target) -> None:
    """Check a Bundle entry against the request's access context (none: auth is off)."""
    access = ACCESS.get()
    if access is not None:
        check(access, target)


class ReadGate:
    """The guard's work for a plain read by id answered at the front of the app
    (``read.PlainReads``), which takes the guard's place there: the bearer token verified (a
    token seen before: its cached context), its scopes checked for reading the type, the
    store's rules for the read, and the read's AuditEvent queued before the answer leaves —
    the same entry the guard writes. A request it does not admit goes the general way, where
    the guard refuses and audits it."""

    def __init__(self, auth: Auth, audit_writer: AuditBatcher) -> None:
        self.auth = auth
        self.audit_writer = audit_writer

    def admit(self, authorization: bytes, rtype: str, address: str | None
              ) -> tuple[AccessContext, ContextAccess] | None:
        """The context and rules of a valid bearer token whose scopes let it read ``rtype``;
        None otherwise (or when verifying fails in any way)."""
        text = authorization.decode("latin-1")
        if text[:7].lower() != "bearer ":
            return None
        try:
            access, rules = self.auth.verify_with_rules(text[7:].strip(), address)
        except Exception:  # noqa: BLE001 - the general way says why (401, or 500 audited)
            return None
        return (access, rules) if access.scopes.permits(rtype, "r") else None

    async def audit(self, path: str, entity: str, access: AccessContext,
                    address: str | None) -> None:
        """Queue the AuditEvent of an answered read (or commit it, while the log is failing
        or its queue is full)."""
        event = Event("read", "GET", path, 200, entity=entity, access=access, address=address)
        if self.audit_writer.accepting():
            self.audit_writer.queue(event)
        else:
            await self.audit_writer.record(event)


class AuthGuard:
    def __init__(self, app: Any, auth: Auth, fhir_prefix: str, types: frozenset[str],
                 public: frozenset[str], audit_writer: AuditBatcher,
                 health: str = "/health") -> None:
        self.app = app
        self.auth = auth
        self.prefix = fhir_prefix
        self.types = types
        self.public = public
        self.audit_writer = audit_writer
        self.health = health

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        client = scope.get("client")
        address = client[0] if client else None
        query = scope.get("query_string", b"").decode("latin-1")
        target = self._target(method, path)
        access: AccessContext | None = None
        rules: ContextAccess | None = None
        refused: str | None = None
        audited = False

        async def audit(status: int, location: str | None) -> None:
            nonlocal audited
            audited = True
            extra = scope.get("songkhoe.audit", {})
            event = Event(
                interaction=_interaction(path, target), method=method, path=path, status=status,
                query=unquote(query), entity=_entity(location, target, self.prefix),
                access=access, who=extra.get("who"), address=address,
                detail=refused or extra.get("detail"))
            writer = self.audit_writer
            if path == self.health or (answered_first(target, status) and writer.accepting()):
                writer.queue(event)
            else:
                await writer.record(event)

        async def sending(message: Any) -> None:
            # The AuditEvent is queued (and, unless answered first, committed) before the
            # answer leaves: no answer without its entry.
            if message["type"] == "http.response.start":
                location = None  # of what a write wrote (reads answer none)
                if target is None or target.interaction not in _READ_ONLY:
                    location = next((v.decode("latin-1") for k, v in message.get("headers", [])
                                     if k.lower() == b"location"), None)
                await audit(int(message["status"]), location)
            await send(message)

        try:
            if path not in self.public:
                token = _bearer(scope)
                if token is None:
                    refused = "no bearer token"
                    await _unauthorized("invalid_request", "This endpoint needs an access token "
                                        "(Authorization: Bearer …); get one at /auth/token")(
                        scope, receive, sending)
                    return
                try:
                    # on the event loop: a token seen before is a dictionary lookup, a new one
                    # one signature check (~0.1 ms); a thread hop cost more than either
                    access, rules = self.auth.verify_with_rules(token, address)
                except InvalidToken as exc:
                    refused = f"invalid token: {exc}"
                    await _unauthorized("invalid_token", str(exc))(scope, receive, sending)
                    return
                scope["songkhoe.access"] = access
                if target is not None:
                    try:
                        check(access, target)
                    except FhirError as err:
                        refused = err.issues[0].diagnostics if err.issues else "forbidden"
                        await _outcome(403, err)(scope, receive, sending)
                        return
            if target is not None and target.type == "AuditEvent":
                await self.audit_writer.drain()  # the log as of this request
            token_var = ACCESS.set(access)
            store_var = CURRENT.set(rules)
            try:
                await self.app(scope, receive, sending)
            finally:
                CURRENT.reset(store_var)
                ACCESS.reset(token_var)
        finally:
            if not audited:  # the app failed before answering: the server answers 500
                await audit(500, None)

    def _target(self, method: str, path: str) -> Target | None:
        if path != self.prefix and not path.startswith(self.prefix + "/"):
            return None
        rest = path[len(self.prefix):].strip("/")
        try:
            return resolve(method, rest.split("/") if rest else [], self.types)
        except FhirError:
            return None  # the FHIR endpoint answers it (404/405/400) once authenticated


#: What the requests outside the FHIR routing table are, for their AuditEvent's subtype
#: (``audit.DICOM_SUBTYPES``): the OAuth endpoints and the web app's session sign-in/out.
_PATH_INTERACTIONS = {"/auth/token": "token", "/auth/authorize": "login",
                      "/auth/revoke": "revoke", "/app/session": "login", "/app/logout": "logout"}


def _interaction(path: str, target: Target | None) -> str:
    if target is not None:
        return target.interaction
    if "/$export" in path:  # kick-off, status, files and cancel of a Bulk Data export
        return "export"
    return _PATH_INTERACTIONS.get(path, "other")


def _entity(location: str | None, target: Target | None, prefix: str) -> str | None:
    if location and f"{prefix}/" in location:
        ref = location.split(f"{prefix}/", 1)[1]
        return ref.split("/_history/")[0]
    if target is not None and target.type and target.id:
        return f"{target.type}/{target.id}"
    if target is not None and target.compartment:
        return "/".join(target.compartment)
    return None


def _bearer(scope: Any) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            text = value.decode("latin-1")
            if text[:7].lower() == "bearer ":
                return text[7:].strip() or None
            return None
    return None


class _Raw:
    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.body, self.headers = status, body, headers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": [
            (b"content-type", b"application/fhir+json; charset=utf-8"),
            (b"content-length", str(len(self.body)).encode()), *self.headers]})
        await send({"type": "http.response.body", "body": self.body})


def _unauthorized(error: str, description: str) -> _Raw:
    body = orjson.dumps(operation_outcome([Issue("login", description)]))
    text = description.replace('"', "'").replace("\\", "/")
    challenge = f'Bearer realm="songkhoe", error="{error}", error_description="{text}"'
    return _Raw(401, body, [(b"www-authenticate",
                             challenge.replace("\n", " ").encode("latin-1", "replace"))])


def _outcome(status: int, err: FhirError) -> _Raw:
    return _Raw(status, orjson.dumps(operation_outcome(err.issues)), [])
