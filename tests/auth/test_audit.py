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
    content = auth.audit.db.one("SELECT content FROM audit_log WHERE seq = 3")[0]
    auth.audit.db.run("UPDATE audit_log SET content = ? WHERE seq = 3",
                (content.replace("Patient/p2", "Patient/p9"),))
    problem = auth.audit.verify()
    assert problem is not None and problem.seq == 3 and "altered" in problem.reason


def test_edit_with_recomputed_hash_breaks_the_next_entry(auth) -> None:
    from songkhoe.auth.audit import chain_hash

    _fill(auth)
    prev, content = auth.audit.db.one("SELECT prev_hash, content FROM audit_log WHERE seq = 2")
    content = content.replace("Patient/p1", "Patient/p7")
    auth.audit.db.run("UPDATE audit_log SET content = ?, hash = ? WHERE seq = 2",
                (content, chain_hash(prev, content.encode())))
    problem = auth.audit.verify()
    assert problem is not None and problem.seq == 3 and "does not follow" in problem.reason


def test_deleted_entry_is_found(auth) -> None:
    _fill(auth)
    auth.audit.db.run("DELETE FROM audit_log WHERE seq = 4")
    problem = auth.audit.verify()
    assert problem is not None and problem.seq == 4 and "missing" in problem.reason


def test_deleted_first_entry_is_found(auth) -> None:
    _fill(auth)
    auth.audit.db.run("DELETE FROM audit_log WHERE seq = 1")
    assert auth.audit.verify().seq == 1


def test_cli_audit_verify(auth, db_url, capsys) -> None:
    _fill(auth)
    assert main(["audit", "verify", "--db", db_url]) == 0
    assert "intact: 5 entries" in capsys.readouterr().out
    auth.audit.db.run("UPDATE audit_log SET recorded = recorded + 1, content = "
                      "replace(content, 'p3', 'p4') WHERE seq = 4")
    assert main(["audit", "verify", "--db", db_url]) == 1
    assert "BROKEN at entry 4" in capsys.readouterr().out


def test_sqlite_log_is_its_own_file_and_an_edit_there_is_found(tmp_path, capsys) -> None:
    """The store's database holds no entry; editing a row of the audit file with plain
    SQLite, as someone with the file could, breaks ``songkhoe audit verify``."""
    import sqlite3

    from songkhoe.auth import Auth
    from songkhoe.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'songkhoe.db'}")
    auth = Auth(store)
    try:
        _fill(auth)
        auth.audit.flush()
        with sqlite3.connect(tmp_path / "songkhoe.db") as records:
            assert records.execute("SELECT name FROM sqlite_master WHERE name = 'audit_log'"
                                   ).fetchall() == []
        with sqlite3.connect(tmp_path / "songkhoe-audit.db") as log:
            assert log.execute("SELECT COUNT(*) FROM audit_log").fetchone() == (5,)
            log.execute("UPDATE audit_log SET content = replace(content, 'p1', 'p2') "
                        "WHERE seq = 2")
        url = f"sqlite:///{tmp_path / 'songkhoe.db'}"
        assert main(["audit", "verify", "--db", url]) == 1
        assert "BROKEN at entry 2" in capsys.readouterr().out
    finally:
        auth.close()
        store.close()


def test_entries_written_in_the_store_move_to_the_audit_database(db_url, tmp_path) -> None:
    """A log written in the store's database (before it moved) is moved whole, in order,
    after which the chain still verifies and the next entry follows it; a second start
    moves nothing again. On PostgreSQL the log moves when ``audit_db`` names another
    database."""
    from songkhoe.auth.db import Db
    from songkhoe.store import open_store

    from tests.conftest import pg_schema

    store = open_store(db_url)
    try:
        if store.backend.name == "postgres":
            with pg_schema() as other:  # another schema: as another database would be
                _move_and_check(store, Db(store), other)
        else:
            _move_and_check(store, Db(store), f"sqlite:///{tmp_path / 'elsewhere.db'}")
    finally:
        store.close()


