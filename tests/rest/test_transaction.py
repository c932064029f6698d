"""transaction Bundles (http://hl7.org/fhir/R4/http.html#transaction, #trules)."""

from __future__ import annotations

import base64
import uuid

import orjson
import pytest

from tests.rest.helpers import FHIR_JSON, created, observation, outcome, patient


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def tx(client, entries, kind="transaction", headers=None):
    bundle = {"resourceType": "Bundle", "type": kind, "entry": entries}
    return client.post("/fhir", json=bundle, headers={"content-type": FHIR_JSON,
                                                      **(headers or {})})


def post_entry(resource, full_url=None, **request):
    entry = {"resource": resource,
             "request": {"method": "POST", "url": resource["resourceType"], **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def total(client):
    """How many current resources of any type the server holds."""
    return client.get("/fhir", params={"_summary": "count"}).json()["total"]


def checkup_bundle():
    """Patient + Encounter + 15 Observations, linked by urn:uuid fullUrls."""
    p_urn, e_urn = urn(), urn()
    pat = patient(family="Đặng", identifier="CCCD-079")
    pat["text"] = {"status": "generated",
                   "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{e_urn}">lần khám'
                          "</a></div>"}
    enc = {"resourceType": "Encounter", "status": "finished",
           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                     "code": "AMB"},
           "subject": {"reference": p_urn}}
    entries = [post_entry(pat, p_urn), post_entry(enc, e_urn)]
    for i in range(15):
        obs = observation(p_urn, 100 + i, encounter={"reference": e_urn})
        if i == 0:  # references inside an extension and a contained resource
            obs["extension"] = [{"url": "http://example.org/fhir/StructureDefinition/seen-at",
                                 "valueReference": {"reference": e_urn}}]
            obs["contained"] = [{"resourceType": "Specimen", "id": "spec",
                                 "subject": {"reference": p_urn}}]
            obs["specimen"] = {"reference": "#spec"}
        entries.append(post_entry(obs, urn()))
    return entries, p_urn, e_urn


def test_transaction_with_urn_uuid_references_lands_whole(client):
    entries, _p_urn, _e_urn = checkup_bundle()
    r = tx(client, entries)
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "transaction-response"
    assert len(bundle["entry"]) == 17
    for e in bundle["entry"]:
        assert e["response"]["status"] == "201 Created"
        assert e["response"]["etag"] == 'W/"1"'
        assert e["response"]["lastModified"].endswith("Z")
        assert "resource" not in e  # not asked for
    locations = [e["response"]["location"] for e in bundle["entry"]]
    pid = locations[0].split("/")[1]
    eid = locations[1].split("/")[1]
    assert locations[0] == f"Patient/{pid}/_history/1"
    pat = client.get(f"/fhir/Patient/{pid}").json()
    assert f'href="Encounter/{eid}"' in pat["text"]["div"]
    assert client.get(f"/fhir/Encounter/{eid}").json()["subject"] == {"reference": f"Patient/{pid}"}
    observations = client.get(f"/fhir/Patient/{pid}/Observation", params={"_count": "50"}).json()
    assert len(observations["entry"]) == 15
    for entry in observations["entry"]:
        obs = entry["resource"]
        assert obs["subject"]["reference"] == f"Patient/{pid}"
        assert obs["encounter"]["reference"] == f"Encounter/{eid}"
    text = orjson.dumps([e["resource"] for e in observations["entry"]]).decode()
    assert "urn:uuid" not in text
    first = next(e["resource"] for e in observations["entry"] if "contained" in e["resource"])
    assert first["extension"][0]["valueReference"]["reference"] == f"Encounter/{eid}"
    assert first["contained"][0]["subject"]["reference"] == f"Patient/{pid}"
    assert first["specimen"]["reference"] == "#spec"  # local references stay local
    assert total(client) == 17


def test_transaction_with_one_invalid_entry_leaves_nothing(client):
    entries, _, _ = checkup_bundle()
    entries[9]["resource"]["status"] = "not-a-status"
    r = tx(client, entries)
    body = outcome(r, 400)
    exprs = [x for i in body["issue"] for x in i.get("expression", [])]
    assert any(x.startswith("Bundle.entry[9]") for x in exprs), body
    assert "Bundle.entry[9]" in body["issue"][0]["diagnostics"]
    assert total(client) == 0


def test_transaction_fails_late_and_still_leaves_nothing(client):
    """The failing entry runs after the others have been written (PUT after POSTs)."""
    entries, _, _ = checkup_bundle()
    existing = created(client, patient(family="Lý"))
    stale = {**existing, "gender": "male"}
    entries.append({"resource": stale, "request": {"method": "PUT",
                                                   "url": f"Patient/{existing['id']}",
                                                   "ifMatch": 'W/"9"'}})
    outcome(tx(client, entries), 412)
    assert total(client) == 1
    assert client.get(f"/fhir/Patient/{existing['id']}").headers["etag"] == 'W/"1"'


def test_processing_order_is_delete_post_put_get(client):
    old = created(client, patient(family="Cũ", identifier="OLD"))
    new_urn = urn()
    entries = [
        {"request": {"method": "GET", "url": "Patient?identifier=urn:songkhoe:test|NEW"}},
        {"resource": {**patient(identifier="NEW"), "id": "fixed-1", "gender": "male"},
         "request": {"method": "PUT", "url": "Patient/fixed-1"}},
        post_entry(patient(family="Mới", identifier="NEW"), new_urn),
        {"request": {"method": "DELETE", "url": f"Patient/{old['id']}"}},
    ]
    r = tx(client, entries)
    assert r.status_code == 200, r.text
    resp = r.json()["entry"]
    # answers are in Bundle order
    assert resp[0]["response"]["status"] == "200 OK"
    search = resp[0]["resource"]
    assert search["type"] == "searchset"
    # the GET ran last: it sees both the POSTed and the PUT patient
    assert sorted(e["resource"]["name"][0]["family"] for e in search["entry"]) == ["Mới",
                                                                                 "Nguyễn"]
    assert resp[1]["response"]["status"] == "201 Created"
    assert resp[2]["response"]["status"] == "201 Created"
    assert resp[3]["response"]["status"] == "200 OK"
    outcome(client.get(f"/fhir/Patient/{old['id']}"), 410)


def test_conditional_references(client):
    pat = created(client, patient(identifier="CCCD-1"))
    obs = observation("Patient?identifier=urn:songkhoe:test|CCCD-1")
    r = tx(client, [post_entry(obs)], headers={"Prefer": "return=representation"})
    assert r.status_code == 200, r.text
    stored = r.json()["entry"][0]["resource"]
    assert stored["subject"]["reference"] == f"Patient/{pat['id']}"
    # unmatched and ambiguous conditional references fail the transaction
    obs = observation("Patient?identifier=urn:songkhoe:test|nobody")
    outcome(tx(client, [post_entry(obs)]), 412, expression="Bundle.entry[0].resource.subject.reference")
    created(client, patient(identifier="CCCD-1"))
    obs = observation("Patient?identifier=urn:songkhoe:test|CCCD-1")
    outcome(tx(client, [post_entry(patient()), post_entry(obs)]), 412)
    assert total(client) == 3  # two patients and the first observation


def test_if_none_exist_entry_resolves_to_the_existing_resource(client):
    pat = created(client, patient(identifier="CCCD-2"))
    p_urn = urn()
    entries = [post_entry(patient(identifier="CCCD-2"), p_urn,
                          ifNoneExist="identifier=urn:songkhoe:test|CCCD-2"),
               post_entry(observation(p_urn))]
    r = tx(client, entries)
    assert r.status_code == 200, r.text
    resp = r.json()["entry"]
    assert resp[0]["response"]["status"] == "200 OK"
    assert resp[0]["response"]["location"] == f"Patient/{pat['id']}/_history/1"
    oid = resp[1]["response"]["location"].split("/")[1]
    obs = client.get(f"/fhir/Observation/{oid}").json()
    assert obs["subject"]["reference"] == f"Patient/{pat['id']}"
    assert total(client) == 2


def test_conditional_update_entry_with_urn(client):
    pat = created(client, patient(identifier="CCCD-3"))
    p_urn = urn()
    entries = [post_entry(observation(p_urn)),
               {"fullUrl": p_urn, "resource": patient(identifier="CCCD-3", gender="female"),
                "request": {"method": "PUT",
                            "url": "Patient?identifier=urn:songkhoe:test|CCCD-3"}}]
    r = tx(client, entries)
    assert r.status_code == 200, r.text
    resp = r.json()["entry"]
    assert resp[1]["response"]["location"] == f"Patient/{pat['id']}/_history/2"
    oid = resp[0]["response"]["location"].split("/")[1]
    assert client.get(f"/fhir/Observation/{oid}").json()["subject"]["reference"] == \
        f"Patient/{pat['id']}"


def test_patch_entry_and_delete_conditional(client):
    pat = created(client, patient(identifier="CCCD-4"))
    gone = created(client, patient(identifier="CCCD-5"))
    ops = [{"op": "add", "path": "/active", "value": True}]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(orjson.dumps(ops)).decode()}
    entries = [{"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{pat['id']}"}},
               {"request": {"method": "DELETE",
                            "url": "Patient?identifier=urn:songkhoe:test|CCCD-5"}}]
    r = tx(client, entries)
    assert r.status_code == 200, r.text
    assert client.get(f"/fhir/Patient/{pat['id']}").json()["active"] is True
    outcome(client.get(f"/fhir/Patient/{gone['id']}"), 410)


