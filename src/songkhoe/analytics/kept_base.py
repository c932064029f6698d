"""The indicators' per-person base (:class:`songkhoe.analytics.indicators.Base`) kept over a
warehouse and brought up to date after each refresh by rebuilding only the rows of the people
whose resources changed.

Building the base reads every result of the warehouse (most of what computing indicators
costs); a refresh after 1% of the data changed touches about 1% of the people. After such a
refresh (:meth:`KeptBase.refreshed`) the people concerned are those named by the delta's rows
and by the rows the delta supersedes (a deleted or corrected result names its person only in
the old row, read from the state before the refresh — its files stay until the next refresh,
``warehouse.ViewReport``). Their rows are deleted and built again with the warehouse's views
narrowed to them (TEMP views that shadow the views of the same name), as of the base's day.
A change of the Organizations (the units every person is counted in), a view rebuilt in full,
or another day builds the base again in full.

DuckDB only: the rows are replaced in place (DELETE and INSERT on the TEMP tables).
"""

from __future__ import annotations

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


class KeptBase:
    """A connection to the warehouse in ``folder`` holding the base as of one day."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.con: duckdb.DuckDBPyConnection | None = None
        self.base: ind.Base | None = None
        self._state: dict[str, Any] | None = None  # the warehouse state the base reflects

    def get(self, today: date) -> tuple[duckdb.DuckDBPyConnection, ind.Base]:
        """The connection and the base as of ``today``, built in full if there is none for
        that day."""
        if self.con is not None and self.base is not None and self.base.as_of == today:
            return self.con, self.base
        self.close()
        state = warehouse.read_state(self.folder)
        con = warehouse.connect(self.folder)
        try:
            base = ind.prepare(ind.DuckDBEngine(con), today)
        except BaseException:
            con.close()
            raise
        self.con, self.base, self._state = con, base, state
        return con, base

    def refreshed(self, report: warehouse.RefreshReport) -> int | None:
        """Bring the base up to the refresh just made (``report``, the next one after the
        state the base reflects): the people changed are built again, or everything is
        dropped to be built in full at the next :meth:`get`. The number of people built
        again, None when dropped (or there was no base)."""
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
            try:
                count = self._changed_people(self._state, changed)
                warehouse.connect(self.folder, self.con)  # the views now read the new state
                self._rebuild()
            except BaseException:
                self.close()
                raise
        self._state = state
        return count

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
        self.con, self.base, self._state = None, None, None

    # -- parts

    def _changed_people(self, before: dict[str, Any],
                        changed: dict[str, warehouse.ViewReport]) -> int:
        """Fill TEMP table ind_changed (patient) with the people the delta names; how many."""
        assert self.con is not None
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
        query = " UNION ".join(parts) if parts else "SELECT CAST(NULL AS VARCHAR) AS patient"
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE ind_changed AS SELECT DISTINCT patient "
                         f"FROM ({query}) c WHERE patient IS NOT NULL")
        row = self.con.execute("SELECT COUNT(*) FROM ind_changed").fetchone()
        return int(row[0]) if row else 0

    def _rebuild(self) -> None:
        """Replace the rows of the people of ind_changed in the base's tables by rows built
        anew from the views narrowed to them (on failure the caller drops the base)."""
        assert self.con is not None and self.base is not None
        con = self.con
        people = "SELECT patient FROM temp.ind_changed"
        catalog = con.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        for name in ("ind_base", "ind_visits"):
            con.execute(f"ALTER TABLE temp.{name} RENAME TO {name}_kept")
        for view, column in PERSON_COLUMN.items():
            con.execute(f'CREATE TEMP VIEW "{view}" AS SELECT * FROM "{catalog}".main."{view}" '
                        f"WHERE {column} IN ({people})")
        ind.prepare(ind.DuckDBEngine(con), self.base.as_of, self.base.epoch)
        for view in PERSON_COLUMN:
            con.execute(f'DROP VIEW temp.main."{view}"')
        for name in ("ind_base", "ind_visits"):
            con.execute(f"DELETE FROM temp.{name}_kept WHERE patient IN ({people})")
            con.execute(f"INSERT INTO temp.{name}_kept SELECT * FROM temp.{name}")
            con.execute(f"DROP TABLE temp.{name}")
            con.execute(f"ALTER TABLE temp.{name}_kept RENAME TO {name}")
        con.execute("DROP TABLE temp.ind_changed")


def _list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"
