"""search: ``GET [base]/[type]?…``, ``POST [base]/[type]/_search``, ``GET [base]?…`` (all types)
and compartment search ``GET [base]/Patient/[id]/[type]?…``.

FHIR R4 §3.1.0.9 search (http://hl7.org/fhir/R4/http.html#search) and the search framework
(http://hl7.org/fhir/R4/search.html): the answer is a ``searchset`` Bundle with ``total`` when the
store counted, a ``self`` link built from the parameters the store applied (#conformance),
``next``/``previous`` links carrying the store's keyset cursor as ``_cursor`` (paging,
http://hl7.org/fhir/R4/http.html#paging), and entries with ``fullUrl`` and ``search.mode``
``match`` or ``include`` (§2.21.1.6.2, search.html#modes). ``Prefer: handling=strict`` makes
unknown parameters an error (search.html#errors). The parameters themselves — including
``_count``, ``_total``, ``_summary=count`` — are the store's to apply; ``_elements`` and
``_summary=text|data`` shape each match here, as for read.
"""

from __future__ import annotations

from typing import Any

from songkhoe.rest.exchange import Answer, Call, embed, encode_query
from songkhoe.rest.read import subset, wants_subset
from songkhoe.store.api import Operations, SearchResult, Stored


def search(ops: Operations, call: Call, *, strict: bool = False) -> Answer:
    t = call.target
    params = call.params
    if call.param("_count") == "0":
        # _count=0 asks for no matches: answer the total only (as _summary=count does)
        params = [(k, v) for k, v in params if k not in ("_count", "_summary")]
        params.append(("_summary", "count"))
    if t.compartment is not None:
        result = ops.search(t.type, params, compartment=t.compartment,
                            strict=strict)
        ctype, cid = t.compartment
        path = f"{ctype}/{cid}/{t.type or '*'}"
    else:
        result = ops.search(t.type, params, strict=strict)
        path = t.type or ""
    return Answer(200, body=searchset(result, call, path))


def link_url(base: str, path: str, params: list[tuple[str, str]]) -> str:
    url = f"{base}/{path}" if path else base
    return f"{url}?{encode_query(params)}" if params else url


def searchset(result: SearchResult, call: Call, path: str) -> dict[str, Any]:
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