def test_same_resource_twice_fails(client):
    entries = [{"resource": {**patient(), "id": "twice"},
                "request": {"method": "PUT", "url": "Patient/twice"}},
               {"resource": {**patient(), "id": "twice", "gender": "male"},
                "request": {"method": "PUT", "url": "Patient/twice"}}]
    outcome(tx(client, entries), 400, text="also written by Bundle.entry[0]")
    assert total(client) == 0


def test_dangling_urn_reference_fails(client):
    outcome(tx(client, [post_entry(observation(urn()))]), 400,
            expression="Bundle.entry[0].resource.subject.reference")
    assert total(client) == 0


def test_prefer_representation_and_outcome(client):
    p_urn = urn()
    r = tx(client, [post_entry(patient(), p_urn), post_entry(observation(p_urn))],
           headers={"Prefer": "return=representation"})
    resp = r.json()["entry"]
    pid = resp[0]["resource"]["id"]
    assert resp[0]["fullUrl"].endswith(f"/Patient/{pid}")
    assert resp[1]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    r = tx(client, [post_entry(patient())], headers={"Prefer": "return=OperationOutcome"})
    assert r.json()["entry"][0]["response"]["outcome"]["resourceType"] == "OperationOutcome"


def test_empty_transaction(client):
    r = tx(client, [])
    assert r.status_code == 200 and r.json()["type"] == "transaction-response"


