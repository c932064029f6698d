"""FHIR search over HTTP: includes, sorting and paging links, strict and lenient handling,
errors naming the parameter (http://hl7.org/fhir/R4/search.html)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from tests.rest.helpers import BASE, created, observation, outcome, patient


def get(client, url, **kw):
    parts = urlsplit(url)
    r = client.get(parts.path + ("?" + parts.query if parts.query else ""), **kw)
    assert r.status_code == 200, r.text
    return r.json()


def link(bundle, relation):
    return next((x["url"] for x in bundle["link"] if x["relation"] == relation), None)


def test_include_and_revinclude_entries(client):
    org = created(client, {"resourceType": "Organization", "name": "Trạm Y tế xã Tân Phú"})
    a = created(client, patient(managingOrganization={"reference": f"Organization/{org['id']}"},
                                identifier="A1"))
    obs = created(client, observation(f"Patient/{a['id']}", 150))
    bundle = get(client, f"{BASE}/Patient?identifier=urn:songkhoe:test|A1"
                         "&_revinclude=Observation:subject&_include=Patient:organization")
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"]}
    assert modes == {("Patient", "match"), ("Observation", "include"), ("Organization", "include")}
    assert any(e["fullUrl"] == f"{BASE}/Observation/{obs['id']}" for e in bundle["entry"])
    self_url = link(bundle, "self")
    assert "_revinclude=Observation:subject" in self_url and "_include=Patient:organization" in self_url


def test_sort_and_paging_links_both_ways(client):
    made = [created(client, patient(family=f"Lê{n}", birthDate=f"19{60 + n}-01-01"))["id"]
            for n in range(7)]
    first = get(client, f"{BASE}/Patient?_sort=-birthdate&_count=3")
    assert [e["resource"]["id"] for e in first["entry"]] == made[::-1][:3]
    assert link(first, "previous") is None
    second = get(client, link(first, "next"))
    third = get(client, link(second, "next"))
    assert [e["resource"]["id"] for e in third["entry"]] == made[:1] and link(third, "next") is None
    back = get(client, link(third, "previous"))
    assert [e["resource"]["id"] for e in back["entry"]] == made[::-1][3:6]
    query = parse_qs(urlsplit(link(second, "next")).query)
    assert query["_sort"] == ["-birthdate"] and query["_count"] == ["3"] and "_cursor" in query


def test_strict_and_lenient_handling(client):
    created(client, patient(family="Hồ"))
    lenient = get(client, f"{BASE}/Patient?family=ho&name:fancy=x&_query=q",
                  headers={"Prefer": "handling=lenient"})
    notes = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert {i["expression"][0] for i in notes[0]["resource"]["issue"]} == {"name:fancy", "_query"}
    assert link(lenient, "self").endswith("/Patient?family=ho")
    for bad in ("name:fancy=x", "_query=q", "_include=Patient:nonsense", "_sort=shoe"):
        body = outcome(client.get(f"/fhir/Patient?{bad}", headers={"Prefer": "handling=strict"}),
                       400)
        assert body["issue"][0]["expression"] == [bad.split("=")[0]]


def test_wrong_values_are_400_naming_the_parameter(client):
    for query, name in (("birthdate=1960-13-01", "birthdate"), ("_count=-1", "_count"),
                        ("_total=maybe", "_total"), ("_summary=most", "_summary"),
                        ("_sort=birthdate&_cursor=abc", "_cursor"), ("identifier=a|b|c", "identifier"),
                        ("general-practitioner=Practitioner/", "general-practitioner"),
                        ("_has:Observation:patient", "_has:Observation:patient")):
        outcome(client.get(f"/fhir/Patient?{query}"), 400, expression=name)
    outcome(client.get("/fhir/Observation?value-quantity=high"), 400, expression="value-quantity")


def test_post_search_form_with_everything(client):
    a = created(client, patient(family="Phạm", gender="female"))
    created(client, observation(f"Patient/{a['id']}", 150))
    r = client.post("/fhir/Patient/_search",
                    data={"family": "pham", "_revinclude": "Observation:subject", "_total": "accurate"})
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["total"] == 1 and len(bundle["entry"]) == 2


def test_system_search_with_types_and_compartment(client):
    a = created(client, patient(family="A"))
    created(client, observation(f"Patient/{a['id']}", 150))
    created(client, {"resourceType": "Organization", "name": "X"})
    bundle = get(client, f"{BASE}?_type=Patient,Observation&_total=accurate")
    assert bundle["total"] == 2
    bundle = get(client, f"{BASE}/Patient/{a['id']}/Observation?value-quantity=gt140")
    assert len(bundle["entry"]) == 1
    bundle = get(client, f"{BASE}/Patient/{a['id']}/*?_summary=count")
    assert bundle["total"] == 2


def test_summary_and_elements_shape_matches_not_includes(client):
    a = created(client, patient(family="B", gender="male", maritalStatus={"text": "married"}))
    created(client, observation(f"Patient/{a['id']}", 120))
    bundle = get(client, f"{BASE}/Patient?_elements=gender&_revinclude=Observation:subject")
    match = next(e for e in bundle["entry"] if e["search"]["mode"] == "match")
    include = next(e for e in bundle["entry"] if e["search"]["mode"] == "include")
    assert set(match["resource"]) == {"resourceType", "id", "meta", "gender"}
    assert "valueQuantity" in include["resource"]
    assert get(client, f"{BASE}/Patient?_summary=count")["total"] == 1
