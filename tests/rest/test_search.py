"""search: type, POST _search, system, compartment (http://hl7.org/fhir/R4/http.html#search)."""

from __future__ import annotations

from tests.rest.helpers import BASE, created, observation, outcome, patient
from tests.rest.test_history import follow


def test_type_search_bundle(client):
    a = created(client, patient(family="Nguyễn"))
    created(client, patient(family="Trần"))
    r = client.get("/fhir/Patient", params={"family": "nguyen", "_total": "accurate"})
    assert r.status_code == 200
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert bundle["total"] == 1
    (entry,) = bundle["entry"]
    assert entry["fullUrl"] == f"{BASE}/Patient/{a['id']}"
    assert entry["search"] == {"mode": "match"}
    assert entry["resource"] == a
    self_link = bundle["link"][0]
    assert self_link["relation"] == "self"
    assert self_link["url"].startswith(f"{BASE}/Patient?") and "family=nguyen" in self_link["url"]


def test_search_paging_with_cursor_links(client):
    ids = {created(client, patient(family=f"Lê{i}"))["id"] for i in range(7)}
    entries, pages = follow(client, f"{BASE}/Patient?_count=3")
    assert pages == 3
    assert {e["resource"]["id"] for e in entries} == ids
    first = client.get("/fhir/Patient", params={"_count": "3"}).json()
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    assert "_cursor=" in nxt and "_count=3" in nxt


def test_post_search_with_form(client):
    a = created(client, patient(family="Phạm", gender="female"))
    created(client, patient(family="Phạm", gender="male"))
    r = client.post("/fhir/Patient/_search", data={"family": "pham"},
                    params={"gender": "female"})
    assert r.status_code == 200, r.text
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [a["id"]]
    outcome(client.post("/fhir/Patient/_search", json={"family": "pham"}), 415)


def test_system_search(client):
    created(client, patient())
    created(client, {"resourceType": "Organization", "name": "Bệnh viện"})
    r = client.get("/fhir", params={"_count": "50"})
    assert r.status_code == 200
    types = sorted(e["resource"]["resourceType"] for e in r.json()["entry"])
    assert types == ["Organization", "Patient"]
    r = client.post("/fhir/_search", data={"_count": "1"})
    assert r.status_code == 200 and len(r.json()["entry"]) == 1


def test_compartment_search(client):
    a = created(client, patient(family="A"))
    b = created(client, patient(family="B"))
    mine = {created(client, observation(f"Patient/{a['id']}", v))["id"] for v in (110, 120)}
    created(client, observation(f"Patient/{b['id']}"))
    r = client.get(f"/fhir/Patient/{a['id']}/Observation")
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert {e["resource"]["id"] for e in bundle["entry"]} == mine
    assert bundle["link"][0]["url"].startswith(f"{BASE}/Patient/{a['id']}/Observation")
    r = client.get(f"/fhir/Patient/{a['id']}/Observation", params={"value-quantity": "gt115"})
    assert len(r.json()["entry"]) == 1
    outcome(client.get(f"/fhir/Patient/{a['id']}/Nonsense"), 404)


def test_search_errors(client):
    outcome(client.get("/fhir/Nonsense", params={"name": "x"}), 404)
    outcome(client.get("/fhir/Patient", params={"birthdate": "not-a-date"}), 400)
    outcome(client.get("/fhir/Patient", params={"_count": "many"}), 400)
    outcome(client.get("/fhir/Patient", params={"_cursor": "nonsense"}), 400)


def test_unknown_parameters_lenient_or_strict(client):
    created(client, patient())
    r = client.get("/fhir/Patient", params={"shoe-size": "42"})
    assert r.status_code == 200
    match, note = r.json()["entry"]
    assert match["search"]["mode"] == "match" and note["search"]["mode"] == "outcome"
    assert note["resource"]["issue"][0]["expression"] == ["shoe-size"]
    assert "shoe-size" not in r.json()["link"][0]["url"]
    outcome(client.get("/fhir/Patient", params={"shoe-size": "42"},
                       headers={"Prefer": "handling=strict"}), 400)


def test_search_elements(client):
    created(client, patient(gender="female"))
    r = client.get("/fhir/Patient", params={"_elements": "gender"})
    (entry,) = r.json()["entry"]
    assert "_elements=gender" in r.json()["link"][0]["url"]
    assert set(entry["resource"]) == {"resourceType", "id", "meta", "gender"}
    assert any(t["code"] == "SUBSETTED" for t in entry["resource"]["meta"]["tag"])


def test_search_summary_true(client):
    created(client, patient(maritalStatus={"text": "single"}))
    (entry,) = client.get("/fhir/Patient", params={"_summary": "true"}).json()["entry"]
    assert "name" in entry["resource"] and "maritalStatus" not in entry["resource"]


def test_summary_count(client):
    for _ in range(3):
        created(client, patient())
    bundle = client.get("/fhir/Patient", params={"_summary": "count"}).json()
    assert bundle["total"] == 3 and "entry" not in bundle


def test_count_zero_answers_the_total_only(client):
    for _ in range(2):
        created(client, patient())
    for url in ("/fhir/Patient", "/fhir"):
        r = client.get(url, params={"_count": "0"})
        assert r.status_code == 200, r.text
        assert r.json()["total"] == 2 and "entry" not in r.json()


def test_elements_carry_into_next_links(client):
    for _ in range(3):
        created(client, patient(gender="male"))
    entries, pages = follow(client, f"{BASE}/Patient?_count=2&_elements=gender")
    assert pages == 2
    assert all(set(e["resource"]) == {"resourceType", "id", "meta", "gender"} for e in entries)
