"""``$viewdefinition-run`` (SQL on FHIR v2, OperationDefinition ViewDefinitionRun) over HTTP on
both backends: each output format and its media type, the parameters and filters, who sees
which rows, errors, audit, and runs of several chunks."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from starlette.testclient import TestClient

from songkhoe.auth import Auth, ScopeSet
from songkhoe.auth.identities import ROLES
from songkhoe.fhir.outcome import FhirError
from songkhoe.rest import create_app
from songkhoe.rest import viewdefinition_run
from songkhoe.rest.viewdefinition_run import ViewRunConfig
from tests.rest.helpers import outcome

FHIR_JSON = "application/fhir+json"
RUN = "/fhir/$viewdefinition-run"
LOINC = "http://loinc.org"
ORGS = [("moh", None), ("so-04", "moh"), ("so-08", "moh"), ("tyt-00004", "so-04"),
        ("tyt-00008", "so-08")]
HOME = {"a1": "tyt-00004", "a2": "tyt-00004", "a3": "tyt-00004", "b1": "tyt-00008",
        "b2": "tyt-00008"}

OBSERVATIONS = {"resourceType": "ViewDefinition", "name": "blood_pressure", "status": "active",
                "resource": "Observation", "select": [{"column": [
                    {"name": "id", "path": "getResourceKey()"},
                    {"name": "patient", "path": "subject.getReferenceKey(Patient)"},
                    {"name": "code", "path": "code.coding.code"},
                    {"name": "value", "path": "valueQuantity.value", "type": "decimal"}]}]}
PATIENTS = {"resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
            "select": [{"column": [{"name": "id", "path": "getResourceKey()"},
                                   {"name": "family", "path": "name.family"},
                                   {"name": "given", "path": "name.given", "collection": True},
                                   {"name": "active", "path": "active", "type": "boolean"}]}]}
ORGANIZATIONS = {"resourceType": "ViewDefinition", "resource": "Organization", "status": "active",
                 "select": [{"column": [{"name": "id", "path": "getResourceKey()"}]}]}


def seed(store: Any) -> None:
    """Five Organizations, five people in two communes (two Observations each) and a Group of
    a1, b1 and the inactive a2."""
    for oid, parent in ORGS:
        body: dict[str, Any] = {"resourceType": "Organization", "id": oid, "name": oid}
        if parent:
            body["partOf"] = {"reference": f"Organization/{parent}"}
        store.update("Organization", oid, body)
    for n, (pid, org) in enumerate(HOME.items()):
        store.update("Patient", pid, {"resourceType": "Patient", "id": pid, "active": True,
                                      "name": [{"family": "Nguyễn", "given": ["Thị", pid]}],
                                      "managingOrganization": {"reference": f"Organization/{org}"}})
        for code, value in (("8480-6", 120 + n), ("8462-4", 80 + n)):
            oid = f"{pid}-{code}"
            store.update("Observation", oid, {
                "resourceType": "Observation", "id": oid, "status": "final",
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "subject": {"reference": f"Patient/{pid}"},
                "valueQuantity": {"value": value, "unit": "mm[Hg]",
                                  "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}})
    store.update("Group", "g1", {"resourceType": "Group", "id": "g1", "type": "person",
                                 "actual": True, "member": [
                                     {"entity": {"reference": "Patient/a1"}},
                                     {"entity": {"reference": "Patient/b1"}},
                                     {"entity": {"reference": "Patient/a2"}, "inactive": True}]})


def issue(auth: Auth, subject: str, role: str, org: str | None = None, *,
          scope: str | None = None, **extra: Any) -> str:
    token, _ = auth.tokens.issue(subject=subject, kind="user", role=role, org=org,
                                 scope=ScopeSet.parse(scope or ROLES[role]), client_id=None,
                                 extra=extra)
    return token


@pytest.fixture
def tokens(auth: Auth) -> dict[str, str]:
    return {"admin": issue(auth, "test-admin", "administrator"),
            "doctor": issue(auth, "bacsi", "doctor", "tyt-00004"),
            "doctor8": issue(auth, "bacsi8", "doctor", "tyt-00008"),
            "researcher": issue(auth, "nghien", "researcher", "moh")}


@pytest.fixture
def temp(tmp_path: Path) -> Path:
    folder = tmp_path / "runs"
    folder.mkdir()
    return folder


@pytest.fixture
def http(store: Any, auth: Auth, temp: Path) -> Iterator[TestClient]:
    seed(store)
    app = create_app(store, auth=auth, view_run=ViewRunConfig(directory=temp, chunk=3, page=2))
    with TestClient(app, raise_server_exceptions=True) as client:
        yield client


def parameters(view: dict[str, Any], *more: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters",
            "parameter": [{"name": "viewResource", "resource": view}, *more]}


def run(http: TestClient, token: str, body: dict[str, Any], query: str = "",
        url: str = RUN, **headers: str) -> Any:
    return http.post(f"{url}{query}", content=orjson.dumps(body),
                     headers={"Authorization": f"Bearer {token}", "content-type": FHIR_JSON,
                              **headers})


def ndjson(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines()]


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(str(r["id"]) for r in rows)


ALL_OBSERVATIONS = sorted(f"{p}-{c}" for p in HOME for c in ("8480-6", "8462-4"))


# --- formats -----------------------------------------------------------------------------------


def test_each_format_has_its_content_and_media_type(http, tokens, temp):
    admin = tokens["admin"]
    r = run(http, admin, parameters(OBSERVATIONS), "?_format=csv")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8; header=present"
    lines = r.content.split(b"\r\n")
    assert lines[0] == b"id,patient,code,value" and lines[-1] == b""  # RFC 4180: CRLF
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert ids(rows) == ALL_OBSERVATIONS
    assert {r["id"]: (r["patient"], r["code"], r["value"]) for r in rows}["b1-8480-6"] == \
        ("b1", "8480-6", "123")
    r = run(http, admin, parameters(OBSERVATIONS, {"name": "header", "valueBoolean": False}),
            "?_format=csv")
    assert r.headers["content-type"] == "text/csv; charset=utf-8; header=absent"
    assert not r.text.startswith("id,") and len(r.text.splitlines()) == 10

    r = run(http, admin, parameters(PATIENTS, {"name": "_format", "valueCode": "ndjson"}))
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    assert r.text.endswith("\n")
    found = {row["id"]: row for row in ndjson(r.text)}
    assert found["a2"] == {"id": "a2", "family": "Nguyễn", "given": ["Thị", "a2"],
                           "active": True}
    assert sorted(found) == sorted(HOME)

    r = run(http, admin, parameters(OBSERVATIONS), "?_format=json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert ids(r.json()) == ALL_OBSERVATIONS
    assert {"id": "a1-8462-4", "patient": "a1", "code": "8462-4", "value": 80.0} in r.json()

    r = run(http, admin, parameters(PATIENTS), "?_format=parquet")
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
    parquet = pq.ParquetFile(io.BytesIO(r.content))
    assert parquet.metadata.num_row_groups == 2  # one per chunk (4 resources, then 1)
    table = parquet.read()
    assert table.column_names == ["id", "family", "given", "active"]
    given = table.schema.field("given").type
    assert pa.types.is_list(given) and given.value_type == pa.string()
    assert table.schema.field("active").type == pa.bool_()
    assert sorted(table.column("id").to_pylist()) == sorted(HOME)
    assert list(temp.iterdir()) == []  # every run's temporary folder is gone


def test_format_from_accept_and_empty_results(http, tokens):
    admin = tokens["admin"]
    r = run(http, admin, parameters(OBSERVATIONS), accept="text/csv")
    assert r.headers["content-type"].startswith("text/csv") and len(r.text.splitlines()) == 11
    r = run(http, admin, parameters(OBSERVATIONS), "?_format=json",
            accept="application/x-ndjson")  # _format first
    assert r.headers["content-type"] == "application/json"
    empty = {**OBSERVATIONS, "where": [{"path": "status = 'cancelled'"}]}
    assert run(http, admin, parameters(empty), "?_format=json").json() == []
    assert run(http, admin, parameters(empty), "?_format=csv").text == "id,patient,code,value\r\n"
    assert run(http, admin, parameters(empty), "?_format=ndjson").text == ""
    table = pq.read_table(io.BytesIO(run(http, admin, parameters(empty),
                                         "?_format=parquet").content))
    assert table.num_rows == 0 and table.column_names == ["id", "patient", "code", "value"]
    # chunks of 4 Patients, then 1: rows only in the second
    last = {**PATIENTS, "where": [{"path": "id = 'b2'"}]}
    assert ids(run(http, admin, parameters(last), "?_format=json").json()) == ["b2"]
    assert run(http, admin, parameters(last), "?_format=csv").text.count("\r\n") == 2


# --- parameters and filters ------------------------------------------------------------------


def test_patient_group_since_and_limit(http, tokens, store):
    admin = tokens["admin"]

    def observed(*more: dict[str, Any], query: str = "?_format=ndjson") -> list[str]:
        r = run(http, admin, parameters(OBSERVATIONS, *more), query)
        assert r.status_code == 200, r.text
        return ids(ndjson(r.text))

    patient = {"name": "patient", "valueReference": {"reference": "Patient/a1"}}
    assert observed(patient) == ["a1-8462-4", "a1-8480-6"]
    group = {"name": "group", "valueReference": {"reference": "Group/g1"}}
    assert observed(group) == ["a1-8462-4", "a1-8480-6", "b1-8462-4", "b1-8480-6"]
    assert observed(group, patient) == ["a1-8462-4", "a1-8480-6"]
    assert len(observed({"name": "_limit", "valueInteger": 4})) == 4
    assert observed({"name": "_limit", "valueInteger": 0}) == []
    since = store.read("Group", "g1").resource["meta"]["lastUpdated"]  # the last one written
    assert observed({"name": "_since", "valueInstant": since}) == []
    store.update("Observation", "a3-8480-6", {**store.read("Observation", "a3-8480-6").resource,
                                              "status": "amended"})
    assert observed({"name": "_since", "valueInstant": since}) == ["a3-8480-6"]
    assert observed(group, {"name": "_since", "valueInstant": since}) == []
    assert observed(query=f"?_format=ndjson&patient=Patient/a3&_since={since}") == ["a3-8480-6"]
    # GET: simple parameters only, so a view must be named (viewReference)
    r = http.get(f"{RUN}?_format=csv&patient=Patient/a1",
                 headers={"Authorization": f"Bearer {admin}"})
    outcome(r, 400, code="required", expression="viewResource")


def test_group_members_are_read_in_blocks_and_a_shared_record_comes_once(http, tokens, store,
                                                                          monkeypatch):
    """The people of a Group are read from their compartments block by block; an Observation
    in two members' compartments (subject and performer, R4 compartment) is one row."""
    store.update("Observation", "shared", {
        "resourceType": "Observation", "id": "shared", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
        "subject": {"reference": "Patient/a1"}, "performer": [{"reference": "Patient/b1"}],
        "valueQuantity": {"value": 130, "unit": "mm[Hg]"}})
    group = {"name": "group", "valueReference": {"reference": "Group/g1"}}
    expected = ["a1-8462-4", "a1-8480-6", "b1-8462-4", "b1-8480-6", "shared"]
    for block in (1, 2, 500):
        monkeypatch.setattr(viewdefinition_run, "PEOPLE_BLOCK", block)
        r = run(http, tokens["admin"], parameters(OBSERVATIONS, group), "?_format=ndjson")
        assert r.status_code == 200, r.text
        assert ids(ndjson(r.text)) == expected, block
    store.delete("Observation", "shared")
    r = run(http, tokens["admin"], parameters(OBSERVATIONS, group), "?_format=ndjson")
    assert ids(ndjson(r.text)) == expected[:-1]


