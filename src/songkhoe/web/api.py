"""The app API (``/api``): what the web app needs in one round trip each, as plain JSON.

- ``GET /api/programmes`` — the programmes and the check-up form's items (labels in
  Vietnamese and English, units, plausible ranges, coded answers);
- ``POST /api/checkups`` — ``{"patient", "date"?, "values": {item: value}}``: saves the
  check-up and answers its Observations with their classifications, the outputs the
  programmes derived (risk assessments, referrals, flags, enrolment, next visit) and the
  person's programme status;
- ``GET /api/people/{id}/programmes?date=`` — the person's status in each programme and
  the items to measure at a check-up on that day;
- ``GET /api/worklists/{due|overdue|referral|lost}?programme=&org=&today=&count=&cursor=``;
- ``POST /api/calls`` — ``{"patient", "programme", "outcome", "call_again"?, "note"?}``:
  records a call about a missed visit (a ``Task``) and answers the new status.

Authentication, access control and audit are the FHIR API's (``rest.guard`` covers every
route but the public ones); errors are OperationOutcomes with the path of the field at fault.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from songkhoe.fhir.outcome import FhirError, Issue
from songkhoe.programs.apply import status_of
from songkhoe.programs.checkup import form_items, record
from songkhoe.programs.definition import Programme
from songkhoe.programs.engine import CALL, CALL_OUTCOMES, ProgrammeStatus
from songkhoe.programs.worklist import worklist
from songkhoe.store.ids import new_id

MAX_BODY = 1_000_000


def routes(store: Any, programmes: dict[str, Programme]) -> list[Route]:
    api = _AppApi(store, programmes)
    return [
        Route("/api/programmes", api.definitions, methods=["GET"]),
        Route("/api/checkups", api.checkup, methods=["POST"]),
        Route("/api/people/{patient}/programmes", api.person, methods=["GET"]),
        Route("/api/worklists/{kind}", api.worklist, methods=["GET"]),
        Route("/api/calls", api.call, methods=["POST"]),
    ]


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _error(err: FhirError) -> Response:
    return Response(orjson.dumps(err.outcome()), err.status,
                    media_type="application/fhir+json")


def _status(status: dict[str, ProgrammeStatus]) -> list[dict[str, Any]]:
    return [{k: (v.isoformat() if isinstance(v, date) else v)
             for k, v in s.__dict__.items() if v is not None} for s in status.values()]


def _day(value: Any, path: str) -> date:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise FhirError(400, Issue("value", f"expected a date YYYY-MM-DD, found {value!r}",
                                   path)) from None


class _AppApi:
    def __init__(self, store: Any, programmes: dict[str, Programme]) -> None:
        self.store = store
        self.programmes = programmes

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise FhirError(413, "the request body is too large", code="too-costly")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise FhirError(400, f"the body is not JSON: {exc}", code="structure") from None
        if not isinstance(body, dict):
            raise FhirError(400, "expected a JSON object", code="structure")
        return body

    def _programme(self, pid: Any) -> Programme:
        if pid not in self.programmes:
            raise FhirError(400, Issue("value", f"unknown programme {pid!r}; known: "
                                                f"{', '.join(self.programmes)}", "programme"))
        return self.programmes[pid]

    async def definitions(self, request: Request) -> Response:
        items = form_items(self.programmes)
        return _json({
            "programmes": [{"id": p.id, "version": p.version, "kind": p.kind,
                            "title": {"vi": p.title.vi, "en": p.title.en},
                            "items": [i.id for i in p.items],
                            "min_age": p.min_age, "max_age": p.max_age, "sex": p.sexes}
                           for p in self.programmes.values()],
            "items": [{"id": i.id, "label": {"vi": i.label.vi, "en": i.label.en},
                       "kind": i.kind, "unit": i.unit, "units": [u.code for u in i.units],
                       "range": [float(b) for b in i.range] if i.range else None,
                       "decimals": i.decimals, "values": sorted(set(i.values.values())),
                       "derived": i.derive is not None} for i in items.values()],
        })

    async def checkup(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            patient = body.get("patient")
            if not isinstance(patient, str) or not patient:
                raise FhirError(400, Issue("required", "patient: the Patient's id is required",
                                           "patient"))
            day = _day(body["date"], "date") if "date" in body else date.today()
            values = body.get("values")
            if not isinstance(values, dict) or not values:
                raise FhirError(400, Issue("required", "values: at least one item value",
                                           "values"))
            done = await run_in_threadpool(record, self.store, self.programmes, patient, day,
                                           values, performer=body.get("performer"))
        except FhirError as err:
            return _error(err)
        return _json({"observations": done.observations, "outputs": done.outputs,
                      "status": _status(done.status)}, 201)

    async def person(self, request: Request) -> Response:
        patient = request.path_params["patient"]

        def read(day: date) -> tuple[dict[str, ProgrammeStatus], dict[str, list[str]]]:
            with self.store.reading() as tx:
                tx.read("Patient", patient)
                return status_of(tx, self.programmes, patient, day)
        try:
            q = request.query_params
            day = _day(q["date"], "date") if "date" in q else date.today()
            status, items = await run_in_threadpool(read, day)
        except FhirError as err:
            return _error(err)
        return _json({"patient": patient, "status": _status(status), "items": items})

    async def worklist(self, request: Request) -> Response:
        q = request.query_params
        try:
            programme = self._programme(q.get("programme"))
            today = _day(q["today"], "today") if "today" in q else date.today()
            count = int(q.get("count", "50"))
            if not 1 <= count <= 500:
                raise FhirError(400, Issue("value", "count: expected 1 to 500", "count"))

            def read() -> Any:
                with self.store.reading() as tx:
                    return worklist(tx, programme, request.path_params["kind"], today=today,
                                    org=q.get("org"), count=count, cursor=q.get("cursor"))
            page = await run_in_threadpool(read)
        except ValueError:
            return _error(FhirError(400, Issue("value", "count: expected a number", "count")))
        except FhirError as err:
            return _error(err)
        return _json({"total": page.total, "next": page.next_cursor,
                      "entries": [e.to_json() for e in page.entries]})

    async def call(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            programme = self._programme(body.get("programme"))
            patient = body.get("patient")
            outcome = body.get("outcome")
            if not isinstance(patient, str) or not patient:
                raise FhirError(400, Issue("required", "patient: required", "patient"))
            if outcome not in CALL_OUTCOMES:
                raise FhirError(400, Issue("value", f"outcome: expected one of "
                                                    f"{', '.join(CALL_OUTCOMES)}", "outcome"))
            day = _day(body["date"], "date") if "date" in body else date.today()
            again = _day(body["call_again"], "call_again") if body.get("call_again") else None
            task: dict[str, Any] = {
                "resourceType": "Task", "id": new_id(), "status": "completed",
                "intent": "order", "instantiatesUri": f"{programme.uri}|{programme.version}",
                "code": {"coding": [{"system": CALL[0], "code": CALL[1]}],
                         "text": "Gọi điện nhắc tái khám"},
                "businessStatus": {"coding": [{"system": "urn:songkhoe:call-outcome",
                                               "code": outcome}], "text": outcome},
                "for": {"reference": f"Patient/{patient}"},
                "authoredOn": day.isoformat(),
                "executionPeriod": {"start": day.isoformat()},
            }
            if again:
                task["restriction"] = {"period": {"start": again.isoformat()}}
            if isinstance(body.get("note"), str) and body["note"].strip():
                task["note"] = [{"text": body["note"].strip()}]

            def write() -> Any:
                with self.store.transaction() as tx:
                    tx.read("Patient", patient)
                    tx.create(task, id=task["id"])
                return tx.derived
            settled = await run_in_threadpool(write)
        except FhirError as err:
            return _error(err)
        status = settled.status.get(patient, {}) if settled else {}
        return _json({"task": task["id"], "status": _status(status)}, 201)
