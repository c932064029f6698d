"""The audit trail: one FHIR R4 AuditEvent (http://hl7.org/fhir/R4/auditevent.html) per
request, sign-in and refused access, in an append-only, hash-chained table of its own
database (``audit_db``: beside a SQLite store, or any database).

Each ``audit_log`` row holds the AuditEvent as canonical JSON (sorted keys, no spaces, UTF-8)
and ``hash = SHA-256(prev_hash || content)``, where ``prev_hash`` is the previous row's hash
(64 zeros for the first). Rows are numbered 1, 2, 3… without gaps. ``verify`` recomputes the
chain: an edited row breaks its own hash, a deleted row breaks the numbering and the next
row's ``prev_hash``, a re-hashed edit breaks every later row. What the chain cannot show
alone is the loss of the newest rows; ``head()`` gives (count, last hash) to anchor elsewhere
(docs/security.md).

AuditEvent coding follows R4: ``type`` DICOM 110100 / ``rest`` (http://terminology.hl7.org/
CodeSystem/audit-event-type), ``subtype`` the FHIR interaction (restful-interaction),
``action`` C/R/U/D/E, ``outcome`` 0 (success) / 4 (minor failure, e.g. refused) / 8.

Searching (``audit_search``): the same INSERT that appends an entry fills the row's search
columns from the AuditEvent (``search_columns``; schema version 4, which filled the older rows
from their JSON by the same rules). They sit beside the hash chain, not inside it: the hash
covers ``content`` alone, so ``verify`` is unchanged, and the columns can always be rebuilt
from ``content``.

The Patient an event is about is an ``entity`` (BALP, IHE Basic Audit Log Patterns: entity
type 1 Person, role 1 Patient): the resource of the request when it is a Patient (or the
Patient compartment searched), else a Patient named by a search (``patient=``,
``subject=Patient/…``, ``Patient?_id=``), added as a second entity.

Break the glass: a token with purpose ETREAT is recorded when it is issued
(``break_glass_granted``), with the reason the clinician stated; every request made with it
carries ``agent.policy`` = (``BREAK_GLASS``, ``urn:songkhoe:token:<jti>``) — R4 "the policy
would also indicate the security token used" — and the stated reason as
``agent.purposeOfUse.text``, looked up from the issue entry by the token id.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from .context import AccessContext
from .db import Db
from .passwords import Clock

if TYPE_CHECKING:
    from .audit_db import AuditDb

_log = logging.getLogger("songkhoe.audit")
GENESIS = "0" * 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
USER = "urn:songkhoe:user"
CLIENT = "urn:songkhoe:client"
BREAK_GLASS = "urn:songkhoe:policy:break-the-glass"
TOKEN = "urn:songkhoe:token:"  # + the access token's jti, in agent.policy of break-the-glass
MAX_REASON = 500  # characters of a stated break-the-glass reason kept
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
ACTIONS = {"create": "C", "read": "R", "vread": "R", "update": "U", "patch": "U", "delete": "D",
           "search": "E", "history": "R", "capabilities": "R", "operation": "E",
           "batch-transaction": "E", "login": "E", "token": "E", "logout": "E", "revoke": "E",
           "export": "E", "restricted": "E", "other": "E"}
#: Interactions recorded with DICOM codes (DCM, audit-event-sub-type): sign-in and token
#: requests 110122 Login, sign-out 110123 Logout — both of type 110114 User Authentication —
#: Bulk Data ``$export`` (kick-off, status, files, the job's end) 110106 Export, and a
#: request refused by a security check before any interaction (a web session's forged or
#: cross-site change: ``restricted``) 110132 Use of Restricted Function, of type 110113
#: Security Alert (DICOM PS3.15 A.5.3.11; its outcome 4: refused, the mitigation held).
DICOM_SUBTYPES = {"login": "110122", "token": "110122", "logout": "110123", "export": "110106",
                  "restricted": "110132"}
_AUTHENTICATION = frozenset({"login", "token", "logout"})


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: str, content: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + content).hexdigest()


@dataclass(slots=True)
class Event:
    """What happened, before it becomes an AuditEvent (one is built for every request: slots,
    not frozen, so that building it costs little)."""

    interaction: str  # a restful-interaction code, or login / token / revoke
    method: str
    path: str
    status: int
    query: str = ""
    entity: str | None = None  # "Patient/123" when the request names a resource
    access: AccessContext | None = None
    who: str | None = None  # for a sign-in before there is an access context
    address: str | None = None
    detail: str | None = None  # why it was refused, what was granted
    reason: str | None = None  # the reason stated for breaking the glass


_LOGIN_TYPE = {"system": _DCM, "code": "110114", "display": "User Authentication"}
_ALERT_TYPE = {"system": _DCM, "code": "110113", "display": "Security Alert"}
_REST_TYPE = {"system": _EVENT_TYPE, "code": "rest", "display": "RESTful Operation"}
_SOURCE = {"observer": {"display": "songkhoe"},
           "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                     "code": "4", "display": "Application Server"}]}


def audit_event(event: Event, recorded: datetime) -> dict[str, Any]:
    """The AuditEvent of ``event`` (``entry`` builds its canonical JSON faster)."""
    return {
        "resourceType": "AuditEvent",
        "type": _type(event.interaction),
        "subtype": [_subtype(event.interaction)],
        "action": ACTIONS.get(event.interaction.split("-")[0], "E"),
        "recorded": recorded.isoformat().replace("+00:00", "Z"),
        "outcome": _outcome(event.status),
        "outcomeDesc": f"HTTP {event.status}" + (f": {event.detail}" if event.detail else ""),
        "agent": _agents(event.access, event.who, event.address, event.reason),
        "source": _SOURCE,
        "entity": _entities(event),
    }


def _outcome(status: int) -> str:
    return "0" if status < 400 else ("4" if status < 500 else "8")


def _type(interaction: str) -> dict[str, str]:
    if interaction in _AUTHENTICATION:
        return _LOGIN_TYPE
    return _ALERT_TYPE if interaction == "restricted" else _REST_TYPE


def _subtype(interaction: str) -> dict[str, str]:
    dicom = DICOM_SUBTYPES.get(interaction)
    return {"system": _INTERACTION if dicom is None else _DCM,
            "code": interaction if dicom is None else dicom, "display": interaction}


def _agents(a: AccessContext | None, who: str | None, address: str | None,
            reason: str | None) -> list[dict[str, Any]]:
    """The requestor (and the client application a user acted through)."""
    requestor: dict[str, Any] = {
        "type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {"identifier": {"system": USER if not a or a.kind == "user" else CLIENT,
                               "value": a.subject if a else (who or "anonymous")}},
        "requestor": True,
        **({"role": [{"text": a.role}]} if a and a.role else {}),
        **({"location": {"reference": f"Organization/{a.org}"}} if a and a.org else {}),
        **({"purposeOfUse": [{"coding": [{"system": _PURPOSE, "code": a.purpose}],
                              **({"text": reason} if reason else {})}]}
           if a and a.purpose else {}),
        **({"network": {"address": address, "type": "2"}} if address else {}),
    }
    if a and a.break_glass:
        requestor["policy"] = [BREAK_GLASS, *([TOKEN + a.token_id] if a.token_id else [])]
    agents = [requestor]
    if a and a.client_id:
        agents.append({"who": {"identifier": {"system": CLIENT, "value": a.client_id}},
                       "requestor": False})
    return agents


def _entities(event: Event) -> list[dict[str, Any]]:
    """What the request was about, and the Patient a search names."""
    first: dict[str, Any] = ({"what": {"reference": event.entity}} if event.entity else
                             {"what": {"display": f"{event.method} {event.path}"}})
    if event.query:
        first["query"] = base64.b64encode(event.query.encode()).decode()
        first["description"] = event.query
    entities = [first]
    patient = _named_patient(event)
    if patient is not None:
        entities.append({
            "what": {"reference": f"Patient/{patient}"},
            "type": {"system": _ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": _OBJECT_ROLE, "code": "1", "display": "Patient"}})
    return entities


def _named_patient(event: Event) -> str | None:
    """The Patient a search names, when the request's own resource is not one: ``patient=``
    (``Patient/id`` or id), ``subject=Patient/id`` (or ``subject:Patient=id``), or ``_id`` of
    a Patient search; one Patient, the first named."""
    query = event.query
    if event.entity or not query or not event.interaction.startswith("search") or (
            "patient" not in query and "subject" not in query and "_id" not in query):
        return None
    patient_search = event.path.rstrip("/").removesuffix("/_search").endswith("/Patient")
    for key, value in parse_qsl(query):
        name, _, modifier = key.partition(":")
        if "," in value or modifier not in ("", "Patient"):
            continue
        if name == "patient" or (name == "_id" and patient_search):
            typed = value.rsplit("/", 2)[-2:] if "/" in value else ["Patient", value]
        elif name == "subject":
            typed = value.rsplit("/", 2)[-2:] if "/" in value else (
                ["Patient", value] if modifier else [])
        else:
            continue
        if len(typed) == 2 and typed[0] == "Patient" and _ID.fullmatch(typed[1]):
            return typed[1]
    return None


#: The search columns of ``audit_log`` (schema version 4), in ``search_columns`` order.
COLUMNS = ("agent", "client", "role", "org", "entity", "patient", "type", "subtype", "action",
           "outcome", "address", "policy", "token")


def search_columns(resource: dict[str, Any]) -> tuple[str | None, ...]:
    """An AuditEvent's search columns (``COLUMNS``): the requestor's identifier value
    (``agent``), the client (the requestor when it is a system client, else the app a user
    acted through), the requestor's role and Organization id, the first entity's reference
    unless it is a Patient, the Patient entity's id (``entity=Patient/x`` searches it: each
    entry is in one index for the fact, not two), type and subtype codes, action, outcome,
    network address, the first policy that is not a token and the token id. The schema version
    4 migration (``store.schema._v4``) applies the same rules in SQL."""
    agent, client, role, org, address, policy, token = _agent_columns(resource["agent"])
    entity, patient = _entity_columns(resource["entity"])
    return (agent, client, role, org, entity, patient, resource["type"]["code"],
            resource["subtype"][0]["code"], resource["action"], resource["outcome"], address,
            policy, token)


def _agent_columns(agents: list[dict[str, Any]]) -> tuple[str | None, ...]:
    """agent, client, role, org, address, policy and token of ``search_columns``."""
    first = agents[0]
    who = first["who"]["identifier"]
    client = who["value"] if who["system"] == CLIENT else (
        agents[1]["who"]["identifier"]["value"] if len(agents) > 1 else None)
    org = first.get("location", {}).get("reference", "")
    policy = token = None
    for uri in first.get("policy", ()):
        if uri.startswith(TOKEN):
            token = token or uri[len(TOKEN):]
        elif policy is None:
            policy = uri
    return (who["value"], client, first["role"][0]["text"] if "role" in first else None,
            org[13:] if org.startswith("Organization/") else None,
            first.get("network", {}).get("address"), policy, token)


def _entity_columns(entities: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """entity and patient of ``search_columns``."""
    entity = entities[0]["what"].get("reference")
    if entity is not None and entity.startswith("Patient/"):
        entity = None
    for entity_ in entities:
        ref = entity_["what"].get("reference", "")
        if ref.startswith("Patient/"):
            return entity, ref[8:]
    return entity, None


@lru_cache(maxsize=4096)
def _agent_part(a: AccessContext | None, who: str | None, address: str | None,
                reason: str | None) -> tuple[bytes, tuple[str | None, ...]]:
    """The canonical JSON of the agents and their search columns: the same for every request
    of one token from one address, so built once."""
    agents = _agents(a, who, address, reason)
    return canonical(agents), _agent_columns(agents)


@lru_cache(maxsize=64)
def _fixed_part(interaction: str) -> tuple[bytes, bytes, bytes, str, str, str]:
    """``action``, ``subtype`` and ``type`` as canonical JSON, and their codes."""
    action = ACTIONS.get(interaction.split("-")[0], "E")
    subtype = _subtype(interaction)
    kind = _type(interaction)
    return (canonical(action), canonical([subtype]), canonical(kind), action, subtype["code"],
            kind["code"])


_SOURCE_JSON = canonical(_SOURCE)


def entry(event: Event, recorded_us: int) -> tuple[bytes, tuple[str | None, ...]]:
    """``canonical(audit_event(event, t))`` and ``search_columns`` of it, for the instant
    ``recorded_us`` (µs since the epoch), assembled from cached parts in sorted key order."""
    agents, (agent, client, role, org, address, policy, token) = _agent_part(
        event.access, event.who, event.address, event.reason)
    action, subtype, kind, action_code, subtype_code, kind_code = _fixed_part(event.interaction)
    entities = _entities(event)
    entity, patient = _entity_columns(entities)
    outcome = _outcome(event.status)
    recorded = (_EPOCH + timedelta(microseconds=recorded_us)).isoformat().replace("+00:00", "Z")
    content = b"".join((
        b'{"action":', action, b',"agent":', agents, b',"entity":', canonical(entities),
        b',"outcome":"', outcome.encode(), b'","outcomeDesc":',
        orjson.dumps(f"HTTP {event.status}" + (f": {event.detail}" if event.detail else "")),
        b',"recorded":"', recorded.encode(), b'","resourceType":"AuditEvent","source":',
        _SOURCE_JSON, b',"subtype":', subtype, b',"type":', kind, b"}"))
    return content, (agent, client, role, org, entity, patient, kind_code, subtype_code,
                     action_code, outcome, address, policy, token)


def stated_reason(resource: dict[str, Any]) -> str | None:
    """The reason stated for breaking the glass, as an AuditEvent records it."""
    for purpose in resource["agent"][0].get("purposeOfUse", ()):
        if purpose.get("text"):
            return str(purpose["text"])
    return None


_HEAD = "SELECT seq, hash, recorded FROM audit_log ORDER BY seq DESC LIMIT 1"
_UNKNOWN = object()  # a break-the-glass token whose stated reason is not cached yet
# two statements in one simple query (no parameters): each reads after the lock is held
_LOCK_AND_HEAD = f"LOCK TABLE audit_log IN EXCLUSIVE MODE; {_HEAD}"


@dataclass(frozen=True)
class Problem:
    seq: int
    reason: str


@dataclass(eq=False)
class Pending:
    """An entry queued for the group append that writes it."""

    event: Event
    now: int  # µs
    waited: bool  # someone waits for it: a failed write fails it (else it is queued again)
    built: tuple[bytes, tuple[str | None, ...]] | None = None  # ``entry(event, now)``
    seq: int | None = None
    error: BaseException | None = None


class AuditLog:
    """The append-only log. Entries are queued (``submit``) and appended in batches, one
    transaction each, by whichever thread writes next: ``record``/``record_many`` queue and
    return once their entries are committed, ``flush`` commits everything queued before it.
    One batch is written at a time; threads that arrive meanwhile wait for it and write the
    next, so concurrent requests share one transaction (and on PostgreSQL one lock and one WAL
    flush) instead of queueing for one each.

    A failed batch fails the entries someone waits for (their request fails). The others —
    entries of requests already answered (``submit(waited=False)``) — are never dropped: they
    go back to the head of the queue for the next batch, and ``failing`` holds the error
    until a batch is committed again (the server's health check reports it)."""

    def __init__(self, db: AuditDb, clock: Clock, directory: Db | None = None) -> None:
        self.db = db  # where the log lives (``audit_db``)
        self.directory = directory or db  # the store's database: ``org_tree`` for searches
        self.clock = clock
        self.failing: BaseException | None = None
        self._reasons: dict[str, str | None] = {}  # token id -> stated reason (immutable)
        self._waiting: list[Pending] = []
        self._writing: list[Pending] = []  # the batch being written
        self._busy = False
        self._turn = threading.Condition()

    def submit(self, event: Event, *, waited: bool = False) -> Pending:
        """Queue ``event`` for the next batch; its ``Pending`` shows when it is written. The
        entry's JSON is built here, by the caller (the server's event loop), not by the
        writer thread: Python work in the writer cannot run beside the loop anyway (one
        GIL), and a writer building a whole batch at once held the GIL for a batch's worth
        of entries while the loop waited for it."""
        pending = Pending(event, round(self.clock() * 1_000_000), waited)  # µs, as ``recorded``
        a = event.access
        if a is not None and a.break_glass and event.reason is None and a.token_id:
            reason = self._reasons.get(a.token_id, _UNKNOWN)
            if reason is not _UNKNOWN:  # else the writer reads it from the log
                pending.event = replace(event, reason=reason)
                pending.built = entry(pending.event, pending.now)
        else:
            pending.built = entry(event, pending.now)
        with self._turn:
            self._waiting.append(pending)
        return pending

    def pending(self) -> int:
        """Entries queued or being written."""
        return len(self._waiting) + len(self._writing)

    def record(self, event: Event) -> int:
        """Append one AuditEvent with its search columns; returns its sequence number once it
        is committed."""
        return self.record_many([event])[0]

    def record_many(self, events: list[Event]) -> list[int]:
        """Append AuditEvents in this order, committed together with whatever else is queued;
        their sequence numbers."""
        mine = [self.submit(event, waited=True) for event in events]
        self._write_until(mine)
        return [p.seq for p in mine if p.seq is not None]

    def flush(self) -> None:
        """Commit every entry queued before the call (raises if a batch of them fails)."""
        with self._turn:
            mine = self._waiting + self._writing
        if mine:
            self._write_until(mine)

    def unwritten(self) -> list[bytes]:
        """The queued entries as AuditEvent JSON (for the error log when they cannot be
        written at shutdown)."""
        with self._turn:
            queued = self._writing + self._waiting
        return [entry(p.event, p.now)[0] for p in queued]

    def _write_until(self, mine: list[Pending]) -> None:
        """Write batches until every entry of ``mine`` is committed; raise the error of a
        failed batch that held one of them."""
        with self._turn:
            while True:
                for pending in mine:
                    if pending.error is not None:
                        raise pending.error
                if all(p.seq is not None for p in mine):
                    return
                if self._busy:
                    self._turn.wait()
                    continue
                self._busy = True
                batch, self._waiting = self._waiting, []
                self._writing = batch
                self._turn.release()
                error: BaseException | None = None
                try:
                    self._append(batch)
                except BaseException as exc:  # noqa: BLE001 - every waiter of the batch hears of it
                    error = exc
                finally:
                    self._turn.acquire()
                    self._busy = False
                    self._writing = []
                    self.failing = error
                    if error is not None:
                        self._failed(batch, error)
                    self._turn.notify_all()

    def _failed(self, batch: list[Pending], error: BaseException) -> None:
        """Fail ``batch``; queue its entries nobody waits for again, first (lock held)."""
        again = [Pending(p.event, p.now, False, p.built) for p in batch if not p.waited]
        for pending in batch:
            pending.error = error
        self._waiting = again + self._waiting
        if again:
            _log.error("audit log: %d answered requests' entries could not be written (%s); "
                       "kept for the next batch", len(again), error)

    def _append(self, batch: list[Pending]) -> None:
        """Write ``batch`` in one transaction, chained after the last entry."""
        rows = []
        with self.db.write() as c:
            if c.postgres:  # one appender at a time, so the chain never forks; one round trip
                cursor = c.conn.execute(_LOCK_AND_HEAD, prepare=False)
                cursor.nextset()  # the SELECT's rows follow the LOCK's status
                last = cursor.fetchone()
            else:
                last = c.one(_HEAD)
            seq, prev, floor = (int(last[0]), last[1], int(last[2])) if last else (0, GENESIS, 0)
            for pending in batch:
                event = pending.event
                a = event.access
                if a is not None and a.break_glass and event.reason is None and a.token_id:
                    event = pending.event = replace(event, reason=self._reason(c, a.token_id))
                # never earlier than the entry before it (an appender that waited for the
                # lock, a clock stepped back): date searches read ranges of seq numbers
                now = max(pending.now, floor)
                built = pending.built
                content, columns = built if built is not None and now == pending.now else \
                    entry(event, now)
                seq, floor = seq + 1, now
                digest = chain_hash(prev, content)
                rows.append((seq, now, content.decode(), prev, digest, *columns))
                prev = digest
            self.db.append_rows(c, rows)
        for number, pending in enumerate(batch, seq - len(batch) + 1):
            pending.seq = number

    def break_glass_granted(self, claims: dict[str, Any], reason: str | None) -> int:
        """Record the issue of a break-the-glass access token (its verified-claims form:
        ``sub``, ``kind``, ``role``, ``org``, ``client_id``, ``purpose``, ``jti``) and the
        reason stated for it; the token's requests carry the reason from this entry."""
        access = AccessContext(subject=claims["sub"], kind=claims.get("kind", "user"),
                               role=claims.get("role", ""), org=claims.get("org"),
                               client_id=claims.get("client_id"),
                               purpose=claims.get("purpose") or "ETREAT", break_glass=True,
                               token_id=claims["jti"])
        reason = (reason or "").strip()[:MAX_REASON] or None
        self._reasons[claims["jti"]] = reason
        return self.record(Event("token", "POST", "/auth/token", 200, access=access,
                                 reason=reason, detail="break the glass: emergency access "
                                                       "token issued"))

    def _reason(self, c: Any, token_id: str) -> str | None:
        """The reason stated when the break-the-glass token ``token_id`` was issued (read
        with the connection ``c`` the first time)."""
        if token_id in self._reasons:
            return self._reasons[token_id]
        row = c.one("SELECT content FROM audit_log WHERE token = ? ORDER BY seq LIMIT 1",
                    (token_id,))
        reason = stated_reason(orjson.loads(row[0])) if row else None
        if len(self._reasons) >= 10_000:
            self._reasons.clear()
        self._reasons[token_id] = reason
        return reason

    # Reading the log first commits what this process has queued: an answered request is
    # never missing from what an auditor (or a test) reads here.

    def entries(self) -> list[dict[str, Any]]:
        self.flush()
        return [orjson.loads(r[0]) for r in
                self.db.all("SELECT content FROM audit_log ORDER BY seq")]

    def head(self) -> tuple[int, str]:
        self.flush()
        row = self.db.one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        return (int(row[0]), row[1]) if row else (0, GENESIS)

    def verify(self) -> Problem | None:
        """The first entry that breaks the chain, or None when the whole chain holds."""
        self.flush()
        prev, expected = GENESIS, 1
        with self.db.read() as c:
            cursor = c.backend.execute(c.conn, "SELECT seq, content, prev_hash, hash "
                                               "FROM audit_log ORDER BY seq")
            for seq, content, prev_hash, hash_ in cursor:
                seq = int(seq)
                if seq != expected:
                    return Problem(expected, f"entry {expected} is missing (next is {seq})")
                if prev_hash != prev:
                    return Problem(seq, f"entry {seq} does not follow the entry before it")
                if chain_hash(prev, content.encode()) != hash_:
                    return Problem(seq, f"entry {seq} was altered (its hash does not match "
                                        "its content)")
                prev, expected = hash_, seq + 1
        return None
