"""Who is signed in, and registering a person: ``GET /api/me``, ``POST /api/people``.

``GET /api/me`` answers the caller's identity from the verified token (user, role, the
Organization they work in with its name and level, the Patient of a citizen), which the web
app needs to choose its screens: it cannot read its own token (``session``).

``POST /api/people`` registers a person at the caller's health station, with the checks a
commune register needs before it writes:

- ``name`` (the full name as written, family name first: ``Nguyễn Văn An``), ``gender``
  (``male``/``female``/``other``), ``birthDate`` (``YYYY-MM-DD`` or ``YYYY``, not in the future,
  not before 1900) are required; ``cccd`` (citizen ID), ``phone`` and ``address`` are optional;
- the citizen ID must be consistent with the birth year and sex (``citizen_id``): 422 with
  one issue per broken rule (``expression`` ``cccd``, the rule's code in brackets at the end
  of the diagnostics, e.g. ``[birth-year]``);
- the phone number is normalised to 10 digits starting 0 (``+84``/``84`` accepted);
- duplicates, among the people the caller can see: the same citizen ID is a 409 that cannot
  be overridden (it is the same person, or a typing error); the same name (diacritics folded)
  and birth date, or the same phone and birth year, is a 409 *warning* listing the
  candidates, which ``"confirm": true`` overrides. People outside the caller's scope are not
  looked at (hidden is absent): matching a person across communes is the identity-matching
  service's work (``mpi``, later).

The Patient is written with the caller's access (``store.access.CURRENT``), so it must lie
within the caller's Organization subtree; an administrator without an Organization names one
(``org``). The programmes engine derives the person's programme status in the same
transaction.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from songkhoe.fhir.outcome import FhirError, Issue
from songkhoe.store.ids import new_id
from songkhoe.web.citizen_id import CCCD_SYSTEM, problems

MAX_BODY = 64 * 1024
GENDERS = ("male", "female", "other")
_PHONE = re.compile(r"0\d{9}")


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _error(err: FhirError) -> Response:
    return Response(orjson.dumps(err.outcome()), err.status, media_type="application/fhir+json")


def normalise_phone(raw: str) -> str | None:
    digits = re.sub(r"[\s.\-()]", "", raw)
    if digits.startswith("+84"):
        digits = "0" + digits[3:]
    elif digits.startswith("84") and len(digits) == 11:
        digits = "0" + digits[2:]
    return digits if _PHONE.fullmatch(digits) else None


def summary(resource: dict[str, Any]) -> dict[str, Any]:
    """What a list of people shows of a Patient."""
    name: dict[str, Any] = next(iter(resource.get("name") or []), {})
    text = name.get("text") or " ".join([name.get("family", ""), *name.get("given", [])]).strip()
    cccd = next((i.get("value") for i in resource.get("identifier", [])
                 if i.get("system") == CCCD_SYSTEM), None)
    phone = next((t.get("value") for t in resource.get("telecom", [])
                  if t.get("system") == "phone"), None)
    return {k: v for k, v in {"id": resource["id"], "name": text,
                              "birthDate": resource.get("birthDate"),
                              "gender": resource.get("gender"), "cccd": cccd,
                              "phone": phone}.items() if v is not None}


class People:
    def __init__(self, store: Any) -> None:
        self.store = store

    def routes(self) -> list[Route]:
        return [Route("/api/me", self.me, methods=["GET"]),
                Route("/api/people", self.register, methods=["POST"])]

    async def me(self, request: Request) -> Response:
        access = request.scope.get("songkhoe.access")
        if access is None:  # security off (``serve --insecure-no-auth``)
            return _json({"user": None, "role": "administrator", "org": None,
                          "insecure": True})

        def org_info() -> dict[str, Any]:
            if access.org is None:
                return {}
            with self.store.reading() as tx:
                depth = tx.execute("SELECT COUNT(*) FROM org_tree WHERE org = ?",
                                   [access.org]).fetchone()[0]
                found = tx.search("Organization", [("_id", access.org)]).matches
            level = ("nation", "province", "commune")[max(0, min(int(depth), 3) - 1)]
            return {"org_name": found[0].resource.get("name") if found else access.org,
                    "org_level": level}
        return _json({"user": access.subject, "role": access.role, "org": access.org,
                      "patient": access.patient, "practitioner": access.practitioner,
                      **(await run_in_threadpool(org_info))})

    async def register(self, request: Request) -> Response:
        try:
            raw = await request.body()
            if len(raw) > MAX_BODY:
                raise FhirError(413, "the request body is too large", code="too-costly")
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise FhirError(400, f"the body is not JSON: {exc}", code="structure") from None
            if not isinstance(body, dict):
                raise FhirError(400, "expected a JSON object", code="structure")
            access = request.scope.get("songkhoe.access")
            patient = self.patient(body, access)
            answer = await run_in_threadpool(self.write, patient, bool(body.get("confirm")))
        except FhirError as err:
            return _error(err)
        return answer

    def patient(self, body: dict[str, Any], access: Any) -> dict[str, Any]:
        """The Patient resource of a registration form, or 422 with every field at fault."""
        issues: list[Issue] = []
        name = " ".join(str(body.get("name") or "").split())
        if not name or len(name) > 200:
            issues.append(Issue("required", "name: the full name is required", "name"))
        gender = body.get("gender")
        if gender not in GENDERS:
            issues.append(Issue("required", f"gender: one of {', '.join(GENDERS)}", "gender"))
        born = str(body.get("birthDate") or "")
        year: int | None = None
        if re.fullmatch(r"\d{4}", born):
            year = int(born)
            born_date = date(year, 1, 1)
        else:
            try:
                born_date = date.fromisoformat(born)
                year = born_date.year
            except ValueError:
                born_date = None  # type: ignore[assignment]
        if born_date is None or not 1900 <= born_date.year or born_date > date.today():
            issues.append(Issue("value", "birthDate: a date YYYY-MM-DD (or a year) between "
                                         "1900 and today", "birthDate"))
            year = None
        cccd = re.sub(r"\s", "", str(body.get("cccd") or ""))
        if cccd:
            for code, _vi, en in problems(cccd, year, gender if isinstance(gender, str)
                                          else None):
                issues.append(Issue("value", f"cccd: {en} [{code}]", "cccd"))
        phone = None
        if body.get("phone"):
            phone = normalise_phone(str(body["phone"]))
            if phone is None:
                issues.append(Issue("value", "phone: 10 digits starting with 0 (or +84)",
                                    "phone"))
        org = access.org if access is not None and access.org else body.get("org")
        if not org:
            issues.append(Issue("required", "org: the Organization that will manage the "
                                            "person", "org"))
        if issues:
            raise FhirError(422, issues)
        family, _, given = name.partition(" ")
        resource: dict[str, Any] = {
            "resourceType": "Patient", "id": new_id(), "active": True,
            "name": [{"use": "official", "text": name, "family": family,
                      **({"given": given.split(" ")} if given else {})}],
            "gender": gender, "birthDate": born,
            "managingOrganization": {"reference": f"Organization/{org}"},
        }
        if cccd:
            resource["identifier"] = [{"type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}],
                "text": "Số CCCD"}, "system": CCCD_SYSTEM, "value": cccd}]
        if phone:
            resource["telecom"] = [{"system": "phone", "value": phone, "use": "mobile"}]
        address = " ".join(str(body.get("address") or "").split())
        if address:
            resource["address"] = [{"use": "home", "text": address[:500], "country": "VN"}]
        return resource

    def write(self, patient: dict[str, Any], confirm: bool) -> Response:
        with self.store.transaction() as tx:
            same_id: list[dict[str, Any]] = []
            cccd = next((i["value"] for i in patient.get("identifier", [])), None)
            if cccd:
                same_id = [m.resource for m in tx.search(
                    "Patient", [("identifier", f"{CCCD_SYSTEM}|{cccd}"), ("_count", "5")]).matches]
            if same_id:
                return _json({"duplicate": "cccd", "candidates": [
                    summary(p) for p in same_id]}, 409)
            if not confirm:
                candidates = self.similar(tx, patient)
                if candidates:
                    return _json({"duplicate": "similar", "candidates": candidates}, 409)
            tx.create(patient, id=patient["id"])
        return _json({"id": patient["id"], "patient": summary(patient)}, 201)

    def similar(self, tx: Any, patient: dict[str, Any]) -> list[dict[str, Any]]:
        """People who may be this one: same name and birth date, or same phone and year."""
        found: dict[str, dict[str, Any]] = {}
        words = patient["name"][0]["text"].split(" ")
        params = [("name", w) for w in words] + [("birthdate", patient["birthDate"]),
                                                  ("_count", "10")]
        for m in tx.search("Patient", params).matches:
            found[m.id] = summary(m.resource)
        phone = next((t["value"] for t in patient.get("telecom", [])), None)
        if phone:
            for m in tx.search("Patient", [("telecom", f"phone|{phone}"),
                                           ("birthdate", patient["birthDate"][:4]),
                                           ("_count", "10")]).matches:
                found.setdefault(m.id, summary(m.resource))
        return list(found.values())
