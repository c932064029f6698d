"""read and vread: ``GET [base]/[type]/[id]`` and ``GET [base]/[type]/[id]/_history/[vid]``.

FHIR R4 §3.1.0.2 read (http://hl7.org/fhir/R4/http.html#read) and §3.1.0.3 vread (#vread):
200 with the resource and its ``ETag``/``Last-Modified``, 404 for an unknown id, 410 for a
deleted resource. Conditional read (``If-None-Match``, ``If-Modified-Since``; #cread) answers
304. The stored bytes are sent as they are; ``_elements`` and ``_summary`` (search.html#elements,
search.html#summary) shape a copy, marked ``SUBSETTED`` as §2.21.1.7 requires;
``_summary=true`` keeps the elements R4 marks ``isSummary``
(``songkhoe.fhir.definitions.summary_elements``).
"""

from __future__ import annotations

from typing import Any

from songkhoe.fhir import definitions
from songkhoe.fhir.outcome import FhirError
from songkhoe.rest.exchange import Answer, Call, not_modified
from songkhoe.store.api import Operations, Stored

#: Elements every subset keeps (http://hl7.org/fhir/R4/search.html#elements).
_ALWAYS = ("resourceType", "id", "meta")
_SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
              "code": "SUBSETTED", "display": "Resource encoded in summary mode"}


def read(ops: Operations, call: Call) -> Answer:
    assert call.target.type and call.target.id
    stored = ops.read(call.target.type, call.target.id)
    return _answer(stored, call)


def vread(ops: Operations, call: Call) -> Answer:
    t = call.target
    assert t.type and t.id and t.version is not None
    return _answer(ops.vread(t.type, t.id, t.version), call)


def _answer(stored: Stored, call: Call) -> Answer:
    if (call.if_none_match is not None or call.if_modified_since is not None) \
            and not_modified(stored, call):
        return Answer(304, stored=stored)
    if call.params:
        shaped = shape(stored, call)
        if shaped is not None:
            return Answer(200, stored=stored, body=shaped)
    return Answer(200, stored=stored)


def shape(stored: Stored, call: Call) -> dict[str, Any] | None:
    """The resource cut down by ``_elements``/``_summary``, or None to send it whole."""
    unknown = [k for k, _ in call.params if k not in ("_elements", "_summary")]
    if unknown:
        raise FhirError(400, f"read takes no parameter {unknown[0]!r} (only _elements, "
                             "_summary, _format and _pretty)", code="not-supported",
                        expression=unknown[0])
    elements, summary = call.param("_elements"), call.param("_summary")
    if summary not in (None, "false", "true", "text", "data"):
        raise FhirError(400, f"_summary={summary} is not supported on read: use true, text, "
                             "data or false", code="not-supported", expression="_summary")
    if not wants_subset(elements, summary):
        return None
    return subset(stored.resource, elements, summary)


def wants_subset(elements: str | None, summary: str | None) -> bool:
    return elements is not None or summary in ("text", "data", "true")


def subset(resource: dict[str, Any], elements: str | None, summary: str | None
           ) -> dict[str, Any]:
    """``resource`` cut down by ``_elements`` or ``_summary`` (text, data, true), tagged
    ``SUBSETTED`` unless only the narrative was dropped."""
    if elements is not None:
        keep = {e.strip() for e in elements.split(",") if e.strip()}
        out = {k: v for k, v in resource.items() if k in _ALWAYS or k in keep}
    elif summary == "data":
        return {k: v for k, v in resource.items() if k != "text"}
    elif summary == "text":
        out = {k: v for k, v in resource.items() if k in _ALWAYS or k == "text"}
    else:
        out = summarise(resource)
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    out["meta"] = meta
    return out


def summarise(resource: dict[str, Any]) -> dict[str, Any]:
    """The summary elements of a resource (ElementDefinition.isSummary)."""
    summary = definitions.summary_elements(resource["resourceType"])
    return {k: v for k, v in resource.items() if k in _ALWAYS or k in summary}
