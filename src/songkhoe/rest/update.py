"""update, update-as-create and conditional update: ``PUT [base]/[type]/[id]`` and
``PUT [base]/[type]?[search parameters]``.

FHIR R4 §3.1.0.4 update (http://hl7.org/fhir/R4/http.html#update): the body's ``id`` must equal
the id in the URL (400 when missing or different); an unknown id creates the resource with that
id (update-as-create, 201), a known one answers 200. §3.1.0.5 (#concurrency): ``If-Match:
W/"[vid]"`` makes it a version-aware update, 412 when stale. §3.1.0.4.1 conditional update
(#cond-update): no match creates, one match updates it, several answer 412.
"""

from __future__ import annotations

from songkhoe.fhir.outcome import FhirError
from songkhoe.rest.create import check_body_type
from songkhoe.rest.exchange import Answer, Call, parse_version_tag, write_answer
from songkhoe.store.api import Operations


def if_match(call: Call) -> int | None:
    return None if call.if_match is None else parse_version_tag(call.if_match, "If-Match")


def update(ops: Operations, call: Call) -> Answer:
    t = call.target
    assert t.type and t.id
    body = check_body_type(call)
    body_id = body.get("id")
    if body_id is None and call.in_bundle:
        body = {**body, "id": t.id}  # the entry's request.url names the id
    elif body_id != t.id:
        what = "has no id" if body_id is None else f"has id {body_id!r}"
        raise FhirError(400, f"The resource {what} but the URL is for {t.type}/{t.id}: an "
                             "update must carry the id of the URL", code="invalid",
                        expression=f"{t.type}.id")
    return write_answer(ops.update(t.type, t.id, body, if_match=if_match(call)))


def conditional_update(ops: Operations, call: Call) -> Answer:
    t = call.target
    assert t.type
    body = check_body_type(call)
    if not call.params:
        raise FhirError(400, f"PUT {t.type} needs an id ({t.type}/[id]) or search parameters "
                             f"({t.type}?identifier=…) to say what to update", code="invalid")
    return write_answer(ops.conditional_update(t.type, call.query(), body,
                                               if_match=if_match(call)))
