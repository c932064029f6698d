"""Population indicators (issue 7): SQL over the SQL-on-FHIR views, run unchanged on DuckDB
and on Apache Spark, per commune, province and nation and per month, quarter and year.

Each indicator is defined once, as SQL in the subset DuckDB and Spark SQL share, in the files
of ``analytics/indicators/`` — with its definition and sources cited beside it (CLINICAL.md
"Screening and diagnosis thresholds" and "Standard programme indicators", the WHO HEARTS
package as the DHIS2 hypertension package and Simple define its indicators, the Decisions of
the Ministry of Health); docs/indicators.md lists them. The SQL reads only the tables named
after the views of ``analytics/views/`` (the warehouse's tables, :func:`warehouse.connect`)
with their columns.

How it runs (:func:`compute`):

1. the base (:func:`prepare`, ``prepare/``): the units of each Organization (``unit.sql``),
   the people counted (``person.sql``), every dated fact as a row (``event.sql``, a view), per
   person the calendar months with a check-up and with results above or below threshold, as
   bits of a BIGINT (``masks.sql``, ``base.sql``; the few people whose months need a closer
   look have their facts read once more, ``touched.sql``, ``visits.sql``). Periods, the HEARTS
   3- and 12-month windows are sets of calendar months, so one pass over the results serves
   every grain and period; the base does not depend on the periods and can be kept
   (:class:`Base`);
2. per run of periods (:func:`commune_rows`): who has left the population by each period's
   end (``gone.sql``) and the periods each person is counted in (``facts.sql``, as bits), then
   each indicator file, once for all grains: each person read once, one sum per period and
   measure by commune (``{{each}}`` blocks repeat an expression per period), then one row per
   commune and period (``coverage.sql``, ``raised.sql``, ``hearts.sql``). Complete periods'
   rows can be kept instead (:class:`Closed`; kept exact over a warehouse by
   :mod:`songkhoe.analytics.kept_base`);
3. ``rollup.sql``: the communes' counts summed to the level asked for (people have one unit
   per level, so units add up to their parents); value = numerator / denominator.

Output, long format: ``org, org_level, period_grain, period_start, indicator, numerator,
denominator, value`` (:data:`COLUMNS`). Parameters are rendered by this module only: dates,
numbers and bit masks computed here, and names from fixed lists — nothing a caller types
reaches the SQL text.
"""

from __future__ import annotations

import calendar
import csv
import json
import re
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol, TextIO

import pyarrow as pa  # type: ignore[import-untyped]

GRAINS = ("month", "quarter", "year")
LEVELS = ("commune", "province", "nation")
#: how many periods of each grain are reported by default, the current one last
DEFAULT_COUNT = {"month": 12, "quarter": 8, "year": 3}
#: the months, and the periods, one run can hold: bits 0–61 of a BIGINT (more run in parts)
MAX_MONTHS = 62
#: the ages whose birth-date cut-offs the SQL compares with (born_<age> columns)
AGES = (18, 25, 30, 65, 80)
SQL = Path(__file__).parent / "indicators"
COLUMNS = ("org", "org_level", "period_grain", "period_start", "indicator", "numerator",
           "denominator", "value")
SCHEMA = pa.schema([("org", pa.string()), ("org_level", pa.string()),
                    ("period_grain", pa.string()), ("period_start", pa.date32()),
                    ("indicator", pa.string()), ("numerator", pa.int64()),
                    ("denominator", pa.float64()), ("value", pa.float64())])


@dataclass(frozen=True)
class Programme:
    """A care programme's HEARTS indicators: its results (``seen``/``high`` bits of
    ind_facts) and the survey estimate of adults with the condition for the cascade."""

    prefix: str
    programme: str
    seen: str
    high: str
    prevalence: float
    ages: tuple[int, int]  # the estimate's age band, both inclusive
    source: str


