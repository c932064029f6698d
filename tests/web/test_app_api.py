"""The app API (``/api``) behind the real guard, on both backends: sign-in required, errors
as OperationOutcomes with the field's path, a check-up answered with its classifications and
referrals, worklists limited to the caller's commune, call outcomes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from songkhoe.auth import Auth
from songkhoe.programs.apply import Online
from songkhoe.programs.cli import definitions
from songkhoe.rest import create_app
from songkhoe.web.api import routes

PASSWORD = "correct horse battery"
PROGRAMMES = definitions()


@pytest.fixture
def http(store: Any) -> Iterator[TestClient]:
    store.derive = Online(PROGRAMMES)
    auth = Auth(store)
    for id_, parent in [("moh", None), ("tyt-a", "moh"), ("tyt-b", "moh")]:
        body: dict[str, Any] = {"resourceType": "Organization", "id": id_, "name": id_}
        if parent:
            body["partOf"] = {"reference": f"Organization/{parent}"}
        store.update("Organization", id_, body)
    for id_, org in [("pa", "tyt-a"), ("pb", "tyt-b")]:
        store.update("Patient", id_, {"resourceType": "Patient", "id": id_, "gender": "male",
                                      "birthDate": "1965-03-01", "name": [{"family": "Lê"}],
                                      "managingOrganization": {
                                          "reference": f"Organization/{org}"}})
    auth.identities.add_user("ytx-a", PASSWORD, "health_worker", "tyt-a")
    app = create_app(store, auth=auth, extra_routes=routes(store, PROGRAMMES))
    with TestClient(app) as client:
        token = client.post("/auth/token", data={"grant_type": "password", "username": "ytx-a",
                                                 "password": PASSWORD}).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def test_the_app_api_needs_a_token(http: TestClient) -> None:
    answer = http.get("/api/programmes", headers={"Authorization": ""})
    assert answer.status_code == 401


def test_a_check_up_comes_back_classified_with_its_referral(http: TestClient) -> None:
    form = http.get("/api/programmes").json()
    assert {"sbp", "dbp", "glucose"} <= {i["id"] for i in form["items"]}
    answer = http.post("/api/checkups", json={"patient": "pa", "date": "2026-11-20",
                                              "values": {"sbp": 165, "dbp": 100,
                                                         "weight": 70, "height": 165}})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    [panel] = [o for o in body["observations"] if o["code"]["coding"][0]["code"] == "85354-9"]
    codes = {c["coding"][0]["code"] for c in panel["interpretation"]}
    assert "grade2" in codes
    assert panel["meta"]["versionId"] == "1"  # completed before the commit, not re-versioned
    referral = [o for o in body["outputs"] if o["resourceType"] == "ServiceRequest"]
    assert referral and referral[0]["code"]["coding"][0]["code"] == "confirm_raised"
    status = {s["programme"]: s for s in body["status"]}
    assert status["hypertension-screening"]["next_due"] == "2027-11-20"
    person = http.get("/api/people/pa/programmes?date=2026-11-21").json()
    assert "sbp" in person["items"]["hypertension-screening"]


@pytest.mark.parametrize("body, path", [
    ({"patient": "pa", "values": {"sbp": 400, "dbp": 90}}, "values.sbp.value"),
    ({"patient": "pa", "values": {"pulse": 80}}, "values.pulse"),
    ({"patient": "pa", "values": {"glucose": {"value": 7, "unit": "g/L"}}},
     "values.glucose.code"),
    ({"patient": "pa", "values": {"smoking": "sometimes"}}, "values.smoking"),
    ({"values": {"sbp": 120}}, "patient"),
    ({"patient": "pa", "date": "20-11-2026", "values": {"sbp": 120}}, "date"),
])
def test_bad_check_ups_are_refused_with_the_field_and_nothing_is_stored(
        http: TestClient, store: Any, body: dict[str, Any], path: str) -> None:
    answer = http.post("/api/checkups", json=body)
    assert answer.status_code in (400, 422), answer.text
    issue = answer.json()["issue"][0]
    assert issue["expression"] == [path]
    assert not store.search("Observation", [("_count", "1")]).matches
    assert not store.search("Encounter", [("_count", "1")]).matches


def test_a_person_of_another_commune_is_not_found(http: TestClient) -> None:
    answer = http.post("/api/checkups", json={"patient": "pb", "values": {"sbp": 120}})
    assert answer.status_code == 404
    assert http.get("/api/people/pb/programmes").status_code == 404


def test_worklists_and_call_outcomes(http: TestClient) -> None:
    http.post("/api/checkups", json={"patient": "pa", "date": "2025-01-10",
                                     "values": {"sbp": 150, "dbp": 95}})
    query = "programme=hypertension-screening&today=2026-11-23"
    overdue = http.get(f"/api/worklists/overdue?{query}").json()
    assert [e["patient"] for e in overdue["entries"]] == ["pa"]  # not pb: another commune
    assert http.get(f"/api/worklists/referral?{query}").json()["total"] == 1
    answer = http.post("/api/calls", json={"patient": "pa", "programme":
                                           "hypertension-screening", "outcome": "call-later",
                                           "call_again": "2026-12-01", "date": "2026-11-23"})
    assert answer.status_code == 201, answer.text
    assert http.get(f"/api/worklists/overdue?{query}").json()["total"] == 0
    later = "programme=hypertension-screening&today=2026-12-02"
    assert http.get(f"/api/worklists/overdue?{later}").json()["total"] == 1
    bad = http.post("/api/calls", json={"patient": "pa", "programme": "hypertension-screening",
                                        "outcome": "maybe"})
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["outcome"]
    assert http.get(f"/api/worklists/soon?{query}").status_code == 400
