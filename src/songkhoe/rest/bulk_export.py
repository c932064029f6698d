"""Bulk Data export over HTTP: kick-off, status, cancellation and output files.

Bulk Data Access IG 2.0.0 (http://hl7.org/fhir/uv/bulkdata/STU2/export.html), on the FHIR
Asynchronous Request Pattern (http://hl7.org/fhir/R4/async.html):

- **Kick-off** ``GET`` or ``POST`` (a ``Parameters`` body) at ``[base]/$export`` (system),
  ``[base]/Patient/$export`` (every Patient the caller may see and their compartments) and
  ``[base]/Group/[id]/$export`` (the Group's Patient members, ``Group.member.entity``, not
  ``inactive``, and their compartments). ``Accept: application/fhir+json`` and
  ``Prefer: respond-async`` are required (400 otherwise). Parameters: ``_outputFormat``
  (``application/fhir+ndjson``, ``application/ndjson``, ``ndjson``), ``_since`` (instant),
  ``_type`` (comma-separated, repeatable), ``_typeFilter`` (``Type?query``, comma-separated,
  repeatable; queries of one type are ORed; compiled by the search engine), ``patient``
  (POST only, Patient and Group level). Not supported: ``_elements`` and
  ``includeAssociatedData`` — 400, or ignored with ``Prefer: handling=lenient`` and reported
  in the manifest's ``error`` file, as are unknown parameters. Answer: ``202 Accepted`` with
  ``Content-Location`` = the status URL.
- **Which resources.** Patient and Group level: the R4 Patient compartment's types
  (http://hl7.org/fhir/R4/compartmentdefinition-patient.html), as ``$everything``; a type
  outside it is a 400. System level: every type. Without ``_type``: every such type the
  token may read and search; with ``_type``: each named type must be allowed (403). Rows are
  those the caller's access allows (``store.export``; the job keeps the access context), so a
  commune's health worker exports their commune, and a researcher no identified record
  (403 when nothing else was asked for). AuditEvent is the audit log, not exported (400).
  A break-the-glass token may not start an export (403): emergency access is for one
  person's care.
- **Status** ``GET [base]/$export-status/[job]``: ``202`` with ``X-Progress`` and
  ``Retry-After`` while queued or running; ``200`` with the manifest (``transactionTime``,
  ``request``, ``requiresAccessToken``, ``output`` [{type, url, count}], ``error``) and
  ``Expires`` when complete; ``500`` with an OperationOutcome when the job failed; ``404``
  when unknown, cancelled, expired, or another caller's. ``DELETE`` on it cancels the job and
  removes its files (``202``).
- **Files** ``GET [base]/$export-file/[job]/[name]``: ``application/fhir+ndjson``. With
  security on (``requiresAccessToken: true``) the status and file requests need a bearer
  token of the caller who started the job (or an administrator) whose scopes cover the types
  exported; anyone else gets 404, as for a job that does not exist. The guard audits each
  request; the worker audits the job's completion or failure.
"""

from __future__ import annotations

import re
import shutil
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from songkhoe.auth import AccessContext
from songkhoe.auth.policy import ContextAccess
from songkhoe.fhir import definitions
from songkhoe.fhir.outcome import FhirError, Issue, operation_outcome
from songkhoe.fhir.primitives import check_instant
from songkhoe.rest.errors import error_response, internal_error_response
from songkhoe.rest.exchange import http_date
from songkhoe.rest.export_worker import (
    ERROR_TYPE,
    ExportConfig,
    ExportWorker,
    access_json,
    is_research,
    owner_of,
)
from songkhoe.store.export import check_filter
from songkhoe.store.jobs import COMPLETED, FAILED, QUEUED, Job, Jobs
from songkhoe.store.ranges import date_range, format_instant, from_us

FHIR_JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = frozenset({NDJSON, "application/ndjson", "ndjson"})
#: IG 2.0.0 OperationDefinitions (CapabilityStatement ``operation.definition``).
DEFINITIONS = {"system": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
               "patient": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
               "group": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}
CAPABILITY = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
NOT_EXPORTED = frozenset({"AuditEvent"})  # the audit log, searched at [base]/AuditEvent
UNSUPPORTED = ("_elements", "includeAssociatedData")
_KNOWN = frozenset({"_outputFormat", "_since", "_type", "_typeFilter", "patient"})
_FILTER_SPLIT = re.compile(r",(?=[A-Z][A-Za-z]*\?)")
_FILE_NAME = re.compile(r"[A-Za-z]+-[0-9]+\.ndjson")
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def compartment_types() -> list[str]:
    return sorted(set(definitions.patient_compartment()) - NOT_EXPORTED)