@pytest.mark.parametrize("bundle,status,expression", [
    ({"resourceType": "Bundle", "type": "collection"}, 400, "Bundle.type"),
    ({"resourceType": "Patient"}, 400, "resourceType"),
    ({"resourceType": "Bundle", "type": "transaction", "entry": {}}, 400, "Bundle.entry"),
    ({"resourceType": "Bundle", "type": "transaction", "entry": [7]}, 400, "Bundle.entry[0]"),
    ({"resourceType": "Bundle", "type": "transaction",
      "entry": [{"resource": {"resourceType": "Patient"}}]}, 400, "Bundle.entry[0].request"),
    ({"resourceType": "Bundle", "type": "transaction",
      "entry": [{"request": {"method": "FETCH", "url": "Patient"}}]}, 400,
     "Bundle.entry[0].request.method"),
    ({"resourceType": "Bundle", "type": "transaction",
      "entry": [{"request": {"method": "GET", "url": "Patient"}},
                {"request": {"method": "GET"}}]}, 400, "Bundle.entry[1].request.url"),
    ({"resourceType": "Bundle", "type": "transaction",
      "entry": [{"request": {"method": "POST", "url": "Patient"}}]}, 400,
     "Bundle.entry[0].resource"),
    ({"resourceType": "Bundle", "type": "transaction",
      "entry": [{"resource": {"resourceType": "Patient"},
                 "request": {"method": "POST", "url": "Nonsense"}}]}, 404,
     "Bundle.entry[0].request.url"),
    ({"resourceType": "Bundle", "type": "transaction",
      "entry": [{"resource": {"resourceType": "Patient"},
                 "request": {"method": "POST", "url": "http://elsewhere.org/fhir/Patient"}}]},
     400, "Bundle.entry[0].request.url"),
    ({"resourceType": "Bundle", "type": "transaction",
      "entry": [{"resource": {"resourceType": "Observation"},
                 "request": {"method": "POST", "url": "Patient"}}]}, 400,
     "Bundle.entry[0].resource.resourceType"),
    ({"resourceType": "Bundle", "type": "transaction",
      "entry": [{"resource": {"resourceType": "Binary", "contentType": "text/plain"},
                 "request": {"method": "PATCH", "url": "Patient/1"}}]}, 400,
     "Bundle.entry[0].resource.contentType"),
    ({"resourceType": "Bundle", "type": "transaction",
      "entry": [{"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient"},
                 "request": {"method": "POST", "url": "Patient"}},
                {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient"},
                 "request": {"method": "POST", "url": "Patient"}}]}, 400,
     "Bundle.entry[1].fullUrl"),
    ({"resourceType": "Bundle", "type": "transaction",
      "entry": [{"resource": {"resourceType": "Bundle", "type": "batch"},
                 "request": {"method": "POST", "url": "/"}}]}, 400,
     "Bundle.entry[0].request.url"),
])
def test_bundle_shape_errors(client, bundle, status, expression):
    r = client.post("/fhir", json=bundle, headers={"content-type": FHIR_JSON})
    outcome(r, status, expression=expression)
    assert total(client) == 0


def test_absolute_urls_on_this_server_are_accepted(client):
    entries = [{"resource": patient(),
                "request": {"method": "POST", "url": "http://testserver/fhir/Patient"}}]
    assert tx(client, entries).status_code == 200
    assert total(client) == 1
