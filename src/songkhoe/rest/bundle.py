"""batch and transaction: ``POST [base]`` with a Bundle of type ``batch`` or ``transaction``.

FHIR R4 §3.1.0.11 (http://hl7.org/fhir/R4/http.html#transaction).

Shape first: the Bundle, each ``entry.request.method``/``url``, and each entry's ``resource``
are checked before anything runs; every fault is reported at once (400) with expressions such as
``Bundle.entry[3].request.url``.

Batch (§3.1.0.11.1 #brules): each entry runs on its own, in Bundle order, as its own store
transaction; a failing entry gets its status and an OperationOutcome in ``response.outcome`` and
the others go on. The answer is a ``batch-response``.

Transaction (§3.1.0.11.2 #trules): all entries run in one store transaction — all land or none
does. Entries are processed in the order the spec prescribes: DELETE, then POST, then PUT and
PATCH, then GET and HEAD; the answer lists them in Bundle order. Before any POST or PUT is
written, every entry whose ``fullUrl`` is a ``urn:uuid:``/``urn:oid:`` gets its identity (a new
id for a create; the match of ``ifNoneExist`` or of a conditional update; the URL id of an
update), and every ``reference`` to such a fullUrl anywhere in the resources — contained
resources and extensions included — and every ``href``/``src`` in narrative is rewritten to
``Type/id`` (§3.1.0.11.3 replacing hyperlinks and references). Conditional references
(``Patient?identifier=…``) are resolved by a search in the same transaction, 412 unless exactly
one resource matches. Identities touched by more than one write fail the transaction (400).
On the first failing entry the transaction rolls back and the answer is that entry's status
with an OperationOutcome whose expressions point into the Bundle. The answer is a
``transaction-response`` with ``response.status``, ``location``, ``etag``, ``lastModified``
per entry, and the resource when ``Prefer: return=representation`` asks for it.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field, replace
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from songkhoe.fhir.outcome import FhirError, Issue, operation_outcome
from songkhoe.rest.errors import internal_error, rebase_issues
from songkhoe.rest.exchange import (
    FORMAT_PARAMS,
    RETURN_OUTCOME,
    RETURN_REPRESENTATION,
    Answer,
    Call,
    embed,
    if_none_exist_query,
    instant,
    write_answer,
)
from songkhoe.rest.negotiation import JSON_PATCH
from songkhoe.rest.routing import Target, resolve
from songkhoe.store.api import Operations, Prepared, WriteResult
from songkhoe.store.ids import new_id

if TYPE_CHECKING:
    from songkhoe.rest.app import FhirApi

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
#: §3.1.0.11.2: the order in which a transaction processes its entries.
_PHASE = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_LOCAL_URN = ("urn:uuid:", "urn:oid:")
_CONDITIONAL_REF = re.compile(r"^([A-Z][A-Za-z]+)\?(.*)$", re.DOTALL)


@dataclass(slots=True)
class Entry:
    index: int
    method: str
    url: str
    full_url: str | None
    call: Call | None = None
    error: FhirError | None = None  # why the entry cannot run (batch: reported per entry)
    assigned: str | None = None  # transaction: the id this write will have
    existing: Any = None  # transaction: the resource a conditional create matched
    prepared: Prepared | None = None  # transaction: a create validated and indexed beforehand
    answer: Answer | None = None
    issues: list[Issue] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


def process(api: FhirApi, call: Call) -> Answer:
    bundle = call.body
    kind, entries = _check(api, call, bundle)
    if kind == "batch":
        return _batch(api, call, entries)
    return _transaction(api, call, entries)


# --- shape ----------------------------------------------------------------------------------


def _check(api: FhirApi, call: Call, bundle: Any) -> tuple[str, list[Entry]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        got = bundle.get("resourceType") if isinstance(bundle, dict) else type(bundle).__name__
        raise FhirError(400, f"POST to the service base takes a Bundle of type batch or "
                             f"transaction; got {got!r}. To store a resource, POST it to "
                             "[base]/[type]", code="invalid", expression="resourceType")
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise FhirError(400, f"Bundle.type must be batch or transaction to be processed; got "
                             f"{kind!r} (to store a Bundle as a document, POST it to "
                             "[base]/Bundle)", code="invalid", expression="Bundle.type")
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise FhirError(400, "Bundle.entry must be an array", code="structure",
                        expression="Bundle.entry")
    issues: list[Issue] = []
    entries: list[Entry] = []
    seen_full_urls: dict[str, int] = {}
    for i, raw in enumerate(raw_entries):
        where = f"Bundle.entry[{i}]"
        if not isinstance(raw, dict):
            issues.append(Issue("structure", "Each entry must be an object", where))
            continue
        request = raw.get("request")
        if not isinstance(request, dict):
            issues.append(Issue("required", "The entry has no request (method and url)",
                                f"{where}.request"))
            continue
        method = request.get("method")
        url = request.get("url")
        bad = len(issues)
        if method not in METHODS:
            issues.append(Issue("required" if method is None else "value",
                                f"request.method must be one of {', '.join(METHODS)}; got "
                                f"{method!r}", f"{where}.request.method"))
        if not isinstance(url, str) or not url.strip():
            issues.append(Issue("required", "request.url must be a non-empty string such as "
                                            "'Patient' or 'Patient/123'", f"{where}.request.url"))
        full_url = raw.get("fullUrl")
        if full_url is not None and not isinstance(full_url, str):
            issues.append(Issue("value", "fullUrl must be a string", f"{where}.fullUrl"))
            full_url = None
        for name in ("ifMatch", "ifNoneExist", "ifNoneMatch", "ifModifiedSince"):
            if name in request and not isinstance(request[name], str):
                issues.append(Issue("value", f"request.{name} must be a string",
                                    f"{where}.request.{name}"))
        resource = raw.get("resource")
        body: Any = None
        if method in ("POST", "PUT"):
            if not isinstance(resource, dict):
                issues.append(Issue("required", f"A {method} entry needs a resource",
                                    f"{where}.resource"))
            elif not isinstance(resource.get("resourceType"), str):
                issues.append(Issue("required", "The entry's resource has no resourceType",
                                    f"{where}.resource.resourceType"))
            else:
                body = resource
        elif method == "PATCH":
            body = _patch_body(resource, where, issues)
        if full_url is not None and method != "GET" and kind == "transaction":
            if full_url in seen_full_urls:
                issues.append(Issue("invalid", f"fullUrl {full_url} is also used by "
                                               f"Bundle.entry[{seen_full_urls[full_url]}]",
                                    f"{where}.fullUrl"))
            seen_full_urls[full_url] = i
        if len(issues) > bad or not isinstance(method, str) or not isinstance(url, str):
            continue
        entry = Entry(i, method, url.strip(), full_url)
        try:
            entry.call = _entry_call(api, call, entry, request, body)
        except FhirError as err:
            entry.error = FhirError(err.status, [replace(x, expression=f"{where}.request.url")
                                                 for x in err.issues])
        entries.append(entry)
    if issues:
        raise FhirError(400, issues)
    return kind, entries


def _patch_body(resource: Any, where: str, issues: list[Issue]) -> Any:
    """The JSON Patch of a PATCH entry: a Binary holding it (R4 §3.1.0.11.2)."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Binary":
        issues.append(Issue("required", "A PATCH entry needs a Binary resource holding a JSON "
                                        "Patch (contentType application/json-patch+json)",
                            f"{where}.resource"))
        return None
    if resource.get("contentType") != JSON_PATCH:
        issues.append(Issue("not-supported", f"Only JSON Patch ({JSON_PATCH}) is supported; "
                                             f"got contentType {resource.get('contentType')!r}",
                            f"{where}.resource.contentType"))
        return None
    try:
        ops = orjson.loads(base64.b64decode(resource.get("data") or "", validate=True))
    except (binascii.Error, ValueError, TypeError):
        issues.append(Issue("structure", "Binary.data must be base64 of a JSON Patch array",
                            f"{where}.resource.data"))
        return None
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        issues.append(Issue("structure", "The JSON Patch must be an array of operation objects",
                            f"{where}.resource.data"))
        return None
    return ops


