"""read and vread (http://hl7.org/fhir/R4/http.html#read, #vread) over HTTP."""

from __future__ import annotations

from tests.rest.helpers import FHIR_JSON, created, outcome, patient, put


def test_read_answers_stored_bytes_with_version_headers(client, store):
    p = created(client, patient())
    r = client.get(f"/fhir/Patient/{p['id']}")
    assert r.status_code == 200
    assert r.headers["content-type"] == f"{FHIR_JSON}; charset=utf-8"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["last-modified"].endswith(" GMT")
    assert r.json() == p
    assert r.content == store.read("Patient", p["id"]).content  # served as stored


def test_vread_each_version(client):
    p = created(client, patient(family="Trần"))
    p2 = put(client, {**p, "gender": "female"}).json()
    assert p2["meta"]["versionId"] == "2"
    r1 = client.get(f"/fhir/Patient/{p['id']}/_history/1")
    assert r1.status_code == 200 and r1.headers["etag"] == 'W/"1"'
    assert "gender" not in r1.json()
    r2 = client.get(f"/fhir/Patient/{p['id']}/_history/2")
    assert r2.json()["gender"] == "female" and r2.headers["etag"] == 'W/"2"'


def test_read_unknown_id_is_404(client):
    outcome(client.get("/fhir/Patient/nope"), 404, code="not-found")


def test_vread_unknown_version_is_404(client):
    p = created(client, patient())
    outcome(client.get(f"/fhir/Patient/{p['id']}/_history/7"), 404, code="not-found")
    outcome(client.get(f"/fhir/Patient/{p['id']}/_history/abc"), 404, code="not-found")


def test_read_deleted_is_410_but_old_version_stays(client):
    p = created(client, patient())
    assert client.delete(f"/fhir/Patient/{p['id']}").status_code == 200
    outcome(client.get(f"/fhir/Patient/{p['id']}"), 410, code="deleted")
    assert client.get(f"/fhir/Patient/{p['id']}/_history/1").status_code == 200
    outcome(client.get(f"/fhir/Patient/{p['id']}/_history/2"), 410)


def test_unknown_resource_type_is_404(client):
    outcome(client.get("/fhir/Patients/1"), 404, code="not-supported", text="Patients")
    outcome(client.get("/fhir/patient/1"), 404)


def test_malformed_id_is_400(client):
    outcome(client.get("/fhir/Patient/" + "a" * 65), 400, expression="Patient.id")
    outcome(client.get("/fhir/Patient/bad_id"), 400, expression="Patient.id")
    outcome(client.get("/fhir/Patient/%C3%A1"), 400, expression="Patient.id")


def test_conditional_read_answers_304(client):
    p = created(client, patient())
    url = f"/fhir/Patient/{p['id']}"
    r = client.get(url, headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == 'W/"1"'
    assert client.get(url, headers={"If-None-Match": 'W/"2"'}).status_code == 200
    last_modified = client.get(url).headers["last-modified"]
    assert client.get(url, headers={"If-Modified-Since": last_modified}).status_code == 304
    assert client.get(url, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}
                      ).status_code == 200
    outcome(client.get(url, headers={"If-None-Match": "garbage"}), 400)
    outcome(client.get(url, headers={"If-Modified-Since": "yesterday"}), 400)


def test_head_read_has_headers_no_body(client):
    p = created(client, patient())
    r = client.head(f"/fhir/Patient/{p['id']}")
    assert r.status_code == 200 and r.headers["etag"] == 'W/"1"' and r.content == b""
    assert int(r.headers["content-length"]) == len(client.get(f"/fhir/Patient/{p['id']}").content)


def test_elements_and_summary_shape_a_copy(client):
    p = created(client, patient(gender="male", birthDate="1980-02-03",
                                maritalStatus={"text": "married"},
                                text={"status": "generated",
                                      "div": '<div xmlns="http://www.w3.org/1999/xhtml">An</div>'}))
    url = f"/fhir/Patient/{p['id']}"
    r = client.get(url, params={"_elements": "gender"})
    body = r.json()
    assert set(body) == {"resourceType", "id", "meta", "gender"}
    assert any(t["code"] == "SUBSETTED" for t in body["meta"]["tag"])
    body = client.get(url, params={"_summary": "text"}).json()
    assert set(body) == {"resourceType", "id", "meta", "text"}
    body = client.get(url, params={"_summary": "data"}).json()
    assert "text" not in body and body["birthDate"] == "1980-02-03"
    assert client.get(url, params={"_summary": "false"}).json() == p
    body = client.get(url, params={"_summary": "true"}).json()
    assert {"name", "gender", "birthDate"} <= set(body)
    assert "text" not in body and "maritalStatus" not in body  # not summary elements
    assert any(t["code"] == "SUBSETTED" for t in body["meta"]["tag"])
    outcome(client.get(url, params={"_summary": "count"}), 400, expression="_summary")
    outcome(client.get(url, params={"name": "x"}), 400, expression="name")


