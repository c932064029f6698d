"""``Patient/[id]/$everything``: the patient and everything in its compartment.

FHIR R4 Patient $everything (http://hl7.org/fhir/R4/patient-operation-everything.html), invoked
as an operation (http://hl7.org/fhir/R4/operations.html#executing) with ``GET``. Supported
parameters: ``_since`` (instant), ``_type`` (comma-separated or repeated resource types),
``_count`` (page size); pages continue through ``next`` (and ``previous``) links carrying the
store's keyset ``_cursor``. The
``start``/``end`` care-date window is not supported (400). The answer is a ``searchset`` Bundle.
"""

from __future__ import annotations

from songkhoe.fhir.outcome import FhirError
from songkhoe.rest.exchange import Answer, Call, parse_count, parse_instant
from songkhoe.rest.search import searchset
from songkhoe.store.api import Operations, SearchResult

DEFAULT_COUNT = 100
MAX_COUNT = 1000
_PARAMS = frozenset({"_since", "_type", "_count", "_cursor"})


def everything(ops: Operations, call: Call, types: frozenset[str]) -> Answer:
    t = call.target
    assert t.type == "Patient" and t.id
    for name, _ in call.params:
        if name not in _PARAMS:
            raise FhirError(400, f"$everything does not support the parameter {name!r} "
                                 "(supported: _since, _type, _count)", code="not-supported",
                            expression=name)
    since_text = call.param("_since")
    since = parse_instant(since_text, "_since") if since_text else None
    wanted: list[str] | None = None
    for name, value in call.params:
        if name == "_type":
            for rtype in (v.strip() for v in value.split(",")):
                if rtype not in types:
                    raise FhirError(400, f"_type names {rtype!r}, which is not a resource type",
                                    code="invalid", expression="_type")
                wanted = [*(wanted or []), rtype]
    count = parse_count(call.param("_count"), "_count", DEFAULT_COUNT, MAX_COUNT) or 1
    result = ops.everything(t.id, since=since, types=wanted, count=count,
                            cursor=call.param("_cursor") or None)
    applied = [(k, v) for k, v in call.params if k != "_cursor"]
    shown = SearchResult(result.matches, result.included, result.total, applied,
                         result.next_cursor, result.prev_cursor)
    return Answer(200, body=searchset(shown, call, f"Patient/{t.id}/$everything",
                                      report_ignored=False))
