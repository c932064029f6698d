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
