"""history: ``GET [base]/[type]/[id]/_history``, ``[base]/[type]/_history`` and ``[base]/_history``.

FHIR R4 §3.1.0.12 history (http://hl7.org/fhir/R4/http.html#history): a ``history`` Bundle,
newest first, one entry per version with ``request`` (how it came to be) and ``response``
(status, ``etag``, ``lastModified``); a deletion has no ``resource``. ``_since`` (an instant)
and ``_count`` are supported; ``_at`` and ``_list`` are not (400). Pages continue through a
``next`` link carrying ``_cursor`` (§3.1.0.13 paging, #paging).
"""

from __future__ import annotations

from typing import Any

from songkhoe.fhir.outcome import FhirError
from songkhoe.rest.exchange import Answer, Call, embed, instant, parse_count, parse_instant
from songkhoe.rest.search import link_url
from songkhoe.store.api import HistoryPage, Operations, Stored

DEFAULT_COUNT = 50
MAX_COUNT = 1000
_PARAMS = frozenset({"_since", "_count", "_cursor"})


def history(ops: Operations, call: Call) -> Answer:
    t = call.target
    for name, _ in call.params:
        if name not in _PARAMS:
            raise FhirError(400, f"history does not support the parameter {name!r} "
                                 "(supported: _since, _count)", code="not-supported",
                            expression=name)
    since_text = call.param("_since")
    since = parse_instant(since_text, "_since") if since_text else None
    count = parse_count(call.param("_count"), "_count", DEFAULT_COUNT, MAX_COUNT)
    cursor = call.param("_cursor") or None
    if count == 0:  # only the total is wanted; the store pages with at least one row
        page = ops.history(t.type, t.id, since=since, count=1)
        page = HistoryPage([], page.total, None)
    else:
        page = ops.history(t.type, t.id, since=since, count=count, cursor=cursor)
    path = "/".join(p for p in (t.type, t.id) if p) + ("/_history" if t.type else "_history")
    params: list[tuple[str, str]] = []
    if since_text:
        params.append(("_since", since_text))
    if call.param("_count") is not None:
        params.append(("_count", str(count)))
    links = [{"relation": "self",
              "url": link_url(call.base, path, [*params, *([("_cursor", cursor)]
                                                           if cursor else [])])}]
    if page.next_cursor:
        links.append({"relation": "next",
                      "url": link_url(call.base, path, [*params, ("_cursor", page.next_cursor)])})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = links
    if page.versions:
        bundle["entry"] = [_entry(s, call) for s in page.versions]
    return Answer(200, body=bundle)


def _entry(stored: Stored, call: Call) -> dict[str, Any]:
    method = stored.method or "PUT"
    out: dict[str, Any] = {"fullUrl": f"{call.base}/{stored.type}/{stored.id}"}
    if stored.content is not None:
        out["resource"] = embed(stored, call.pretty)
    out["request"] = {"method": method,
                      "url": stored.type if method == "POST" else stored.reference}
    if method == "DELETE":
        status = "200 OK"
    elif method == "POST" or stored.version == 1:
        status = "201 Created"
    else:
        status = "200 OK"
    out["response"] = {"status": status, "etag": stored.etag,
                       "lastModified": instant(stored.last_updated)}
    return out
