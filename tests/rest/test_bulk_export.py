"""Bulk Data export (Bulk Data Access IG 2.0.0, http://hl7.org/fhir/uv/bulkdata/STU2/export.html):
kick-off at system, Patient and Group level, status polling, the manifest, NDJSON files,
cancellation, access, audit, and jobs that outlive a server process — on both backends."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.testclient import TestClient

from songkhoe.auth import Auth, ScopeSet
from songkhoe.auth.identities import ROLES
from songkhoe.fhir.primitives import check_instant
from songkhoe.rest import create_app
from songkhoe.rest.export_worker import (
    ExportConfig,
    ExportWorker,
    access_from_json,
    access_json,
    default_directory,
)
from songkhoe.store.jobs import COMPLETED, RUNNING, Jobs, now_us
from tests.rest.helpers import outcome
from tests.server import ServerProcess

FHIR_JSON = "application/fhir+json"
ASYNC = {"Accept": FHIR_JSON, "Prefer": "respond-async"}
LOINC = "http://loinc.org"
ORGS = [("moh", None), ("so-04", "moh"), ("so-08", "moh"), ("tyt-00004", "so-04"),
        ("tyt-00008", "so-08")]
HOME = {"a1": "tyt-00004", "a2": "tyt-00004", "a3": "tyt-00004", "b1": "tyt-00008",
        "b2": "tyt-00008"}


# --- the world and its callers ---------------------------------------------------------------


def _obs(oid: str, pid: str, code: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "subject": {"reference": f"Patient/{pid}"},
            "valueQuantity": {"value": 120, "unit": "mm[Hg]",
                              "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}


def seed(store: Any) -> None:
    """Five Organizations, five people in two communes (two Observations and an Encounter
    each), a Practitioner and a Group of a1, b1 and the inactive a2."""
    for oid, parent in ORGS:
        body: dict[str, Any] = {"resourceType": "Organization", "id": oid, "name": oid}
        if parent:
            body["partOf"] = {"reference": f"Organization/{parent}"}
        store.update("Organization", oid, body)
    store.update("Practitioner", "pr1", {"resourceType": "Practitioner", "id": "pr1"})
    for pid, org in HOME.items():
        store.update("Patient", pid, {"resourceType": "Patient", "id": pid,
                                      "name": [{"family": "Nguyễn", "given": [pid]}],
                                      "managingOrganization": {"reference": f"Organization/{org}"}})
        store.update("Observation", f"{pid}-sbp", _obs(f"{pid}-sbp", pid, "8480-6"))
        store.update("Observation", f"{pid}-dbp", _obs(f"{pid}-dbp", pid, "8462-4"))
        store.update("Encounter", f"{pid}-e", {"resourceType": "Encounter", "id": f"{pid}-e",
                                               "status": "finished", "class": {"code": "AMB"},
                                               "subject": {"reference": f"Patient/{pid}"}})
    store.update("Group", "g1", {"resourceType": "Group", "id": "g1", "type": "person",
                                 "actual": True, "member": [
                                     {"entity": {"reference": "Patient/a1"}},
                                     {"entity": {"reference": "Patient/b1"}},
                                     {"entity": {"reference": "Patient/a2"}, "inactive": True}]})


def issue(auth: Auth, subject: str, role: str, org: str | None = None, *,
          scope: str | None = None, kind: str = "user", **extra: Any) -> str:
    token, _ = auth.tokens.issue(subject=subject, kind=kind, role=role, org=org,
                                 scope=ScopeSet.parse(scope or ROLES[role]), client_id=None,
                                 extra=extra)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(auth: Auth) -> dict[str, str]:
    return {"admin": issue(auth, "test-admin", "administrator"),
            "doctor": issue(auth, "bacsi", "doctor", "tyt-00004"),
            "doctor8": issue(auth, "bacsi8", "doctor", "tyt-00008"),
            "researcher": issue(auth, "nghien", "researcher", "moh"),
            "system": issue(auth, "lake", "system", None, kind="system",
                            scope="system/*.rs")}


@pytest.fixture
def serve(store: Any, auth: Auth, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """Start an app with export on (``serve(**config)``), seeded; closed after the test."""
    clients: list[TestClient] = []
    seed(store)

    def start(**config: Any) -> TestClient:
        conf = ExportConfig(tmp_path / "exports", **{"file_resources": 2, "poll": 0.05,
                                                        **config})
        client = TestClient(create_app(store, auth=auth, export=conf),
                            raise_server_exceptions=True)
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def http(serve: Callable[..., TestClient]) -> TestClient:
    return serve()


def kick(http: Any, url: str, token: str, **more: Any) -> str:
    """Start an export; the status URL."""
    headers = {**ASYNC, **bearer(token), **more.pop("headers", {})}
    r = http.request(more.pop("method", "GET"), url, headers=headers, **more)
    assert r.status_code == 202, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    return str(r.headers["content-location"])


def wait(http: Any, status: str, token: str, deadline: float = 60) -> httpx.Response:
    """Poll the status URL until the job is no longer in progress."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        r = http.get(status, headers=bearer(token))
        if r.status_code != 202:
            return r
        assert r.headers["retry-after"].isdigit() and r.headers["x-progress"]
        time.sleep(0.02)
    raise AssertionError(f"the export at {status} did not finish within {deadline} s")


