"""The FHIR R4 REST API as a Starlette (ASGI) app, served under ``/fhir``.

FHIR R4 §3.1.0 RESTful API (http://hl7.org/fhir/R4/http.html). ``create_app(store)`` answers
every interaction of that page that songkhoe supports (see ``GET /fhir/metadata``): one module
per interaction (``read``, ``create``, ``update``, ``patch``, ``delete``, ``history``,
``search``, ``bundle``, ``capabilities``) and per operation (``validate_op``, ``everything``).

The HTTP layer here does only what is common to all of them: it routes (``routing``),
negotiates formats and decodes the body (``negotiation``), turns the request into a ``Call``,
runs the interaction against the store, and writes the ``Answer`` with its ``ETag``,
``Last-Modified`` and ``Location`` headers (§3.1.0.1.6 HTTP Headers, #headers) and the
``Prefer: return`` choice (§3.1.0.1.7, #ins). Every error is an OperationOutcome (``errors``).

Store calls are blocking; they run in Starlette's thread pool, except reads by id, which are
single index lookups: a thread hop costs more than it saves (plain reads by id are answered
at the front of the app, ``read.PlainReads``). Measured on the 2-core machine
(2 uvicorn workers, wrk on the same machine, 16 connections): on SQLite 48 us per request
in-process direct vs 180 us through the pool; on PostgreSQL 3,800 vs 2,100 requests/s. With
the database across a network, pass ``direct_reads=False``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Self
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from songkhoe.fhir import definitions
from songkhoe.fhir.outcome import FhirError, operation_outcome
from songkhoe.rest import (
    audit_events,
    bundle,
    capabilities,
    create,
    delete,
    everything,
    history,
    patch,
    read,
    search,
    update,
    validate_op,
)
from songkhoe.rest.audit_batch import AuditBatcher
from songkhoe.rest.auth_routes import AuthEndpoints
from songkhoe.rest.bulk_export import BulkExport
from songkhoe.rest.errors import error_response, internal_error_response
from songkhoe.rest.exchange import (
    FORMAT_PARAMS,
    RETURN_MINIMAL,
    RETURN_OUTCOME,
    Answer,
    Call,
    dumps,
    http_date,
)
from songkhoe.rest.negotiation import (
    DEFAULT,
    FORM,
    JSON_PATCH,
    RESOURCE_TYPES,
    Format,
    check_content_type,
    parse_patch,
    parse_prefer,
    parse_resource,
    response_format,
)
from songkhoe.rest.guard import AuthGuard, ReadGate, check_entry
from songkhoe.rest.routing import resolve
from songkhoe.rest.viewdefinition_run import ViewRun, ViewRunConfig

DEFAULT_MAX_BODY = 16 * 1024 * 1024
_log = logging.getLogger("songkhoe.audit")

#: How each interaction's request body is decoded (None: the body is ignored).
_RESOURCE_BODY = frozenset({"create", "update", "conditional-update", "batch-transaction",
                            "operation"})
_PATCH_BODY = frozenset({"patch", "conditional-patch"})
_READS = frozenset({"read", "vread"})


class FhirApi:
    """The FHIR endpoint: configuration plus the dispatcher shared by HTTP and Bundle entries."""

    def __init__(self, store: Any, *, base_url: str | None, max_body_bytes: int,
                 prefix: str, direct_reads: bool) -> None:
        self.store = store
        self.base_url = base_url.rstrip("/") if base_url else None
        self.max_body_bytes = max_body_bytes
        self.prefix = prefix.rstrip("/")
        self.types = definitions.resource_types()
        self.direct_reads = direct_reads
        self.bulk_export = False  # $export served (``bulk_export``): advertised in metadata
        self._capabilities: dict[str | None, bytes] = {}

    # --- dispatch (HTTP and Bundle entries) ---------------------------------------------------

    def dispatch(self, ops: Any, call: Call, in_transaction: bool = False) -> Answer:
        """Run one interaction with ``ops`` (the store, or a transaction)."""
        interaction = call.target.interaction
        if call.in_bundle:
            check_entry(call.target)  # each entry against the request's scopes (auth on)
        if audit_events.handles(call):  # the audit log, not the store: read and search only
            return audit_events.dispatch(self.store, call)
        txf = None if in_transaction else self.store.transaction
        if interaction == "read":
            return read.read(ops, call)
        if interaction == "vread":
            return read.vread(ops, call)
        if interaction in ("search-type", "search-system", "search-compartment"):
            return search.search(ops, call, strict=call.strict)
        if interaction == "create":
            return create.create(ops, call)
        if interaction == "update":
            return update.update(ops, call)
        if interaction == "conditional-update":
            return update.conditional_update(ops, call)
        if interaction == "patch":
            return patch.patch(ops, call)
        if interaction == "conditional-patch":
            return patch.conditional_patch(ops, call, transaction=txf)
        if interaction == "delete":
            return delete.delete(ops, call)
        if interaction == "conditional-delete":
            return delete.conditional_delete(ops, call)
        if interaction in ("history-instance", "history-type", "history-system"):
            return history.history(ops, call)
        if interaction == "capabilities":
            return Answer(200, raw=self.capability_statement(call.base))
        if interaction == "operation":
            if call.target.operation == "validate":
                return validate_op.validate(self.store, call)
            return everything.everything(ops, call, self.types)
        if interaction == "batch-transaction":
            return bundle.process(self, call)
        raise FhirError(404, f"No handler for {interaction}", code="not-supported")

    def capability_statement(self, base: str) -> bytes:
        key = self.base_url or base
        cached = self._capabilities.get(key)
        if cached is None:
            cached = self._capabilities[key] = capabilities.capability_bytes(
                key, bulk=self.bulk_export)
        return cached

    # --- HTTP ---------------------------------------------------------------------------------

    def base_for(self, request: Request) -> str:
        if self.base_url:
            return self.base_url
        scope = request.scope
        host = request.headers.get("host")
        if not host:
            server = scope.get("server")
            host = f"{server[0]}:{server[1]}" if server else "localhost"
        return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{self.prefix}"

    async def endpoint(self, request: Request) -> Response:
        fmt = DEFAULT
        try:
            query = request.query_params.multi_items() if request.scope["query_string"] else []
            fmt_param = pretty_param = None
            params = []
            for key, value in query:
                if key == "_format":
                    fmt_param = value
                elif key == "_pretty":
                    pretty_param = value
                else:
                    params.append((key, value))
            headers = request.headers
            fmt = response_format(fmt_param, pretty_param, headers.get("accept"))
            method = request.method
            path = request.path_params.get("path", "")
            segments = path.strip("/").split("/") if path.strip("/") else []
            target = resolve(method, segments, self.types)
            call = Call(method, target, params, base=self.base_for(request), pretty=fmt.pretty)
            interaction = target.interaction
            if interaction in _READS:
                call.if_none_match = headers.get("if-none-match")
                call.if_modified_since = headers.get("if-modified-since")
                if self.direct_reads:
                    answer = self.dispatch(self.store, call)
                else:
                    answer = await run_in_threadpool(self.dispatch, self.store, call)
                return self.render(answer, call, fmt)
            prefer = headers.get("prefer")
            if prefer:
                call.prefer_return = parse_prefer(prefer)
                call.strict = "handling=strict" in prefer.replace(" ", "").lower()
            call.if_match = headers.get("if-match")
            call.if_none_exist = headers.get("if-none-exist")
            if method in ("POST", "PUT", "PATCH"):
                await self._read_body(request, call)
            answer = await run_in_threadpool(self.dispatch, self.store, call)
            return self.render(answer, call, fmt)
        except FhirError as err:
            return error_response(err, fmt)
        except Exception as exc:  # noqa: BLE001 - anything else is a bug: log it, answer 500
            return internal_error_response(exc, f"{request.method} {request.url.path}", fmt)

    async def _read_body(self, request: Request, call: Call) -> None:
        interaction = call.target.interaction
        content_type = request.headers.get("content-type")
        if interaction in _RESOURCE_BODY:
            check_content_type(content_type, RESOURCE_TYPES, "A resource")
            call.body = parse_resource(await self._body(request))
        elif interaction in _PATCH_BODY:
            media = check_content_type(content_type, frozenset({JSON_PATCH, *RESOURCE_TYPES}),
                                       "A patch")
            if media != JSON_PATCH:
                raise FhirError(415, "Only JSON Patch is supported: send the patch as "
                                     f"{JSON_PATCH} (FHIRPath Patch is not supported)",
                                code="not-supported")
            call.body = parse_patch(await self._body(request))
        elif call.method == "POST" and interaction.startswith("search"):
            check_content_type(content_type, frozenset({FORM}), "A search")
            try:
                form = (await self._body(request)).decode("utf-8")
            except UnicodeDecodeError:
                raise FhirError(400, "The search form is not UTF-8", code="structure") from None
            call.params += [(k, v) for k, v in parse_qsl(form, keep_blank_values=True)
                            if k not in FORMAT_PARAMS]

    async def _body(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def render(self, answer: Answer, call: Call, fmt: Format) -> Response:
        headers: dict[str, str] = {}
        status = answer.status
        s = answer.stored
        if s is not None:
            headers["ETag"] = s.etag
            headers["Last-Modified"] = http_date(s.last_updated)
            if answer.location:
                headers["Location"] = f"{call.base}/{s.type}/{s.id}/_history/{s.version}"
        if status == 304:
            return Response(status_code=304, headers=headers)
        content: bytes | None
        if answer.write and call.prefer_return == RETURN_MINIMAL:
            return Response(status_code=204 if status == 200 and s is not None and s.deleted
                            else status, headers=headers)
        if answer.write and call.prefer_return == RETURN_OUTCOME:
            content = dumps(operation_outcome(answer.issues), fmt.pretty)
        elif answer.body is not None:
            content = dumps(answer.body, fmt.pretty)
        elif answer.raw is not None:
            content = dumps(orjson.loads(answer.raw), True) if fmt.pretty else answer.raw
        elif s is not None and s.content is not None:
            content = dumps(s.resource, True) if fmt.pretty else s.content
        else:
            content = dumps(operation_outcome(answer.issues), fmt.pretty)
        response = Response(content, status_code=status, headers=headers,
                            media_type=fmt.content_type)
        if call.method == "HEAD":  # the GET's headers (Content-Length too), no body
            response.body = b""
        return response


class _Endpoint:
    """The FHIR endpoint as a plain ASGI app behind Starlette's router (and any middleware):
    every interaction the general way through ``FhirApi.endpoint``. Plain reads by id are
    answered ahead of the router (``read.PlainReads``)."""

    def __init__(self, api: FhirApi) -> None:
        self.api = api

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        response = await self.api.endpoint(Request(scope, receive))
        await response(scope, receive, send)


def _too_large(size: int, limit: int) -> FhirError:
    return FhirError(413, f"The request body ({size} bytes or more) exceeds this server's "
                          f"limit of {limit} bytes", code="too-costly")


class PublicPaths(frozenset[str]):
    """The guard's public paths: exact paths, and prefixes — entries ending in ``/`` (other
    than ``/`` itself) — that make every path below them public."""

    prefixes: tuple[str, ...]

    def __new__(cls, paths: Any) -> Self:
        self = super().__new__(cls, paths)
        self.prefixes = tuple(p for p in self if p.endswith("/") and p != "/")
        return self

    def __contains__(self, path: object) -> bool:
        return frozenset.__contains__(self, path) or (
            isinstance(path, str) and path.startswith(self.prefixes))


def create_app(store: Any, *, base_url: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY, prefix: str = "/fhir",
               direct_reads: bool = True, auth: Any = None,
               extra_routes: list[Route] | None = None, export: Any = None,
               view_run: ViewRunConfig | None = None) -> Starlette:
    """A Starlette app serving the FHIR REST API for ``store`` under ``prefix``.

    ``base_url`` fixes the service base used in ``Location``, ``fullUrl`` and links (default:
    from the request's scheme and ``Host``); ``max_body_bytes`` limits request bodies (413);
    ``direct_reads`` runs reads by id on the event loop instead of the thread pool (faster for a
    local database; turn it off when the database is across a network).

    ``auth`` (a ``songkhoe.auth.Auth``) turns security on: the ``/auth`` endpoints and SMART
    discovery are served, every other route needs a bearer token whose scopes cover the
    interaction, and every request is audited (``guard``). ``songkhoe serve`` always passes
    one; without it the API is open — for embedding in tests and tools only.
    ``extra_routes`` (the app API) are served beside the FHIR API, behind the same guard;
    their ``public`` paths (a trailing ``/``: every path below) answer without a token and their
    ``middleware`` runs before the guard (``songkhoe.web.app.WebRoutes``).
    ``export`` (an ``export_worker.ExportConfig``, or the directory for the files) serves
    Bulk Data ``$export`` (``bulk_export``); its worker runs during the app's lifespan.
    ``$viewdefinition-run`` is always served (``viewdefinition_run``); ``view_run`` sets where
    its temporary files go and its chunk size.
    """
    api = FhirApi(store, base_url=base_url, max_body_bytes=max_body_bytes, prefix=prefix,
                  direct_reads=direct_reads)
    endpoint = _Endpoint(api)  # an ASGI app, so every method reaches it (405s are FHIR's)
    routes: list[Route] = [Route("/health", _health, methods=["GET"])]
    middleware: list[Middleware] = []
    audit_writer = None
    gate = None  # the guard's part of a plain read (``read.PlainReads``)
    after_fhir: list[Route] = []
    if auth is not None:
        auth_routes = AuthEndpoints(auth, api.prefix).routes()
        public = PublicPaths({"/health", f"{api.prefix}/metadata", *(r.path for r in auth_routes),
                              *getattr(extra_routes, "public", ())})
        # /auth/* after the FHIR routes, so that a FHIR request tries four routes fewer (a
        # regular expression each); SMART discovery, under the FHIR base, before its catch-all
        after_fhir = [r for r in auth_routes if api.prefix and
                      not r.path.startswith(f"{api.prefix}/")]
        routes += [r for r in auth_routes if r not in after_fhir]
        audit_writer = AuditBatcher(auth.audit)
        gate = ReadGate(auth, audit_writer)
        middleware.append(Middleware(AuthGuard, auth=auth, fhir_prefix=api.prefix,
                                     types=api.types, public=public, audit_writer=audit_writer))
    routes += list(extra_routes or [])
    # what the extra routes need before the guard (the web app: session cookie → bearer token)
    middleware[:0] = getattr(extra_routes, "middleware", [])
    # plain reads by id first: no router, no other middleware (the guard's checks included)
    middleware.insert(0, Middleware(read.PlainReads, api=api, gate=gate))
    exporter = None
    if export is not None:
        exporter = BulkExport(store, export, audit=auth.audit if auth is not None else None,
                              prefix=api.prefix)
        routes += exporter.routes()  # before the FHIR endpoint's catch-all
        api.bulk_export = True
    routes += ViewRun(store, view_run, prefix=api.prefix).routes()  # before the catch-all
    routes += [Route(api.prefix or "/", endpoint), Route(f"{api.prefix}/{{path:path}}", endpoint)]
    routes += after_fhir
    app = Starlette(routes=routes, middleware=middleware, lifespan=_lifespan)
    app.state.fhir = api
    app.state.auth = auth
    app.state.audit_writer = audit_writer
    app.state.exporter = exporter
    return app


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    """At start, the Bulk Data export worker (if any); at shutdown, after the last request:
    stop it, then commit the AuditEvents still queued. If that fails, each one goes to the
    error log rather than nowhere."""
    exporter = app.state.exporter
    if exporter is not None:
        exporter.start()
    yield
    if exporter is not None:
        await run_in_threadpool(exporter.stop)
    writer = app.state.audit_writer
    if writer is None:
        return
    try:
        await writer.drain()
    except Exception:  # noqa: BLE001 - logged with every entry that could not be written
        unwritten = writer.log.unwritten()
        _log.exception("audit log: %d entries could not be written at shutdown; they follow",
                       len(unwritten))
        for content in unwritten:
            _log.error("unwritten AuditEvent: %s", content.decode())


async def _health(request: Request) -> Response:
    """503 while the audit log cannot be written (answered requests' entries are waiting)."""
    auth = request.app.state.auth
    if auth is not None and auth.audit.failing is not None:
        return JSONResponse({"status": "failing", "reason": "the audit log cannot be written",
                             "queued": auth.audit.pending()}, status_code=503)
    return JSONResponse({"status": "ok"})