PROGRAMMES = (
    Programme("htn", "hypertension-care", "bp_seen", "bp_high", 0.30, (30, 79),
              "WHO, Global report on hypertension 2023, Viet Nam profile: 30 % of adults aged "
              "30–79 have hypertension (CLINICAL.md 'Baselines', partly verified)"),
    Programme("dm", "diabetes-care", "sugar_seen", "sugar_high", 0.0696, (25, 64),
              "STEPS 2020 (Vu LTH et al., Front Public Health 2022;10:1045202): raised fasting "
              "glucose or on treatment in 6.96 % of adults aged 25–64 (docs/synthetic-data.md)"),
)


@dataclass(frozen=True)
class Indicator:
    name: str
    label_vi: str
    label_en: str
    rate: bool  # numerator / denominator; else a count of people


def _indicators() -> tuple[Indicator, ...]:
    out = [Indicator("checkup_coverage", "Độ bao phủ khám sức khỏe định kỳ",
                     "Check-up coverage", True),
           Indicator("raised_blood_pressure", "Tỷ lệ huyết áp cao (≥ 140/90) trong số được đo",
                     "Raised blood pressure among those screened", True),
           Indicator("raised_glucose",
                     "Tỷ lệ glucose lúc đói cao (≥ 7,0 mmol/L) trong số được xét nghiệm",
                     "Raised fasting glucose among those tested", True),
           Indicator("obesity", "Tỷ lệ béo phì (BMI ≥ 25) trong số được đo",
                     "Obesity (BMI ≥ 25) among those measured", True)]
    names = {"htn": ("tăng huyết áp", "hypertension"), "dm": ("đái tháo đường", "diabetes")}
    for p in PROGRAMMES:
        vi, en = names[p.prefix]
        out += [
            Indicator(f"{p.prefix}_registrations", f"Đăng ký mới quản lý {vi}",
                      f"New {en} registrations", False),
            Indicator(f"{p.prefix}_registered", f"Đang quản lý {vi} (tích lũy)",
                      f"Registered for {en} care (cumulative)", False),
            Indicator(f"{p.prefix}_under_care", f"Đang được chăm sóc {vi}", f"{en.capitalize()} "
                      "patients under care", True),
            Indicator(f"{p.prefix}_lost_to_follow_up", f"Bỏ trị {vi} (12 tháng không khám)",
                      f"{en.capitalize()} patients lost to follow-up", True),
            Indicator(f"{p.prefix}_controlled", f"Kiểm soát {vi}", f"{en.capitalize()} "
                      "controlled", True),
            Indicator(f"{p.prefix}_uncontrolled", f"Chưa kiểm soát {vi}", f"{en.capitalize()} "
                      "uncontrolled", True),
            Indicator(f"{p.prefix}_no_visit", f"{vi.capitalize()}: không khám trong 3 tháng",
                      f"{en.capitalize()}: no visit in 3 months", True),
        ]
        for step, step_vi in (("diagnosed", "được chẩn đoán"), ("treated", "được điều trị"),
                              ("registered", "được quản lý"), ("under_care", "đang chăm sóc"),
                              ("controlled", "kiểm soát")):
            out.append(Indicator(f"{p.prefix}_cascade_{step}",
                                 f"Chuỗi chăm sóc {vi}: {step_vi}",
                                 f"{en.capitalize()} cascade: {step.replace('_', ' ')}", True))
    return tuple(out)


INDICATORS = {i.name: i for i in _indicators()}


# -- periods ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Period:
    """A calendar month, quarter or year; ``end`` is its last day, or the day the indicators
    are computed for when that comes first (the current period)."""

    grain: str
    start: date
    end: date

    @property
    def key(self) -> str:
        if self.grain == "year":
            return str(self.start.year)
        if self.grain == "quarter":
            return f"{self.start.year}-Q{(self.start.month - 1) // 3 + 1}"
        return f"{self.start.year}-{self.start.month:02d}"


def _months(day: date) -> int:
    return day.year * 12 + day.month - 1


