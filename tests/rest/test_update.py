"""update, update-as-create, version-aware and conditional update
(http://hl7.org/fhir/R4/http.html#update, #concurrency, #cond-update)."""

from __future__ import annotations

from tests.rest.helpers import BASE, FHIR_JSON, count, created, outcome, patient, put


def test_update_as_create_then_update(client):
    r = put(client, patient(id="vn-001"))
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"{BASE}/Patient/vn-001/_history/1"
    r = put(client, patient(id="vn-001", gender="female"))
    assert r.status_code == 200
    assert r.headers["etag"] == 'W/"2"'
    assert r.headers["location"] == f"{BASE}/Patient/vn-001/_history/2"
    assert r.json()["meta"]["versionId"] == "2"
    assert client.get("/fhir/Patient/vn-001").json()["gender"] == "female"


def test_update_id_must_match_url(client):
    r = client.put("/fhir/Patient/a1", json=patient(id="b2"), headers={"content-type": FHIR_JSON})
    outcome(r, 400, expression="Patient.id")
    r = client.put("/fhir/Patient/a1", json=patient(), headers={"content-type": FHIR_JSON})
    outcome(r, 400, expression="Patient.id", text="has no id")
    r = client.put("/fhir/Patient/a1", json={**patient(), "resourceType": "Observation",
                                              "id": "a1"}, headers={"content-type": FHIR_JSON})
    outcome(r, 400, expression="resourceType")
    outcome(client.put("/fhir/Patient/bad%20id", json=patient(id="bad id"),
                       headers={"content-type": FHIR_JSON}), 400, expression="Patient.id")
    assert count(client, "/fhir/Patient") == 0


def test_if_match(client):
    p = created(client, patient())
    url_p = {**p, "gender": "male"}
    outcome(put(client, url_p, {"If-Match": 'W/"2"'}), 412, code="conflict")
    r = put(client, url_p, {"If-Match": 'W/"1"'})
    assert r.status_code == 200 and r.headers["etag"] == 'W/"2"'
    outcome(put(client, url_p, {"If-Match": 'W/"1"'}), 412)  # now stale
    outcome(put(client, url_p, {"If-Match": "version two"}), 400)
    assert client.get(f"/fhir/Patient/{p['id']}").headers["etag"] == 'W/"2"'


def test_conditional_update(client):
    query = "/fhir/Patient?identifier=urn:songkhoe:test|CCCD-1"
    r = client.put(query, json=patient(identifier="CCCD-1"), headers={"content-type": FHIR_JSON})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = client.put(query, json=patient(identifier="CCCD-1", gender="other"),
                   headers={"content-type": FHIR_JSON})
    assert r.status_code == 200 and r.json()["id"] == pid and r.json()["gender"] == "other"
    assert count(client, "/fhir/Patient") == 1
    created(client, patient(identifier="CCCD-1"))
    outcome(client.put(query, json=patient(identifier="CCCD-1"),
                       headers={"content-type": FHIR_JSON}), 412)
    outcome(client.put("/fhir/Patient", json=patient(), headers={"content-type": FHIR_JSON}),
            400, text="needs an id")
    assert count(client, "/fhir/Patient") == 2


def test_conditional_criteria_are_strict(client):
    """An unknown parameter must not widen a conditional match to every resource."""
    only = created(client, patient(identifier="ONLY"))
    for bogus in ({"shoe-size": "42"}, {"_count": "1"}, {"_summary": "count"}):
        r = client.put("/fhir/Patient", params=bogus, json=patient(gender="male"),
                       headers={"content-type": FHIR_JSON})
        outcome(r, 400)
        outcome(client.delete("/fhir/Patient", params=bogus), 400)
        r = client.post("/fhir/Patient", json=patient(), headers={
            "content-type": FHIR_JSON, "If-None-Exist": "shoe-size=42"})
        outcome(r, 400, text="If-None-Exist")
    assert client.get(f"/fhir/Patient/{only['id']}").json() == only
    assert count(client, "/fhir/Patient") == 1