def test_a_view_of_the_servers_library_is_named_by_reference(http, tokens, store):
    """viewReference names one of the warehouse's views, by ViewDefinition/[name] (GET or
    POST) or canonical url, and runs like the same view sent inline."""
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    view = viewdefinition_run.library()["patient"]
    inline = run(http, tokens["admin"], parameters(view), "?_format=csv")
    assert inline.status_code == 200, inline.text
    by_name = http.get(f"{RUN}?viewReference=ViewDefinition/patient&_format=csv", headers=admin)
    by_url = run(http, tokens["admin"], {"resourceType": "Parameters", "parameter": [
        {"name": "viewReference", "valueReference": {"reference": view["url"]}}]},
        "?_format=csv")
    rows = list(csv.DictReader(io.StringIO(by_name.text)))
    assert by_name.status_code == 200 and by_name.text == by_url.text == inline.text
    assert sorted(r["id"] for r in rows) == sorted(HOME)
    worker = http.get(f"{RUN}?viewReference=ViewDefinition/patient&_format=csv",
                      headers={"Authorization": f"Bearer {tokens['doctor']}"})
    assert worker.status_code == 200
    assert len(list(csv.DictReader(io.StringIO(worker.text)))) < len(rows)


def test_refused_parameters_and_methods(http, tokens):
    admin = tokens["admin"]
    auth = {"Authorization": f"Bearer {admin}"}
    outcome(run(http, admin, parameters(OBSERVATIONS), "?_format=xml"), 400,
            code="not-supported", expression="_format")
    outcome(run(http, admin, parameters(OBSERVATIONS)), 400, code="required",
            expression="_format")
    outcome(http.get(f"{RUN}?viewReference=ViewDefinition/v1&_format=csv", headers=auth), 400,
            code="not-found", expression="viewReference")
    outcome(run(http, admin, parameters(OBSERVATIONS, {
        "name": "viewReference", "valueReference": {"reference": "ViewDefinition/patient"}}),
        "?_format=csv"), 400, code="invalid", expression="viewResource")
    for name, value in (("source", {"valueString": "s3://bucket"}),
                        ("_count", {"valueInteger": 3}),
                        ("_limit", {"valueInteger": -1}),
                        ("patient", {"valueReference": {"reference": "Observation/x"}}),
                        ("patient", {"valueReference": {"reference": "Patient/nobody"}}),
                        ("group", {"valueReference": {"reference": "Group/nothing"}})):
        r = run(http, admin, parameters(OBSERVATIONS, {"name": name, **value}), "?_format=csv")
        outcome(r, 400, expression=name)
    twice = parameters(OBSERVATIONS, {"name": "_limit", "valueInteger": 1},
                       {"name": "_limit", "valueInteger": 2})
    outcome(run(http, admin, twice, "?_format=csv"), 400, text="once")
    outcome(run(http, admin, parameters(ORGANIZATIONS, {
        "name": "patient", "valueReference": {"reference": "Patient/a1"}}), "?_format=csv"),
        400, expression="viewResource.resource")
    outcome(run(http, admin, parameters({**OBSERVATIONS, "resource": "AuditEvent"}),
                "?_format=csv"), 400, code="not-supported")
    outcome(http.put(f"{RUN}?_format=csv", headers=auth), 405)
    outcome(http.post(f"{RUN}?_format=csv", content=b"{", headers={
        **auth, "content-type": FHIR_JSON}), 400, code="structure")
    outcome(http.post(f"{RUN}?_format=csv", content=b"a=1", headers={
        **auth, "content-type": "application/x-www-form-urlencoded"}), 415)
    # the type level of R6 mode answers as the system level
    r = run(http, admin, parameters(OBSERVATIONS), "?_format=ndjson",
            url="/fhir/ViewDefinition/$viewdefinition-run")
    assert r.status_code == 200 and ids(ndjson(r.text)) == ALL_OBSERVATIONS