def _month(index: int) -> date:
    return date(index // 12, index % 12 + 1, 1)


def _month_end(index: int) -> date:
    first = _month(index)
    return first.replace(day=calendar.monthrange(first.year, first.month)[1])


def _years_before(day: date, years: int) -> date:
    """The latest birth date of someone ``years`` old on ``day``: a person born on 29
    February completes a year on 1 March in common years (as the programmes engine counts)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return date(day.year - years, 2, 28)


def periods(grain: str, first: date, last: date, as_of: date) -> list[Period]:
    """The periods of ``grain`` from the one holding ``first`` to the one holding ``last``
    (none after ``as_of``), oldest first."""
    if grain not in GRAINS:
        raise ValueError(f"period: expected one of {', '.join(GRAINS)}, not {grain!r}")
    step = {"month": 1, "quarter": 3, "year": 12}[grain]
    start = _months(first) // step * step if grain != "year" else first.year * 12
    out = []
    while start <= min(_months(last), _months(as_of)):
        out.append(Period(grain, _month(start), min(_month_end(start + step - 1), as_of)))
        start += step
    return out


def last_periods(grain: str, as_of: date, count: int | None = None) -> list[Period]:
    """The last ``count`` periods of ``grain`` up to the one holding ``as_of``."""
    n = DEFAULT_COUNT[grain] if count is None else count
    step = {"month": 1, "quarter": 3, "year": 12}[grain]
    first = _month(_months(as_of) // step * step - step * (n - 1)) if grain != "year" else \
        date(as_of.year - n + 1, 1, 1)
    return periods(grain, first, as_of, as_of)


@dataclass(frozen=True)
class _Dated:
    """A period with what the SQL compares: days as ISO text, month sets as bit masks from
    the run's first month ``base``."""

    period: Period
    base: int

    def bits(self, first: int, last: int) -> int:
        return sum(1 << (m - self.base) for m in range(first, last + 1))

    @property
    def end_month(self) -> int:
        return _months(self.period.end)

    def row(self, k: int) -> dict[str, Any]:
        """The period's row of the ``{{periods}}`` table; ``k`` numbers it."""
        p, m = self.period, self.end_month
        row: dict[str, Any] = {
            "k": k, "bit": 1 << k, "grain": p.grain, "period_start": p.start.isoformat(),
            "period_end": p.end.isoformat(),
            "before_start": (p.start - timedelta(days=1)).isoformat(),
            "period_bits": self.bits(_months(p.start), m),
            "window_bits": self.bits(m - 2, m),  # the HEARTS "last 3 months"
            "year_bits": self.bits(m - 11, m),  # the "past 12 months" of lost to follow-up
            "registered_by": (_month(m - 2) - timedelta(days=1)).isoformat(),
            "before_year": (_month(m - 11) - timedelta(days=1)).isoformat(),
        }
        for age in AGES:
            row[f"born_{age}"] = _years_before(p.end, age).isoformat()
        return row


# -- engines ---------------------------------------------------------------------------------

class Engine(Protocol):
    """Where the SQL runs. The tables named after the views must be there already."""

    def view(self, name: str, sql: str) -> None: ...
    def table(self, name: str, sql: str) -> None: ...
    def query(self, sql: str) -> pa.Table: ...
    def drop(self, name: str) -> None: ...


class DuckDBEngine:
    """A DuckDB connection (e.g. :func:`songkhoe.analytics.warehouse.connect`): prepared
    tables are TEMP tables of the connection."""

    def __init__(self, con: Any) -> None:
        self.con = con

    def view(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")

    def table(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")

    def query(self, sql: str) -> pa.Table:
        return self.con.sql(sql).to_arrow_table()

    def drop(self, name: str) -> None:
        kinds = self.con.execute("SELECT table_type FROM information_schema.tables WHERE "
                                 "table_catalog = 'temp' AND table_name = ?", [name]).fetchall()
        for (kind,) in kinds:
            self.con.execute(f"DROP {'VIEW' if kind == 'VIEW' else 'TABLE'} temp.{name}")


class SparkEngine:
    """A SparkSession with the views registered as temporary views. A prepared table is
    written as Parquet to a folder of this engine's (``folder``, default a temporary one) and
    read back as a temporary view, so the statements that read it plan a file scan, not the
    query that made it (with ``CACHE TABLE`` each later plan held every earlier one, and the
    last ran out of memory; a ``localCheckpoint`` lost its columns' bindings in a union)."""

    def __init__(self, spark: Any, folder: str | Path | None = None) -> None:
        self.spark = spark
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="songkhoe-ind-"))
        if folder is None:  # removed with this engine (at the latest when the process ends)
            weakref.finalize(self, shutil.rmtree, self.folder, True)

    def view(self, name: str, sql: str) -> None:
        self.spark.sql(sql).createOrReplaceTempView(name)

    def table(self, name: str, sql: str) -> None:
        self.drop(name)
        path = str(self.folder / name)
        self.spark.sql(sql).write.mode("overwrite").parquet(path)
        self.spark.read.parquet(path).createOrReplaceTempView(name)

    def query(self, sql: str) -> pa.Table:
        return self.spark.sql(sql).toArrow()

    def drop(self, name: str) -> None:
        self.spark.catalog.dropTempView(name)
        shutil.rmtree(self.folder / name, ignore_errors=True)


# -- SQL rendering -----------------------------------------------------------------------------

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
_CLAMP = re.compile(r"\{\{clamp ([a-z][a-z0-9_]*)((?: [a-z][a-z0-9_]*)+)\}\}")
_EACH = re.compile(r"\{\{each( [^}]+)?\}\}(.*?)\{\{end\}\}", re.S)
_FIELD = re.compile(r"\{\{p\.([a-z][a-z0-9_]*)\}\}")


def _text(value: str) -> str:
    assert re.fullmatch(r"[0-9A-Za-z_\-~ .:]*", value), value  # dates, names: never quoted
    return f"'{value}'"


def _literal(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        raise TypeError(value)
    if isinstance(value, int):
        return f"CAST({value} AS BIGINT)"
    if isinstance(value, float):
        return repr(value)
    return _text(str(value))


def _values(rows: list[dict[str, Any]]) -> str:
    names = list(rows[0])
    body = ", ".join("(" + ", ".join(_literal(r[n]) for n in names) + ")" for r in rows)
    return f"SELECT * FROM (VALUES {body}) AS v({', '.join(names)})"


def clamp(column: str, cutoffs: Iterable[str]) -> str:
    """``column`` (ISO dates as text) mapped to fewer values that compare with every value of
    ``cutoffs`` exactly as it does (<, <=, =, >=, >): kept within the span of the cutoffs,
    one value per gap between spans, one below and one above them all — so people whose dates
    differ only where no period looks can be counted together."""
    values = sorted(set(cutoffs))
    spans: list[list[str]] = []
    for v in values:  # cut-offs closer than a year apart form one span
        if spans and date.fromisoformat(v) - date.fromisoformat(spans[-1][1]) <= timedelta(366):
            spans[-1][1] = v
        else:
            spans.append([v, v])
    parts = [f"WHEN {column} < {_text(spans[0][0])} THEN '0000-01-01'"]
    for k, (low, high) in enumerate(spans):
        if k:
            parts.append(f"WHEN {column} < {_text(low)} THEN {_text(spans[k - 1][1] + '~')}")
        parts.append(f"WHEN {column} <= {_text(high)} THEN {column}")
    return f"CASE {' '.join(parts)} ELSE '9999-12-31' END"


def render(name: str, params: Mapping[str, Any], rows: Sequence[dict[str, Any]] = ()) -> str:
    """The SQL of ``name`` (a file of :data:`SQL`) with its ``{{placeholders}}`` replaced:
    ``params`` values (names from fixed lists, numbers, dates), ``{{clamp column cutoff…}}``
    over the cutoff columns of the period ``rows``, and ``{{each SEP}}…{{end}}`` repeated once
    per period row (joined by SEP), with ``{{p.column}}`` that row's value and ``{{#}}`` its
    number (the row's ``k`` and bit in per-period masks)."""
    text = (SQL / name).read_text(encoding="utf-8")

    def each(match: re.Match[str]) -> str:
        separator, body = (match.group(1) or " ").strip() or " ", match.group(2)
        return f" {separator} ".join(
            _FIELD.sub(lambda f: _literal(row[f.group(1)]), body.replace("{{#}}", str(k)))
            for k, row in enumerate(rows))

    text = _EACH.sub(each, text)

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in params:
            raise KeyError(f"{name}: no value for {{{{{key}}}}}")
        v = params[key]
        return v.sql if isinstance(v, _Raw) else _literal(v)

    text = _PLACEHOLDER.sub(value, text)

    def clamped(match: re.Match[str]) -> str:
        column, columns = match.group(1), match.group(2).split()
        return clamp(column, [r[c] for r in rows for c in columns])

    text = _CLAMP.sub(clamped, text)
    if "{{" in text:
        raise ValueError(f"{name}: unreplaced placeholder near {text[text.index('{{'):][:40]!r}")
    return text


@dataclass(frozen=True)
class _Raw:
    """SQL text made here (a name from a fixed list, a VALUES table), inserted as it is."""

    sql: str


def _name(value: str) -> _Raw:
    if not _NAME.fullmatch(value):
        raise ValueError(value)
    return _Raw(value)


# -- the run ---------------------------------------------------------------------------------

#: the tables a :class:`Base` is made of (the units, and the per-person facts)
BASE_TABLES = ("ind_unit", "ind_base", "ind_visits")


@dataclass(frozen=True)
class Base:
    """Per-person facts that do not depend on the periods asked for (``prepare/base.sql``,
    ``visits.sql``), built by :func:`prepare` as of ``as_of`` with month bits from the month
    ``epoch`` (``_months``) on. Building them reads every result: most of a run's work. Kept
    in an engine's :data:`BASE_TABLES`, they serve every run as of the same day whose months
    lie within :data:`MAX_MONTHS` of ``epoch``."""

    as_of: date
    epoch: int

    def serves(self, as_of: date, first: int, last: int) -> bool:
        return as_of == self.as_of and self.epoch <= first and last < self.epoch + MAX_MONTHS


def default_epoch(as_of: date) -> int:
    """The first month a :class:`Base` as of ``as_of`` holds: the first the default periods
    of every grain (:data:`DEFAULT_COUNT`, with their 12-month windows) look at."""
    return min(_months(p.end) - 11 for g in GRAINS for p in last_periods(g, as_of))


def prepare(engine: Engine, as_of: date, epoch: int | None = None) -> Base:
    """Build the :class:`Base` tables in ``engine`` as of ``as_of``, months from ``epoch``
    (default :func:`default_epoch`), from the views: nothing dated after ``as_of`` is read."""
    epoch = default_epoch(as_of) if epoch is None else epoch
    last = min(epoch + MAX_MONTHS - 1, _months(as_of))
    params = {"first_day": _month(epoch).isoformat(), "as_of": as_of.isoformat(),
              "months": _Raw(_values([{"month_key": _month(m).isoformat()[:7],
                                       "bit": 1 << (m - epoch)} for m in range(epoch, last + 1)]))}
    engine.table("ind_unit", render("prepare/unit.sql", {}))
    try:
        engine.table("ind_person", render("prepare/person.sql", {}))
        engine.view("ind_event", render("prepare/event.sql", params))
        engine.table("ind_masks", render("prepare/masks.sql", params))
        engine.table("ind_touched", render("prepare/touched.sql", params))
        engine.table("ind_base", render("prepare/base.sql", params))
        engine.table("ind_visits", render("prepare/visits.sql", params))
    finally:
        for name in ("ind_touched", "ind_masks", "ind_event", "ind_person"):
            engine.drop(name)
    return Base(as_of, epoch)


@dataclass(frozen=True)
class Closed:
    """Commune-level rows (``unit, grain, period_start, indicator, numerator, denominator``,
    as :func:`commune_rows` makes them) of complete periods, kept in the engine's table
    ``table``: ``periods`` lists them as (grain, first day). A complete period's counts depend
    on the data only, not on the day they are asked for (nothing of a period lies after its
    last day), so they can be kept while the data stay the same — or are kept up to date with
    it (:mod:`songkhoe.analytics.kept_base`)."""

    table: str
    periods: frozenset[tuple[str, date]]


def complete(period: Period) -> bool:
    """Whether ``period`` runs to its natural last day (it is not cut at the day asked for)."""
    step = {"month": 1, "quarter": 3, "year": 12}[period.grain]
    return period.end == _month_end(_months(period.start) + step - 1)


def compute(engine: Engine, grains: Iterable[str] = GRAINS, levels: Iterable[str] = LEVELS,
            as_of: date | None = None, chosen: Mapping[str, Sequence[Period]] | None = None,
            base: Base | None = None, closed: Closed | None = None) -> pa.Table:
    """Every indicator for every unit of ``levels`` and every period of ``grains`` (the last
    :data:`DEFAULT_COUNT` periods up to ``as_of``, default today; ``chosen`` gives other
    periods per grain), counted as of ``as_of``: nothing dated after it is read. With
    ``base`` (:func:`prepare`'s, its tables in ``engine``) the results are not read again:
    ValueError if it does not serve every run; without, each run builds a base and drops it.
    With ``closed``, the complete periods it holds are read from it, not computed."""
    as_of = as_of or date.today()
    levels = [lv for lv in LEVELS if lv in set(levels)]
    chosen_periods = [p for g in GRAINS if g in set(grains)
                      for p in (chosen[g] if chosen and g in chosen else last_periods(g, as_of))]
    if not chosen_periods or not levels:
        return SCHEMA.empty_table()
    kept = [p for p in chosen_periods
            if closed is not None and complete(p) and (p.grain, p.start) in closed.periods]
    todo = [(run, min(_months(p.end) - 11 for p in run), max(_months(p.end) for p in run))
            for run in runs([p for p in chosen_periods if p not in kept])]
    if base is not None and not all(base.serves(as_of, first, last) for _, first, last in todo):
        raise ValueError(f"the indicators' base as of {base.as_of} from {_month(base.epoch)} "
                         f"does not serve these periods as of {as_of}: compute without it")
    parts: list[str] = []
    try:
        if base is None:  # the rollup's units (each run's own base makes them again)
            engine.table("ind_unit", render("prepare/unit.sql", {}))
        if kept and closed is not None:
            parts.append("ind_rows_kept")
            engine.view("ind_rows_kept", f"SELECT c.* FROM {_name(closed.table).sql} c JOIN ("
                        + _values([{"kept_grain": p.grain, "kept_start": p.start.isoformat()}
                                   for p in kept])
                        + ") k ON k.kept_grain = c.grain AND k.kept_start = c.period_start")
        for n, (run, first, _) in enumerate(todo):
            try:
                epoch = base.epoch if base is not None else prepare(engine, as_of, first).epoch
                parts += commune_rows(engine, run, epoch, f"ind_rows_{n}")
            finally:  # a run's own base, but its units: the rollup reads them
                for name in ("ind_base", "ind_visits") if base is None else ():
                    engine.drop(name)
        engine.view("ind_rows", " UNION ALL ".join(f"SELECT * FROM {name}" for name in parts))
        return engine.query(render("rollup.sql", {
            f"{level}s": _Raw("TRUE" if level in levels else "FALSE") for level in LEVELS})
        ).cast(SCHEMA)
    finally:
        for name in ["ind_rows", *parts, *(("ind_unit",) if base is None else ())]:
            engine.drop(name)


def runs(chosen: list[Period]) -> Iterator[list[Period]]:
    """The periods in groups whose months (with their 12-month windows) fit in a BIGINT, and
    whose number does too (a person's periods are bits as well: facts.sql, ``counted``)."""
    group: list[Period] = []
    for p in sorted(chosen, key=lambda p: (p.end, p.grain)):
        first = min([_months(q.end) - 11 for q in group + [p]])
        if group and (_months(p.end) - first + 1 > MAX_MONTHS or len(group) == MAX_MONTHS):
            yield group
            group = []
        group.append(p)
    if group:
        yield group


def commune_rows(engine: Engine, chosen: list[Period], epoch: int, prefix: str,
                 base: str = "ind_base", visits: str = "ind_visits") -> list[str]:
    """Tables ``<prefix>_<k>`` (returned; the caller drops them) of every indicator's
    commune-level counts for the periods ``chosen`` (at most :data:`MAX_MONTHS`, within
    :data:`MAX_MONTHS` months of ``epoch``) over the people of the base tables ``base`` and
    ``visits`` (:data:`BASE_TABLES`, or some of their rows): ``unit, grain, period_start,
    indicator, numerator, denominator``, rows with both zero or empty left out. Counts are of
    people, so the rows of disjoint sets of people add up."""
    dated = [_Dated(p, epoch) for p in chosen]
    rows = [d.row(k) for k, d in enumerate(dated)]
    params = {"latest_adult_birth": max(r["born_18"] for r in rows), "base": _name(base),
              "visits": _name(visits), "adult": _adult(rows), "periods": _Raw(_values(rows))}
    engine.table("ind_gone", render("prepare/gone.sql", params))
    engine.table("ind_facts", render("prepare/facts.sql", params))
    # every grain at once: each person's periods are counted in one pass (one sum a period)
    common = {"periods": params["periods"],
              "period_months": _or(r["period_bits"] for r in rows)}
    queries = [render("coverage.sql", common, rows)]
    for indicator, kind in (("raised_blood_pressure", "bp"), ("raised_glucose", "fpg"),
                            ("obesity", "bmi")):
        queries.append(render("raised.sql", {**common, "indicator": _name(indicator),
                                             "seen": _name(f"{kind}_seen"),
                                             "high": _name(f"{kind}_high")}, rows))
    for p in PROGRAMMES:
        young, old = p.ages
        queries.append(render("hearts.sql", {
            **common, "period_months": _or(r[c] for r in rows
                                           for c in ("period_bits", "window_bits", "year_bits")),
            "p": _name(p.prefix), "programme": _name(p.programme.replace("-", "_")),
            "seen": _name(p.seen), "high": _name(p.high), "prevalence": p.prevalence,
            "young": _name(f"born_{young}"), "old": _name(f"born_{old + 1}")}, rows))
    made: list[str] = []
    try:  # one statement per query: Spark plans a union of them all out of memory
        for k, query in enumerate(queries):
            made.append(f"{prefix}_{k}")
            engine.table(made[-1], f"SELECT * FROM ({query}) q "
                                   "WHERE numerator > 0 OR denominator > 0")
    except BaseException:
        for name in made:
            engine.drop(name)
        raise
    finally:
        engine.drop("ind_facts")
        engine.drop("ind_gone")
    return made


def _adult(rows: list[dict[str, Any]]) -> _Raw:
    """The periods (bits) at whose end someone born on ``b.birth_date`` is 18 or older: a CASE
    over the distinct cut-offs, oldest first — between two cut-offs the set does not change."""
    cutoffs = sorted({r["born_18"] for r in rows})
    branches = " ".join(
        f"WHEN b.birth_date <= {_text(c)} THEN "
        f"{_literal(_or(r['bit'] for r in rows if r['born_18'] >= c))}" for c in cutoffs)
    return _Raw(f"CASE {branches} ELSE CAST(0 AS BIGINT) END")


def _or(masks: Iterable[int]) -> int:
    out = 0
    for m in masks:
        out |= m
    return out


def write(table: pa.Table, out: TextIO, fmt: str = "csv") -> None:
    """``table`` (:func:`compute`'s) as CSV with a header row, or as a JSON array of objects,
    ordered by level, unit, grain, period and indicator; dates ISO, whole denominators without
    a decimal point."""
    if fmt not in ("csv", "json"):
        raise ValueError(f"format: expected csv or json, not {fmt!r}")
    ordered = table.sort_by([(c, "ascending") for c in ("org_level", "org", "period_grain",
                                                        "period_start", "indicator")])
    rows = [{**r, "period_start": r["period_start"].isoformat(),
             "denominator": _number(r["denominator"])} for r in ordered.to_pylist()]
    if fmt == "json":
        json.dump(rows, out, ensure_ascii=False)
        out.write("\n")
        return
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def _number(value: float | None) -> float | int | None:
    return int(value) if value is not None and value.is_integer() else value
