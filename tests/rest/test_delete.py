"""delete and conditional delete (http://hl7.org/fhir/R4/http.html#delete)."""

from __future__ import annotations

from tests.rest.helpers import count, created, outcome, patient


def test_delete_is_logical(client):
    p = created(client, patient())
    url = f"/fhir/Patient/{p['id']}"
    r = client.delete(url)
    assert r.status_code == 200
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.headers["etag"] == 'W/"2"'
    outcome(client.get(url), 410)
    assert client.get(f"{url}/_history/1").json() == p
    # deleting again, or something unknown, succeeds
    assert client.delete(url).status_code == 200
    assert client.delete("/fhir/Patient/never-was").status_code == 200
    assert count(client, "/fhir/Patient") == 0


def test_delete_prefer_minimal_is_204(client):
    p = created(client, patient())
    r = client.delete(f"/fhir/Patient/{p['id']}", headers={"Prefer": "return=minimal"})
    assert r.status_code == 204 and r.content == b""


def test_delete_if_match(client):
    p = created(client, patient())
    url = f"/fhir/Patient/{p['id']}"
    outcome(client.delete(url, headers={"If-Match": 'W/"3"'}), 412)
    assert client.get(url).status_code == 200
    assert client.delete(url, headers={"If-Match": 'W/"1"'}).status_code == 200
    outcome(client.get(url), 410)


def test_conditional_delete(client):
    a = created(client, patient(identifier="D-1"))
    created(client, patient(identifier="D-2"))
    created(client, patient(identifier="D-2"))
    r = client.delete("/fhir/Patient", params={"identifier": "urn:songkhoe:test|D-1"})
    assert r.status_code == 200
    outcome(client.get(f"/fhir/Patient/{a['id']}"), 410)
    r = client.delete("/fhir/Patient", params={"identifier": "urn:songkhoe:test|none"})
    assert r.status_code == 200 and "Nothing" in r.json()["issue"][0]["diagnostics"]
    outcome(client.delete("/fhir/Patient", params={"identifier": "urn:songkhoe:test|D-2"}), 412)
    outcome(client.delete("/fhir/Patient"), 400)
    assert count(client, "/fhir/Patient") == 2
