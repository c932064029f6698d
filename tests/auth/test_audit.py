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
