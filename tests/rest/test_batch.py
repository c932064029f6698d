"""batch Bundles (http://hl7.org/fhir/R4/http.html#transaction, #brules)."""

from __future__ import annotations

from tests.rest.helpers import created, patient
from tests.rest.test_transaction import post_entry, total, tx


def test_batch_with_mixed_success(client):
    existing = created(client, patient(family="Võ"))
    entries = [
        post_entry(patient(family="Một")),
        post_entry(patient(birthDate="yesterday")),  # invalid
        {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
        {"resource": {**patient(family="Hai"), "id": "batch-2"},
         "request": {"method": "PUT", "url": "Patient/batch-2"}},
        {"request": {"method": "GET", "url": f"Patient/{existing['id']}"}},
        {"request": {"method": "DELETE", "url": f"Patient/{existing['id']}"}},
        {"request": {"method": "GET", "url": "Nonsense/1"}},
        {"resource": {**existing, "gender": "male"},
         "request": {"method": "PUT", "url": f"Patient/{existing['id']}", "ifMatch": 'W/"7"'}},
    ]
    r = tx(client, entries, kind="batch")
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "batch-response"
    statuses = [e["response"]["status"].split()[0] for e in bundle["entry"]]
    assert statuses == ["201", "400", "404", "201", "200", "200", "404", "412"]
    for i in (1, 2, 6, 7):
        oo = bundle["entry"][i]["response"]["outcome"]
        assert oo["resourceType"] == "OperationOutcome" and oo["issue"][0]["diagnostics"]
    assert bundle["entry"][4]["resource"]["id"] == existing["id"]  # GET answers carry the resource
    assert bundle["entry"][0]["response"]["location"].startswith("Patient/")
    assert client.get("/fhir/Patient/batch-2").status_code == 200
    assert client.get(f"/fhir/Patient/{existing['id']}").status_code == 410
    assert total(client) == 2  # "Một" and "Hai"


def test_batch_entries_are_independent(client):
    """An entry failing late does not undo the entries before it (unlike a transaction)."""
    entries = [post_entry(patient()), post_entry({"resourceType": "Patient", "gender": "x"})]
    r = tx(client, entries, kind="batch")
    assert [e["response"]["status"][:3] for e in r.json()["entry"]] == ["201", "400"]
    assert total(client) == 1


def test_batch_validate_operation_entry(client):
    entries = [{"resource": patient(), "request": {"method": "POST", "url": "Patient/$validate"}}]
    r = tx(client, entries, kind="batch")
    entry = r.json()["entry"][0]
    assert entry["response"]["status"] == "200 OK"
    assert entry["resource"]["resourceType"] == "OperationOutcome"
    assert total(client) == 0
