"""GET /fhir/metadata (http://hl7.org/fhir/R4/http.html#capabilities)."""

from __future__ import annotations

import pytest

from songkhoe.fhir import definitions

SAMPLE = {"string": "x", "token": "x", "reference": "Patient/x", "date": "2020",
          "number": "1", "quantity": "1", "uri": "http://example.org/x"}


@pytest.fixture
def statement(client):
    r = client.get("/fhir/metadata")
    assert r.status_code == 200
    return r.json()


def test_capability_statement(statement):
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance" and statement["status"] == "active"
    assert "json" in statement["format"] and "application/fhir+json" in statement["format"]
    assert "application/json-patch+json" in statement["patchFormat"]
    (rest,) = statement["rest"]
    assert rest["mode"] == "server"
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "search-system",
                                                        "history-system"}
    types = {r["type"] for r in rest["resource"]}
    assert types == set(definitions.resource_types()) and len(types) == 146
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert {i["code"] for i in patient["interaction"]} == {
        "read", "vread", "update", "patch", "delete", "history-instance", "history-type",
        "create", "search-type"}
    assert patient["conditionalCreate"] and patient["conditionalUpdate"]
    assert patient["conditionalDelete"] == "single" and patient["updateCreate"]
    names = {p["name"] for p in patient["searchParam"]}
    assert {"_id", "_lastUpdated", "name", "family", "birthdate", "identifier"} <= names
    assert {o["name"] for o in patient["operation"]} == {"validate", "everything"}
    obs = next(r for r in rest["resource"] if r["type"] == "Observation")
    assert {o["name"] for o in obs["operation"]} == {"validate"}
    # composite parameters are not compiled by the store, so they are not offered
    assert "code-value-quantity" not in {p["name"] for p in obs["searchParam"]}


@pytest.mark.parametrize("rtype", ["Patient", "Observation", "Encounter", "Condition",
                                   "MedicationRequest", "Organization"])
def test_every_advertised_search_parameter_is_understood(client, statement, rtype):
    """Truthfulness: strict handling rejects unknown parameters, so every advertised one must
    be accepted."""
    resource = next(r for r in statement["rest"][0]["resource"] if r["type"] == rtype)
    for p in resource["searchParam"]:
        value = "x" if p["name"] == "_id" else SAMPLE[p["type"]]
        r = client.get(f"/fhir/{rtype}", params={p["name"]: value},
                       headers={"Prefer": "handling=strict"})
        assert r.status_code == 200, (p, r.text)


def test_metadata_pretty_and_head(client):
    r = client.get("/fhir/metadata", params={"_pretty": "true"})
    assert r.status_code == 200 and b'\n  "resourceType"' in r.content
    assert client.head("/fhir/metadata").status_code == 200
