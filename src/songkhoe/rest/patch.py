"""patch and conditional patch with JSON Patch: ``PATCH [base]/[type]/[id]`` and
``PATCH [base]/[type]?[search parameters]``.

FHIR R4 §3.1.0.6 patch (http://hl7.org/fhir/R4/http.html#patch): the body is a JSON Patch
(RFC 6902, ``application/json-patch+json``); the result is validated and stored as a new
version like an update, ``If-Match`` applies (412 when stale). FHIRPath Patch (a Parameters
body) is not supported. A conditional patch patches the one match (404 when none, 412 when
several), in one transaction.
"""

from __future__ import annotations

from typing import Any

from songkhoe.fhir.outcome import FhirError
from songkhoe.rest.exchange import Answer, Call, write_answer
from songkhoe.rest.update import if_match
from songkhoe.store.api import Operations


def _operations(call: Call) -> list[dict[str, Any]]:
    body = call.body
    if not isinstance(body, list) or not all(isinstance(op, dict) for op in body):
        raise FhirError(400, "A JSON Patch is a JSON array of operation objects (RFC 6902)",
                        code="structure")
    return body


def patch(ops: Operations, call: Call) -> Answer:
    t = call.target
    assert t.type and t.id
    return write_answer(ops.patch(t.type, t.id, _operations(call), if_match=if_match(call)))


def conditional_patch(ops: Operations, call: Call, transaction: Any = None) -> Answer:
    """``transaction``: a context manager factory (``store.transaction``) so that the search and
    the patch see the same data; None when ``ops`` already is a transaction."""
    t = call.target
    assert t.type
    operations = _operations(call)
    if not call.params:
        raise FhirError(400, f"PATCH {t.type} needs an id ({t.type}/[id]) or search parameters "
                             "to say what to patch", code="invalid")
    if transaction is not None:
        with transaction() as tx:
            return conditional_patch(tx, call)
    found = ops.match(t.type, call.params, "The conditional patch")
    if not found:
        raise FhirError(404, f"No {t.type} matches {call.query()}: nothing to patch",
                        code="not-found")
    if len(found) > 1:
        raise FhirError(412, f"More than one {t.type} matches {call.query()}: a conditional "
                             "patch needs exactly one", code="multiple-matches")
    return write_answer(ops.patch(t.type, found[0].id, operations, if_match=if_match(call)))