def _entry_call(api: FhirApi, outer: Call, entry: Entry, request: dict[str, Any],
                body: Any) -> Call:
    url = entry.url
    if url.startswith(("http://", "https://")):
        if url == outer.base or url.startswith((outer.base + "/", outer.base + "?")):
            url = url[len(outer.base):]
        else:
            raise FhirError(400, f"request.url {entry.url!r} is not on this server ({outer.base}); "
                                 "use a URL relative to the service base", code="invalid")
    path, _, query = url.partition("?")
    segments = [s for s in path.strip("/").split("/")] if path.strip("/") else []
    target: Target = resolve(entry.method, segments, api.types)
    if target.interaction == "batch-transaction":
        raise FhirError(400, "A Bundle entry cannot itself be a batch or transaction",
                        code="not-supported")
    params = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True)
              if k not in FORMAT_PARAMS]
    return Call(entry.method, target, params, body, outer.base,
                if_match=request.get("ifMatch"), if_none_exist=request.get("ifNoneExist"),
                if_none_match=request.get("ifNoneMatch"),
                if_modified_since=request.get("ifModifiedSince"),
                prefer_return=outer.prefer_return, pretty=outer.pretty, in_bundle=True,
                strict=outer.strict)


# --- batch ----------------------------------------------------------------------------------


