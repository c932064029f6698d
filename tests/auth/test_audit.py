"""The audit chain: edits and deletions are found by ``verify`` and ``songkhoe audit verify``."""

from __future__ import annotations

from songkhoe.auth.audit import Event
from songkhoe.cli import main


def _fill(auth, n: int = 5) -> None:
    for i in range(n):
        auth.audit.record(Event("read", "GET", f"/fhir/Patient/p{i}", 200,
                                entity=f"Patient/p{i}", who="bacsi"))


def test_intact_chain(auth) -> None:
    _fill(auth)
    assert auth.audit.verify() is None
    count, head = auth.audit.head()
    assert count == 5 and len(head) == 64


def test_edited_entry_is_found(auth) -> None:
    _fill(auth)
    content = auth.db.one("SELECT content FROM audit_log WHERE seq = 3")[0]
    auth.db.run("UPDATE audit_log SET content = ? WHERE seq = 3",
                (content.replace("Patient/p2", "Patient/p9"),))
    problem = auth.audit.verify()
    assert problem is not None and problem.seq == 3 and "altered" in problem.reason


def test_edit_with_recomputed_hash_breaks_the_next_entry(auth) -> None:
    from songkhoe.auth.audit import chain_hash

    _fill(auth)
    prev, content = auth.db.one("SELECT prev_hash, content FROM audit_log WHERE seq = 2")
    content = content.replace("Patient/p1", "Patient/p7")
    auth.db.run("UPDATE audit_log SET content = ?, hash = ? WHERE seq = 2",
                (content, chain_hash(prev, content.encode())))
    problem = auth.audit.verify()
    assert problem is not None and problem.seq == 3 and "does not follow" in problem.reason


def test_deleted_entry_is_found(auth) -> None:
    _fill(auth)
    auth.db.run("DELETE FROM audit_log WHERE seq = 4")
    problem = auth.audit.verify()
    assert problem is not None and problem.seq == 4 and "missing" in problem.reason


def test_deleted_first_entry_is_found(auth) -> None:
    _fill(auth)
    auth.db.run("DELETE FROM audit_log WHERE seq = 1")
    assert auth.audit.verify().seq == 1


def test_cli_audit_verify(auth, db_url, capsys) -> None:
    _fill(auth)
    assert main(["audit", "verify", "--db", db_url]) == 0
    assert "intact: 5 entries" in capsys.readouterr().out
    auth.db.run("UPDATE audit_log SET recorded = recorded + 1, content = "
                "replace(content, 'p3', 'p4') WHERE seq = 4")
    assert main(["audit", "verify", "--db", db_url]) == 1
    assert "BROKEN at entry 4" in capsys.readouterr().out


def _events() -> list:
    from songkhoe.auth import AccessContext, ScopeSet

    scopes = ScopeSet.parse("user/*.cruds")
    doctor = AccessContext(subject="bacsi", kind="user", role="doctor", org="tyt-00004",
                           scopes=scopes, client_id="web", address="10.0.0.7", token_id="j1")
    glass = AccessContext(subject="bacsi", kind="user", role="doctor", org="tyt-00004",
                          scopes=scopes, purpose="ETREAT", break_glass=True, token_id="j2")
    system = AccessContext(subject="so-04-report", kind="system", role="system", org="so-04",
                           scopes=ScopeSet.parse("system/*.rs"), client_id="so-04-report")
    citizen = AccessContext(subject="lan", kind="user", role="citizen", org=None,
                            scopes=ScopeSet.parse("patient/*.rs"), patient="p4",
                            purpose="TREAT")
    return [
        Event("read", "GET", "/fhir/Patient/p1", 200, entity="Patient/p1", access=doctor,
              address="10.0.0.7"),
        Event("vread", "GET", "/fhir/Observation/o1/_history/2", 304,
              entity="Observation/o1", access=citizen),
        Event("search-type", "GET", "/fhir/Observation", 200, access=doctor,
              query="subject=Patient/p9&code=http://loinc.org|8480-6&_count=50"),
        Event("search-type", "POST", "/fhir/Patient/_search", 200, access=system,
              query="_id=p3", address="192.168.1.2"),
        Event("search-compartment", "GET", "/fhir/Patient/p4/Observation", 200,
              entity="Patient/p4", access=citizen, query="category=laboratory"),
        Event("create", "POST", "/fhir/Observation", 201, entity="Observation/n1",
              access=glass, reason="unconscious, ER"),
        Event("read", "GET", "/fhir/Patient/p8", 403, entity="Patient/p8", access=glass,
              detail="forbidden — ngoài phạm vi"),
        Event("token", "POST", "/auth/token", 200, access=glass, reason=None,
              detail="break the glass: emergency access token issued"),
        Event("login", "POST", "/auth/authorize", 401, who="someone", address="10.1.1.1",
              detail="invalid_grant"),
        Event("other", "GET", "/health", 503),
        Event("batch-transaction", "POST", "/fhir", 500, access=doctor, detail='a "quoted" x'),
        Event("capabilities", "GET", "/fhir/metadata", 200),
    ]


def test_entries_are_the_audit_events_canonical_json_and_search_columns() -> None:
    from datetime import timedelta

    from songkhoe.auth.audit import _EPOCH, audit_event, canonical, entry, search_columns

    for event in _events():
        for us in (1_800_000_000_000_000, 1_800_000_000_123_456):
            resource = audit_event(event, _EPOCH + timedelta(microseconds=us))
            assert entry(event, us) == (canonical(resource), search_columns(resource)), event