def done(http: Any, status: str, token: str) -> dict[str, Any]:
    r = wait(http, status, token)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["expires"].endswith(" GMT")
    return dict(r.json())


def files(http: Any, manifest: dict[str, Any], token: str) -> dict[str, list[bytes]]:
    """Every output file's lines, by type (each file holds one type)."""
    out: dict[str, list[bytes]] = {}
    for item in manifest["output"]:
        r = http.get(item["url"], headers=bearer(token))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+ndjson")
        lines = r.content.splitlines()
        assert len(lines) == item["count"] and r.content.endswith(b"\n")
        assert {orjson.loads(line)["resourceType"] for line in lines} == {item["type"]}
        out.setdefault(item["type"], []).extend(lines)
    return out


def ids(lines: list[bytes]) -> set[str]:
    return {orjson.loads(line)["id"] for line in lines}


def current(store: Any, rtype: str) -> dict[str, bytes]:
    """The store's current version of every live ``rtype`` resource, by id."""
    out = {}
    cursor = None
    while True:
        page = store.search(rtype, [("_count", "1000"), *([("_cursor", cursor)] if cursor else [])])
        out.update({s.id: s.content for s in page.matches})
        cursor = page.next_cursor
        if not cursor:
            return out


def audit_details(auth: Auth) -> list[str]:
    auth.audit.flush()
    return [e.get("outcomeDesc", "") for e in auth.audit.entries()]


# --- kick-off -----------------------------------------------------------------------------


def test_kickoff_needs_the_async_headers_and_known_parameters(http, tokens):
    admin = bearer(tokens["admin"])
    r = http.get("/fhir/$export", headers={"Prefer": "respond-async", **admin})
    outcome(r, 400, text="Accept: application/fhir+json")
    outcome(http.get("/fhir/$export", headers={"Accept": "application/xml",
                                               "Prefer": "respond-async", **admin}), 400)
    outcome(http.get("/fhir/$export", headers={"Accept": FHIR_JSON, **admin}), 400,
            text="respond-async")
    bad = {"_outputFormat": ("text/csv", "_outputFormat"),
           "_since": ("2024-01-01", "_since"),  # an instant has a time and a zone
           "_type": ("Nope", "_type"),
           "_typeFilter": ("Observation?shoe-size=42", "_typeFilter"),
           "_elements": ("id", "_elements"),
           "includeAssociatedData": ("LatestProvenanceResources", "includeAssociatedData"),
           "shoe": ("42", "shoe")}
    for name, (value, expression) in bad.items():
        outcome(http.get("/fhir/$export", params={name: value}, headers={**ASYNC, **admin}),
                400, expression=expression)
    for query in ({"_type": "AuditEvent"},  # the audit log is not exported
                  {"_type": "Observation", "_typeFilter": "Observation?code=x&_sort=date"},
                  {"_type": "Observation", "_typeFilter": "Condition?code=x"}):
        outcome(http.get("/fhir/$export", params=query, headers={**ASYNC, **admin}), 400)
    outcome(http.get("/fhir/Patient/$export", params={"_type": "Organization"},
                     headers={**ASYNC, **admin}), 400, text="outside the Patient compartment")
    outcome(http.get("/fhir/Group/nope/$export", headers={**ASYNC, **admin}), 404)
    outcome(http.put("/fhir/$export", headers={**ASYNC, **admin}), 405)
    outcome(http.post("/fhir/$export", content=b"_type=Patient",
                      headers={**ASYNC, **admin, "Content-Type": "application/x-www-form-urlencoded"}),
            415)
    outcome(http.post("/fhir/$export", json={"resourceType": "Patient"},
                      headers={**ASYNC, **admin, "Content-Type": FHIR_JSON}), 400)
    outcome(http.get("/fhir/$export"), 401)  # no token