def _batch(api: FhirApi, outer: Call, entries: list[Entry]) -> Answer:
    out = []
    for entry in entries:
        if entry.error is None:
            assert entry.call is not None
            try:
                rewrite_call(entry, {}, api.store)
                entry.answer = api.dispatch(api.store, entry.call, in_transaction=False)
            except FhirError as err:
                entry.error = err
            except Exception as exc:  # noqa: BLE001 - one broken entry must not lose the rest
                entry.error = internal_error(exc, f"{entry.where} ({entry.method} {entry.url})")
        out.append(_response_entry(entry, outer))
    return Answer(200, body={"resourceType": "Bundle", "type": "batch-response", "entry": out})


# --- transaction ----------------------------------------------------------------------------


class _EntryFailed(Exception):
    def __init__(self, entry: Entry, error: FhirError) -> None:
        super().__init__(error.message)
        self.entry = entry
        self.error = error


def _transaction(api: FhirApi, outer: Call, entries: list[Entry]) -> Answer:
    for entry in entries:
        if entry.error is not None:
            raise _failure(entry, entry.error)
        assert entry.call is not None
        if entry.call.target.interaction == "operation":
            raise _failure(entry, FhirError(400, "Operations cannot run inside a transaction; "
                                                 "use a batch", code="not-supported"))
    _prepare_plain_creates(api, entries)
    try:
        with api.store.transaction() as tx:
            _run_transaction(api, tx, entries)
    except _EntryFailed as failed:
        raise _failure(failed.entry, failed.error) from None
    for e in entries:  # what the derivations completed before the commit (interpretations)
        if e.answer is not None and e.answer.stored is not None:
            e.answer = replace(e.answer, stored=tx.current(
                WriteResult("updated", e.answer.stored)).stored)
    out = [_response_entry(e, outer) for e in entries]
    return Answer(200, body={"resourceType": "Bundle", "type": "transaction-response",
                             "entry": out})


def _prepare_plain_creates(api: FhirApi, entries: list[Entry]) -> None:
    """Give the plain creates (POST without ifNoneExist) their ids, rewrite their references and
    validate and index them before the transaction begins, so that it holds the database's
    write lock only for its SQL. An entry whose references need the database (a conditional
    reference, a fullUrl of a conditional write) or that is invalid is left to the transaction,
    which reports its faults in the spec's order."""
    plain = [e for e in entries if e.method == "POST" and e.call is not None
             and e.call.target.interaction == "create" and not e.call.if_none_exist
             and isinstance(e.call.body, dict)
             and e.call.body.get("resourceType") == e.call.target.type]
    urns: dict[str, str] = {}
    for e in plain:
        e.assigned = new_id()
        if e.full_url and e.full_url.startswith(_LOCAL_URN):
            urns[e.full_url] = f"{e.call.target.type}/{e.assigned}"  # type: ignore[union-attr]
    resolver = _Resolver(urns, None)
    for e in plain:
        assert e.call is not None and e.call.target.type
        try:
            body = resolver.walk(e.call.body, e.call.target.type)
            e.prepared = api.store.prepare(body)
        except FhirError:
            continue
        e.call.body = body


def _failure(entry: Entry, err: FhirError) -> FhirError:
    call = entry.call
    rtype = call.target.type if call is not None and isinstance(call.body, dict) else None
    issues = rebase_issues(err.issues, entry.where, rtype)
    issues = [replace(i, diagnostics=f"{entry.where} ({entry.method} {entry.url}): "
                                     f"{i.diagnostics}") for i in issues]
    return FhirError(err.status, issues)


