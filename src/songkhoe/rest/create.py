"""create and conditional create: ``POST [base]/[type]``.

FHIR R4 §3.1.0.8 create (http://hl7.org/fhir/R4/http.html#create): the server assigns the id
(an id in the body is ignored), answers 201 with ``Location: [base]/[type]/[id]/_history/[vid]``,
``ETag`` and ``Last-Modified``. §3.1.0.8.1 conditional create (#ccreate): with
``If-None-Exist: [search parameters]`` no match creates, one match answers 200 with the existing
resource and stores nothing, several matches answer 412.
"""

from __future__ import annotations

from typing import Any

from songkhoe.fhir.outcome import FhirError
from songkhoe.rest.exchange import Answer, Call, if_none_exist_query, write_answer
from songkhoe.store.api import Operations


def check_body_type(call: Call) -> dict[str, Any]:
    """The request resource, whose ``resourceType`` must be the type in the URL (400)."""
    body = call.body
    assert isinstance(body, dict)
    if body.get("resourceType") != call.target.type:
        raise FhirError(400, f"The body is a {body.get('resourceType')} but the URL is for "
                             f"{call.target.type}", code="invalid", expression="resourceType")
    return body


def create(ops: Operations, call: Call) -> Answer:
    body = check_body_type(call)
    if_none_exist = None
    if call.if_none_exist is not None:
        if_none_exist = if_none_exist_query(call.if_none_exist)
    return write_answer(ops.create(body, if_none_exist=if_none_exist))
