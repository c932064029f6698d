"""What requests outside the FHIR routing table are recorded as: the web app's sign-in and
sign-out (DICOM 110114 User Authentication, subtypes 110122 Login and 110123 Logout), Bulk
Data ``$export`` and its job's end (subtype DICOM 110106 Export) and a cookie request refused
for its missing CSRF header (DICOM 110113 Security Alert, 110132 Use of Restricted Function)
— not ``other`` or ``operation`` — and searchable by subtype."""

from __future__ import annotations

import time
from typing import Any

from starlette.testclient import TestClient

from songkhoe.auth import Auth, ScopeSet
from songkhoe.auth.audit_search import AuditSearch
from songkhoe.auth.identities import ROLES
from songkhoe.programs.cli import definitions
from songkhoe.rest import create_app
from songkhoe.rest.export_worker import ExportConfig
from songkhoe.web.app import routes

from .conftest import PASSWORD, add_orgs

DCM = "http://dicom.nema.org/resources/ontology/DCM"


def _last(auth: Auth) -> dict[str, Any]:
    return auth.audit.entries()[-1]


def _codes(entry: dict[str, Any]) -> tuple[str, str, str]:
    return entry["type"]["code"], entry["subtype"][0]["system"], entry["subtype"][0]["code"]


def test_web_sign_in_and_sign_out_are_login_and_logout(store: Any, auth: Auth) -> None:
    add_orgs(store)
    auth.identities.add_user("ytx", PASSWORD, "health_worker", "tyt-00004")
    app = create_app(store, auth=auth, extra_routes=routes(store, definitions()))
    with TestClient(app) as http:
        assert http.get("/app/").status_code == 200
        csrf = {"X-CSRF-Token": http.cookies["sk_csrf"]}
        signed = http.post("/app/session", data={"username": "ytx", "password": PASSWORD},
                           headers=csrf)
        assert signed.status_code == 200, signed.text
        login = _last(auth)
        assert _codes(login) == ("110114", DCM, "110122")
        assert login["agent"][0]["who"]["identifier"]["value"] == "ytx"
        csrf = {"X-CSRF-Token": http.cookies["sk_csrf"]}  # a new one with the session
        assert http.post("/app/logout", headers=csrf).status_code == 204
        assert _codes(_last(auth)) == ("110114", DCM, "110123")
        http.post("/app/session", data={"username": "ytx", "password": PASSWORD},
                  headers={"X-CSRF-Token": http.cookies["sk_csrf"]})
        refused = http.post("/fhir/Patient", json={"resourceType": "Patient"})  # no CSRF header
        assert refused.status_code == 403
        alert = _last(auth)
        assert _codes(alert) == ("110113", DCM, "110132")
        assert (alert["action"], alert["outcome"]) == ("E", "4")
        assert alert["agent"][0]["who"]["identifier"]["value"] == "ytx"  # the session's user
        assert alert["entity"][0]["what"]["display"] == "POST /fhir/Patient"
    alerts = AuditSearch(auth.audit.db, None, auth.db).search([("type", f"{DCM}|110113"),
                                                               ("outcome", "4")])
    assert [e.resource["subtype"][0]["code"] for e in alerts.entries] == ["110132"]
    found = AuditSearch(auth.audit.db, None, auth.db).search([("subtype", f"{DCM}|110123")])
    assert [e.resource["entity"][0]["what"]["display"] for e in found.entries] == \
        ["POST /app/logout"]


def test_bulk_export_requests_are_exports(store: Any, auth: Auth, tmp_path: Any) -> None:
    token, _ = auth.tokens.issue(subject="admin", kind="user", role="administrator", org=None,
                                 scope=ScopeSet.parse(ROLES["administrator"]), client_id=None)
    app = create_app(store, auth=auth, export=ExportConfig(tmp_path / "exports", poll=0.05))
    with TestClient(app) as http:
        kicked = http.get("/fhir/$export?_type=Patient", headers={
            "Authorization": f"Bearer {token}", "Accept": "application/fhir+json",
            "Prefer": "respond-async"})
        assert kicked.status_code == 202, kicked.text
        status = kicked.headers["content-location"].split("/fhir", 1)[1]
        for _ in range(200):  # until the job is complete (its end is recorded before)
            if http.get(f"/fhir{status}",
                        headers={"Authorization": f"Bearer {token}"}).status_code == 200:
                break
            time.sleep(0.05)
    requests = [e for e in auth.audit.entries()  # (the worker records the job's end itself)
                if e["entity"][0]["what"].get("display", "").startswith("GET /fhir/$export")
                and "export complete" not in e["outcomeDesc"]]
    assert {(*_codes(e), e["action"]) for e in requests} == {("rest", DCM, "110106", "E")}
    ended = [e for e in auth.audit.entries() if "export complete" in e["outcomeDesc"]]
    assert [(*_codes(e), e["action"]) for e in ended] == [("rest", DCM, "110106", "E")]
    found = AuditSearch(auth.audit.db, None, auth.db).search([("subtype", "110106")])
    assert len(found.entries) == len(requests) + 1