def test_lenient_handling_ignores_and_reports_unsupported_parameters(http, tokens):
    status = kick(http, "/fhir/$export", tokens["admin"],
                  params={"_type": "Patient", "_elements": "id", "shoe": "42"},
                  headers={"Prefer": "respond-async, handling=lenient"})
    manifest = done(http, status, tokens["admin"])
    assert [e["type"] for e in manifest["error"]] == ["OperationOutcome"]
    r = http.get(manifest["error"][0]["url"], headers=bearer(tokens["admin"]))
    outcomes = [orjson.loads(line) for line in r.content.splitlines()]
    assert {o["issue"][0]["expression"][0] for o in outcomes} == {"_elements", "shoe"}
    assert all(o["resourceType"] == "OperationOutcome" for o in outcomes)


# --- what is exported ---------------------------------------------------------------------


def test_system_export_manifest_and_files_hold_the_current_versions(http, tokens, store):
    store.update("Patient", "a1", {**store.read("Patient", "a1").resource, "gender": "female"})
    status = kick(http, "/fhir/$export?_outputFormat=application/fhir%2Bndjson", tokens["admin"])
    assert status.startswith("http://testserver/fhir/$export-status/")
    manifest = done(http, status, tokens["admin"])
    assert set(manifest) == {"transactionTime", "request", "requiresAccessToken", "output",
                             "error"}
    assert check_instant(manifest["transactionTime"]) is None
    assert manifest["request"] == ("http://testserver/fhir/$export?_outputFormat="
                                   "application/fhir%2Bndjson")
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert all(set(o) == {"type", "url", "count"} and 1 <= o["count"] <= 2
               for o in manifest["output"])  # file_resources=2: one type per file, ≤ 2 each
    got = files(http, manifest, tokens["admin"])
    assert set(got) == {"Organization", "Practitioner", "Patient", "Observation", "Encounter",
                        "Group"}
    for rtype, lines in got.items():
        assert sorted(lines) == sorted(current(store, rtype).values()), rtype
    assert b'"gender":"female"' in next(line for line in got["Patient"] if b'"a1"' in line)


def test_type_since_and_type_filter(http, tokens, store):
    admin = tokens["admin"]
    manifest = done(http, kick(http, "/fhir/$export?_type=Observation,Patient", admin), admin)
    assert {o["type"] for o in manifest["output"]} == {"Observation", "Patient"}
    since = manifest["transactionTime"]
    store.update("Observation", "b2-sbp", {**store.read("Observation", "b2-sbp").resource,
                                           "status": "amended"})
    store.update("Patient", "b2", {**store.read("Patient", "b2").resource, "gender": "male"})
    later = done(http, kick(http, "/fhir/$export", admin,
                            params={"_since": since, "_type": "Observation"}), admin)
    assert {t: ids(v) for t, v in files(http, later, admin).items()} == {
        "Observation": {"b2-sbp"}}
    # _typeFilter: one query per type, several queries of one type ORed; repeated _type
    filtered = done(http, kick(http, "/fhir/$export", admin, params=[
        ("_type", "Observation"), ("_type", "Patient"),
        ("_typeFilter", (f"Observation?code={LOINC}|8480-6&subject=Patient/a1,"
                         "Observation?subject=Patient/b1")),
        ("_typeFilter", "Patient?gender=male")]), admin)
    got = {t: ids(v) for t, v in files(http, filtered, admin).items()}
    assert got == {"Observation": {"a1-sbp", "b1-sbp", "b1-dbp"}, "Patient": {"b2"}}


