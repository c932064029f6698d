"""All population indicators for all units on DuckDB (and Spark), over view-shaped Parquet of
20 million people and 100 million observations.

Issue 7: "all indicators for all communes over 100 million observations (20 million people)
< 10 s with DuckDB"; the raw DuckDB query of the HEARTS control rate on the same data is timed
beside it for the ratio, and the same indicators on Spark local mode (``--spark``).

The data are made straight with numpy/pyarrow in the columns and types of the views of
``analytics/views/`` (as the warehouse stores them), once, in ``--cache`` (default
``/tmp/songkhoe-bench-indicators/<people>``; about 3 GB for 20 million people):

- 3,300 communes (health stations) in 34 provinces under the Ministry, of uneven sizes
  (log-normal), people spread over them by size, ages and sexes from ``synth.demography``;
  0.1 % deceased;
- two years of data up to ``AS_OF``: a check-up a year for 64 % of adults (an Encounter, a
  blood pressure, weight, height and BMI; fasting glucose at 45 and over or BMI ≥ 23; HbA1c
  for one in ten of those), dateTimes written as the synthetic records write them
  (``…T09:30:00+07:00``) or, for a fifth, as the check-up form does (a date);
- hypertension in an age-dependent share of adults (about a quarter), 47 % of them diagnosed
  (a Condition I10 and an EpisodeOfCare in hypertension-care), 64 % of those treated (an
  antihypertensive MedicationStatement) and seen every 28–91 days (85 % of visits attended)
  with a blood pressure; diabetes likewise (E11, diabetes-care, metformin, fasting glucose or
  HbA1c at visits); a worklist call for 2 % of care patients, one in ten moved away or dead.

Timed: ``compute`` for every grain (month, quarter, year: 12 + 8 + 3 periods) and every level
(commune, province, nation), ``--rounds`` times on a fresh connection (best and all), with the
process CPU seconds; then, on another connection, ``prepare`` (the per-person base: every
result read) and ``compute`` from that base (what a dashboard waits for once the base is kept);
the raw control-rate query (one period, every commune) likewise. One JSON line per figure with
the load average.

    python bench/bench_indicators.py [--people 20000000] [--cache DIR] [--threads 2]
                                     [--rounds 2] [--spark]
"""

from __future__ import annotations

import argparse
import math
import resource
import shutil
import time
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from common import emit

from songkhoe.analytics import indicators as ind
from songkhoe.analytics import kept_base
from songkhoe.synth import demography

AS_OF = date(2026, 10, 31)
FIRST = date(2024, 11, 1)
PROVINCES, COMMUNES = 34, 3300
CHUNK = 1_000_000
COVERAGE = 0.64
TABLES = ("organization", "patient", "checkup_encounter", "blood_pressure", "blood_sugar",
          "body_measure", "condition", "medication", "episode_of_care", "worklist_call")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


_FIRST_DAY = date(1900, 1, 1).toordinal()
#: every day from 1900 to AS_OF as ISO text, and the office-hour times: looked up, not
#: formatted per value (Arrow's strftime is slow)
_DAY_TEXT = pa.array([date.fromordinal(d).isoformat()
                      for d in range(_FIRST_DAY, AS_OF.toordinal() + 1)])
_TIME_TEXT = pa.array([f"T{m // 60:02d}:{m % 60:02d}:00+07:00" for m in range(1440)])


def _days(ordinals: np.ndarray) -> pa.Array:
    """Days (proleptic ordinals) as ISO dates."""
    return _DAY_TEXT.take(pa.array(ordinals - _FIRST_DAY))


def _moments(rng: np.random.Generator, ordinals: np.ndarray) -> pa.Array:
    """Office-hour dateTimes with the +07:00 offset; a fifth written as a plain date."""
    days = _days(ordinals)
    times = _TIME_TEXT.take(pa.array(420 + rng.integers(0, 540, len(ordinals))))
    plain = rng.random(len(ordinals)) < 0.2
    return pc.if_else(pa.array(plain), days, pc.binary_join_element_wise(days, times, ""))


