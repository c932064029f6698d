"""read and vread: ``GET [base]/[type]/[id]`` and ``GET [base]/[type]/[id]/_history/[vid]``.

FHIR R4 §3.1.0.2 read (http://hl7.org/fhir/R4/http.html#read) and §3.1.0.3 vread (#vread):
200 with the resource and its ``ETag``/``Last-Modified``, 404 for an unknown id, 410 for a
deleted resource. Conditional read (``If-None-Match``, ``If-Modified-Since``; #cread) answers
304. The stored bytes are sent as they are; ``_elements`` and ``_summary`` (search.html#elements,
search.html#summary) shape a copy, marked ``SUBSETTED`` as §2.21.1.7 requires;
``_summary=true`` keeps the elements R4 marks ``isSummary``
(``songkhoe.fhir.definitions.summary_elements``).

``PlainReads`` answers the commonest request of all, a plain read by id, at the front of the
app: one store call, the stored bytes out as raw ASGI messages, and with security on the
guard's checks and AuditEvent (``guard.ReadGate``) — no router, no Starlette request or
response, no second middleware. Everything else goes the general way.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from starlette.concurrency import run_in_threadpool

from songkhoe.fhir import definitions
from songkhoe.fhir.outcome import FhirError
from songkhoe.rest.exchange import Answer, Call, http_date, not_modified
from songkhoe.rest.guard import ReadGate
from songkhoe.rest.negotiation import FHIR_JSON, accept_media
from songkhoe.rest.routing import ID_PATTERN
from songkhoe.store.access import CURRENT
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


_FHIR_JSON_UTF8 = f"{FHIR_JSON}; charset=utf-8".encode()
#: Headers that send a GET the general way: conditional reads, and cookies (a browser session
#: is turned into a token by the web app's middleware, behind this one).
_GENERAL_HEADERS = frozenset({b"if-none-match", b"if-modified-since", b"cookie"})
_UNSERVED = frozenset({"AuditEvent"})  # the audit log answers its own reads (audit_events)


@lru_cache(maxsize=256)
def _json_accepted(accept: bytes) -> bool:
    """Whether an ``Accept`` header is answered with FHIR JSON (the stored bytes as they are)."""
    try:
        return accept_media(accept.decode("latin-1")) == FHIR_JSON
    except FhirError:
        return False


class PlainReads:
    """ASGI middleware at the front of the app: ``GET [base]/[type]/[id]`` without a query,
    conditional headers or cookies, asking for JSON, is answered here — with security on
    (``gate``) only for a valid bearer token whose scopes read the type, the read's
    AuditEvent queued first. A request not taken, and a read that does not answer 200 (404,
    410, refused, failed), go on to ``app``: the general way answers and audits them (the
    tests check both ways give the same answer)."""

    def __init__(self, app: Any, api: Any, gate: ReadGate | None) -> None:
        self.app = app
        self.api = api
        self.gate = gate
        self.base = f"{api.prefix}/"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"] \
                and scope["path"].startswith(self.base) and not scope.get("root_path"):
            type_, slash, id_ = scope["path"][len(self.base):].partition("/")
            if slash and type_ in self.api.types and type_ not in _UNSERVED and \
                    ID_PATTERN.fullmatch(id_):
                authorization = None
                for name, value in scope["headers"]:
                    if name == b"accept":
                        if not _json_accepted(value):
                            break
                    elif name == b"authorization":
                        authorization = authorization or value
                    elif name in _GENERAL_HEADERS:
                        break
                else:
                    if await self._answer(scope, send, type_, id_, authorization):
                        return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Any, send: Any, type_: str, id_: str,
                      authorization: bytes | None) -> bool:
        gate = self.gate
        admitted = None
        client = scope.get("client")
        address = client[0] if client else None
        if gate is not None:
            admitted = gate.admit(authorization, type_, address) if authorization else None
            if admitted is None:
                return False
        rules = CURRENT.set(admitted[1]) if admitted is not None else None
        try:
            store = self.api.store
            if self.api.direct_reads:
                stored = store.read(type_, id_)
            else:
                stored = await run_in_threadpool(store.read, type_, id_)
        except Exception:  # noqa: BLE001 - 404, 410 or a failure: the general way answers it
            return False
        finally:
            if rules is not None:
                CURRENT.reset(rules)
        if gate is not None and admitted is not None:
            await gate.audit(scope["path"], f"{type_}/{id_}", admitted[0], address)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", _FHIR_JSON_UTF8),
            (b"content-length", str(len(stored.content)).encode()),
            (b"etag", stored.etag.encode()),
            (b"last-modified", http_date(stored.last_updated).encode())]})
        await send({"type": "http.response.body", "body": stored.content})
        return True
