"""``AuditEvent`` over REST: the audit log, searched and read, never written.

The AuditEvents songkhoe keeps are the entries of its hash-chained audit log
(``songkhoe.auth.audit``, in its own database: ``auth.audit_db``), not resources of the
record store, so every interaction on the ``AuditEvent`` type is answered here
(``FhirApi.dispatch`` hands them over):

- search — ``GET [base]/AuditEvent?…``, ``POST [base]/AuditEvent/_search`` and
  ``GET [base]/Patient/[id]/AuditEvent`` (R4 Search, http://hl7.org/fhir/R4/search.html): a
  ``searchset`` Bundle, newest first, with a ``next`` link while there is more
  (http.html#paging), ``total`` on ``_total``/``_summary=count``; the parameters are
  ``songkhoe.auth.audit_search``'s;
- read and vread — ``GET [base]/AuditEvent/[seq]`` (every entry has version 1);
- create, update, patch, delete (conditional or not) and history — 405 with an
  OperationOutcome: the log is append-only and an entry has no other versions.

Only programme managers (their Organization's subtree) and administrators may search or read
it (403 otherwise; an entry the manager may not see is a 404). With security off (no access
context) the log is open, like everything else.
"""

from __future__ import annotations

from typing import Any

from songkhoe.auth import audit_db
from songkhoe.auth.audit_search import AuditSearch, Entry
from songkhoe.auth.db import Db
from songkhoe.fhir.outcome import FhirError
from songkhoe.rest.exchange import Answer, Call
from songkhoe.rest.guard import ACCESS
from songkhoe.rest.search import searchset
from songkhoe.store.api import SearchResult, Stored
from songkhoe.store.ranges import from_us

TYPE = "AuditEvent"
_READS = frozenset({"read", "vread"})
_SEARCHES = frozenset({"search-type", "search-compartment"})


def handles(call: Call) -> bool:
    """Whether ``call`` is an AuditEvent interaction answered here ($validate is not)."""
    return call.target.type == TYPE and call.target.interaction != "operation"


def dispatch(store: Any, call: Call) -> Answer:
    target = call.target
    interaction = target.interaction
    if interaction not in _READS and interaction not in _SEARCHES:
        what = "has no history: each entry is written once" if \
            interaction.startswith("history") else "is append-only"
        raise FhirError(405, f"{interaction} is not allowed on AuditEvent: the audit log "
                             f"{what}; AuditEvents are written by the server for every request "
                             f"and may only be read and searched", code="not-supported")
    # 403 for anyone but managers and admins
    log = AuditSearch(audit_db.of(store), ACCESS.get(), directory=Db(store))
    if interaction in _READS:
        entry = log.read(target.id or "")
        if entry is None or (target.version is not None and target.version != 1):
            what = f"AuditEvent/{target.id}" + (f"/_history/{target.version}"
                                                if target.version is not None else "")
            raise FhirError(404, f"{what} is not in the audit log (or not yours to see)",
                            code="not-found")
        return Answer(200, stored=_stored(entry))
    patient = None
    if target.compartment is not None:
        if target.compartment[0] != "Patient":
            raise FhirError(400, f"AuditEvent is searched by {target.compartment[0]} "
                                 "compartment only as Patient/[id]/AuditEvent",
                            code="not-supported")
        patient = target.compartment[1]
    page = log.search(call.params, patient=patient)
    result = SearchResult(matches=[_stored(e) for e in page.entries], total=page.total,
                          params=page.applied, next_cursor=page.next_cursor)
    path = f"Patient/{patient}/{TYPE}" if patient is not None else TYPE
    return Answer(200, body=searchset(result, call, path))


def _stored(entry: Entry) -> Stored:
    return Stored(TYPE, str(entry.seq), 1, from_us(entry.recorded), entry.resource_bytes())
