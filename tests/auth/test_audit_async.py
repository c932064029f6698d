"""Answered first, committed right after: successful reads and searches leave before their
AuditEvent is committed; writes, refusals, failures and sign-ins wait for theirs. Entries of
answered requests are never dropped: a failed write keeps them queued, retries them, and
``/health`` reports it; the app's shutdown commits what is queued."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from starlette.testclient import TestClient

from songkhoe.auth.audit import Event
from songkhoe.rest import audit_batch, create_app
from songkhoe.rest.audit_batch import AuditBatcher

from .conftest import password_token, patient_of

FHIR_JSON = "application/fhir+json"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _committed(auth: Any) -> list[str]:
    """``outcomeDesc`` and subtype of the rows in the table, without committing the queue."""
    import orjson

    return [f"{e['subtype'][0]['code']} {e['outcomeDesc']}" for e in
            (orjson.loads(r[0]) for r in auth.audit.db.all("SELECT content FROM audit_log ORDER BY seq"))]


def _event(n: int) -> Event:
    return Event("read", "GET", f"/fhir/Patient/p{n}", 200, entity=f"Patient/p{n}")


@pytest.fixture
def token(http: TestClient, doctor: str) -> str:
    return str(password_token(http, doctor)["access_token"])


@pytest.fixture
def pid(http: TestClient, token: str) -> str:
    r = http.post("/fhir/Patient", json=patient_of("tyt-00004"),
                  headers={**_bearer(token), "content-type": FHIR_JSON})
    assert r.status_code == 201
    return str(r.json()["id"])


class Held:
    """``AuditLog._append`` held until ``release``: shows what was answered meanwhile."""

    def __init__(self, auth: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        real = auth.audit._append

        def held(batch: Any) -> None:
            self.entered.set()
            self.gate.wait(timeout=30)  # a server that waited for it would answer after 30 s
            real(batch)

        monkeypatch.setattr(auth.audit, "_append", held)


def test_a_read_is_answered_before_its_audit_event_is_committed(http, auth, token, pid,
                                                                monkeypatch) -> None:
    before = _committed(auth)
    held = Held(auth, monkeypatch)
    r = http.get(f"/fhir/Patient/{pid}", headers=_bearer(token))
    assert r.status_code == 200
    assert held.entered.wait(timeout=30)  # the writer has the entry …
    assert _committed(auth) == before  # … and the answer left before its commit
    held.gate.set()
    auth.audit.flush()  # the deterministic boundary: everything queued is committed
    assert _committed(auth) == [*before, "read HTTP 200"]
    assert auth.audit.verify() is None


def _broken(monkeypatch: pytest.MonkeyPatch, auth: Any) -> Any:
    real = auth.audit._append

    def broken(batch: Any) -> None:
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(auth.audit, "_append", broken)
    return real


def test_writes_refusals_failures_and_sign_ins_wait_for_their_entry(http, auth, doctor, token,
                                                                    pid, monkeypatch) -> None:
    _broken(monkeypatch, auth)
    requests = [
        ("POST", "/fhir/Patient", _bearer(token), patient_of("tyt-00004")),  # a write
        ("GET", "/fhir/Patient", {}, None),  # refused: no token
        ("GET", "/fhir/Patient/unknown-id", _bearer(token), None),  # 404: maybe a hidden row
        ("GET", "/fhir/Patient?birthdate=notadate", _bearer(token), None),  # 400
    ]
    for method, url, headers, body in requests:
        assert auth.audit.failing is None  # answered-first reads would not wait yet
        with pytest.raises(RuntimeError, match="audit log unavailable"):
            http.request(method, url, headers=headers, json=body)
        auth.audit.failing = None
    with pytest.raises(RuntimeError, match="audit log unavailable"):
        http.post("/auth/token", data={"grant_type": "password", "username": doctor,
                                       "password": "correct horse battery"})


def test_answered_entries_survive_a_failed_write_and_health_reports_it(http, auth, token, pid,
                                                                       monkeypatch) -> None:
    before = _committed(auth)
    real = _broken(monkeypatch, auth)
    assert http.get(f"/fhir/Patient/{pid}", headers=_bearer(token)).status_code == 200
    with pytest.raises(RuntimeError, match="audit log unavailable"):
        auth.audit.flush()  # the write of the answered read fails: it stays queued
    assert auth.audit.failing is not None and auth.audit.pending() == 1
    health = http.get("/health")  # answers while the log fails, and says so
    assert health.status_code == 503 and health.json()["status"] == "failing"
    with pytest.raises(RuntimeError, match="audit log unavailable"):  # reads wait now: no data
        http.get(f"/fhir/Patient/{pid}", headers=_bearer(token))
    monkeypatch.setattr(auth.audit, "_append", real)
    assert http.get(f"/fhir/Patient/{pid}/_history/1", headers=_bearer(token)).status_code == 200
    auth.audit.flush()
    assert http.get("/health").json() == {"status": "ok"}
    auth.audit.flush()
    # the first read and the health checks, in order; the read refused for want of a log is
    # not there (its client got no data)
    assert _committed(auth)[len(before):] == ["read HTTP 200", "other HTTP 503",
                                              "vread HTTP 200", "other HTTP 200"]
    assert auth.audit.verify() is None


def test_a_full_queue_makes_reads_wait(http, auth, token, pid, monkeypatch) -> None:
    http.app.state.audit_writer.limit = 0
    _broken(monkeypatch, auth)
    with pytest.raises(RuntimeError, match="audit log unavailable"):
        http.get(f"/fhir/Patient/{pid}", headers=_bearer(token))


def test_audit_event_searches_show_every_answered_request(http, auth, store, monkeypatch) -> None:
    auth.identities.add_user("admin2", "correct horse battery", "administrator", None)
    token = password_token(http, "admin2")["access_token"]
    monkeypatch.setattr(AuditBatcher, "_start", lambda self: None)  # no writer: all queued
    for _ in range(3):
        assert http.get("/fhir/Patient", headers=_bearer(token)).status_code == 200
    bundle = http.get("/fhir/AuditEvent?subtype=search-type", headers=_bearer(token)).json()
    assert len(bundle["entry"]) == 3


def test_shutdown_commits_the_queue(store, auth, doctor) -> None:
    app = create_app(store, auth=auth)
    with TestClient(app) as http:
        token = password_token(http, doctor)["access_token"]
        before = len(_committed(auth))
        writer = app.state.audit_writer
        writer._start = lambda: None  # nothing written while serving
        for _ in range(3):
            assert http.get("/fhir/Patient", headers=_bearer(token)).status_code == 200
        assert len(_committed(auth)) == before and auth.audit.pending() == 3
    assert len(_committed(auth)) == before + 3  # the lifespan's shutdown drained the queue


def test_entries_that_cannot_be_written_at_shutdown_go_to_the_error_log(
        store, auth, doctor, monkeypatch, caplog) -> None:
    app = create_app(store, auth=auth)
    with TestClient(app) as http:
        token = password_token(http, doctor)["access_token"]
        app.state.audit_writer._start = lambda: None
        assert http.get("/fhir/Patient?name=Lan", headers=_bearer(token)).status_code == 200
        _broken(monkeypatch, auth)
        caplog.set_level(logging.ERROR, logger="songkhoe.audit")
    unwritten = [r.getMessage() for r in caplog.records
                 if r.getMessage().startswith("unwritten AuditEvent: ")]
    assert len(unwritten) == 1 and '"description":"name=Lan"' in unwritten[0]


def test_the_writer_retries_answered_entries_until_they_are_written(auth, monkeypatch) -> None:
    monkeypatch.setattr(audit_batch, "RETRY_FIRST", 0.0)
    calls = []
    real = auth.audit._append

    def flaky(batch: Any) -> None:
        calls.append(len(batch))
        if len(calls) <= 2:
            raise RuntimeError("database is locked")
        real(batch)

    monkeypatch.setattr(auth.audit, "_append", flaky)
    before = auth.audit.head()[0]

    async def scenario() -> None:
        batcher = AuditBatcher(auth.audit, window=0)
        batcher.queue(_event(1))
        batcher.queue(_event(2))
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.gather(*others)  # the writer, until it has nothing left

    asyncio.run(scenario())
    assert calls == [2, 2, 2] and auth.audit.failing is None and auth.audit.pending() == 0
    entries = auth.audit.entries()[before:]
    assert [e["entity"][0]["what"]["reference"] for e in entries] == ["Patient/p1", "Patient/p2"]
    assert auth.audit.verify() is None


def test_backpressure_a_full_queue_is_written_before_the_next_request_answers(auth) -> None:
    async def scenario() -> tuple[bool, int, bool]:
        batcher = AuditBatcher(auth.audit, limit=2)
        batcher.queue(_event(1))
        batcher.queue(_event(2))  # no await yet: the writer has not run
        full = not batcher.accepting()
        seq = await batcher.record(_event(3))
        return full, seq, batcher.accepting()

    before = auth.audit.head()[0]
    full, seq, accepting = asyncio.run(scenario())
    assert full and accepting and seq == before + 3 and auth.audit.pending() == 0


def test_answered_entries_of_one_moment_share_a_commit_without_further_requests(
        auth, monkeypatch) -> None:
    batches: list[int] = []
    real = auth.audit._append

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()

        def appended(batch: Any) -> None:
            real(batch)
            batches.append(len(batch))
            loop.call_soon_threadsafe(written.set_result, None)

        monkeypatch.setattr(auth.audit, "_append", appended)
        batcher = AuditBatcher(auth.audit, window=0.005)
        for n in range(3):
            batcher.queue(_event(n))
        assert auth.audit.pending() == 3 and not batches  # queued, not yet written
        await asyncio.wait_for(written, timeout=30)  # the window's timer starts the writer
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.gather(*others)  # which then finds nothing more to write

    asyncio.run(scenario())
    assert batches == [3] and auth.audit.pending() == 0