def system_types() -> list[str]:
    return sorted(definitions.resource_types() - NOT_EXPORTED)


def _bad(text: str, expression: str | None = None, code: str = "invalid") -> FhirError:
    return FhirError(400, Issue(code, text, expression))


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None,
          media: str = FHIR_JSON) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type=media)


def _tokens(header: str | None) -> set[str]:
    """The preferences of ``Prefer`` (RFC 7240), lower case, spaces removed."""
    return {t.strip().lower().replace(" ", "") for t in re.split(r"[,;]", header or "")
            if t.strip()}


class BulkExport:
    """The ``$export`` endpoints of one app and the worker of its process."""

    def __init__(self, store: Any, config: ExportConfig | str | Any, *, audit: Any = None,
                 prefix: str = "/fhir", secured: bool | None = None) -> None:
        self.store = store
        self.config = ExportConfig.of(config)
        self.prefix = prefix.rstrip("/")
        self.jobs = Jobs(store)
        self.secured = audit is not None if secured is None else secured
        self.worker = ExportWorker(store, self.config, audit)

    def routes(self) -> list[Route]:
        p, every = self.prefix, _METHODS  # every method: the handlers answer 405 themselves
        return [Route(f"{p}/$export", self.kickoff, methods=every),
                Route(f"{p}/Patient/$export", self.kickoff, methods=every),
                Route(f"{p}/Group/{{group}}/$export", self.kickoff, methods=every),
                Route(f"{p}/$export-status/{{job}}", self.status, methods=every),
                Route(f"{p}/$export-file/{{job}}/{{name}}", self.file, methods=every)]

    def start(self) -> None:
        self.config.directory.mkdir(parents=True, exist_ok=True)
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    # --- kick-off ----------------------------------------------------------------------------

    async def kickoff(self, request: Request) -> Response:
        try:
            if request.method not in ("GET", "POST"):
                raise FhirError(405, f"{request.method} is not allowed on $export; allowed: "
                                     "GET, POST", code="not-supported")
            return await self._kickoff(request)
        except FhirError as err:
            return error_response(err)
        except Exception as exc:  # noqa: BLE001 - a bug: logged, answered 500
            return internal_error_response(exc, f"{request.method} {request.url.path}")

    async def _kickoff(self, request: Request) -> Response:
        headers = request.headers
        accept = {m.split(";")[0].strip().lower() for m in headers.get("accept", "").split(",")}
        if FHIR_JSON not in accept:
            raise _bad(f"A Bulk Data kick-off request needs 'Accept: {FHIR_JSON}' (the format "
                       f"of an OperationOutcome about it); got {headers.get('accept')!r}",
                       code="not-supported")
        prefer = _tokens(", ".join(headers.getlist("prefer")))
        if "respond-async" not in prefer:
            raise _bad("A Bulk Data kick-off request needs 'Prefer: respond-async': the export "
                       "runs asynchronously", code="not-supported")
        lenient = "handling=lenient" in prefer
        group = request.path_params.get("group")
        level = "group" if group else ("patient" if "/Patient/" in request.url.path else "system")
        api = request.app.state.fhir
        base = api.base_for(request)
        where = {"system": "/$export", "patient": "/Patient/$export",
                 "group": f"/Group/{group}/$export"}[level]
        if request.method == "POST":
            params = await self._parameters(request)
            url = f"{base}{where}"  # IG: "will not include the request parameters"
        else:
            params = request.query_params.multi_items()
            query = request.scope["query_string"].decode("latin-1")
            url = f"{base}{where}" + (f"?{query}" if query else "")
        ctx: AccessContext | None = request.scope.get("songkhoe.access")
        if ctx is not None and ctx.break_glass:
            raise FhirError(403, "An emergency-access (break-the-glass) token may not start a "
                                 "Bulk Data export: it is for one person's care", code="forbidden")
        job_params, patients = self._plan(level, group, params, ctx, lenient,
                                          request.method == "POST")
        job_params.update(method=request.method, path=request.url.path,
                          query=request.scope["query_string"].decode("latin-1")
                          if request.method == "GET" else "")
        if level == "group":
            assert group is not None
            members = await run_in_threadpool(self._members, group)
            if patients:
                outside = sorted(set(patients) - set(members))
                if outside:
                    raise _bad(f"patient: Patient/{outside[0]} is not a member of Group/{group}",
                               "patient")
                members = patients
            patients = members
            job_params["listed"] = True
        elif patients:
            await run_in_threadpool(self._check_patients, patients)
            job_params["listed"] = True
        if job_params.get("listed"):
            job_params["members"] = "job"
        job = await run_in_threadpool(
            lambda: self.jobs.create(owner=owner_of(ctx), request=url, access=access_json(ctx),
                                     params=job_params, patients=patients))
        self.worker.wake()
        request.scope.setdefault("songkhoe.audit", {})["detail"] = (
            f"$export kick-off: job {job.id}, {len(job_params['types'])} types")
        status_url = f"{base}/$export-status/{job.id}"
        body = operation_outcome([Issue("informational", f"Export job {job.id} accepted; poll "
                                        f"{status_url} for its status", severity="information")])
        return _json(body, 202, {"Content-Location": status_url})

    async def _parameters(self, request: Request) -> list[tuple[str, str]]:
        """The (name, value) pairs of a ``Parameters`` kick-off body."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in (FHIR_JSON, "application/json"):
            raise FhirError(415, f"A POST kick-off carries a Parameters resource as {FHIR_JSON}",
                            code="not-supported")
        body = await request.body()
        if len(body) > 16 * 1024 * 1024:
            raise FhirError(413, "The Parameters resource is too large", code="too-costly")
        try:
            resource = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise FhirError(400, f"The body is not JSON: {exc}", code="structure") from None
        if not isinstance(resource, dict) or resource.get("resourceType") != "Parameters":
            raise _bad("The body of a POST kick-off is a Parameters resource", "Parameters")
        out: list[tuple[str, str]] = []
        for n, p in enumerate(resource.get("parameter") or []):
            path = f"Parameters.parameter[{n}]"
            name = p.get("name") if isinstance(p, dict) else None
            values = [(k, v) for k, v in (p.items() if isinstance(p, dict) else ())
                      if k.startswith("value")]
            if not isinstance(name, str) or len(values) != 1:
                raise _bad("each parameter needs a name and one value[x]", path)
            key, value = values[0]
            if key == "valueReference":
                value = value.get("reference") if isinstance(value, dict) else None
            if not isinstance(value, str):
                raise _bad(f"{name}: expected a string, code, instant or Reference value",
                           f"{path}.{key}")
            out.append((name, value))
        return out

    def _plan(self, level: str, group: str | None, params: list[tuple[str, str]],
              ctx: AccessContext | None, lenient: bool, post: bool
              ) -> tuple[dict[str, Any], list[str]]:
        """The job's parameters from the kick-off's, checked; and the ``patient=`` ids."""
        notes: list[list[Any]] = []

        def refuse(text: str, expression: str, code: str = "not-supported") -> None:
            if not lenient:
                raise _bad(text + " (send 'Prefer: handling=lenient' to have it ignored)",
                           expression, code)
            notes.append([code, f"ignored: {text}", expression])

        since: int | None = None
        named: list[str] | None = None
        filter_texts: list[str] = []
        patients: list[str] = []
        for name, value in params:
            if name == "_outputFormat":
                if value.strip().lower() not in OUTPUT_FORMATS:
                    raise _bad(f"_outputFormat {value!r} is not supported: this server writes "
                               "NDJSON (application/fhir+ndjson, application/ndjson or ndjson)",
                               "_outputFormat", "not-supported")
            elif name == "_since":
                text = value.strip().replace(" ", "+")  # an unencoded '+' arrives as a space
                problem = check_instant(text)
                if problem:
                    raise _bad(f"_since: {problem}", "_since")
                if since is not None:
                    raise _bad("_since may be given once", "_since")
                since = date_range(text)[0]
            elif name == "_type":
                named = [*(named or []), *(t.strip() for t in value.split(",") if t.strip())]
            elif name == "_typeFilter":
                filter_texts.append(value)
            elif name == "patient" and post and level != "system":
                ref = value.rsplit("/", 2)[-2:]
                if len(ref) != 2 or ref[0] != "Patient" or not ref[1]:
                    raise _bad(f"patient: expected a reference Patient/[id], got {value!r}",
                               "patient")
                patients.append(ref[1])
            elif name in UNSUPPORTED:
                refuse(f"{name} is not supported by this server", name)
            elif name == "patient":
                refuse("patient is a parameter of POST kick-offs at Patient and Group level",
                       name)
            else:
                refuse(f"{name} is not a parameter of $export", name)
        base = compartment_types() if level != "system" else system_types()
        rules = ContextAccess(ctx) if ctx is not None else None

        def allowed(rtype: str) -> bool:
            return ctx is None or rules is None or (
                ctx.scopes.permits(rtype, "r") and ctx.scopes.permits(rtype, "s")
                and rules.rule(rtype, "s").allowed and rules.rule(rtype, "r").allowed)

        if named is not None:
            types: list[str] = []
            for rtype in dict.fromkeys(named):
                if rtype in NOT_EXPORTED:
                    raise _bad(f"_type: {rtype} is the audit log, which is not exported "
                               f"(search it at [base]/{rtype})", "_type", "not-supported")
                if not definitions.is_resource_type(rtype):
                    raise _bad(f"_type: {rtype!r} is not an R4 resource type", "_type")
                if rtype not in base:
                    refuse(f"_type: {rtype} is outside the Patient compartment, which a "
                           f"{level}-level export is made of", "_type")
                    continue
                if not allowed(rtype):
                    raise FhirError(403, f"This access token may not export {rtype}: its "
                                         f"scopes ({ctx.scopes if ctx else ''}) or its role "
                                         f"({ctx.role if ctx else ''}) do not allow reading it",
                                    code="forbidden", expression="_type")
                types.append(rtype)
        else:
            types = [t for t in base if allowed(t)]
            if not types:
                raise FhirError(403, f"This access token may export no resource type "
                                     f"{'of the Patient compartment ' if level != 'system' else ''}"
                                     f"(role {ctx.role if ctx else ''}, scopes "
                                     f"{ctx.scopes if ctx else ''})", code="forbidden")
        filters: dict[str, list[list[list[str]]]] = {}
        for text in filter_texts:
            for part in (p.strip() for p in _FILTER_SPLIT.split(text)):
                if not part:
                    continue
                rtype, sep, query = part.partition("?")
                if not sep or not query:
                    raise _bad(f"_typeFilter: expected [type]?[search parameters], got "
                               f"{part!r}", "_typeFilter")
                if not definitions.is_resource_type(rtype):
                    raise _bad(f"_typeFilter: {rtype!r} is not an R4 resource type",
                               "_typeFilter")
                if rtype not in types:
                    refuse(f"_typeFilter: {rtype} is not among the types exported", "_typeFilter")
                    continue
                pairs = parse_qsl(query.replace("+", "%2B"), keep_blank_values=True)
                check_filter(rtype, pairs, "_typeFilter")
                filters.setdefault(rtype, []).append([list(p) for p in pairs])
        job: dict[str, Any] = {"level": level, "group": group, "types": types, "since": since,
                               "filters": filters, "notes": notes,
                               "members": None if level == "system" else "all"}
        if is_research(ctx):
            assert ctx is not None
            job["research"] = ctx.purpose
            job["members"] = "job"
        return job, sorted(set(patients))

    def _members(self, group: str) -> list[str]:
        """The ids of the Group's Patient members (``member.entity``, not ``inactive``), read
        under the caller's access (404/410 for a Group it may not see or that was deleted)."""
        resource = self.store.read("Group", group).resource
        out = []
        for member in resource.get("member") or []:
            if member.get("inactive") is True:
                continue
            ref = str((member.get("entity") or {}).get("reference") or "")
            parts = ref.rsplit("/", 2)[-2:]
            if len(parts) == 2 and parts[0] == "Patient":
                out.append(parts[1])
        return sorted(set(out))

    def _check_patients(self, patients: list[str]) -> None:
        """Each ``patient=`` must be a Patient the caller may see (400 naming the first)."""
        for pid in patients:
            try:
                self.store.read("Patient", pid)
            except FhirError as err:
                if err.status in (404, 410):
                    raise _bad(f"patient: Patient/{pid} is not known", "patient") from None
                raise

    # --- status and cancellation ---------------------------------------------------------------

    def _job(self, request: Request) -> tuple[Job, AccessContext | None]:
        """The job of the path, if the caller may see it (404 otherwise)."""
        job_id = request.path_params["job"]
        job = self.jobs.get(job_id)
        ctx: AccessContext | None = request.scope.get("songkhoe.access")
        if job is None or not (ctx is None or ctx.is_admin or job.owner == owner_of(ctx)):
            raise FhirError(404, f"There is no export job {job_id!r} (it may have been "
                                 "cancelled, or its files expired)", code="not-found")
        return job, ctx

    @staticmethod
    def _covers(ctx: AccessContext | None, types: list[str]) -> None:
        """IG: status and file requests need "an access token with scopes that cover all
        resources being exported"."""
        if ctx is None:
            return
        for rtype in types:
            if not ctx.scopes.permits(rtype, "r"):
                raise FhirError(403, f"This access token's scopes ({ctx.scopes}) do not cover "
                                     f"{rtype}, which this export holds", code="forbidden")

    async def status(self, request: Request) -> Response:
        try:
            if request.method == "DELETE":
                return await self._cancel(request)
            if request.method not in ("GET", "HEAD"):
                raise FhirError(405, f"{request.method} is not allowed on an export status URL; "
                                     "allowed: GET, DELETE", code="not-supported")
            job, ctx = await run_in_threadpool(self._job, request)
            self._covers(ctx, job.params["types"])
            if job.status == FAILED:
                return _json(job.error or operation_outcome([Issue("exception", "failed")]), 500)
            if job.status != COMPLETED:
                return Response(b"", 202, headers={"X-Progress": _progress(job),
                                                   "Retry-After": str(self.config.retry_after)})
            return self._manifest(request, job)
        except FhirError as err:
            return error_response(err)
        except Exception as exc:  # noqa: BLE001 - a bug: logged, answered 500
            return internal_error_response(exc, f"{request.method} {request.url.path}")

    def _manifest(self, request: Request, job: Job) -> Response:
        base = request.app.state.fhir.base_for(request)

        def item(o: dict[str, Any]) -> dict[str, Any]:
            return {"type": o["type"], "url": f"{base}/$export-file/{job.id}/{o['file']}",
                    "count": o["count"]}

        assert job.transaction_time is not None
        manifest = {"transactionTime": format_instant(job.transaction_time),
                    "request": job.request, "requiresAccessToken": self.secured,
                    "output": [item(o) for o in job.output if not o.get("error")],
                    "error": [item(o) for o in job.output if o.get("error")]}
        expires = from_us(job.updated + int(self.config.retention * 1e6))
        return _json(manifest, 200, {"Expires": http_date(expires)}, "application/json")

    async def _cancel(self, request: Request) -> Response:
        job, _ = await run_in_threadpool(self._job, request)
        await run_in_threadpool(self.jobs.delete, job.id)
        await run_in_threadpool(shutil.rmtree, self.config.directory / job.id, True)
        request.scope.setdefault("songkhoe.audit", {})["detail"] = f"$export job {job.id} cancelled"
        return _json(operation_outcome([Issue("informational", f"Export job {job.id} cancelled; "
                                              "its files are removed",
                                              severity="information")]), 202)

    # --- files -------------------------------------------------------------------------------

    async def file(self, request: Request) -> Response:
        try:
            if request.method not in ("GET", "HEAD"):
                raise FhirError(405, f"{request.method} is not allowed on an export file; "
                                     "allowed: GET", code="not-supported")
            job, ctx = await run_in_threadpool(self._job, request)
            name = request.path_params["name"]
            found = next((o for o in job.output if o["file"] == name), None)
            if job.status != COMPLETED or found is None or not _FILE_NAME.fullmatch(name):
                raise FhirError(404, f"Export job {job.id} has no file {name!r}",
                                code="not-found")
            if found["type"] != ERROR_TYPE:
                self._covers(ctx, [found["type"]])
            path = self.config.directory / job.id / name
            if not path.is_file():
                raise FhirError(404, f"The file {name!r} of export job {job.id} is gone",
                                code="not-found")
            return FileResponse(path, media_type=NDJSON)
        except FhirError as err:
            return error_response(err)
        except Exception as exc:  # noqa: BLE001 - a bug: logged, answered 500
            return internal_error_response(exc, f"{request.method} {request.url.path}")


def _progress(job: Job) -> str:
    """``X-Progress``: "less than 100 characters", at the server's discretion."""
    if job.status == QUEUED:
        return "queued"
    p = job.progress
    if not p:
        return "starting"
    types = job.params["types"]
    text = f"{p['written']:,} resources written; {p['type']} of {len(types)} types done"
    if p.get("reading"):
        text += f"; reading {p['reading']}"
    return text[:99]
