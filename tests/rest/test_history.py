"""history at instance, type and system level (http://hl7.org/fhir/R4/http.html#history)."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.rest.helpers import BASE, created, outcome, patient, put


def follow(client, url):
    """Every entry of a paged Bundle, following ``next`` links; and the page count."""
    entries, pages = [], 0
    while url:
        parts = urlsplit(url)
        r = client.get(parts.path + ("?" + parts.query if parts.query else ""))
        assert r.status_code == 200, r.text
        bundle = r.json()
        pages += 1
        entries += bundle.get("entry", [])
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    return entries, pages


def test_instance_history(client):
    p = created(client, patient())
    put(client, {**p, "gender": "male"})
    client.delete(f"/fhir/Patient/{p['id']}")
    r = client.get(f"/fhir/Patient/{p['id']}/_history")
    assert r.status_code == 200
    bundle = r.json()
    assert bundle["type"] == "history" and bundle["total"] == 3
    assert bundle["link"][0] == {"relation": "self",
                                 "url": f"{BASE}/Patient/{p['id']}/_history"}
    methods = [e["request"]["method"] for e in bundle["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]
    deletion, update, creation = bundle["entry"]
    assert "resource" not in deletion
    assert update["resource"]["gender"] == "male"
    assert update["response"]["etag"] == 'W/"2"'
    assert creation["request"]["url"] == "Patient"
    assert creation["response"]["status"].startswith("201")
    assert update["request"]["url"] == f"Patient/{p['id']}"
    assert all(e["fullUrl"] == f"{BASE}/Patient/{p['id']}" for e in bundle["entry"])
    assert all(e["response"]["lastModified"].endswith("Z") for e in bundle["entry"])


def test_history_paging_type_and_system(client):
    ids = [created(client, patient(family=f"P{i}"))["id"] for i in range(5)]
    for pid in ids[:2]:
        put(client, {**patient(), "id": pid, "active": True})
    created(client, {"resourceType": "Organization", "name": "Trạm Y tế"})
    entries, pages = follow(client, f"{BASE}/Patient/_history?_count=2")
    assert pages == 4 and len(entries) == 7
    versions = [(e["fullUrl"], e["response"]["etag"]) for e in entries]
    assert len(set(versions)) == 7
    lm = [e["response"]["lastModified"] for e in entries]
    assert lm == sorted(lm, reverse=True)
    entries, _ = follow(client, f"{BASE}/_history?_count=3")
    assert len(entries) == 8
    assert {e["fullUrl"].split("/")[-2] for e in entries} == {"Patient", "Organization"}


def test_history_since(client):
    p = created(client, patient())
    r = put(client, {**p, "gender": "female"})
    since = r.json()["meta"]["lastUpdated"]
    bundle = client.get("/fhir/Patient/_history", params={"_since": since}).json()
    assert [e["response"]["etag"] for e in bundle["entry"]] == ['W/"2"']
    bundle = client.get("/fhir/_history", params={"_since": "2001-01-01"}).json()
    assert len(bundle["entry"]) == 2
    # an unencoded "+" of a time-zone offset arrives as a space
    r = client.get("/fhir/_history?_since=2001-01-01T00:00:00+07:00")
    assert r.status_code == 200 and len(r.json()["entry"]) == 2


def test_history_bad_parameters(client):
    p = created(client, patient())
    outcome(client.get("/fhir/_history", params={"_since": "last week"}), 400,
            expression="_since")
    outcome(client.get("/fhir/_history", params={"_since": "2024-01-01T00:00:00"}), 400,
            expression="_since")
    outcome(client.get("/fhir/_history", params={"_count": "-1"}), 400, expression="_count")
    outcome(client.get("/fhir/_history", params={"_at": "2024"}), 400, code="not-supported")
    outcome(client.get("/fhir/Patient/_history", params={"_cursor": "garbage"}), 400)
    outcome(client.get("/fhir/Patient/nobody/_history"), 404)
    outcome(client.get("/fhir/Nonsense/_history"), 404)
    assert client.get(f"/fhir/Patient/{p['id']}/_history").status_code == 200
