"""A Patient's move or creation and a write to its compartment at the same time, on both
backends: the written resource ends with the Patient's Organization, whichever transaction
came first (PostgreSQL: ``access.owned_patients_lock_sql`` and ``OwnerIndex.before_commit``;
SQLite: one writer at a time)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from .test_access import _obs, _org, _owners, _patient

WAIT = 0.3  # seconds the second transaction is left to run into the first one's lock


@pytest.fixture
def stations(store: Any) -> Any:
    for id_, parent in [("moh", None), ("tyt-a", "moh"), ("tyt-b", "moh")]:
        _org(store, id_, parent)
    store.update("Patient", "p0", _patient("p0", "tyt-a"))
    return store


def _move(store: Any) -> None:
    store.update("Patient", "p0", _patient("p0", "tyt-b"))


def _load_move(store: Any) -> None:  # as ``songkhoe import`` moves a Patient
    from songkhoe.store.bulk import load

    summary = load(store, [("moved", _patient("p0", "tyt-b"))])
    assert summary.loaded == 1


def _write(store: Any) -> None:
    store.create(_obs("p0"))


def _race(store: Any, first: Callable[[Any], None], second: Callable[[Any], None]) -> bool:
    """``first`` in a transaction flushed and left uncommitted a while, ``second`` (its own
    transaction) started meanwhile; whether ``second`` waited for the first's commit."""
    held, release, failed = threading.Event(), threading.Event(), []

    def hold_open() -> None:
        try:
            with store.transaction() as tx:
                first(tx)
                tx.flush()
                held.set()
                release.wait(10)
        except Exception as exc:  # noqa: BLE001 - reported below
            failed.append(exc)
            held.set()

    def second_one() -> None:
        try:
            second(store)
        except Exception as exc:  # noqa: BLE001
            failed.append(exc)

    opener = threading.Thread(target=hold_open)
    opener.start()
    assert held.wait(10)
    other = threading.Thread(target=second_one)
    other.start()
    time.sleep(WAIT)
    waited = other.is_alive()
    release.set()
    opener.join(10)
    other.join(10)
    assert not failed, failed
    return waited


@pytest.mark.parametrize("first", ["move", "write", "write, then a load moves"])
def test_a_record_written_during_its_patients_move_follows_the_patient(stations: Any,
                                                                       first: str) -> None:
    if first == "move":
        waited = _race(stations, lambda tx: tx.update("Patient", "p0", _patient("p0", "tyt-b")),
                       _write)
    else:
        waited = _race(stations, lambda tx: tx.create(_obs("p0")),
                       _move if first == "write" else _load_move)
    orgs = {(rtype, org) for _, rtype, _, org in _owners(stations)}
    assert orgs == {("Patient", "tyt-b"), ("Observation", "tyt-b")}
    assert waited


def _two_at_once(store: Any, write: Callable[[Any, threading.Barrier, tuple[str, str]], None],
                 pair: tuple[str, str]) -> None:
    """``write(tx, barrier, order)`` in two transactions at once, of ``pair`` and of it
    reversed (two bulk loaders); neither may fail (a deadlock fails one)."""
    barrier, failed = threading.Barrier(2, timeout=10), []

    def run(order: tuple[str, str]) -> None:
        try:
            with store.transaction(derive=False) as tx:
                write(tx, barrier, order)
        except Exception as exc:  # noqa: BLE001 - reported below
            failed.append(exc)

    threads = [threading.Thread(target=run, args=(o,)) for o in (pair, pair[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not failed, failed


def test_writers_of_the_same_people_in_opposite_orders_do_not_wait(pg_schema_url: str) -> None:
    """PostgreSQL: two transactions writing records of p0 then p1, and of p1 then p0,
    flushing between: the Patients' lock is shared between writers, so neither waits and no
    deadlock is possible."""
    from songkhoe.store import open_store

    def write(tx: Any, halfway: threading.Barrier, order: tuple[str, str]) -> None:
        tx.create(_obs(order[0]))
        tx.flush()
        halfway.wait()
        tx.create(_obs(order[1]))

    store = open_store(pg_schema_url)
    try:
        _org(store, "tyt-a", None)
        for pid in ("p0", "p1"):
            store.update("Patient", pid, _patient(pid, "tyt-a"))
        _two_at_once(store, write, ("p0", "p1"))
        assert {(t, o) for _, t, _, o in _owners(store)} == {("Patient", "tyt-a"),
                                                            ("Observation", "tyt-a")}
        assert store.search("Observation", [("_total", "accurate")]).total == 4
    finally:
        store.close()


@pytest.mark.parametrize("first", ["create", "write"])
def test_a_record_written_while_its_patient_is_created_gets_its_organization(
        stations: Any, first: str) -> None:
    """The Patient's row is invisible to the other transaction until it commits, so neither
    can wait for the other on it; whichever commits last gives the record its Organization
    (failed on PostgreSQL before ``OwnerIndex.before_commit``: the record kept none)."""
    if first == "create":
        _race(stations, lambda tx: tx.update("Patient", "p1", _patient("p1", "tyt-a")),
              lambda store: store.create(_obs("p1")))
    else:
        _race(stations, lambda tx: tx.create(_obs("p1")),
              lambda store: store.update("Patient", "p1", _patient("p1", "tyt-a")))
    assert {(t, o) for _, t, p, o in _owners(stations) if p == "p1"} == {
        ("Patient", "tyt-a"), ("Observation", "tyt-a")}


def test_loaders_creating_the_patients_of_each_others_records_do_not_deadlock(
        pg_schema_url: str) -> None:
    """PostgreSQL: two transactions (two bulk loaders), each creating a Patient and writing a
    record of the Patient the other creates, committing at the same time: each record gets
    its Patient's Organization, and the locks that order their last statements are taken in
    one order, so neither deadlocks."""
    from songkhoe.store import open_store

    def load(tx: Any, flushed: threading.Barrier, order: tuple[str, str]) -> None:
        mine, theirs = order
        tx.update("Patient", mine, _patient(mine, "tyt-a"))
        tx.create(_obs(theirs))
        tx.flush()
        flushed.wait()

    store = open_store(pg_schema_url)
    try:
        _org(store, "tyt-a", None)
        for round_ in range(5):
            _two_at_once(store, load, (f"a{round_}", f"b{round_}"))
        assert {(t, o) for _, t, _, o in _owners(store)} == {("Patient", "tyt-a"),
                                                            ("Observation", "tyt-a")}
    finally:
        store.close()
