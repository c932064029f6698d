"""The indicators' per-person base (:class:`songkhoe.analytics.indicators.Base`) and the counts
of complete periods (:class:`~songkhoe.analytics.indicators.Closed`) kept over a warehouse, and
brought up to date after each refresh from the people whose resources changed — a maintained
materialised view, as DHIS2 keeps its analytics tables, but kept exact by each refresh.

Building the base reads every result of the warehouse (most of what computing indicators
costs); counting a period reads every person of the base. A refresh after 1% of the data
changed touches a few per cent of the people. After such a refresh (:meth:`KeptBase.refreshed`)
the people concerned are those named by the delta's rows and by the rows the delta supersedes
(a deleted or corrected result names its person only in the old row, read from the state
before the refresh — its files stay until the next refresh, ``warehouse.ViewReport``). Counts
are of people, so the kept counts lose those people's old contributions (their old base rows
against the old data) and gain the new ones; their base rows are deleted and built again with
the warehouse's views narrowed to them (TEMP tables that shadow the views of the same name:
each view is read once, where the base reads the results twice), as of the base's day.

A change of the Organizations (the units every person is counted in), a view rebuilt in full or
a refresh not shown here drops everything, built again in full when next asked for. Another day
builds the base again; the counts of complete periods do not depend on the day and are kept
(those of periods no longer shown by default are let go).

DuckDB only: the rows are replaced in place (DELETE and INSERT on the TEMP tables).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from . import indicators as ind
from . import warehouse

#: the views the base reads, with the column naming each row's person
PERSON_COLUMN = {"patient": "id", "blood_pressure": "patient", "blood_sugar": "patient",
                 "body_measure": "patient", "checkup_encounter": "patient",
                 "condition": "patient", "medication": "patient",
                 "episode_of_care": "patient", "worklist_call": "patient"}
#: views any change of which changes everybody's rows
EVERYONE = ("organization",)
#: the kept commune-level counts of complete periods
COUNTS = "ind_counts"
_COUNT_COLUMNS = "unit, grain, period_start, indicator, numerator, denominator"


class KeptBase:
    """A connection to the warehouse in ``folder`` holding the base as of one day and the
    counts of the complete periods among every grain's default ones."""

    def __init__(self, folder: str | Path,
                 con: duckdb.DuckDBPyConnection | None = None) -> None:
        """``con``: a connection whose views are already there (the warehouse's, or tables
        named like them) to keep the base in, instead of connecting to ``folder``."""
        self.folder = Path(folder)
        self.con: duckdb.DuckDBPyConnection | None = con
        self.base: ind.Base | None = None
        self.periods: set[ind.Period] = set()  # those counted in COUNTS
        self._state: dict[str, Any] | None = None  # the warehouse state they reflect

    def get(self, today: date) -> tuple[duckdb.DuckDBPyConnection, ind.Base, ind.Closed]:
        """The connection, the base as of ``today`` and the counts of every grain's default
        periods that are complete on ``today``; what is missing is built."""
        if self.con is None:
            state = warehouse.read_state(self.folder)
            self.con = warehouse.connect(self.folder)
            self._state = state
        self.con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {COUNTS} (unit VARCHAR, "
                         "grain VARCHAR, period_start VARCHAR, indicator VARCHAR, "
                         "numerator BIGINT, denominator DOUBLE)")
        engine = ind.DuckDBEngine(self.con)
        try:
            if self.base is None or self.base.as_of != today:
                self.base = None
                self.base = ind.prepare(engine, today)
            wanted = {p for g in ind.GRAINS for p in ind.last_periods(g, today)
                      if ind.complete(p)}
            for gone in self.periods - wanted:  # no longer shown by default
                self.con.execute(f"DELETE FROM {COUNTS} WHERE grain = ? AND period_start = ?",
                                 [gone.grain, gone.start.isoformat()])
            self.periods &= wanted
            missing = wanted - self.periods
            if missing:
                self._merge(self._count(missing, "ind_base", "ind_visits", "ind_count"), [])
                self.periods |= missing
        except BaseException:
            self.close()
            raise
        return self.con, self.base, ind.Closed(COUNTS, frozenset((p.grain, p.start)
                                                                 for p in self.periods))

    def refreshed(self, report: warehouse.RefreshReport) -> int | None:
        """Bring the base and the counts up to the refresh just made (``report``, the next one
        after the state they reflect): the people changed are counted and built again, or
        everything is dropped to be built in full at the next :meth:`get`. The number of
        people built again, None when dropped (or there was nothing kept)."""
        if self.con is None or self.base is None or self._state is None:
            return None
        changed = {name: v for name, v in report.views.items() if v.mode != "unchanged"}
        state = warehouse.read_state(self.folder)
        if (state is None or state["refresh"] != self._state["refresh"] + 1
                or any(v.mode == "full" for v in changed.values())
                or any(name in changed for name in EVERYONE)
                or not set(PERSON_COLUMN) <= set(state["views"])):
            self.close()
            return None
        count = 0
        if changed:
            con = self.con
            count = self.update(self._changed_people(self._state, changed),
                                lambda: warehouse.connect(self.folder, con))
        self._state = state
        return count

    def update(self, people: str, changed: Callable[[], Any] = lambda: None) -> int:
        """Count and build again the people listed by the query ``people`` (one column):
        their counts are taken away, then ``changed`` makes the views show the new data, then
        their rows are built again and counted. How many people; on failure everything is
        dropped (and the error raised)."""
        con = self.con
        assert con is not None
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE ind_changed AS SELECT DISTINCT patient "
                        f"FROM ({people}) c(patient) WHERE patient IS NOT NULL")
            row = con.execute("SELECT COUNT(*) FROM ind_changed").fetchone()
            for name in ("ind_base", "ind_visits"):  # their old rows
                con.execute(f"CREATE OR REPLACE TEMP TABLE {name}_old AS SELECT * FROM "
                            f"temp.{name} WHERE patient IN (SELECT patient FROM ind_changed)")
            old = self._count(self.periods, "ind_base_old", "ind_visits_old", "ind_old")
            changed()  # the old counts were of the old data; the views now show the new
            self._rebuild()
            self._merge(self._count(self.periods, "ind_base_new", "ind_visits_new", "ind_new"),
                        old)
            for name in ("ind_changed", "ind_base_old", "ind_visits_old", "ind_base_new",
                         "ind_visits_new"):
                con.execute(f"DROP TABLE temp.{name}")
        except BaseException:
            self.close()
            raise
        return int(row[0]) if row else 0

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
        self.con, self.base, self._state = None, None, None
        self.periods = set()

    # -- parts

    def _changed_people(self, before: dict[str, Any],
                        changed: dict[str, warehouse.ViewReport]) -> str:
        """The query of the people the delta names (with repeats)."""
        parts = []
        for name, view in changed.items():
            column = PERSON_COLUMN.get(name)
            if column is None:
                continue
            if view.files:
                parts.append(f"SELECT {column} AS patient FROM read_parquet("
                             f"{_list([self.folder / f for f in view.files])}, "
                             "hive_partitioning = false)")
            entry = before["views"].get(name)
            if view.keys and entry is not None:
                old = warehouse.view_sql(self.folder, {**entry,
                                                       "columns": [column, warehouse.KEY]})
                parts.append(f"SELECT o.{column} AS patient FROM ({old}) o WHERE "
                             f"o.{warehouse.KEY} IN (SELECT {warehouse.KEY} FROM read_parquet("
                             f"{_list([self.folder / view.keys])}, hive_partitioning = false))")
        return " UNION ALL ".join(parts) if parts else "SELECT CAST(NULL AS VARCHAR)"

    def _count(self, periods: set[ind.Period], base: str, visits: str,
               prefix: str) -> list[str]:
        """Tables (``prefix``…) of the commune-level counts of ``periods`` over the people of
        the tables ``base`` and ``visits``."""
        assert self.con is not None and self.base is not None
        engine = ind.DuckDBEngine(self.con)
        parts: list[str] = []
        try:
            for n, run in enumerate(ind.runs(sorted(periods, key=lambda p: (p.end, p.grain)))):
                parts += ind.commune_rows(engine, run, self.base.epoch, f"{prefix}_{n}", base,
                                          visits)
        except BaseException:
            for name in parts:
                engine.drop(name)
            raise
        return parts

    def _merge(self, added: list[str], taken: list[str]) -> None:
        """The kept counts plus those of the tables ``added``, less those of ``taken``
        (which are then dropped)."""
        assert self.con is not None
        parts = [f"SELECT {_COUNT_COLUMNS} FROM {COUNTS}"] + [
            f"SELECT unit, grain, period_start, indicator, {sign} * numerator, "
            f"{sign} * denominator FROM {name}"
            for sign, names in ((1, added), (-1, taken)) for name in names]
        try:
            # the estimates are sums of fractions: a count that went back to nothing may
            # leave a rounding residue, which is nothing too
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {COUNTS} AS SELECT unit, grain, period_start, "
                "indicator, CAST(SUM(numerator) AS BIGINT) AS numerator, "
                f"SUM(denominator) AS denominator FROM ({' UNION ALL '.join(parts)}) c "
                "GROUP BY unit, grain, period_start, indicator "
                "HAVING SUM(numerator) <> 0 OR abs(SUM(denominator)) > 1e-6")
        finally:
            for name in added + taken:
                self.con.execute(f"DROP TABLE IF EXISTS temp.{name}")

    def _rebuild(self) -> None:
        """Replace the rows of the people of ind_changed in the base's tables by rows built
        anew from the views narrowed to them, also left in ind_base_new and ind_visits_new
        (on failure the caller drops everything)."""
        assert self.con is not None and self.base is not None
        con = self.con
        people = "SELECT patient FROM temp.ind_changed"
        catalog = con.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        for name in ("ind_base", "ind_visits"):
            con.execute(f"ALTER TABLE temp.{name} RENAME TO {name}_kept")
        for view, column in PERSON_COLUMN.items():  # read once: the base reads some twice
            con.execute(f'CREATE TEMP TABLE "{view}" AS SELECT * FROM "{catalog}".main."{view}" '
                        f"WHERE {column} IN ({people})")
        ind.prepare(ind.DuckDBEngine(con), self.base.as_of, self.base.epoch)
        for view in PERSON_COLUMN:
            con.execute(f'DROP TABLE temp.main."{view}"')
        for name in ("ind_base", "ind_visits"):
            con.execute(f"DELETE FROM temp.{name}_kept WHERE patient IN ({people})")
            con.execute(f"INSERT INTO temp.{name}_kept SELECT * FROM temp.{name}")
            con.execute(f"ALTER TABLE temp.{name} RENAME TO {name}_new")
            con.execute(f"ALTER TABLE temp.{name}_kept RENAME TO {name}")


def _list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"