def test_patient_and_group_level_export_compartments(http, tokens, store):
    admin = tokens["admin"]
    every = done(http, kick(http, "/fhir/Patient/$export", admin), admin)
    got = {t: ids(v) for t, v in files(http, every, admin).items()}
    assert got["Patient"] == set(HOME) and "Organization" not in got
    assert got["Observation"] == {f"{p}-{k}" for p in HOME for k in ("sbp", "dbp")}
    assert got["Group"] == {"g1"}  # Group is in the R4 Patient compartment (member)
    group = done(http, kick(http, "/fhir/Group/g1/$export?_type=Patient,Encounter", admin),
                 admin)
    assert group["request"].endswith("/fhir/Group/g1/$export?_type=Patient,Encounter")
    got = {t: ids(v) for t, v in files(http, group, admin).items()}
    assert got == {"Patient": {"a1", "b1"}, "Encounter": {"a1-e", "b1-e"}}  # a2 is inactive
    # POST with Parameters: patient= limits a Group export to some of its members
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Observation"},
        {"name": "patient", "valueReference": {"reference": "Patient/b1"}}]}
    posted = done(http, kick(http, "/fhir/Group/g1/$export", admin, method="POST", json=body,
                             headers={"Content-Type": FHIR_JSON}), admin)
    assert posted["request"] == "http://testserver/fhir/Group/g1/$export"
    assert {t: ids(v) for t, v in files(http, posted, admin).items()} == {
        "Observation": {"b1-sbp", "b1-dbp"}}
    body["parameter"][1] = {"name": "patient", "valueReference": {"reference": "Patient/a3"}}
    outcome(http.post("/fhir/Group/g1/$export", json=body,
                      headers={**ASYNC, **bearer(admin), "Content-Type": FHIR_JSON}), 400,
            expression="patient", text="not a member")


# --- the job: progress, cancellation --------------------------------------------------------


def test_progress_while_running_and_delete_cancels(serve, tokens, tmp_path):
    http = serve(page=1, pause=0.2)  # one resource per page, a pause after each
    admin = tokens["admin"]
    status = kick(http, "/fhir/$export?_type=Observation", admin)
    end = time.monotonic() + 30
    while True:
        r = http.get(status, headers=bearer(admin))
        assert r.status_code == 202, r.text
        if "resources written" in r.headers["x-progress"] and \
                not r.headers["x-progress"].startswith("0 "):
            break
        assert time.monotonic() < end, r.headers["x-progress"]
        time.sleep(0.02)
    assert len(r.headers["x-progress"]) < 100 and "reading Observation" in r.headers["x-progress"]
    job_dir = tmp_path / "exports" / status.rsplit("/", 1)[1]
    assert job_dir.is_dir()
    r = http.delete(status, headers=bearer(admin))
    assert r.status_code == 202 and r.json()["resourceType"] == "OperationOutcome"
    outcome(http.get(status, headers=bearer(admin)), 404)
    outcome(http.delete(status, headers=bearer(admin)), 404)
    assert not job_dir.exists()
    # the worker noticed (its next save finds no job), dropped it, and takes the next one
    nxt = kick(http, "/fhir/$export?_type=Practitioner", admin)
    assert [o["count"] for o in done(http, nxt, admin)["output"]] == [1]
    assert not job_dir.exists()


def test_a_failed_job_answers_500_with_an_operation_outcome(http, tokens, store, monkeypatch):
    import songkhoe.rest.export_worker as worker

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(worker, "read_page", broken)
    status = kick(http, "/fhir/$export?_type=Patient", tokens["admin"])
    body = outcome(wait(http, status, tokens["admin"]), 500, code="exception")
    assert "disk on fire" not in str(body)
    assert any("export failed: RuntimeError" in d for d in audit_details(http.app.state.auth))


