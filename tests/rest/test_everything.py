"""Patient/$everything (http://hl7.org/fhir/R4/patient-operation-everything.html)."""

from __future__ import annotations

from tests.rest.helpers import BASE, created, observation, outcome, patient, put
from tests.rest.test_history import follow


def setup(client):
    a = created(client, patient(family="A"))
    b = created(client, patient(family="B"))
    enc = created(client, {"resourceType": "Encounter", "status": "finished",
                           "class": {"code": "AMB"}, "subject": {"reference": f"Patient/{a['id']}"}})
    obs = [created(client, observation(f"Patient/{a['id']}", v))["id"] for v in (1, 2, 3)]
    created(client, observation(f"Patient/{b['id']}"))
    return a, enc, obs


def test_everything_is_the_patient_and_its_compartment(client):
    a, enc, obs = setup(client)
    r = client.get(f"/fhir/Patient/{a['id']}/$everything")
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "searchset"
    got = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
    assert got == {("Patient", a["id"]), ("Encounter", enc["id"])} | {("Observation", o)
                                                                        for o in obs}


def test_everything_type_filter_and_paging(client):
    a, _, obs = setup(client)
    r = client.get(f"/fhir/Patient/{a['id']}/$everything", params={"_type": "Observation"})
    assert {e["resource"]["id"] for e in r.json()["entry"]} == set(obs)
    entries, pages = follow(client, f"{BASE}/Patient/{a['id']}/$everything?_count=2")
    assert pages == 3 and len(entries) == 5
    assert len({e["fullUrl"] for e in entries}) == 5


def test_everything_since(client):
    a, _, obs = setup(client)
    since = put(client, {**client.get(f"/fhir/Observation/{obs[0]}").json(),
                         "status": "amended"}).json()["meta"]["lastUpdated"]
    r = client.get(f"/fhir/Patient/{a['id']}/$everything", params={"_since": since})
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [obs[0]]


def test_everything_errors(client):
    a, _, _ = setup(client)
    outcome(client.get("/fhir/Patient/nobody/$everything"), 404)
    outcome(client.get(f"/fhir/Patient/{a['id']}/$everything", params={"start": "2024"}), 400,
            expression="start")
    outcome(client.get(f"/fhir/Patient/{a['id']}/$everything", params={"_type": "Nope"}), 400,
            expression="_type")
    outcome(client.get("/fhir/Observation/1/$everything"), 404, code="not-supported")