def _step(entry: Entry, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except FhirError as err:
        raise _EntryFailed(entry, err) from None


def _run_transaction(api: FhirApi, tx: Operations, entries: list[Entry]) -> None:
    """Run the entries in the order of §3.1.0.11.2 (phases; Bundle order within a phase)."""
    by_phase: dict[int, list[Entry]] = {0: [], 1: [], 2: [], 3: []}
    for e in entries:
        by_phase[_PHASE[e.method]].append(e)
    touched: dict[tuple[str, str], Entry] = {}

    def touch(entry: Entry, rtype: str, id: str) -> None:
        other = touched.get((rtype, id))
        if other is not None and other is not entry:
            raise _EntryFailed(entry, FhirError(
                400, f"{rtype}/{id} is also written by {other.where}: a transaction may touch "
                     "each resource once", code="invalid"))
        touched[(rtype, id)] = entry

    # 1. DELETE
    for e in by_phase[0]:
        assert e.call is not None
        e.answer = _step(e, api.dispatch, tx, e.call, True)
        for r in _step(e, _deleted_ids, e.answer):
            touch(e, *r)
    # 2. identities of POST, PUT and PATCH entries, and the fullUrls they stand for
    urns: dict[str, str] = {}
    for e in by_phase[1] + by_phase[2]:
        _step(e, _assign_identity, e, tx)
        t = e.call.target  # type: ignore[union-attr]
        assert t.type is not None and e.assigned is not None
        if e.existing is None:
            touch(e, t.type, e.assigned)
        if e.full_url and e.full_url.startswith(_LOCAL_URN):
            urns[e.full_url] = f"{t.type}/{e.assigned}"
    # 3. references
    for e in by_phase[1] + by_phase[2]:
        if e.prepared is None:
            _step(e, rewrite_call, e, urns, tx)
    # 4. POST
    for e in by_phase[1]:
        call = e.call
        assert call is not None and e.assigned
        if e.existing is not None:
            e.answer = write_answer(WriteResult("unchanged", e.existing))
        else:
            e.answer = write_answer(_step(e, partial(tx.create, e.prepared or call.body,
                                                     id=e.assigned)))
    # 5. PUT and PATCH, in Bundle order
    for e in by_phase[2]:
        call = e.call
        assert call is not None and call.target.type and e.assigned
        target = replace(call.target, interaction="update" if e.method == "PUT" else "patch",
                         id=e.assigned)
        e.answer = _step(e, api.dispatch, tx, replace(call, target=target, params=[]), True)
    # 6. GET and HEAD
    for e in by_phase[3]:
        assert e.call is not None
        e.answer = _step(e, api.dispatch, tx, e.call, True)


def _deleted_ids(answer: Answer) -> list[tuple[str, str]]:
    s = answer.stored
    return [(s.type, s.id)] if s is not None else []


def _one_match(tx: Operations, rtype: str, params: list[tuple[str, str]], what: str,
               *, required: bool) -> Any:
    found = tx.match(rtype, params, what)
    if len(found) > 1:
        raise FhirError(412, f"{what} matches more than one {rtype}", code="multiple-matches")
    if not found and required:
        raise FhirError(404 if what.startswith("conditional patch") else 412,
                        f"{what} matches no {rtype}", code="not-found")
    return found[0] if found else None


def _assign_identity(e: Entry, tx: Operations) -> None:
    call = e.call
    assert call is not None
    t = call.target
    assert t.type is not None
    if e.method == "POST":
        if t.interaction != "create":
            raise FhirError(400, f"POST {e.url} is not a create", code="not-supported")
        if call.body.get("resourceType") != t.type:
            raise FhirError(400, f"The resource is a {call.body.get('resourceType')} but the URL "
                                 f"is for {t.type}", code="invalid", expression="resourceType")
        if call.if_none_exist:
            query = if_none_exist_query(call.if_none_exist)
            e.existing = _one_match(tx, t.type, parse_qsl(query, keep_blank_values=True),
                                    f"ifNoneExist {query!r}", required=False)
        e.assigned = e.existing.id if e.existing is not None else (e.assigned or new_id())
    elif t.interaction in ("update", "patch"):
        e.assigned = t.id
    elif t.interaction == "conditional-update":
        found = _one_match(tx, t.type, call.params, f"conditional update {call.query()!r}",
                           required=False)
        body_id = call.body.get("id")
        if found is not None and body_id not in (None, found.id):
            raise FhirError(400, f"The resource's id {body_id!r} differs from the matching "
                                 f"resource {found.reference}", code="invalid",
                            expression=f"{t.type}.id")
        e.assigned = found.id if found is not None else (body_id or new_id())
        call.body = {**call.body, "id": e.assigned}
    elif t.interaction == "conditional-patch":
        found = _one_match(tx, t.type, call.params, f"conditional patch {call.query()!r}",
                           required=True)
        e.assigned = found.id
    else:
        raise FhirError(405, f"{e.method} {e.url} is not a write", code="not-supported")


# --- references -----------------------------------------------------------------------------


def rewrite_call(entry: Entry, urns: dict[str, str], ops: Operations) -> None:
    """Rewrite ``urn:uuid:`` and conditional references in the entry's resource or patch."""
    call = entry.call
    assert call is not None
    if call.body is None or entry.method not in ("POST", "PUT", "PATCH"):
        return
    rtype = call.target.type or "Resource"
    resolver = _Resolver(urns, ops)
    if entry.method == "PATCH":
        call.body = [{**op, "value": resolver.walk(op["value"], f"{rtype}")}
                     if "value" in op else op for op in call.body]
    else:
        call.body = resolver.walk(call.body, rtype)


class _Resolver:
    """Rewrites references; without ``ops`` (before a transaction) a conditional reference or an
    unknown ``urn:`` raises, as it needs the database or the transaction's identities."""

    def __init__(self, urns: dict[str, str], ops: Operations | None) -> None:
        self.urns = urns
        self.ops = ops
        self.cache: dict[str, str] = {}

    def walk(self, value: Any, path: str) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                here = f"{path}.{key}"
                if key == "reference" and isinstance(item, str):
                    out[key] = self.reference(item, here)
                elif key == "div" and isinstance(item, str) and "urn:" in item:
                    out[key] = self.narrative(item)
                else:
                    out[key] = self.walk(item, here)
            return out
        if isinstance(value, list):
            return [self.walk(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return value

    def reference(self, ref: str, path: str) -> str:
        if ref in self.urns:
            return self.urns[ref]
        if ref.startswith(_LOCAL_URN):
            raise FhirError(400, f"Reference {ref} matches no fullUrl of this Bundle",
                            code="not-found", expression=path)
        m = _CONDITIONAL_REF.match(ref)
        if m is None:
            return ref
        if self.ops is None:
            raise FhirError(412, f"Conditional reference {ref!r} needs the transaction",
                            expression=path)
        if ref not in self.cache:
            rtype, query = m.group(1), m.group(2)
            params = parse_qsl(query, keep_blank_values=True)
            try:
                found = self.ops.match(rtype, params, f"Conditional reference {ref!r}")
            except FhirError as err:
                raise FhirError(err.status, [replace(i, expression=path) for i in err.issues])
            if len(found) != 1:
                how = "no" if not found else "more than one"
                raise FhirError(412, f"Conditional reference {ref!r} matches {how} {rtype}: it "
                                     "must match exactly one", code="not-found" if not found
                                else "multiple-matches", expression=path)
            self.cache[ref] = found[0].reference
        return self.cache[ref]

    def narrative(self, div: str) -> str:
        for urn, ref in self.urns.items():
            if urn in div:
                div = div.replace(f'href="{urn}"', f'href="{ref}"').replace(
                    f'src="{urn}"', f'src="{ref}"')
        return div


# --- response entries -----------------------------------------------------------------------


def _status(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _response_entry(entry: Entry, outer: Call) -> dict[str, Any]:
    if entry.error is not None or entry.answer is None:
        err = entry.error or FhirError(500, "The entry was not processed", code="exception")
        return {"response": {"status": _status(err.status), "outcome": err.outcome()}}
    answer = entry.answer
    out: dict[str, Any] = {}
    response: dict[str, Any] = {"status": _status(answer.status)}
    s = answer.stored
    if s is not None:
        if answer.location:
            response["location"] = f"{s.type}/{s.id}/_history/{s.version}"
        response["etag"] = s.etag
        response["lastModified"] = instant(s.last_updated)
    resource: Any = None
    if answer.write:
        if outer.prefer_return == RETURN_REPRESENTATION and s is not None and not s.deleted:
            resource = embed(s, outer.pretty)
        elif outer.prefer_return == RETURN_OUTCOME:
            response["outcome"] = operation_outcome(answer.issues)
    elif entry.method != "HEAD" and answer.status != 304:
        if answer.body is not None:
            resource = answer.body
        elif answer.raw is not None:
            resource = orjson.Fragment(answer.raw)
        elif s is not None and not s.deleted:
            resource = embed(s, outer.pretty)
    if s is not None and resource is not None:
        out["fullUrl"] = f"{outer.base}/{s.type}/{s.id}"
    if resource is not None:
        out["resource"] = resource
    out["response"] = response
    return out