# --- access ---------------------------------------------------------------------------------


def test_a_commune_user_exports_their_commune_and_others_cannot_read_it(http, tokens):
    doctor = tokens["doctor"]
    status = kick(http, "/fhir/Patient/$export", doctor)
    manifest = done(http, status, doctor)
    got = {t: ids(v) for t, v in files(http, manifest, doctor).items()}
    assert got["Patient"] == {"a1", "a2", "a3"}
    assert got["Observation"] == {f"{p}-{k}" for p in ("a1", "a2", "a3") for k in ("sbp", "dbp")}
    url = manifest["output"][0]["url"]
    for other in ("doctor8", "researcher", "system"):  # someone else's job: as if absent
        outcome(http.get(status, headers=bearer(tokens[other])), 404)
        outcome(http.get(url, headers=bearer(tokens[other])), 404)
        outcome(http.delete(status, headers=bearer(tokens[other])), 404)
    assert http.get(url).status_code == 401
    assert http.get(url, headers=bearer(tokens["admin"])).status_code == 200
    # the same user with a token whose scopes no longer cover the files' types
    narrow = issue(http.app.state.auth, "bacsi", "doctor", "tyt-00004",
                   scope="user/Encounter.rs")
    outcome(http.get(status, headers=bearer(narrow)), 403)
    # a system client registered without an Organization exports everyone
    everyone = done(http, kick(http, "/fhir/Patient/$export?_type=Patient", tokens["system"]),
                    tokens["system"])
    assert ids(files(http, everyone, tokens["system"])["Patient"]) == set(HOME)


def test_group_export_holds_only_members_the_caller_may_see(http, tokens):
    doctor = tokens["doctor"]
    manifest = done(http, kick(http, "/fhir/Group/g1/$export?_type=Patient", doctor), doctor)
    assert ids(files(http, manifest, doctor)["Patient"]) == {"a1"}  # b1 is another commune's


def test_researcher_gets_no_identified_record_and_scopes_limit_types(http, tokens, auth):
    researcher = tokens["researcher"]
    outcome(http.get("/fhir/Patient/$export", headers={**ASYNC, **bearer(researcher)}), 403)
    outcome(http.get("/fhir/$export?_type=Patient", headers={**ASYNC, **bearer(researcher)}),
            403, expression="_type")
    manifest = done(http, kick(http, "/fhir/$export", researcher), researcher)
    assert {o["type"] for o in manifest["output"]} == {"Organization", "Practitioner"}
    only = issue(auth, "bacsi", "doctor", "tyt-00004", scope="user/Observation.rs")
    outcome(http.get("/fhir/$export?_type=Patient", headers={**ASYNC, **bearer(only)}), 403)
    manifest = done(http, kick(http, "/fhir/$export", only), only)
    assert {o["type"] for o in manifest["output"]} == {"Observation"}
    glass = issue(auth, "bacsi", "doctor", "tyt-00004", purpose="ETREAT", btg=True)
    outcome(http.get("/fhir/$export", headers={**ASYNC, **bearer(glass)}), 403,
            text="break-the-glass")


def test_a_research_export_holds_only_people_who_consented(http, auth, store):
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
    manager = issue(auth, "quanly", "programme_manager", "so-04", purpose="HRESCH")
    manifest = done(http, kick(http, "/fhir/Patient/$export?_type=Patient,Observation", manager),
                    manager)
    got = {t: ids(v) for t, v in files(http, manifest, manager).items()}
    assert got == {"Patient": {"a1"}, "Observation": {"a1-sbp", "a1-dbp"}}


# --- audit, discovery ---------------------------------------------------------------------