def test_inline_resources_are_run_without_reading_the_store(http, tokens):
    given = [{"resourceType": "Patient", "id": "x1", "name": [{"family": "Trần",
                                                              "given": ["Văn"]}]},
             {"resourceType": "Observation", "id": "o1", "status": "final",
              "code": {"text": "x"}}]
    body = parameters(PATIENTS, *({"name": "resource", "resource": r} for r in given))
    r = run(http, tokens["researcher"], body, "?_format=ndjson")
    assert r.status_code == 200, r.text
    assert ndjson(r.text) == [{"id": "x1", "family": "Trần", "given": ["Văn"], "active": None}]
    body["parameter"].append({"name": "patient", "valueReference": {"reference": "Patient/a1"}})
    outcome(run(http, tokens["admin"], body, "?_format=csv"), 400, expression="resource")


# --- errors ------------------------------------------------------------------------------------


def test_invalid_view_and_evaluation_error_are_422_with_the_element(http, tokens, store, temp):
    admin = tokens["admin"]
    bad = {**PATIENTS, "select": [{"column": [{"name": "1id", "path": "id"}]}]}
    outcome(run(http, admin, parameters(bad), "?_format=csv"), 422, code="invalid",
            expression="viewResource.select[0].column[0].name")
    outcome(run(http, admin, parameters({**PATIENTS, "resource": "NotAType"}), "?_format=csv"),
            422, expression="viewResource.resource")
    outcome(run(http, admin, {"resourceType": "Parameters", "parameter": [
        {"name": "viewResource", "valueString": "Patient"}]}, "?_format=csv"), 400,
        expression="viewResource")
    several = {**PATIENTS, "select": [{"column": [{"name": "given", "path": "name.given"}]}]}
    outcome(run(http, admin, parameters(several), "?_format=csv"), 422, code="processing",
            expression="viewResource.select[0].column[0].path", text="Patient/a1")
    assert list(temp.iterdir()) == []