def test_pretty_and_format(client):
    p = created(client, patient())
    url = f"/fhir/Patient/{p['id']}"
    r = client.get(url, params={"_pretty": "true"})
    assert b'\n  "resourceType"' in r.content and r.json() == p
    r = client.get(url, params={"_format": "json"})
    assert r.headers["content-type"].startswith(FHIR_JSON)
    r = client.get(url, params={"_format": "application/json"})
    assert r.headers["content-type"].startswith("application/json;")
    r = client.get(url, headers={"Accept": "application/json"})
    assert r.headers["content-type"].startswith("application/json;") and r.json() == p
    r = client.get(url, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert r.status_code == 200 and r.headers["content-type"].startswith(FHIR_JSON)
    outcome(client.get(url, params={"_pretty": "yes"}), 400, expression="_pretty")


def test_xml_is_not_acceptable(client):
    p = created(client, patient())
    url = f"/fhir/Patient/{p['id']}"
    outcome(client.get(url, params={"_format": "xml"}), 406, code="not-supported",
            expression="_format")
    outcome(client.get(url, params={"_format": "application/fhir+xml"}), 406)
    outcome(client.get(url, params={"_format": "nonsense"}), 406)
    outcome(client.get(url, headers={"Accept": "application/fhir+xml"}), 406,
            code="not-supported", text="JSON only")
    outcome(client.get(url, headers={"Accept": "application/xml, text/xml;q=0.5"}), 406)
    # _format wins over Accept (http.html#mime-type)
    assert client.get(url, params={"_format": "json"},
                      headers={"Accept": "application/fhir+xml"}).status_code == 200


def test_method_not_allowed(client):
    p = created(client, patient())
    outcome(client.post(f"/fhir/Patient/{p['id']}", json=p,
                        headers={"content-type": FHIR_JSON}), 405, code="not-supported")
    outcome(client.delete(f"/fhir/Patient/{p['id']}/_history/1"), 405)
    outcome(client.put("/fhir/metadata"), 405)


def test_lean_read_path_answers_like_the_general_path(client):
    """A plain read takes a lean path; with a query it goes the general way. Same answer."""
    p = created(client, patient(family="Hồ"))
    lean = client.get(f"/fhir/Patient/{p['id']}")
    general = client.get(f"/fhir/Patient/{p['id']}", params={"_pretty": "false"})
    assert lean.content == general.content
    for header in ("content-type", "etag", "last-modified", "content-length"):
        assert lean.headers[header] == general.headers[header], header
    # errors on the lean path are the same OperationOutcomes
    missing = client.get("/fhir/Patient/nobody")
    assert missing.status_code == 404
    assert missing.json() == client.get("/fhir/Patient/nobody", params={"_pretty": "false"}).json()
    client.delete(f"/fhir/Patient/{p['id']}")
    outcome(client.get(f"/fhir/Patient/{p['id']}"), 410, code="deleted")
    # an Accept the lean path does not serve goes the general way
    assert client.get(f"/fhir/Patient/{p['id']}/_history/1",
                      headers={"Accept": "application/json"}).headers["content-type"].startswith(
        "application/json;")


def test_last_modified_matches_meta(client):
    from datetime import datetime
    from email.utils import parsedate_to_datetime

    p = created(client, patient())
    r = client.get(f"/fhir/Patient/{p['id']}")
    header = parsedate_to_datetime(r.headers["last-modified"])
    meta = datetime.fromisoformat(p["meta"]["lastUpdated"])
    assert header == meta.replace(microsecond=0)


def test_reads_through_the_thread_pool(store):
    """``direct_reads=False`` (database across a network) answers the same way."""
    from starlette.testclient import TestClient

    from songkhoe.rest import create_app

    with TestClient(create_app(store, direct_reads=False)) as pooled:
        p = created(pooled, patient())
        r = pooled.get(f"/fhir/Patient/{p['id']}")
        assert r.status_code == 200 and r.json() == p and r.headers["etag"] == 'W/"1"'
        assert pooled.get(f"/fhir/Patient/{p['id']}/_history/1").json() == p
        outcome(pooled.get("/fhir/Patient/nobody"), 404)
