"""search: ``GET [base]/[type]?…``, ``POST [base]/[type]/_search``, ``GET [base]?…`` (all types)
and compartment search ``GET [base]/Patient/[id]/[type]?…``.

FHIR R4 RESTful API "search" (http://hl7.org/fhir/R4/http.html#search) and R4 Search
(http://hl7.org/fhir/R4/search.html). The parameters are the store's to apply (``_count``,
``_sort``, ``_total``, ``_summary=count``, ``_include``…, see ``songkhoe.store.search``); this
module turns its ``SearchResult`` into a ``searchset`` Bundle:

- ``total`` when the store counted (``_total``, ``_summary=count``, ``_count=0``);
- a ``self`` link built from the parameters the store applied — unknown or unsupported ones
  are left out (R4 Search, "Handling errors", search.html#errors) — and ``next``/``previous``
  links carrying the store's keyset cursor as ``_cursor`` (http.html#paging);
- entries with ``fullUrl`` and ``search.mode`` ``match`` or ``include`` (search.html#modes);
  when parameters were ignored (lenient handling, the default), an OperationOutcome entry with
  ``search.mode`` ``outcome`` names them as warnings. ``Prefer: handling=strict`` makes them a
  400 instead;
- ``_elements`` and ``_summary=true|text|data`` shape each match here, as for read
  (search.html#elements, #summary).
"""

from __future__ import annotations

from typing import Any

from songkhoe.fhir.outcome import Issue, operation_outcome
from songkhoe.rest.exchange import Answer, Call, embed, encode_query
from songkhoe.rest.read import subset, wants_subset
from songkhoe.store.api import Operations, SearchResult, Stored

#: Parameters applied here or carried by links rather than by the store.
_HERE = frozenset({"_elements", "_cursor", "_format", "_pretty"})


def search(ops: Operations, call: Call, *, strict: bool = False) -> Answer:
    t = call.target
    if t.compartment is not None:
        result = ops.search(t.type, call.params, compartment=t.compartment, strict=strict)
        ctype, cid = t.compartment
        path = f"{ctype}/{cid}/{t.type or '*'}"
    else:
        result = ops.search(t.type, call.params, strict=strict)
        path = t.type or ""
    return Answer(200, body=searchset(result, call, path))


def link_url(base: str, path: str, params: list[tuple[str, str]]) -> str:
    url = f"{base}/{path}" if path else base
    return f"{url}?{encode_query(params)}" if params else url


def ignored(result: SearchResult, call: Call) -> list[str]:
    """The parameters of the request the store did not apply (lenient handling)."""
    applied = {k for k, _ in result.params}
    return list(dict.fromkeys(k for k, _ in call.params if k not in applied and k not in _HERE))


def searchset(result: SearchResult, call: Call, path: str, *,
              report_ignored: bool = True) -> dict[str, Any]:
    """A ``searchset`` Bundle for one page of ``result``; ``path`` is the searched URL path
    relative to the base (``Patient``, ``Patient/1/Observation``, ``Patient/1/$everything``)."""
    applied = [(k, v) for k, v in result.params if k != "_cursor"]
    elements = call.param("_elements")
    if elements is not None and not any(k == "_elements" for k, _ in applied):
        applied.append(("_elements", elements))  # applied here, not by the store
    cursor = call.param("_cursor")
    links = [{"relation": "self",
              "url": link_url(call.base, path, [*applied, *([("_cursor", cursor)]
                                                             if cursor else [])])}]
    if result.next_cursor:
        links.append({"relation": "next",
                      "url": link_url(call.base, path, [*applied, ("_cursor", result.next_cursor)])})
    if result.prev_cursor:
        links.append({"relation": "previous",
                      "url": link_url(call.base, path, [*applied, ("_cursor", result.prev_cursor)])})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = links
    elements, summary = call.param("_elements"), call.param("_summary")
    cut = (elements, summary) if wants_subset(elements, summary) else None
    entries = [entry(s, call, "match", cut) for s in result.matches]
    entries += [entry(s, call, "include") for s in result.included]
    skipped = ignored(result, call) if report_ignored else []
    if skipped:
        entries.append({"resource": operation_outcome([
            Issue("not-supported", f"the search parameter {name} is unknown or not supported "
                                   "here and was ignored", name, severity="warning")
            for name in skipped]), "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return bundle


def entry(stored: Stored, call: Call, mode: str,
          cut: tuple[str | None, str | None] | None = None) -> dict[str, Any]:
    """A searchset entry; ``cut`` = (``_elements``, ``_summary``) when matches are subsetted."""
    resource = subset(stored.resource, *cut) if cut else embed(stored, call.pretty)
    return {"fullUrl": f"{call.base}/{stored.type}/{stored.id}",
            "resource": resource,
            "search": {"mode": mode}}