def _move_and_check(store, records, audit_url: str) -> None:
    from songkhoe.auth import Auth, audit_db
    from songkhoe.auth.audit import AuditLog
    from songkhoe.auth.passwords import system_clock

    in_store = AuditLog(audit_db.AuditDb(store.backend, apart=False, owned=False),
                        system_clock)
    if store.backend.name == "sqlite":  # the store's own table, as schema version 4 left it
        assert records.one("SELECT COUNT(*) FROM audit_log")[0] == 0
    in_store.record_many([Event("read", "GET", f"/fhir/Patient/p{i}", 200,
                                entity=f"Patient/p{i}", who="bacsi") for i in range(7)])
    head = in_store.head()
    chunk, audit_db.MOVE_CHUNK = audit_db.MOVE_CHUNK, 3  # several chunks
    try:
        auth = Auth(store, audit_db=audit_url)
    finally:
        audit_db.MOVE_CHUNK = chunk
    try:
        assert auth.audit.head() == head and auth.audit.verify() is None
        assert [e["entity"][0]["what"]["reference"] for e in auth.audit.entries()] == \
            [f"Patient/p{i}" for i in range(7)]
        assert auth.audit.record(Event("read", "GET", "/fhir/Patient/p8", 200, who="x")) == 8
        assert auth.audit.verify() is None
    finally:
        auth.close()
    with store.backend.transaction(write=False) as conn:
        assert not audit_db._has_log(store.backend, conn)
    again = Auth(store, audit_db=audit_url)  # nothing left to move
    try:
        assert again.audit.head()[0] == 8
    finally:
        again.close()
    # a log that is not the same chain is refused, and the store's entries stay
    in_store = AuditLog(audit_db.AuditDb(store.backend, apart=False, owned=False),
                        system_clock)
    from songkhoe.store.schema import POSTGRES_TYPES, SQLITE_TYPES, _v2, _v4

    types = POSTGRES_TYPES if store.backend.name == "postgres" else SQLITE_TYPES
    with store.backend.transaction(write=True) as conn:
        for sql in [_v2(types)[-1], *(s for s in _v4(types) if "audit_log" in s)]:
            store.backend.execute(conn, sql)
    in_store.record(Event("read", "GET", "/fhir/Patient/q1", 200, who="someone else"))
    import pytest

    with pytest.raises(audit_db.LogsDiffer):
        Auth(store, audit_db=audit_url)
    assert in_store.head()[0] == 1


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


def test_the_store_file_itself_is_refused_as_the_audit_database(tmp_path) -> None:
    import pytest

    from songkhoe.auth import Auth
    from songkhoe.store import open_store

    url = f"sqlite:///{tmp_path / 'songkhoe.db'}"
    store = open_store(url)
    try:
        with pytest.raises(ValueError, match="a database of its own"):
            Auth(store, audit_db=url)
    finally:
        store.close()


def test_two_servers_appending_to_one_audit_file_keep_one_chain(tmp_path) -> None:
    """Two server processes' logs (each its own connections and writer lock on the same
    file) appending at once: every entry is committed once, numbered without gaps, and the
    chain holds."""
    import threading

    from songkhoe.auth import Auth
    from songkhoe.store import open_store

    url = f"sqlite:///{tmp_path / 'songkhoe.db'}"
    stores = [open_store(url), open_store(url)]
    auths = [Auth(s) for s in stores]
    try:
        def append(auth, worker: int) -> None:
            for n in range(20):
                auth.audit.record_many([Event("read", "GET", f"/fhir/Patient/w{worker}-{n}-{i}",
                                              200, who=f"w{worker}") for i in range(3)])

        threads = [threading.Thread(target=append, args=(auths[w % 2], w)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert auths[0].audit.verify() is None
        entries = auths[1].audit.entries()
        assert len(entries) == 4 * 20 * 3
        assert len({e["entity"][0]["what"]["display"] for e in entries}) == 240
    finally:
        for auth, store in zip(auths, stores):
            auth.close()
            store.close()


def test_a_large_batch_is_appended_whole_and_in_order(auth) -> None:
    """600 entries in one transaction (on SQLite statements of 256, 256, 64, 16 and 8 rows):
    numbered 1…600 in the order given, each with its own search columns, and the chain
    holds."""
    events = [Event("read", "GET", f"/fhir/Patient/p{i}", 200, entity=f"Patient/p{i}",
                    who="bacsi") for i in range(600)]
    assert auth.audit.record_many(events) == list(range(1, 601))
    assert auth.audit.verify() is None
    rows = auth.audit.db.all("SELECT seq, patient FROM audit_log ORDER BY seq")
    assert [(int(s), p) for s, p in rows] == [(i + 1, f"p{i}") for i in range(600)]
