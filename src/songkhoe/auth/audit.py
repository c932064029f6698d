"""The audit trail: one FHIR R4 AuditEvent (http://hl7.org/fhir/R4/auditevent.html) per
request, sign-in and refused access, in an append-only, hash-chained table.

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
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from .context import AccessContext
from .db import Db
from .passwords import Clock

GENESIS = "0" * 64
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACTIONS = {"create": "C", "read": "R", "vread": "R", "update": "U", "patch": "U", "delete": "D",
           "search": "E", "history": "R", "capabilities": "R", "operation": "E",
           "batch-transaction": "E", "login": "E", "token": "E", "revoke": "E", "other": "E"}


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: str, content: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + content).hexdigest()


@dataclass(frozen=True)
class Event:
    """What happened, before it becomes an AuditEvent."""

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


def audit_event(event: Event, recorded: datetime) -> dict[str, Any]:
    a = event.access
    outcome = "0" if event.status < 400 else ("4" if event.status < 500 else "8")
    base = event.interaction.split("-")[0]
    action = ACTIONS.get(base, "E")
    login = event.interaction in ("login", "token")
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": ({"system": _DCM, "code": "110114", "display": "User Authentication"} if login
                 else {"system": _EVENT_TYPE, "code": "rest", "display": "RESTful Operation"}),
        "subtype": [{"system": _INTERACTION if not login else _DCM,
                     "code": event.interaction if not login else "110122",
                     "display": event.interaction}],
        "action": action,
        "recorded": recorded.isoformat().replace("+00:00", "Z"),
        "outcome": outcome,
        "outcomeDesc": f"HTTP {event.status}" + (f": {event.detail}" if event.detail else ""),
        "agent": [{
            "type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"}]},
            "who": {"identifier": {"system": "urn:songkhoe:user" if not a or a.kind == "user"
                                   else "urn:songkhoe:client",
                                   "value": a.subject if a else (event.who or "anonymous")}},
            "requestor": True,
            **({"role": [{"text": a.role}]} if a and a.role else {}),
            **({"location": {"reference": f"Organization/{a.org}"}} if a and a.org else {}),
            **({"purposeOfUse": [{"coding": [{"system": _PURPOSE, "code": a.purpose}]}]}
               if a and a.purpose else {}),
            **({"network": {"address": event.address, "type": "2"}} if event.address else {}),
        }],
        "source": {"observer": {"display": "songkhoe"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                             "code": "4", "display": "Application Server"}]},
        "entity": [{"what": {"reference": event.entity}} if event.entity else
                   {"what": {"display": f"{event.method} {event.path}"}}],
    }
    if event.query:
        resource["entity"][0]["query"] = base64.b64encode(event.query.encode()).decode()
        resource["entity"][0]["description"] = event.query
    if a and a.break_glass:
        resource["agent"][0]["policy"] = ["urn:songkhoe:policy:break-the-glass"]
    if a and a.client_id:
        resource["agent"].append({"who": {"identifier": {"system": "urn:songkhoe:client",
                                                         "value": a.client_id}},
                                  "requestor": False})
    return resource


@dataclass(frozen=True)
class Problem:
    seq: int
    reason: str


class AuditLog:
    def __init__(self, db: Db, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def record(self, event: Event) -> int:
        """Append one AuditEvent; returns its sequence number."""
        now = self.clock()
        recorded = datetime.fromtimestamp(now, timezone.utc)
        content = canonical(audit_event(event, recorded))
        with self.db.write() as c:
            if c.postgres:  # one appender at a time, so the chain never forks
                c.run("LOCK TABLE audit_log IN EXCLUSIVE MODE")
            last = c.one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            seq, prev = (int(last[0]) + 1, last[1]) if last else (1, GENESIS)
            c.run("INSERT INTO audit_log (seq, recorded, content, prev_hash, hash) "
                  "VALUES (?, ?, ?, ?, ?)",
                  (seq, int(now * 1_000_000), content.decode(), prev, chain_hash(prev, content)))
        return seq

    def entries(self) -> list[dict[str, Any]]:
        return [orjson.loads(r[0]) for r in
                self.db.all("SELECT content FROM audit_log ORDER BY seq")]

    def head(self) -> tuple[int, str]:
        row = self.db.one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        return (int(row[0]), row[1]) if row else (0, GENESIS)

    def verify(self) -> Problem | None:
        """The first entry that breaks the chain, or None when the whole chain holds."""
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
