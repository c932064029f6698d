"""delete and conditional delete: ``DELETE [base]/[type]/[id]`` and
``DELETE [base]/[type]?[search parameters]``.

FHIR R4 §3.1.0.7 delete (http://hl7.org/fhir/R4/http.html#delete): deletion is logical — a
tombstone version is added and later reads answer 410 Gone; history keeps every version.
Deleting something already deleted or unknown succeeds (200). ``If-Match`` makes the delete
version-aware (412 when stale). §3.1.0.7.1 conditional delete: the one match is deleted, no
match succeeds with nothing deleted, several answer 412 (this server deletes single matches
only: ``conditionalDelete = single``).
"""

from __future__ import annotations


from songkhoe.fhir.outcome import FhirError, Issue
from songkhoe.rest.exchange import Answer, Call
from songkhoe.rest.update import if_match
from songkhoe.store.api import Operations, WriteResult


def delete(ops: Operations, call: Call) -> Answer:
    t = call.target
    assert t.type and t.id
    return deleted_answer([ops.delete(t.type, t.id, if_match=if_match(call))], f"{t.type}/{t.id}")


def conditional_delete(ops: Operations, call: Call) -> Answer:
    t = call.target
    assert t.type
    if not call.params:
        raise FhirError(400, f"DELETE {t.type} needs an id ({t.type}/[id]) or search "
                             "parameters to say what to delete", code="invalid")
    results = ops.conditional_delete(t.type, call.query())
    return deleted_answer(results, f"{t.type}?{call.query()}")


def deleted_answer(results: list[WriteResult], what: str) -> Answer:
    done = [r.stored for r in results if r.outcome == "deleted" and r.stored is not None]
    if done:
        text = "Deleted " + ", ".join(f"{s.reference} (version {s.version})" for s in done)
    else:
        text = f"Nothing to delete: {what} matches no current resource"
    issues = [Issue("informational", text, severity="information")]
    stored = done[0] if len(done) == 1 else None
    return Answer(200, stored=stored, body=None, write=True, issues=issues)