class Writer:
    """One Parquet file per table and chunk, in ``<cache>/<table>/``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rows = dict.fromkeys(TABLES, 0)

    def write(self, table: str, chunk: int, columns: dict[str, pa.Array]) -> None:
        data = pa.table(columns)
        (self.folder / table).mkdir(parents=True, exist_ok=True)
        pq.write_table(data, self.folder / table / f"part-{chunk:04d}.parquet",
                       row_group_size=1_000_000)
        self.rows[table] += data.num_rows


def generate(folder: Path, people: int, seed: int = 1) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    tmp = folder.with_suffix(".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    out = Writer(tmp)
    province_of = np.sort(rng.integers(0, PROVINCES, COMMUNES))
    orgs = ["moh"] + [f"so-{p + 1:02d}" for p in range(PROVINCES)] + \
        [f"bv-{p + 1:02d}" for p in range(PROVINCES)] + [f"tyt-{c:05d}" for c in range(COMMUNES)]
    parents = [None] + ["moh"] * PROVINCES + [f"so-{p + 1:02d}" for p in range(PROVINCES)] + \
        [f"so-{p + 1:02d}" for p in province_of]
    out.write("organization", 0, {"id": pa.array(orgs),
                                  "name": pa.array([f"Đơn vị {o}" for o in orgs]),
                                  "part_of": pa.array(parents, pa.string())})
    stations = np.array(orgs[1 + 2 * PROVINCES:])
    size = rng.lognormal(0, 0.6, COMMUNES)
    commune_weights = size / size.sum()
    ages = np.arange(101)
    age_weights = np.array(demography.AGE_WEIGHTS) / sum(demography.AGE_WEIGHTS)
    first, last = FIRST.toordinal(), AS_OF.toordinal()
    obs = enc = other = 0
    for chunk, start in enumerate(range(0, people, CHUNK)):
        n = min(CHUNK, people - start)
        pid = np.arange(start, start + n)
        patient = _ids("p", pid)
        age = rng.choice(ages, n, p=age_weights)
        born = last - age * 365 - rng.integers(0, 365, n) - age // 4
        commune = rng.choice(COMMUNES, n, p=commune_weights)
        deceased = rng.random(n) < 0.001
        out.write("patient", chunk, {
            "id": patient, "birth_date": _days(born),
            "gender": pa.array(np.where(rng.random(n) < 0.498, "male", "female")),
            "organization": pa.array(stations[commune]),
            "active": pa.array(np.ones(n, bool)),
            "deceased": pa.nulls(n, pa.bool_()),
            "deceased_date": pc.if_else(pa.array(deceased), _days(last - rng.integers(0, 700, n)),
                                        pa.nulls(n, pa.string()))})
        adult = age >= 18
        htn_p = 1 / (1 + np.exp(-(-1.1 + math.log(2) / 10 * (age - 50))))
        htn = adult & (rng.random(n) < htn_p)
        htn_dx = htn & (rng.random(n) < 0.47)
        htn_tx = htn_dx & (rng.random(n) < 0.30 / 0.47)
        dm = adult & (rng.random(n) < 1 / (1 + np.exp(-(-2.9 + math.log(1.8) / 10 * (age - 50)))))
        dm_dx = dm & (rng.random(n) < 0.364)
        dm_tx = dm_dx & (rng.random(n) < 0.75)
        bmi = np.exp(math.log(22.3) + 0.13 * rng.standard_normal(n))
        sbp = np.where(htn, 143 + rng.exponential(14, n),
                       np.clip(110 + 0.35 * (age - 30) + rng.normal(0, 9, n), 92, 136))
        fpg = np.where(dm, 7.4 + rng.exponential(3, n),
                       np.minimum(np.exp(math.log(5.0) + 0.09 * rng.standard_normal(n)), 6.6))
        # check-ups: one a year (each of the two years) for COVERAGE of adults
        visits_p, visits_d = [], []
        for year_start in (first, first + 365):
            took = adult & (rng.random(n) < COVERAGE)
            visits_p.append(np.nonzero(took)[0])
            visits_d.append(year_start + rng.integers(0, 365, took.sum()))
        cp, cd = np.concatenate(visits_p), np.concatenate(visits_d)
        cd = np.minimum(cd, last)
        m = len(cp)
        out.write("checkup_encounter", chunk, {
            "id": _ids("e", enc + np.arange(m)), "patient": patient.take(pa.array(cp)),
            "status": pa.array(np.full(m, "finished")), "period_start": _moments(rng, cd)})
        enc += m
        # care visits: every 28–91 days for the treated, 85 % attended
        care_p, care_d, care_kind = [], [], []
        for treated, kind in ((htn_tx, 0), (dm_tx, 1)):
            who = np.nonzero(treated)[0]
            step = rng.integers(28, 92, len(who))
            day = first + rng.integers(0, 60, len(who))
            while len(who):
                attended = rng.random(len(who)) < 0.85
                care_p.append(who[attended])
                care_d.append(day[attended])
                care_kind.append(np.full(attended.sum(), kind))
                day = day + step + rng.integers(-3, 4, len(who))
                keep = day <= last
                who, day, step = who[keep], day[keep], step[keep]
        vp, vd, vk = np.concatenate(care_p), np.concatenate(care_d), np.concatenate(care_kind)
        # blood pressure: each check-up and each hypertension visit
        bp_p = np.concatenate([cp, vp[vk == 0]])
        bp_d = np.concatenate([cd, vd[vk == 0]])
        k = len(bp_p)
        s = np.round(sbp[bp_p] + rng.normal(0, 6, k))
        d = np.round(np.clip(0.45 * s + 23 + rng.normal(0, 7, k), 50, 130))
        mm = pa.array(np.full(k, "mm[Hg]"))
        out.write("blood_pressure", chunk, {
            "id": _ids("o", obs + np.arange(k)), "patient": patient.take(pa.array(bp_p)),
            "effective": _moments(rng, bp_d), "effective_instant": pa.nulls(k, pa.string()),
            "effective_start": pa.nulls(k, pa.string()), "issued": pa.nulls(k, pa.string()),
            "systolic": pa.array(s), "systolic_unit": mm, "diastolic": pa.array(d),
            "diastolic_unit": mm})
        obs += k
        # weight, height, BMI at each check-up
        b = np.round(bmi[cp] + rng.normal(0, 0.3, m), 1)
        h = np.round(rng.normal(160, 7, m), 1)
        w = np.round(b * (h / 100) ** 2, 1)
        codes = np.repeat(np.array(["29463-7", "8302-2", "39156-5"]), m)
        units = np.repeat(np.array(["kg", "cm", "kg/m2"]), m)
        three = np.tile(cp, 3)
        out.write("body_measure", chunk, {
            "id": _ids("o", obs + np.arange(3 * m)), "patient": patient.take(pa.array(three)),
            "code": pa.array(codes), "effective": _moments(rng, np.tile(cd, 3)),
            "effective_instant": pa.nulls(3 * m, pa.string()),
            "effective_start": pa.nulls(3 * m, pa.string()), "issued": pa.nulls(3 * m, pa.string()),
            "quantity_value": pa.array(np.concatenate([w, h, b])),
            "quantity_unit": pa.array(units)})
        obs += 3 * m
        # blood sugar: fasting glucose at check-ups from 45 or BMI ≥ 23, HbA1c for a tenth;
        # at each diabetes visit one of the two
        tested = (age[cp] >= 45) | (bmi[cp] >= 23)
        gp, gd = cp[tested], cd[tested]
        a1c = rng.random(len(gp)) < 0.1
        dp, dd = vp[vk == 1], vd[vk == 1]
        dm_a1c = rng.random(len(dp)) < 0.3
        sp = np.concatenate([gp, gp[a1c], dp])
        sd = np.concatenate([gd, gd[a1c], dd])
        is_a1c = np.concatenate([np.zeros(len(gp), bool), np.ones(a1c.sum(), bool), dm_a1c])
        g = np.round(fpg[sp] + rng.normal(0, 0.4, len(sp)), 1)
        value = np.where(is_a1c, np.round((g + 2.59) / 1.59, 1), g)
        k = len(sp)
        out.write("blood_sugar", chunk, {
            "id": _ids("o", obs + np.arange(k)), "patient": patient.take(pa.array(sp)),
            "code": pa.array(np.where(is_a1c, "4548-4", "14771-0")), "effective": _moments(rng, sd),
            "effective_instant": pa.nulls(k, pa.string()),
            "effective_start": pa.nulls(k, pa.string()),
            "issued": pa.nulls(k, pa.string()), "quantity_value": pa.array(value),
            "quantity_unit": pa.array(np.where(is_a1c, "%", "mmol/L"))})
        obs += k
        # diagnoses, enrolments, medicines, calls
        cond_p = np.concatenate([np.nonzero(htn_dx)[0], np.nonzero(dm_dx)[0]])
        cond_code = np.concatenate([np.full(htn_dx.sum(), "I10"), np.full(dm_dx.sum(), "E11")])
        since = last - rng.integers(0, 3650, len(cond_p))
        k = len(cond_p)
        since_text = _days(since)
        out.write("condition", chunk, {
            "id": _ids("c", other + np.arange(k)), "patient": patient.take(pa.array(cond_p)),
            "clinical_status": pa.array(np.full(k, "active")),
            "verification_status": pa.array(np.full(k, "confirmed")),
            "onset": since_text, "onset_start": pa.nulls(k, pa.string()),
            "recorded_date": since_text, "icd10": pa.array(cond_code)})
        programme = np.where(cond_code == "I10", "hypertension-care", "diabetes-care")
        out.write("episode_of_care", chunk, {
            "id": _ids("eoc", other + np.arange(k)), "patient": patient.take(pa.array(cond_p)),
            "status": pa.array(np.full(k, "active")), "period_start": since_text,
            "period_end": pa.nulls(k, pa.string()),
            "programme_system": pa.array(np.char.add("urn:songkhoe:programme:", programme)),
            "programme": pa.array(programme)})
        treated = np.concatenate([htn_tx[np.nonzero(htn_dx)[0]], dm_tx[np.nonzero(dm_dx)[0]]])
        tp, ts = cond_p[treated], since[treated]
        atc = np.where(cond_code[treated] == "I10", "C08CA01", "A10BA02")
        k2 = len(tp)
        out.write("medication", chunk, {
            "id": _ids("m", other + np.arange(k2)), "patient": patient.take(pa.array(tp)),
            "status": pa.array(np.full(k2, "active")), "effective": pa.nulls(k2, pa.string()),
            "effective_start": _days(ts), "effective_end": pa.nulls(k2, pa.string()),
            "date_asserted": _days(ts), "atc": pa.array(atc)})
        called = tp[rng.random(k2) < 0.02]
        k3 = len(called)
        outcome = rng.choice(["agreed-to-return", "call-later", "wrong-number", "moved-away",
                              "died"], k3, p=[0.6, 0.2, 0.1, 0.07, 0.03])
        call_day = _days(last - rng.integers(0, 700, k3))
        out.write("worklist_call", chunk, {
            "id": _ids("t", other + np.arange(k3)), "patient": patient.take(pa.array(called)),
            "outcome": pa.array(outcome), "execution_start": call_day, "authored_on": call_day})
        other += k
        print(f"  chunk {chunk}: {start + n:,} people, {obs:,} observations", flush=True)
    tmp.rename(folder)
    return out.rows


def open_duckdb(folder: Path, threads: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    for table in TABLES:
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM "
                    f"read_parquet('{folder / table}/*.parquet')")
    return con


RAW_CONTROL = """
WITH registered AS (
  SELECT patient, MIN(substring(period_start, 1, 10)) AS enrolled FROM episode_of_care
  WHERE programme = 'hypertension-care' GROUP BY patient
), latest AS (
  SELECT patient, max_by(systolic < 140 AND diastolic < 90, concat(effective, ' ', id)) AS ok
  FROM blood_pressure
  WHERE substring(effective, 1, 10) BETWEEN '2026-08-01' AND '2026-10-31'
  GROUP BY patient
)
SELECT p.organization, COUNT(*) AS registered, COUNT(CASE WHEN l.ok THEN 1 END) AS controlled
FROM registered r JOIN patient p ON p.id = r.patient LEFT JOIN latest l ON l.patient = r.patient
WHERE r.enrolled <= '2026-07-31'
GROUP BY p.organization
"""


def same_counts(a: pa.Table, b: pa.Table) -> bool:
    """The same rows, numerators equal, denominators equal but for the order of summing the
    cascade's estimates (fractions): within a relative 1e-9."""
    order = [(c, "ascending") for c in ind.COLUMNS[:5]]
    x, y = a.sort_by(order), b.sort_by(order)
    if x.num_rows != y.num_rows or any(not x.column(c).equals(y.column(c))
                                       for c in ind.COLUMNS[:6] if c != "denominator"):
        return False
    dx, dy = (np.array(t.column("denominator").to_pylist(), dtype=float) for t in (x, y))
    return bool(np.allclose(dx, dy, rtol=1e-9, atol=0, equal_nan=True))


