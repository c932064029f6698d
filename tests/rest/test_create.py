"""create and conditional create (http://hl7.org/fhir/R4/http.html#create, #ccreate)."""

from __future__ import annotations

import unicodedata

import pytest
from starlette.testclient import TestClient

from songkhoe.rest import create_app
from tests.rest.helpers import BASE, FHIR_JSON, count, outcome, patient, post


def test_create_assigns_id_and_answers_201_with_headers(client):
    r = post(client, patient(id="client-chosen"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1" and body["meta"]["lastUpdated"]
    assert r.headers["location"] == f"{BASE}/Patient/{body['id']}/_history/1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["last-modified"].endswith("GMT")
    assert client.get(f"/fhir/Patient/{body['id']}").json() == body


def test_create_accepts_application_json(client):
    r = client.post("/fhir/Patient", json=patient(),
                    headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 201


def test_prefer_return(client):
    r = post(client, patient(), {"Prefer": "return=minimal"})
    assert r.status_code == 201 and r.content == b"" and "location" in r.headers
    r = post(client, patient(), {"Prefer": "return=OperationOutcome"})
    assert r.status_code == 201 and r.json()["resourceType"] == "OperationOutcome"
    assert "Created Patient/" in r.json()["issue"][0]["diagnostics"]
    r = post(client, patient(), {"Prefer": "return=representation"})
    assert r.status_code == 201 and r.json()["resourceType"] == "Patient"
    outcome(post(client, patient(), {"Prefer": "return=everything"}), 400)


def test_conditional_create(client):
    first = post(client, patient(identifier="079123"), {"If-None-Exist":
                                                       "identifier=urn:songkhoe:test|079123"})
    assert first.status_code == 201
    again = post(client, patient(identifier="079123"),
                 {"If-None-Exist": "identifier=urn:songkhoe:test|079123"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["etag"] == 'W/"1"'
    assert count(client, "/fhir/Patient") == 1
    post(client, patient(identifier="079123"))  # a second one, unconditionally
    outcome(post(client, patient(identifier="079123"),
                 {"If-None-Exist": "identifier=urn:songkhoe:test|079123"}), 412)
    assert count(client, "/fhir/Patient") == 2
    outcome(post(client, patient(), {"If-None-Exist": "  "}), 400)


def test_text_is_stored_in_nfc(client):
    decomposed = unicodedata.normalize("NFD", "Nguyễn Thị Ánh")
    body = post(client, patient(family=decomposed)).json()
    assert body["name"][0]["family"] == unicodedata.normalize("NFC", decomposed)


def test_body_type_must_match_url(client):
    r = client.post("/fhir/Observation", json=patient(), headers={"content-type": FHIR_JSON})
    outcome(r, 400, expression="resourceType")
    assert count(client, "/fhir/Patient") == 0


def test_invalid_resource_is_rejected_with_expression(client):
    r = post(client, patient(birthDate="3 March 1980"))
    body = outcome(r, 400)
    assert any("birthDate" in e for i in body["issue"] for e in i.get("expression", []))
    assert count(client, "/fhir/Patient") == 0


@pytest.mark.parametrize("content_type", ["application/fhir+xml", "application/xml",
                                          "text/plain", "application/x-www-form-urlencoded",
                                          "application/fhir+json; charset=latin-1", None])
def test_wrong_content_type_is_415(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/fhir/Patient", content=b'{"resourceType":"Patient"}', headers=headers)
    outcome(r, 415, code="not-supported")
    assert count(client, "/fhir/Patient") == 0


def test_xml_body_is_415_with_clear_outcome(client):
    xml = b'<Patient xmlns="http://hl7.org/fhir"><gender value="male"/></Patient>'
    r = client.post("/fhir/Patient", content=xml, headers={"content-type": "application/fhir+xml"})
    outcome(r, 415, text="application/fhir+json")


@pytest.mark.parametrize("body,code", [
    (b'{"resourceType": "Patient",', "structure"),
    (b"[]", "structure"),
    (b'"Patient"', "structure"),
    (b"null", "structure"),
    (b"42", "structure"),
    (b"", "required"),
    (b'{"name": []}', "required"),
    (b'{"resourceType": 7}', "required"),
    (b"\xff\xfe{}", "structure"),
    (b'{"resourceType": "Patient", "x": NaN}', "structure"),
])
def test_bad_json_bodies_are_400(client, body, code):
    r = client.post("/fhir/Patient", content=body, headers={"content-type": FHIR_JSON})
    outcome(r, 400, code=code)
    assert count(client, "/fhir/Patient") == 0


def test_body_over_limit_is_413(store):
    with TestClient(create_app(store, max_body_bytes=1000)) as small:
        big = patient(family="x" * 2000)
        outcome(post(small, big), 413, code="too-costly")
        assert post(small, patient()).status_code == 201
        # a chunked body without Content-Length is cut off too
        def chunks():
            yield b'{"resourceType": "Patient", "name": [{"family": "'
            for _ in range(100):
                yield b"y" * 100
            yield b'"}]}'
        r = small.post("/fhir/Patient", content=chunks(), headers={"content-type": FHIR_JSON})
        outcome(r, 413)
        assert count(small, "/fhir/Patient") == 1


def test_create_unknown_type_is_404(client):
    r = client.post("/fhir/Pasient", json={"resourceType": "Pasient"},
                    headers={"content-type": FHIR_JSON})
    outcome(r, 404, code="not-supported")
