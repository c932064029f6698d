"""The indicators' base kept over a warehouse (analytics/kept_base.py): after a refresh only the
people whose resources changed are built again, and the base then equals one built afresh —
row for row, and in the indicators computed from it."""

from __future__ import annotations

import copy
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb

from songkhoe.analytics import indicators as ind
from songkhoe.analytics import warehouse
from songkhoe.analytics.kept_base import KeptBase
from tests.analytics.test_indicators import (
    AS_OF,
    Population,
    assert_same,
    edge_cases,
    keyed,
    random_people,
)


def rows(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[Any, ...]]:
    return con.execute(f"SELECT * FROM temp.{table} ORDER BY ALL").fetchall()


def fresh(folder: Path) -> tuple[duckdb.DuckDBPyConnection, ind.Base]:
    con = warehouse.connect(folder)
    return con, ind.prepare(ind.DuckDBEngine(con), AS_OF)


def assert_like_fresh(kept: KeptBase, folder: Path) -> None:
    """The kept base equals one built afresh row for row; the indicators from it and the
    kept counts equal those computed from scratch."""
    con, base, closed = kept.get(AS_OF)
    assert len(closed.periods) == 20  # 11 months, 7 quarters, 2 years complete on AS_OF
    again, _ = fresh(folder)
    for table in ("ind_base", "ind_visits"):
        assert rows(con, table) == rows(again, table), table
    assert_same(keyed(ind.compute(ind.DuckDBEngine(con), as_of=AS_OF, base=base,
                                  closed=closed).to_pylist()),
                keyed(ind.compute(ind.DuckDBEngine(again), as_of=AS_OF).to_pylist()))
    again.close()


def stored(store: Any, folder: Path, people: int) -> tuple[Population, dict[str, str]]:
    """The edge population and ``people`` random ones stored, and the warehouse built."""
    pop = Population()
    who = edge_cases(pop)
    random_people(pop, people, seed=3)
    for r in pop.resources:
        store.update(r["resourceType"], r["id"], r)
    warehouse.refresh(store, folder)
    return pop, who


def test_a_refresh_rebuilds_only_the_people_it_touched(store: Any, tmp_path: Path) -> None:
    folder = tmp_path / "warehouse"
    pop, who = stored(store, folder, 60)
    by_id = {r["id"]: r for r in pop.resources}
    kept = KeptBase(folder)
    con, base, closed = kept.get(AS_OF)
    assert kept.get(AS_OF) == (con, base, closed)  # kept, not built again
    assert_like_fresh(kept, folder)

    def subject(r: dict[str, Any]) -> str:
        return str(r["subject"]["reference"].split("/")[1])

    bps = [r for r in pop.resources if r["resourceType"] == "Observation"
           and r["code"]["coding"][0]["code"] == "85354-9"]
    deleted, lowered = bps[0], bps[-1]
    store.delete("Observation", deleted["id"])  # names its person only in the old row
    low = copy.deepcopy(lowered)
    for c, v in zip(low["component"], (110, 70), strict=True):
        c["valueQuantity"]["value"] = v
    store.update("Observation", low["id"], low)
    moved = by_id[who["moved"]]
    store.update("Patient", moved["id"], {**moved, "managingOrganization": {
        "reference": "Organization/tyt-b1"}})
    extra = Population()
    extra.n = 10_000
    extra.checkup(subject(lowered), "2026-11-20")
    extra.call(subject(bps[5]), "2026-11-21", "moved-away")
    for r in extra.resources:
        store.update(r["resourceType"], r["id"], r)
    touched = {subject(deleted), subject(lowered), moved["id"], subject(bps[5])}

    assert kept.refreshed(warehouse.refresh(store, folder)) == len(touched)
    assert kept.get(AS_OF)[0] is con  # updated in place
    assert_like_fresh(kept, folder)
    assert kept.refreshed(warehouse.refresh(store, folder)) == 0  # nothing changed

    organization = by_id["tyt-b1"]
    store.update("Organization", "tyt-b1", {**organization, "name": "Trạm mới"})
    assert kept.refreshed(warehouse.refresh(store, folder)) is None  # everyone: built again
    assert kept.get(AS_OF)[0] is not con
    assert_like_fresh(kept, folder)
    kept.close()


def test_a_missed_refresh_drops_it_and_a_new_day_keeps_the_counts(store: Any,
                                                                   tmp_path: Path) -> None:
    folder = tmp_path / "warehouse"
    stored(store, folder, 0)
    kept = KeptBase(folder)
    first, _, _ = kept.get(AS_OF)
    warehouse.refresh(store, folder)  # not shown to the kept base
    assert kept.refreshed(warehouse.refresh(store, folder)) is None
    con, base, closed = kept.get(AS_OF)
    assert con is not first
    month_end = date(2026, 11, 30)  # the next month: November is complete, a base anew
    same, later, more = kept.get(month_end + timedelta(days=1))
    assert same is con and later.as_of != base.as_of
    assert ("month", date(2026, 11, 1)) in more.periods - closed.periods
    assert ("month", date(2025, 12, 1)) in closed.periods - more.periods  # no longer shown
    assert_same(keyed(ind.compute(ind.DuckDBEngine(same), as_of=later.as_of, base=later,
                                  closed=more).to_pylist()),
                keyed(ind.compute(ind.DuckDBEngine(warehouse.connect(folder)),
                                  as_of=later.as_of).to_pylist()))
    kept.close()


def test_a_refresh_that_compacts_is_followed_too(store: Any, tmp_path: Path) -> None:
    """The delta's files are merged into a new base in the same refresh: they are still read
    (kept until the next refresh) to find the people changed."""
    folder = tmp_path / "warehouse"
    pop, _ = stored(store, folder, 20)
    kept = KeptBase(folder)
    kept.get(AS_OF)
    bp = copy.deepcopy(next(r for r in pop.resources if r["resourceType"] == "Observation"
                            and r["code"]["coding"][0]["code"] == "85354-9"))
    bp["component"][0]["valueQuantity"]["value"] = 181
    store.update("Observation", bp["id"], bp)
    report = warehouse.refresh(store, folder, max_deltas=0)
    assert report.views["blood_pressure"].compacted
    assert kept.refreshed(report) == 1
    assert_like_fresh(kept, folder)
    kept.close()