def count_complete(engine: ind.DuckDBEngine, base: ind.Base) -> ind.Closed:
    """The counts of every grain's default periods complete on AS_OF, kept in a table (as
    kept_base.KeptBase keeps them over a warehouse)."""
    periods = [p for g in ind.GRAINS for p in ind.last_periods(g, AS_OF) if ind.complete(p)]
    parts = [name for n, run in enumerate(ind.runs(periods))
             for name in ind.commune_rows(engine, run, base.epoch, f"complete_{n}")]
    engine.table(kept_base.COUNTS, " UNION ALL ".join(f"SELECT * FROM {n}" for n in parts))
    for name in parts:
        engine.drop(name)
    return ind.Closed(kept_base.COUNTS, frozenset((p.grain, p.start) for p in periods))


def update_share(con: duckdb.DuckDBPyConnection, base: ind.Base, closed: ind.Closed,
                 share: float) -> int:
    """What kept_base.KeptBase does after a refresh, for ``share`` of the people (a hash
    sample, as if their resources had changed): their old counts taken away, their base rows
    built again from the views narrowed to them, their new counts added. The views are the
    same, so the counts come back to what they were (checked)."""
    kept = kept_base.KeptBase(Path("."), con)
    kept.base = base
    kept.periods = {p for g in ind.GRAINS for p in ind.last_periods(g, AS_OF)
                    if (p.grain, p.start) in closed.periods}
    count = f"SELECT COUNT(*), SUM(numerator) FROM {closed.table}"
    before = con.execute(count).fetchone()
    people = kept.update(f"SELECT id FROM patient WHERE hash(id) % {round(1 / share)} = 0")
    assert con.execute(count).fetchone() == before
    return people


