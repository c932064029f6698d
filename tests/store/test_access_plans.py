"""The commit-time check of a secured transaction's writes (``Tx.finish``), on both backends:
on PostgreSQL every written (type, action) is one part of a single statement, each row's
rule evaluated in a LATERAL subquery of that row (``Tx._outside``); whichever part a row
outside the rule is in, the transaction is refused and names it. A moved Patient's
compartment follows it (``OwnerIndex.apply``, its Patients given as VALUES)."""

from __future__ import annotations

from typing import Any

import pytest

from songkhoe.fhir.outcome import FhirError
from songkhoe.store.access import Rule, acting_as

from .test_access import Fixed, _obs, _org, _owners, _patient


@pytest.fixture
def stations(store: Any) -> Any:
    for id_, parent in [("moh", None), ("tyt-a", "moh"), ("tyt-b", "moh")]:
        _org(store, id_, parent)
    for n in range(3):
        store.update("Patient", f"p{n}", _patient(f"p{n}", "tyt-a"))
    return store


@pytest.mark.parametrize("outside_first", [False, True])
def test_the_row_outside_is_named_whichever_check_holds_it(stations: Any,
                                                           outside_first: bool) -> None:
    with acting_as(Fixed(Rule(org="tyt-a"))), pytest.raises(FhirError) as refused:
        with stations.transaction() as tx:
            if outside_first:
                tx.update("Patient", "q", _patient("q", "tyt-b"))
            for n in range(3):
                tx.create(_obs(f"p{n}"))
                tx.update("Patient", f"p{n}", _patient(f"p{n}", "tyt-a", family="Trần"))
            if not outside_first:
                tx.update("Patient", "q", _patient("q", "tyt-b"))
    assert refused.value.status == 403 and "Patient/q " in str(refused.value.issues[0])
    assert stations.search("Observation", [("_total", "accurate")]).total == 0  # none kept
    with acting_as(Fixed(Rule(org="tyt-a"))), stations.transaction() as tx:
        for n in range(3):
            tx.create(_obs(f"p{n}"))
        tx.update("Patient", "p0", _patient("p0", "tyt-a", family="Trần"))
    assert stations.search("Observation", [("_total", "accurate")]).total == 3


def test_a_moved_patient_moves_its_compartment(stations: Any) -> None:
    for n in range(3):
        stations.create(_obs(f"p{n}"))
    with stations.transaction() as tx:
        for n in (0, 2):
            tx.update("Patient", f"p{n}", _patient(f"p{n}", "tyt-b"))
    orgs = {(row[2], row[3]) for row in _owners(stations)}
    assert orgs == {("p0", "tyt-b"), ("p1", "tyt-a"), ("p2", "tyt-b")}


def test_owner_rows_of_written_resources_are_found_by_row_id(tmp_path: Any) -> None:
    """SQLite plans without statistics: given a flush's 500 written rows, the owner-row
    statement probes ``idx_reference`` by rid rather than reading every owner reference of
    the store by parameter (39 ms against 2 ms a chunk at 20,000 people)."""
    from songkhoe.store import open_store
    from songkhoe.store.access import owner_rows_sql

    store = open_store(f"sqlite:///{tmp_path / 'plan.db'}")
    try:
        with store.reading() as tx:
            plan = [row[-1] for row in tx.execute(
                "EXPLAIN QUERY PLAN " + owner_rows_sql(", ".join("?" * 500)),
                list(range(500))).fetchall()]
    finally:
        store.close()
    reads = [step for step in plan if " x " in f" {step} "]
    assert reads and all("idx_reference_rid" in step for step in reads), plan


def test_owner_rows_are_planned_for_their_own_row_ids(pg_schema_url: str) -> None:
    """PostgreSQL: the connection prepares a statement run twice and may then keep a generic
    plan, blind to the row ids; the owner-row statements are planned for each call's ids
    (a generic plan read every reference to a Patient: 0.85 s a chunk of 500 at 20,000
    people, 4 ms planned for the ids)."""
    from songkhoe.store import open_store

    store = open_store(pg_schema_url)
    try:
        _org(store, "tyt-a", None)
        store.update("Patient", "p0", _patient("p0", "tyt-a"))
        with store.transaction() as tx:
            for _ in range(12):  # one connection: each flush runs the same owner statement
                tx.create(_obs("p0"))
                tx.flush()
            plans = tx.execute("SELECT COALESCE(SUM(generic_plans), 0), "
                               "COALESCE(SUM(custom_plans), 0) FROM pg_prepared_statements "
                               "WHERE statement LIKE '%INSERT INTO owners%'").fetchone()
    finally:
        store.close()
    assert plans[1] >= 10 and plans[0] == 0, plans
