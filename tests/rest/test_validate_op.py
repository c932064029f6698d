"""$validate (http://hl7.org/fhir/R4/resource-operation-validate.html)."""

from __future__ import annotations

from tests.rest.helpers import FHIR_JSON, count, created, outcome, patient


def validate(client, url, body, **params):
    return client.post(url, json=body, params=params, headers={"content-type": FHIR_JSON})


def errors(oo):
    return [i for i in oo["issue"] if i["severity"] in ("error", "fatal")]


def test_valid_resource(client):
    r = validate(client, "/fhir/Patient/$validate", patient())
    assert r.status_code == 200
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome" and not errors(oo)
    assert count(client, "/fhir/Patient") == 0


def test_invalid_resource_same_verdict_as_write(client):
    bad = patient(birthDate="1980-13-45")
    r = validate(client, "/fhir/Patient/$validate", bad)
    assert r.status_code == 200
    found = errors(r.json())
    assert found and any("birthDate" in e for i in found for e in i.get("expression", []))
    write = client.post("/fhir/Patient", json=bad, headers={"content-type": FHIR_JSON})
    assert write.status_code >= 400
    assert [i["expression"] for i in errors(write.json())] == [i["expression"] for i in found]
    assert count(client, "/fhir/Patient") == 0


def test_parameters_body_and_modes(client):
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": patient()},
        {"name": "mode", "valueCode": "create"},
        {"name": "profile", "valueUri": "http://example.org/StructureDefinition/vn-patient"}]}
    r = validate(client, "/fhir/Patient/$validate", body)
    oo = r.json()
    assert r.status_code == 200 and not errors(oo)
    assert any(i["severity"] == "warning" and "vn-patient" in i["diagnostics"]
               for i in oo["issue"])
    outcome(validate(client, "/fhir/Patient/$validate", patient(), mode="sideways"), 400,
            expression="mode")
    outcome(validate(client, "/fhir/Patient/$validate", {"resourceType": "Parameters",
                                                         "parameter": []}), 400)


def test_instance_level(client):
    p = created(client, patient())
    url = f"/fhir/Patient/{p['id']}/$validate"
    r = validate(client, url, {**p, "gender": "female"})
    assert r.status_code == 200 and not errors(r.json())
    r = validate(client, url, {**p, "id": "someone-else"})
    assert errors(r.json())
    r = validate(client, url, {"resourceType": "Parameters", "parameter": [
        {"name": "mode", "valueCode": "delete"}]})
    assert r.status_code == 200 and not errors(r.json())
    r = validate(client, "/fhir/Patient/unknown/$validate", {"resourceType": "Parameters",
                                                            "parameter": [{"name": "mode",
                                                                           "valueCode": "delete"}]})
    assert errors(r.json())
    assert client.get(f"/fhir/Patient/{p['id']}").json() == p  # nothing changed
    assert client.get(f"/fhir/Patient/{p['id']}/_history").json()["total"] == 1


def test_wrong_type_and_bad_bodies(client):
    r = validate(client, "/fhir/Observation/$validate", patient())
    assert r.status_code == 200 and errors(r.json())
    outcome(client.post("/fhir/Patient/$validate", content=b"{nope",
                        headers={"content-type": FHIR_JSON}), 400)
    outcome(client.get("/fhir/Patient/$validate"), 405)
    outcome(client.post("/fhir/Patient/$frobnicate", json=patient(),
                        headers={"content-type": FHIR_JSON}), 404, code="not-supported")
