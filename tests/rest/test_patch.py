"""JSON Patch (http://hl7.org/fhir/R4/http.html#patch)."""

from __future__ import annotations

from tests.rest.helpers import FHIR_JSON, created, outcome, patient

JSON_PATCH = "application/json-patch+json"


def patch(client, url, ops, headers=None):
    return client.patch(url, json=ops, headers={"content-type": JSON_PATCH, **(headers or {})})


def test_patch_makes_a_new_version(client):
    p = created(client, patient())
    r = patch(client, f"/fhir/Patient/{p['id']}",
              [{"op": "add", "path": "/gender", "value": "female"}])
    assert r.status_code == 200, r.text
    assert r.json()["gender"] == "female" and r.headers["etag"] == 'W/"2"'
    history = client.get(f"/fhir/Patient/{p['id']}/_history").json()
    assert history["entry"][0]["request"]["method"] == "PATCH"


def test_patch_needs_json_patch_content_type(client):
    p = created(client, patient())
    url = f"/fhir/Patient/{p['id']}"
    ops = [{"op": "add", "path": "/gender", "value": "female"}]
    outcome(client.patch(url, json=ops, headers={"content-type": FHIR_JSON}), 415,
            text="JSON Patch")
    outcome(client.patch(url, content=b"<Parameters/>",
                         headers={"content-type": "application/fhir+xml"}), 415)
    outcome(patch(client, url, {"op": "add"}), 400, code="structure")
    outcome(client.patch(url, content=b"[{", headers={"content-type": JSON_PATCH}), 400)
    assert client.get(url).headers["etag"] == 'W/"1"'


def test_patch_errors(client):
    p = created(client, patient())
    url = f"/fhir/Patient/{p['id']}"
    # a test that fails / a path that is not there: the patch cannot be applied
    r = patch(client, url, [{"op": "test", "path": "/gender", "value": "male"}])
    assert 400 <= r.status_code < 500 and r.json()["resourceType"] == "OperationOutcome"
    # the result would be invalid
    r = patch(client, url, [{"op": "add", "path": "/birthDate", "value": "not a date"}])
    assert r.status_code in (400, 422) and r.json()["resourceType"] == "OperationOutcome"
    outcome(patch(client, url, [{"op": "add", "path": "/gender", "value": "male"}],
                  {"If-Match": 'W/"5"'}), 412)
    outcome(patch(client, "/fhir/Patient/unknown", [{"op": "remove", "path": "/gender"}]), 404)
    assert client.get(url).headers["etag"] == 'W/"1"'


def test_conditional_patch(client):
    p = created(client, patient(identifier="P-1"))
    ops = [{"op": "add", "path": "/active", "value": True}]
    r = patch(client, "/fhir/Patient?identifier=urn:songkhoe:test|P-1", ops)
    assert r.status_code == 200 and r.json()["id"] == p["id"] and r.json()["active"] is True
    outcome(patch(client, "/fhir/Patient?identifier=urn:songkhoe:test|none", ops), 404)
    created(client, patient(identifier="P-1"))
    outcome(patch(client, "/fhir/Patient?identifier=urn:songkhoe:test|P-1", ops), 412)
    outcome(patch(client, "/fhir/Patient", ops), 400)
