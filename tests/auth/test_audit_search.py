"""Searching the audit log: every AuditEvent search parameter, paging newest first, counts,
who may search (managers within their Organization subtree, administrators), read by id, no
writes, the chain intact, and the break-the-glass review list — on both backends."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from songkhoe.auth import AccessContext, ScopeSet
from songkhoe.auth.audit import BREAK_GLASS, COLUMNS, Event, search_columns
from songkhoe.auth.audit_search import AuditSearch
from songkhoe.auth.identities import ROLES
from songkhoe.cli import main
from songkhoe.fhir.outcome import FhirError

from .conftest import PASSWORD, password_token

BTG = BREAK_GLASS
TREE = {"moh": ["moh", "so-04", "so-08", "tyt-00004", "tyt-00008"],
        "so-04": ["so-04", "tyt-00004"], "so-08": ["so-08", "tyt-00008"],
        "tyt-00004": ["tyt-00004"], "tyt-00008": ["tyt-00008"]}


def _org_tree(auth: Any) -> None:
    with auth.db.write() as c:
        for ancestor, orgs in TREE.items():
            for org in orgs:
                c.run("INSERT INTO org_tree (ancestor, org) VALUES (?, ?)", (ancestor, org))


def _ctx(who: str, role: str, org: str | None, **more: Any) -> AccessContext:
    return AccessContext(who, more.pop("kind", "user"), role, org,
                         ScopeSet.parse("user/*.cruds"), **more)


BACSI = _ctx("bacsi", "doctor", "tyt-00004", client_id="webapp", address="10.0.4.1")
YTX = _ctx("ytx", "health_worker", "tyt-00008", address="10.0.8.2")
LAB = _ctx("lab", "system", "tyt-00008", kind="system", client_id="lab", address="192.168.1.9")


@pytest.fixture
def log(auth, clock) -> dict[str, int]:
    """Seven entries a minute apart, by name → sequence number."""
    _org_tree(auth)

    def rec(name: str, event: Event) -> tuple[str, int]:
        clock.advance(60)
        return name, auth.audit.record(event)

    btg = _ctx("bacsi", "doctor", "tyt-00004", purpose="ETREAT", break_glass=True,
               token_id="jti-1", address="10.0.4.1")
    entries = [
        rec("read_p1", Event("read", "GET", "/fhir/Patient/p1", 200, entity="Patient/p1",
                             access=BACSI, address="10.0.4.1")),
        rec("search_p1", Event("search-type", "GET", "/fhir/Observation", 200,
                               query="patient=Patient/p1&code=8480-6", access=BACSI,
                               address="10.0.4.1")),
        rec("create_o9", Event("create", "POST", "/fhir/Observation", 201,
                               entity="Observation/o9", access=YTX, address="10.0.8.2")),
        rec("refused_p2", Event("read", "GET", "/fhir/Patient/p2", 403, entity="Patient/p2",
                                access=YTX, address="10.0.8.2", detail="forbidden")),
        rec("lab_o10", Event("create", "POST", "/fhir/Observation", 201,
                             entity="Observation/o10", access=LAB, address="192.168.1.9")),
    ]
    clock.advance(60)
    entries.append(("btg_grant", auth.audit.break_glass_granted(
        {"sub": "bacsi", "kind": "user", "role": "doctor", "org": "tyt-00004",
         "client_id": None, "purpose": "ETREAT", "jti": "jti-1"}, "unconscious, no ID")))
    entries.append(rec("btg_read_p2", Event("read", "GET", "/fhir/Patient/p2", 200,
                                            entity="Patient/p2", access=btg,
                                            address="10.0.4.1")))
    entries.append(rec("login_failed", Event("login", "POST", "/auth/authorize", 400,
                                             who="ghost", address="10.9.9.9")))
    return dict(entries)


def _seqs(auth: Any, params: list[tuple[str, str]], viewer: AccessContext | None = None
          ) -> list[int]:
    auth.audit.flush()  # entries of requests answered before their commit
    return [e.seq for e in AuditSearch(auth.audit.db, viewer, auth.db).search(params).entries]


def _date(auth: Any, seq: int) -> str:
    return auth.audit.entries()[seq - 1]["recorded"]


# --- the search columns ------------------------------------------------------------------


def test_columns_are_written_with_the_entry_and_the_backfill_agrees(auth, log, store) -> None:
    from songkhoe.store.schema import POSTGRES_TYPES, SQLITE_TYPES, _v4

    rows = auth.audit.db.all(f"SELECT seq, content, {', '.join(COLUMNS)} FROM audit_log ORDER BY seq")
    import orjson

    for row in rows:
        assert tuple(row[2:]) == search_columns(orjson.loads(row[1])), row[0]
    assert rows[log["btg_read_p2"] - 1][2:][COLUMNS.index("token")] == "jti-1"
    assert rows[log["search_p1"] - 1][2:][COLUMNS.index("patient")] == "p1"
    # the migration's SQL (for entries written before schema version 4) gives the same values
    auth.audit.db.run(f"UPDATE audit_log SET {', '.join(f'{c} = NULL' for c in COLUMNS)}")
    types = POSTGRES_TYPES if store.backend.name == "postgres" else SQLITE_TYPES
    auth.audit.db.run(next(sql for sql in _v4(types) if sql.startswith("UPDATE audit_log")
                           and "agent =" in sql))
    assert auth.audit.db.all(f"SELECT seq, content, {', '.join(COLUMNS)} FROM audit_log "
                             "ORDER BY seq") == rows
    assert auth.audit.verify() is None


def test_migration_fills_the_columns_of_older_entries(db_url, monkeypatch) -> None:
    import orjson

    from songkhoe.auth.audit import GENESIS, audit_event, canonical, chain_hash
    from songkhoe.store import backends, open_store, schema

    monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(backends, "SCHEMA_VERSION", 3)
    old = open_store(db_url)
    from datetime import UTC, datetime

    content = canonical(audit_event(Event("read", "GET", "/fhir/Patient/p1", 200,
                                          entity="Patient/p1", access=BACSI,
                                          address="10.0.4.1"), datetime.now(UTC)))
    second = content.replace(b"Patient/p1", b"Patient/p2")
    with old.backend.transaction(write=True) as conn:
        for seq, recorded, text, prev in [(1, 2000, content, GENESIS),
                                          (2, 1000, second, chain_hash(GENESIS, content))]:
            old.backend.execute(conn, "INSERT INTO audit_log (seq, recorded, content, "
                                      "prev_hash, hash) VALUES (?, ?, ?, ?, ?)",
                                (seq, recorded, text.decode(), prev, chain_hash(prev, text)))
    old.close()
    monkeypatch.undo()
    new = open_store(db_url)
    try:
        from songkhoe.auth import Auth

        auth = Auth(new)
        row = auth.audit.db.one(f"SELECT {', '.join(COLUMNS)} FROM audit_log WHERE seq = 1")
        assert tuple(row) == search_columns(orjson.loads(content))
        assert row[COLUMNS.index("patient")] == "p1"
        assert _seqs(auth, [("agent", "bacsi")]) == [2, 1]
        assert _seqs(auth, [("patient", "p2")]) == [2]
        # the second entry was appended out of order: it takes the time of the one before
        assert [r[0] for r in auth.audit.db.all("SELECT recorded FROM audit_log ORDER BY seq")] == \
            [2000, 2000]
        assert _seqs(auth, [("date", "ge1970-01-01T00:00:00.002Z")]) == [2, 1]
        assert _seqs(auth, [("date", "lt1970-01-01T00:00:00.002Z")]) == []
        assert auth.audit.verify() is None
        seq = auth.audit.record(Event("read", "GET", "/fhir/Patient/p3", 200, access=BACSI))
        assert _seqs(auth, [("agent", "bacsi"), ("date", "ge2000")]) == [seq]
    finally:
        new.close()


# --- every parameter -----------------------------------------------------------------------


CASES: list[tuple[list[tuple[str, str]], list[str]]] = [
    ([("agent", "bacsi")], ["btg_read_p2", "btg_grant", "search_p1", "read_p1"]),
    ([("agent", "urn:songkhoe:user|ytx")], ["refused_p2", "create_o9"]),
    ([("agent:identifier", "urn:songkhoe:client|webapp")], ["search_p1", "read_p1"]),
    ([("agent", "lab")], ["lab_o10"]),
    ([("agent", "webapp")], []),  # the requestor only; the app: urn:songkhoe:client|webapp
    ([("altid", "ghost,ytx")], ["login_failed", "refused_p2", "create_o9"]),
    ([("agent-role", "health_worker")], ["refused_p2", "create_o9"]),
    ([("agent-role", "system,health_worker")], ["lab_o10", "refused_p2", "create_o9"]),
    ([("agent-org", "Organization/tyt-00008")], ["lab_o10", "refused_p2", "create_o9"]),
    ([("agent-org:below", "so-04")], ["btg_read_p2", "btg_grant", "search_p1", "read_p1"]),
    ([("agent-org:below", "moh"), ("agent-role", "system")], ["lab_o10"]),
    ([("entity", "Patient/p2")], ["btg_read_p2", "refused_p2"]),
    ([("entity:Observation", "o9")], ["create_o9"]),
    ([("entity", "http://example.org/fhir/Observation/o10")], ["lab_o10"]),
    ([("patient", "p1")], ["search_p1", "read_p1"]),
    ([("patient", "Patient/p2")], ["btg_read_p2", "refused_p2"]),
    ([("type", "http://dicom.nema.org/resources/ontology/DCM|110114")],
     ["login_failed", "btg_grant"]),
    ([("type", "rest"), ("agent", "bacsi")], ["btg_read_p2", "search_p1", "read_p1"]),
    ([("type", "http://example.org|rest")], []),
    ([("subtype", "search-type")], ["search_p1"]),
    ([("subtype", "http://hl7.org/fhir/restful-interaction|create")], ["lab_o10", "create_o9"]),
    ([("action", "C")], ["lab_o10", "create_o9"]),
    ([("action", "R"), ("agent", "bacsi")], ["btg_read_p2", "read_p1"]),
    ([("outcome", "4")], ["login_failed", "refused_p2"]),
    ([("outcome:not", "0")], ["login_failed", "refused_p2"]),
    ([("outcome", "0,4"), ("agent", "ytx")], ["refused_p2", "create_o9"]),
    ([("address", "10.0.")], ["btg_read_p2", "refused_p2", "create_o9", "search_p1",
                              "read_p1"]),
    ([("address:exact", "10.0.8.2")], ["refused_p2", "create_o9"]),
    ([("policy", BTG)], ["btg_read_p2", "btg_grant"]),
    ([("policy", "urn:songkhoe:token:jti-1")], ["btg_read_p2", "btg_grant"]),
    ([("policy", "urn:songkhoe:token:other")], []),
    ([("subtype:not", "read,create"), ("agent", "bacsi,ytx")], ["btg_grant", "search_p1"]),
]


@pytest.mark.parametrize("params,expected", CASES, ids=[str(c[0]) for c in CASES])
def test_each_parameter(auth, log, params, expected) -> None:
    assert _seqs(auth, params) == [log[name] for name in expected]


def test_id_and_date(auth, log) -> None:
    first, third = log["read_p1"], log["create_o9"]
    assert _seqs(auth, [("_id", f"{first},{third}")]) == [third, first]
    assert _seqs(auth, [("_id", "not-a-seq")]) == []
    t3 = _date(auth, third)
    assert _seqs(auth, [("date", t3)]) == [third]  # an instant: that entry only
    assert _seqs(auth, [("date", f"le{t3}"), ("date", f"ge{_date(auth, first)}")]) == \
        [third, log["search_p1"], first]
    assert _seqs(auth, [("date", f"gt{_date(auth, log['btg_read_p2'])}")]) == \
        [log["login_failed"]]
    assert _seqs(auth, [("date", f"lt{_date(auth, first)}")]) == []
    day = t3[:10]
    assert len(_seqs(auth, [("date", day), ("_count", "100")])) + \
        len(_seqs(auth, [("date", f"ne{day}"), ("_count", "100")])) == len(log)
    assert _seqs(auth, [("date", "2001,2002")]) == []


def test_recorded_never_goes_back(auth, log, clock) -> None:
    last = log["login_failed"]
    clock.advance(-3600)  # a clock stepped back (or an appender that waited for the lock)
    seq = auth.audit.record(Event("read", "GET", "/fhir/Patient/p3", 200, entity="Patient/p3",
                                  access=BACSI))
    entries = auth.audit.entries()
    assert entries[seq - 1]["recorded"] == entries[last - 1]["recorded"]
    assert _seqs(auth, [("date", f"ge{_date(auth, last)}")]) == [seq, last]
    assert auth.audit.verify() is None


def test_patient_compartment_and_named_patients(http, auth, log) -> None:
    token = _token(auth, "admin", "administrator", None)
    r = http.get("/fhir/Patient/p1/AuditEvent", headers=_bearer(token))
    assert r.status_code == 200, r.text
    assert [int(e["resource"]["id"]) for e in r.json()["entry"]] == \
        [log["search_p1"], log["read_p1"]]
    # a search naming a Patient is about that Patient (a second entity, role Patient)
    entity = auth.audit.entries()[log["search_p1"] - 1]["entity"]
    assert entity[1]["what"] == {"reference": "Patient/p1"} and entity[1]["role"]["code"] == "1"


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name,value", [
    ("nosuch", "1"), ("date", "yesterday"), ("_count", "-1"), ("action", "X"),
    ("outcome", "5"), ("_sort", "agent"), ("_cursor", "abc"), ("_total", "maybe"),
    ("entity", "p1"), ("agent", "urn:other|x"), ("agent-role:exact", "doctor"),
    ("patient", "Observation/o1"), ("_summary", "everything"), ("agent", ""),
])
def test_invalid_parameters_are_400_naming_the_parameter(http, auth, name, value) -> None:
    with pytest.raises(FhirError) as info:
        AuditSearch(auth.audit.db, None, auth.db).search([(name, value)])
    assert info.value.status == 400
    assert info.value.issues[0].expression == name
    token = _token(auth, "admin", "administrator", None)
    r = http.get("/fhir/AuditEvent", params={name: value}, headers=_bearer(token))
    assert r.status_code == 400, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [name]


# --- over HTTP: Bundle, paging, counts --------------------------------------------------------


def _token(auth: Any, who: str, role: str, org: str | None) -> str:
    token, _ = auth.tokens.issue(subject=who, kind="user", role=role, org=org,
                                 scope=ScopeSet.parse(ROLES[role]), client_id=None)
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_paging_newest_first_with_next_links(http, auth, log) -> None:
    token = _token(auth, "admin", "administrator", None)
    url: str | None = "/fhir/AuditEvent?agent=bacsi,ytx&_count=2"
    seen: list[int] = []
    pages = 0
    while url:
        r = http.get(url, headers=_bearer(token))
        assert r.status_code == 200, r.text
        bundle = r.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        assert "total" not in bundle
        seen += [int(e["resource"]["id"]) for e in bundle.get("entry", [])]
        assert all(e["fullUrl"].endswith(f"/AuditEvent/{e['resource']['id']}")
                   for e in bundle.get("entry", []))
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        url = _path(nxt[0]) if nxt else None
        if url:
            assert ("agent", "bacsi,ytx") in parse_qsl(urlsplit(url).query)
        pages += 1
    expected = sorted((log[n] for n in ("read_p1", "search_p1", "create_o9", "refused_p2",
                                        "btg_grant", "btg_read_p2")), reverse=True)
    assert seen == expected and pages == 3
    r = http.get("/fhir/AuditEvent?agent=bacsi,ytx&_sort=date&_count=4", headers=_bearer(token))
    assert [int(e["resource"]["id"]) for e in r.json()["entry"]] == sorted(expected)[:4]


def test_totals(http, auth, log) -> None:
    token = _token(auth, "admin", "administrator", None)
    r = http.get("/fhir/AuditEvent?agent=bacsi&_total=accurate&_count=1", headers=_bearer(token))
    assert r.json()["total"] == 4 and len(r.json()["entry"]) == 1
    r = http.get("/fhir/AuditEvent?agent=bacsi&_summary=count", headers=_bearer(token))
    assert r.json()["total"] == 4 and "entry" not in r.json()
    r = http.get("/fhir/AuditEvent?agent=ytx&_total=estimate", headers=_bearer(token))
    assert r.json()["total"] >= 1  # PostgreSQL's planner estimate; SQLite counts
    r = http.get("/fhir/AuditEvent?agent=bacsi&_elements=action", headers=_bearer(token))
    assert set(r.json()["entry"][0]["resource"]) <= {"resourceType", "id", "meta", "action"}


def test_read_and_vread_by_id(http, auth, log) -> None:
    token = _token(auth, "admin", "administrator", None)
    seq = log["create_o9"]
    r = http.get(f"/fhir/AuditEvent/{seq}", headers=_bearer(token))
    assert r.status_code == 200, r.text
    event = r.json()
    assert event["id"] == str(seq) and event["meta"]["versionId"] == "1"
    assert event["entity"][0]["what"]["reference"] == "Observation/o9"
    assert r.headers["etag"] == 'W/"1"'
    assert http.get(f"/fhir/AuditEvent/{seq}/_history/1", headers=_bearer(token)).json() == event
    for path in (f"/fhir/AuditEvent/{seq}/_history/2", "/fhir/AuditEvent/999999",
                 "/fhir/AuditEvent/abc"):
        r = http.get(path, headers=_bearer(token))
        assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome", path


def test_writes_and_history_are_405(http, auth, log) -> None:
    token = _token(auth, "admin", "administrator", None)
    body = {"resourceType": "AuditEvent", "id": "1"}
    headers = {**_bearer(token), "content-type": "application/fhir+json"}
    seq = log["read_p1"]
    for method, path in [("POST", "/fhir/AuditEvent"), ("PUT", f"/fhir/AuditEvent/{seq}"),
                         ("DELETE", f"/fhir/AuditEvent/{seq}"),
                         ("PUT", "/fhir/AuditEvent?agent=bacsi"),
                         ("DELETE", "/fhir/AuditEvent?agent=bacsi"),
                         ("GET", "/fhir/AuditEvent/_history"),
                         ("GET", f"/fhir/AuditEvent/{seq}/_history")]:
        r = http.request(method, path, headers=headers,
                         json=body if method in ("POST", "PUT") else None)
        assert r.status_code == 405, (method, path, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    patch_headers = {**_bearer(token), "content-type": "application/json-patch+json"}
    r = http.patch(f"/fhir/AuditEvent/{seq}", headers=patch_headers,
                   content=b'[{"op": "replace", "path": "/outcome", "value": "0"}]')
    assert r.status_code == 405
    # nor through a Bundle
    r = http.post("/fhir", headers=headers, json={
        "resourceType": "Bundle", "type": "batch",
        "entry": [{"resource": body, "request": {"method": "POST", "url": "AuditEvent"}},
                  {"request": {"method": "GET", "url": "AuditEvent?agent=ytx"}}]})
    assert r.status_code == 200, r.text
    first, second = r.json()["entry"]
    assert first["response"]["status"].startswith("405")
    assert second["response"]["status"].startswith("200")
    assert len(second["resource"]["entry"]) == 2
    # the log is as it was, and whole
    assert auth.audit.entries()[seq - 1]["outcome"] == "0"
    assert auth.audit.verify() is None


# --- who may search -------------------------------------------------------------------------


def test_manager_sees_only_their_subtree(http, auth, log) -> None:
    so04 = _token(auth, "quanly", "programme_manager", "so-04")
    r = http.get("/fhir/AuditEvent?_count=100", headers=_bearer(so04))
    assert r.status_code == 200, r.text
    ids = {int(e["resource"]["id"]) for e in r.json()["entry"]}
    bacsi = {log[n] for n in ("read_p1", "search_p1", "btg_grant", "btg_read_p2")}
    assert ids == bacsi  # not ytx's, lab's (so-08) or the failed sign-in (no Organization)
    r = http.get("/fhir/AuditEvent?agent=quanly", headers=_bearer(so04))
    assert len(r.json()["entry"]) == 1  # their own search, audited once answered
    r = http.get(f"/fhir/AuditEvent/{log['create_o9']}", headers=_bearer(so04))
    assert r.status_code == 404
    assert http.get(f"/fhir/AuditEvent/{log['read_p1']}", headers=_bearer(so04)).status_code == 200
    r = http.get("/fhir/AuditEvent?agent=ytx&_summary=count", headers=_bearer(so04))
    assert r.json()["total"] == 0
    # the Ministry's manager sees both provinces; a manager without Organization, everything
    moh = _token(auth, "bo", "programme_manager", "moh")
    r = http.get("/fhir/AuditEvent?agent=ytx,lab&_summary=count", headers=_bearer(moh))
    assert r.json()["total"] == 3
    national = _token(auth, "quocgia", "programme_manager", None)
    r = http.get("/fhir/AuditEvent?agent=ghost&_summary=count", headers=_bearer(national))
    assert r.json()["total"] == 1
    admin = _token(auth, "admin", "administrator", None)
    r = http.get("/fhir/AuditEvent?_id=" + ",".join(str(s) for s in log.values()) +
                 "&_summary=count", headers=_bearer(admin))
    assert r.json()["total"] == len(log)


@pytest.mark.parametrize("role", ["doctor", "health_worker", "specialist", "researcher"])
def test_other_roles_are_refused(http, auth, log, role) -> None:
    token = _token(auth, "someone", role, "tyt-00004")
    for path in ("/fhir/AuditEvent", f"/fhir/AuditEvent/{log['read_p1']}",
                 "/fhir/Patient/p1/AuditEvent"):
        r = http.get(path, headers=_bearer(token))
        assert r.status_code == 403, (role, path, r.text)
        assert r.json()["issue"][0]["code"] == "forbidden"
    refused = auth.audit.entries()[-1]
    assert refused["outcome"] == "4" and refused["agent"][0]["role"] == [{"text": role}]


def test_without_security_the_log_is_open(store, auth, log) -> None:
    from starlette.testclient import TestClient

    from songkhoe.rest import create_app

    with TestClient(create_app(store)) as open_http:
        r = open_http.get("/fhir/AuditEvent?agent=lab")
        assert r.status_code == 200 and len(r.json()["entry"]) == 1


def test_searching_keeps_the_chain_verifiable(http, auth, log, db_url, capsys) -> None:
    token = _token(auth, "admin", "administrator", None)
    for query in ("agent=bacsi", "patient=p1", "_summary=count", "policy=" + BTG):
        assert http.get(f"/fhir/AuditEvent?{query}", headers=_bearer(token)).status_code == 200
    searches = _seqs(auth, [("subtype", "search-type"), ("agent", "admin")])
    assert len(searches) == 4  # the searches of the audit log are audited too
    assert auth.audit.verify() is None
    assert main(["audit", "verify", "--db", db_url]) == 0
    assert "intact" in capsys.readouterr().out


# --- break the glass ------------------------------------------------------------------------


def test_break_the_glass_reason_is_recorded_and_listed(http, auth, store, db_url,
                                                       capsys) -> None:
    _org_tree(auth)
    auth.identities.add_user("bacsi", PASSWORD, "doctor", "tyt-00004")
    auth.identities.add_user("ytx", PASSWORD, "health_worker", "tyt-00008")
    answer = password_token(http, "bacsi", purpose_of_use="ETREAT",
                            reason="cấp cứu: bệnh nhân bất tỉnh")
    token = answer["access_token"]
    http.get("/fhir/Patient/p7", headers=_bearer(token))
    http.get("/fhir/Observation?patient=p7", headers=_bearer(token))
    other = password_token(http, "ytx", purpose_of_use="ETREAT")["access_token"]  # no reason
    http.get("/fhir/Patient/p8", headers=_bearer(other))
    refreshed = http.post("/auth/token", data={"grant_type": "refresh_token",
                                               "refresh_token": answer["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    http.get("/fhir/Patient/p9", headers=_bearer(refreshed.json()["access_token"]))
    password_token(http, "bacsi")  # an ordinary token is not break the glass
    assert auth.audit.verify() is None

    admin = _token(auth, "admin", "administrator", None)
    r = http.get("/fhir/AuditEvent", params={"policy": BTG}, headers=_bearer(admin))
    assert r.status_code == 200, r.text
    events = [e["resource"] for e in r.json()["entry"]]
    # newest first: the refreshed token's read and issue, ytx's read and issue, bacsi's
    # search, read and issue
    assert len(events) == 7
    kinds = [(e["agent"][0]["who"]["identifier"]["value"], e["subtype"][0]["code"])
             for e in events]
    assert kinds == [("bacsi", "read"), ("bacsi", "110122"), ("ytx", "read"),
                     ("ytx", "110122"), ("bacsi", "search-type"), ("bacsi", "read"),
                     ("bacsi", "110122")]
    reasons = [e["agent"][0]["purposeOfUse"][0].get("text") for e in events]
    assert reasons == ["cấp cứu: bệnh nhân bất tỉnh"] * 2 + [None] * 2 + \
        ["cấp cứu: bệnh nhân bất tỉnh"] * 3
    assert all(e["agent"][0]["purposeOfUse"][0]["coding"][0]["code"] == "ETREAT"
               for e in events)
    assert events[5]["entity"][0]["what"] == {"reference": "Patient/p7"}
    assert events[4]["entity"][1]["what"] == {"reference": "Patient/p7"}
    # one token's requests: its id is a policy of each
    jti = auth.verify(token).token_id
    assert f"urn:songkhoe:token:{jti}" in events[5]["agent"][0]["policy"]
    r = http.get("/fhir/AuditEvent", params={"policy": f"urn:songkhoe:token:{jti}"},
                 headers=_bearer(admin))
    assert len(r.json()["entry"]) == 3

    # the same list on the command line, for an Organization and since a date
    assert main(["audit", "break-glass", "--db", db_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("recorded\tuser")
    assert len(out) == 1 + 7 + 1 and out[-1] == "7 break-the-glass entries, 3 tokens"
    assert "bacsi (doctor, tyt-00004)\tPatient/p7\tHTTP " in out[6]
    assert out[6].endswith("cấp cứu: bệnh nhân bất tỉnh")
    assert "(emergency-access token issued)" in out[7]
    assert out[3].endswith("(no reason given)")
    assert main(["audit", "break-glass", "--db", db_url, "--org", "so-08"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + 2 + 1 and all("ytx" in line for line in out[1:3])
    assert main(["audit", "break-glass", "--db", db_url, "--since", "2999-01-01"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "0 break-the-glass entries, 0 tokens"
    assert main(["audit", "break-glass", "--db", db_url, "--since", "last week"]) == 2
    assert "--since" in capsys.readouterr().err


def test_the_capability_statement_offers_audit_events_read_only() -> None:
    from songkhoe.rest.capabilities import capability_statement

    rest = capability_statement(None)["rest"][0]
    audit = next(r for r in rest["resource"] if r["type"] == "AuditEvent")
    assert {i["code"] for i in audit["interaction"]} == {"read", "vread", "search-type"}