def timed(run: object) -> tuple[float, float, float, object]:
    load = _load()
    t0, c0 = time.perf_counter(), _cpu()
    result = run()  # type: ignore[operator]
    return time.perf_counter() - t0, _cpu() - c0, load, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, default=20_000_000)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--spark", action="store_true", help="also on Spark local mode")
    parser.add_argument("--change", type=float, default=0.01,
                        help="share of the people whose kept rows and counts are updated")
    args = parser.parse_args()
    folder = args.cache or Path("/tmp/songkhoe-bench-indicators") / str(args.people)
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating {args.people:,} people in {folder} …", flush=True)
        t0 = time.perf_counter()
        rows = generate(folder, args.people)
        emit(figure="indicators_data", people=args.people, rows=rows,
             observations=rows["blood_pressure"] + rows["blood_sugar"] + rows["body_measure"],
             seconds=round(time.perf_counter() - t0, 1))
    sizes = {t: sum(pq.ParquetFile(f).metadata.num_rows for f in (folder / t).glob("*.parquet"))
             for t in TABLES}
    observations = sizes["blood_pressure"] + sizes["blood_sugar"] + sizes["body_measure"]
    data = {"people": sizes["patient"], "observations": observations,
            "mb": round(sum(f.stat().st_size for f in folder.rglob("*.parquet")) / 1e6)}
    for k in range(args.rounds):
        con = open_duckdb(folder, args.threads)
        wall, cpu, load, table = timed(lambda: ind.compute(ind.DuckDBEngine(con), as_of=AS_OF))
        emit(figure="indicators_duckdb", round=k + 1, **data, threads=args.threads,
             rows=table.num_rows, seconds=round(wall, 2), cpu_seconds=round(cpu, 1),
             load_before=load, load_after=_load(), target_seconds=10)
        con.close()
        con = open_duckdb(folder, args.threads)
        engine = ind.DuckDBEngine(con)
        wall, cpu, load, base = timed(lambda: ind.prepare(engine, AS_OF))
        emit(figure="indicators_base_duckdb", round=k + 1, **data, threads=args.threads,
             seconds=round(wall, 2), cpu_seconds=round(cpu, 1), load_before=load,
             load_after=_load())
        wall, cpu, load, table = timed(lambda: ind.compute(engine, as_of=AS_OF, base=base))
        emit(figure="indicators_from_base_duckdb", round=k + 1, **data, threads=args.threads,
             rows=table.num_rows, seconds=round(wall, 2), cpu_seconds=round(cpu, 1),
             load_before=load, load_after=_load(), target_seconds=10)
        wall, cpu, load, closed = timed(lambda: count_complete(engine, base))
        emit(figure="indicators_complete_counts_duckdb", round=k + 1, **data,
             threads=args.threads, periods=len(closed.periods), seconds=round(wall, 2),
             cpu_seconds=round(cpu, 1), load_before=load, load_after=_load())
        wall, cpu, load, kept = timed(
            lambda: ind.compute(engine, as_of=AS_OF, base=base, closed=closed))
        same = same_counts(kept, table)
        emit(figure="indicators_dashboard_duckdb", round=k + 1, **data, threads=args.threads,
             rows=kept.num_rows, equals_computed=same, seconds=round(wall, 2),
             cpu_seconds=round(cpu, 1), load_before=load, load_after=_load(),
             target_seconds=10)
        wall, cpu, load, people = timed(lambda: update_share(con, base, closed, args.change))
        emit(figure="indicators_kept_update_duckdb", round=k + 1, **data, threads=args.threads,
             changed_people=people, seconds=round(wall, 2), cpu_seconds=round(cpu, 1),
             load_before=load, load_after=_load())
        con.close()
        con = open_duckdb(folder, args.threads)
        wall, cpu, load, raw = timed(lambda: con.execute(RAW_CONTROL).fetchall())
        emit(figure="control_rate_raw_duckdb", round=k + 1, **data, threads=args.threads,
             communes=len(raw), seconds=round(wall, 2), cpu_seconds=round(cpu, 1),
             load_before=load, load_after=_load())
        con.close()
    if args.spark:
        from songkhoe.analytics.spark_runner import register, spark_session

        spark = spark_session(f"local[{args.threads}]", driver_memory="6g",
                              shuffle_partitions=max(8, args.threads * 4))
        for table in TABLES:
            register(spark, table, str(folder / table))
        wall, cpu, load, table = timed(lambda: ind.compute(ind.SparkEngine(spark), as_of=AS_OF))
        emit(figure="indicators_spark", **data, master=f"local[{args.threads}]",
             rows=table.num_rows, seconds=round(wall, 1), load_before=load, load_after=_load())
        spark.stop()
    print(f"cache kept in {folder} ({data['mb']:,} MB); remove it when done", flush=True)


if __name__ == "__main__":
    main()