def test_an_error_in_a_later_chunk_cuts_the_answer_short(http, tokens, auth, store, temp):
    store.update("Patient", "c9", {"resourceType": "Patient", "id": "c9",
                                   "name": [{"family": "Lê"}, {"family": "Lý"}],
                                   "managingOrganization": {"reference": "Organization/moh"}})
    family = {**PATIENTS, "select": [{"column": [{"name": "family", "path": "name.family"}]}]}
    # chunks of 3 resources or more, read in pages of 2: a1 a2 a3 b1, then b2 and c9, whose
    # two family names stop the run
    with pytest.raises(FhirError) as caught:  # the first chunk went out with a 200
        run(http, tokens["admin"], parameters(family), "?_format=ndjson")
    assert caught.value.status == 422
    auth.audit.flush()
    ended = [e["outcomeDesc"] for e in auth.audit.entries()
             if "$viewdefinition-run failed" in e.get("outcomeDesc", "")]
    assert len(ended) == 1 and "failed after 4 rows" in ended[0], ended
    assert "Patient/c9" in ended[0]
    assert list(temp.iterdir()) == []


# --- who sees what ----------------------------------------------------------------------------


def test_a_commune_worker_sees_only_their_communes_rows(http, tokens):
    doctor = tokens["doctor"]
    r = run(http, doctor, parameters(OBSERVATIONS), "?_format=ndjson")
    rows = ndjson(r.text)
    assert {row["patient"] for row in rows} == {"a1", "a2", "a3"} and len(rows) == 6
    group = {"name": "group", "valueReference": {"reference": "Group/g1"}}
    rows = ndjson(run(http, doctor, parameters(OBSERVATIONS, group), "?_format=ndjson").text)
    assert {row["patient"] for row in rows} == {"a1"}  # b1 is another commune's
    hidden = {"name": "patient", "valueReference": {"reference": "Patient/b1"}}
    outcome(run(http, doctor, parameters(OBSERVATIONS, hidden), "?_format=csv"), 400,
            code="not-found", expression="patient")
    r = run(http, tokens["doctor8"], parameters(PATIENTS), "?_format=json")
    assert ids(r.json()) == ["b1", "b2"]


