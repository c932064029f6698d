"""Group-committed audit appends: concurrent requests share transactions, and every entry is
committed, numbered without gaps and chained when ``record`` returns."""

from __future__ import annotations

import threading

import pytest

from songkhoe.auth.audit import Event


def _event(n: int) -> Event:
    return Event(interaction="read", method="GET", path=f"/fhir/Patient/p{n}", status=200,
                 entity=f"Patient/p{n}")


def test_concurrent_appends_are_all_committed_in_one_chain(auth) -> None:
    seqs: list[int] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        for n in range(40):
            seq = auth.audit.record(_event(k * 100 + n))
            with lock:
                seqs.append(seq)

    before = auth.audit.head()[0]
    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(before + 1, before + 321))
    entries = auth.audit.entries()[before:]
    assert len({e["entity"][0]["what"]["reference"] for e in entries}) == 320
    assert auth.audit.verify() is None


def test_a_failed_append_fails_its_requests_and_the_log_goes_on(auth, monkeypatch) -> None:
    calls = {"n": 0}
    real = auth.audit._append

    def flaky(batch):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("disk full")
        real(batch)

    monkeypatch.setattr(auth.audit, "_append", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        auth.audit.record(_event(1))
    seq = auth.audit.record(_event(2))
    assert auth.audit.head()[0] == seq and auth.audit.verify() is None


def test_requests_of_one_event_loop_share_a_write(auth, monkeypatch) -> None:
    import asyncio

    from songkhoe.rest.audit_batch import AuditBatcher

    calls = []
    real = auth.audit._append

    def counted(batch):
        calls.append(len(batch))
        return real(batch)

    monkeypatch.setattr(auth.audit, "_append", counted)
    batcher = AuditBatcher(auth.audit)

    async def burst() -> list[int]:
        return await asyncio.gather(*(batcher.record(_event(n)) for n in range(50)))

    seqs = asyncio.run(burst())
    assert len(set(seqs)) == 50 and sum(calls) == 50 and len(calls) < 50
    assert auth.audit.verify() is None