def test_kickoff_status_files_and_completion_are_audited(http, tokens, auth):
    admin = tokens["admin"]
    status = kick(http, "/fhir/$export?_type=Patient", admin)
    manifest = done(http, status, admin)
    files(http, manifest, admin)
    auth.audit.flush()
    entries = auth.audit.entries()
    job = status.rsplit("/", 1)[1]
    kicked = [e for e in entries if f"$export kick-off: job {job}" in e["outcomeDesc"]]
    assert len(kicked) == 1 and kicked[0]["agent"][0]["who"]["identifier"]["value"] == "test-admin"
    completed = [e for e in entries if "export complete" in e["outcomeDesc"]]
    assert [e["outcomeDesc"] for e in completed] == [
        "HTTP 200: export complete: 5 resources in 3 files"]
    assert completed[0]["subtype"][0]["code"] == "110106"  # DICOM Export, as the kick-off
    assert completed[0]["agent"][0]["who"]["identifier"]["value"] == "test-admin"
    paths = [e["entity"][0]["what"].get("display", "") for e in entries]
    assert any(p.startswith("GET /fhir/$export-status/") for p in paths)
    assert sum(p.startswith("GET /fhir/$export-file/") for p in paths) == 3
    assert auth.audit.verify() is None


def test_capability_statement_and_smart_discovery_advertise_bulk_data(http):
    cs = http.get("/fhir/metadata").json()
    assert cs["instantiates"] == ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"]
    bulk = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
    assert {"name": "export", "definition": f"{bulk}export"} in cs["rest"][0]["operation"]
    ops = {r["type"]: r.get("operation", []) for r in cs["rest"][0]["resource"]}
    assert {"name": "export", "definition": f"{bulk}patient-export"} in ops["Patient"]
    assert {"name": "export", "definition": f"{bulk}group-export"} in ops["Group"]
    smart = http.get("/fhir/.well-known/smart-configuration").json()
    assert smart["token_endpoint"].endswith("/auth/token")
    assert "private_key_jwt" in smart["token_endpoint_auth_methods_supported"]
    assert {"RS384", "ES384"} <= set(smart["token_endpoint_auth_signing_alg_values_supported"])
    assert "system/*.rs" in smart["scopes_supported"]


def test_without_export_nothing_is_advertised_or_served(store):
    with TestClient(create_app(store)) as http:
        assert "instantiates" not in http.get("/fhir/metadata").json()
        outcome(http.get("/fhir/$export", headers=ASYNC), 404)


# --- the queue: claims, resuming, restarts ------------------------------------------------


class _Crash(BaseException):
    """A process dying mid-job: nothing of the worker's own error handling runs."""


def test_a_job_left_by_a_dead_worker_resumes_where_it_stopped(store, tmp_path, monkeypatch):
    seed(store)
    for n in range(9):
        store.update("Observation", f"x{n}", _obs(f"x{n}", "a1", "8480-6"))
    config = ExportConfig(tmp_path / "exports", file_resources=4, page=3, save_every=0)
    jobs = Jobs(store)
    job = jobs.create(owner=None, request="http://x/fhir/$export", access=None,
                      params={"level": "system", "types": ["Observation", "Patient"],
                              "filters": {}, "members": None})
    first = ExportWorker(store, config)
    saves = {"n": 0}
    real_save = Jobs.save

    def dying_save(self: Jobs, *args: Any, **kwargs: Any) -> bool:
        saves["n"] += 1
        if saves["n"] == 3:  # after 9 Observations read: two files and one row of a third
            raise _Crash
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Jobs, "save", dying_save)
    claimed = jobs.claim(first.id, stale_before=now_us() - 60_000_000)
    assert claimed is not None and claimed.id == job.id
    with pytest.raises(_Crash):
        first.run(claimed)
    monkeypatch.setattr(Jobs, "save", real_save)
    left = jobs.get(job.id)
    assert left is not None and left.status == RUNNING and left.progress["written"] == 6
    part = tmp_path / "exports" / job.id / "Observation-2.ndjson"
    with part.open("ab") as handle:  # rows written after the last save, and a torn line
        handle.write(b'{"resourceType":"Observation","id":"torn"')
    second = ExportWorker(store, config)
    assert jobs.claim(second.id, stale_before=now_us() - 60_000_000) is None  # still alive
    taken = jobs.claim(second.id, stale_before=now_us() + 1)  # its heartbeat is stale
    assert taken is not None and taken.worker == second.id
    second.run(taken)
    finished = jobs.get(job.id)
    assert finished is not None and finished.status == COMPLETED
    lines: dict[str, list[bytes]] = {}
    for item in finished.output:
        content = (tmp_path / "exports" / job.id / item["file"]).read_bytes()
        assert len(content.splitlines()) == item["count"]
        lines.setdefault(item["type"], []).extend(content.splitlines())
    for rtype in ("Observation", "Patient"):
        assert sorted(lines[rtype]) == sorted(current(store, rtype).values())  # no duplicates