def test_scopes_researchers_research_purpose_and_break_glass(http, tokens, auth, store):
    narrow = issue(auth, "bacsi", "doctor", "tyt-00004", scope="user/Observation.rs")
    outcome(run(http, narrow, parameters(PATIENTS), "?_format=csv"), 403, code="forbidden")
    assert run(http, narrow, parameters(OBSERVATIONS), "?_format=csv").status_code == 200
    researcher = tokens["researcher"]
    outcome(run(http, researcher, parameters(PATIENTS), "?_format=csv"), 403,
            text="researcher reads no identified record")
    r = run(http, researcher, parameters(ORGANIZATIONS), "?_format=json")
    assert ids(r.json()) == sorted(o for o, _ in ORGS)
    store.update("Consent", "c-a1", {
        "resourceType": "Consent", "id": "c-a1", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "research"}]},
        "category": [{"coding": [{"system": LOINC, "code": "57016-8"}]}],
        "patient": {"reference": "Patient/a1"}, "dateTime": "2024-01-01",
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                   "code": "OPTIN"}]},
        "provision": {"type": "permit", "purpose": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}]}})
    study = issue(auth, "quanly", "programme_manager", "so-04", purpose="HRESCH")
    r = run(http, study, parameters(OBSERVATIONS), "?_format=ndjson")
    assert {row["patient"] for row in ndjson(r.text)} == {"a1"}
    a2 = {"name": "patient", "valueReference": {"reference": "Patient/a2"}}
    assert run(http, study, parameters(OBSERVATIONS, a2), "?_format=ndjson").text == ""
    glass = issue(auth, "bacsi", "doctor", "tyt-00004", purpose="ETREAT", btg=True)
    outcome(run(http, glass, parameters(OBSERVATIONS), "?_format=csv"), 403,
            text="break-the-glass")
    r = http.post(f"{RUN}?_format=csv", content=orjson.dumps(parameters(OBSERVATIONS)),
                  headers={"content-type": FHIR_JSON})
    assert r.status_code == 401


# --- audit, discovery ----------------------------------------------------------------------


def test_every_run_is_audited(http, tokens, auth):
    r = run(http, tokens["doctor"], parameters(OBSERVATIONS), "?_format=csv")
    assert r.status_code == 200
    auth.audit.flush()
    entries = [e for e in auth.audit.entries() if "viewdefinition-run" in
               e["entity"][0]["what"].get("display", "")]
    assert [e["outcomeDesc"] for e in entries] == [
        "HTTP 200: $viewdefinition-run: a view of Observation as csv",
        "HTTP 200: $viewdefinition-run complete: 6 rows from 6 resources"]
    assert entries[1]["subtype"][0]["code"] == "operation"
    assert {e["agent"][0]["who"]["identifier"]["value"] for e in entries} == {"bacsi"}
    assert auth.audit.verify() is None


def test_capability_statement_lists_the_operation(http):
    operations = http.get("/fhir/metadata").json()["rest"][0]["operation"]
    assert {"name": "viewdefinition-run",
            "definition": "http://sql-on-fhir.org/OperationDefinition/$viewdefinition-run"} \
        .items() <= operations[0].items()