def test_claims_are_exclusive_and_a_clean_stop_requeues(store, tmp_path):
    jobs = Jobs(store)
    job = jobs.create(owner="user:x", request="r", access=None, params={"types": []})
    assert jobs.claim("w1", stale_before=0) is not None
    assert jobs.claim("w2", stale_before=0) is None
    assert not jobs.save(job.id, "w2", {}, [])  # not w2's job
    jobs.release(job.id, "w1")
    again = jobs.claim("w2", stale_before=0)
    assert again is not None and again.worker == "w2" and again.status == RUNNING
    assert jobs.delete(job.id) and jobs.get(job.id) is None
    assert not jobs.save(job.id, "w2", {}, [])  # cancelled: the worker stops


def test_access_context_survives_its_json_round_trip(auth):
    token = issue(auth, "bacsi", "specialist", "tyt-00004",
                  scope="user/*.rs user/Observation.cu patient/Observation.rs?category=laboratory",
                  purpose="TREAT", fhirUser="Practitioner/pr1")
    ctx = auth.verify(token, "10.0.0.1")
    assert access_from_json(orjson.loads(orjson.dumps(access_json(ctx)))) == ctx
    assert access_from_json(None) is None


def test_default_directory_is_beside_the_database():
    assert default_directory("sqlite:////data/sk.db") == Path("/data/sk.db-exports")
    assert default_directory("postgresql://h/db").name == "exports"


@pytest.mark.slow
def test_a_job_survives_a_server_restart_mid_export(db_url, tmp_path, monkeypatch):
    from songkhoe.store import open_store

    store = open_store(db_url)
    try:
        seed(store)
        for n in range(60):
            store.update("Patient", f"p{n}", {"resourceType": "Patient", "id": f"p{n}"})
            store.update("Observation", f"p{n}-o", _obs(f"p{n}-o", f"p{n}", "8480-6"))
        token = issue(Auth(store), "test-admin", "administrator")
        expected = {t: sorted(current(store, t).values()) for t in ("Patient", "Observation")}
    finally:
        store.close()
    monkeypatch.setenv("SONGKHOE_EXPORT_DIR", str(tmp_path / "exports"))
    monkeypatch.setenv("SONGKHOE_EXPORT_PAGE", "4")
    monkeypatch.setenv("SONGKHOE_EXPORT_FILE_RESOURCES", "10")
    monkeypatch.setenv("SONGKHOE_EXPORT_PAUSE", "0.1")
    monkeypatch.setenv("SONGKHOE_EXPORT_STALE_SECONDS", "1")
    server = ServerProcess(db_url, secure=True).start()
    try:
        status = kick(httpx, f"{server.base}/$export?_type=Patient,Observation", token)
        end = time.monotonic() + 60
        while True:  # until the job is well under way: then the process dies
            r = httpx.get(status, headers=bearer(token))
            assert r.status_code == 202, r.text
            progress = r.headers["x-progress"]
            if "resources written" in progress and int(progress.split()[0].replace(",", "")) >= 24:
                break
            assert time.monotonic() < end, progress
            time.sleep(0.02)
    finally:
        server.kill()
    monkeypatch.setenv("SONGKHOE_EXPORT_PAUSE", "0")
    again = ServerProcess(db_url, secure=True).start()
    try:
        status = status.replace(server.base, again.base)
        manifest = done(httpx, status, token)
        got = {t: sorted(v) for t, v in files(httpx, manifest, token).items()}
        assert got == expected
        assert all(o["count"] <= 10 for o in manifest["output"])
    finally:
        again.stop()
    assert os.listdir(tmp_path / "exports")  # the files stayed where the first process put them
