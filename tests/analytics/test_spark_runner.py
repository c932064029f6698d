"""The Spark runner against the official SQL-on-FHIR v2 suite, the reference evaluator and the
DuckDB runner, on one local Spark session (``local[2]``, 2 shuffle partitions, no UI).

1. Every test of the suite (``../shared/conformance/sql-on-fhir/tests``) runs through Spark and
   is compared as the reference harness compares (:mod:`tests.analytics.test_sql_on_fhir`);
   how many ran compiled and how many on the fallback is printed and written to
   ``build/sql-on-fhir/spark_report.json``; fewer compiled tests than today fail the run.
2. The views of :mod:`tests.analytics.test_duckdb_runner` (patient demographics, vital signs
   with blood-pressure components, Observation arithmetic, conditions, encounters with
   participants, a view left to the fallback) over a synthetic population of 300 people with
   data-quality faults give, on Spark and on DuckDB, the same compiled column types, the same
   Arrow schema and the same rows; edge cases give the reference's rows.
3. Run-time errors, ``repeat`` over deeper data, Parquet output, SQL over registered tables
   (the same query on Spark and DuckDB over the same view tables), and the Spark date/time
   keys and boundaries and the reference pattern property-tested against the reference's.

Without pyspark or Java the module is skipped, saying which is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


def _java_major() -> int | None:
    """The major version of the Java Spark would start (JAVA_HOME's, else the PATH's)."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if java is None or not os.path.exists(java):
        return None
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    found = re.search(r'version "(\d+)', out)
    return int(found.group(1)) if found else None


pytest.importorskip("pyspark", reason="pyspark is not installed: bash scripts/install --test")
if (_java_major() or 0) < 17:
    pytest.skip(f"Spark needs Java 17 or later (found: {_java_major() or 'none'}): "
                "apt-get install openjdk-17-jre-headless (bash scripts/install --test does it "
                "as root)", allow_module_level=True)

from pyspark.sql import SparkSession

from songkhoe.analytics import duckdb_runner, spark_runner
from songkhoe.analytics.reference_arrow import arrow_type
from songkhoe.analytics.rows import ViewEvaluationError, evaluate
from songkhoe.analytics.sql_dialect import SPARK
from songkhoe.analytics.sql_fhirpath import _reference_pattern
from songkhoe.analytics.viewdefinition import ViewDefinitionError, parse_view
from songkhoe.fhir.fhirpath import temporal as tm
from songkhoe.fhir.fhirpath.functions import parse_reference
from songkhoe.synth import SynthConfig, write_ndjson

from .test_duckdb_runner import (
    _PAIRS,
    _REF,
    EDGE_PATIENTS,
    EDGE_VIEWS,
    REPEAT_VIEW,
    VIEWS,
    _col,
    _dates,
    _datetimes,
    _questionnaire_response,
    _times,
)
from .test_sql_on_fhir import CASES, REPO, SUITE_FILES, rows_match

REPORT = REPO / "build" / "sql-on-fhir" / "spark_report.json"
#: suite tests that run fully compiled on Spark today; a change that compiles fewer fails
COMPILED_AT_LEAST = 122
OUTCOMES: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    session = spark_runner.spark_session("local[2]", driver_memory="512m",
                                         shuffle_partitions=2)
    yield session
    session.stop()


def _values(result: spark_runner.ViewResult) -> list[dict[str, Any]]:
    """The rows as the reference gives them: decimals as Decimal, JSON columns parsed."""
    types = dict(result.compiled.columns)

    def value(v: Any, t: str) -> Any:
        if v is None:
            return None
        if t.endswith("[]"):
            return [value(x, t[:-2]) for x in v]
        if t == "JSON":
            return json.loads(v, parse_float=Decimal)
        if type(v) is float:
            return Decimal(repr(v))
        return v
    return [{k: value(v, types[k]) for k, v in row.items()} for row in result.table.to_pylist()]


# -- the suite -----------------------------------------------------------------------------------

def _run_case(spark: SparkSession, suite: dict[str, Any], case: dict[str, Any]
              ) -> tuple[str | None, str]:
    """(None when the runner meets the case's expectation, else why not; how the rows were
    made, or ``invalid`` for a view rejected before running)."""
    try:
        view = parse_view(case["view"])
    except ViewDefinitionError as exc:
        return (None if case.get("expectError") else f"unexpected error: {exc}"), "invalid"
    if case.get("expectError"):
        how = spark_runner.FALLBACK if spark_runner.compile_view(view).fallback \
            else spark_runner.COMPILED
        try:
            result = spark_runner.execute(view, suite["resources"], spark=spark)
        except ViewEvaluationError:
            return None, how
        return f"expected the view to be rejected, got rows {_values(result)}", how
    result = spark_runner.execute(view, suite["resources"], spark=spark)
    rows = _values(result)
    names = [name for name, _ in result.compiled.columns]
    if result.table.column_names != names:
        return f"columns {result.table.column_names} are not the view's {names}", result.reader
    if "expectColumns" in case and names != case["expectColumns"]:
        return f"expected columns {case['expectColumns']}, got {names}", result.reader
    if "expectCount" in case and len(rows) != case["expectCount"]:
        return f"expected {case['expectCount']} rows, got {len(rows)}", result.reader
    if "expect" in case:
        return rows_match(rows, case["expect"]), result.reader
    if "expectCount" not in case:
        return "the test has no expectation", result.reader
    return None, result.reader


@pytest.fixture(scope="module", autouse=True)
def _conformance_summary() -> Iterator[None]:
    """Counts, prints and writes how the suite's tests ran on Spark."""
    yield
    if not OUTCOMES:
        return
    totals: dict[str, int] = {"passed": 0, "failed": 0}
    for outcome in OUTCOMES.values():
        totals["passed" if outcome["passed"] else "failed"] += 1
        totals[outcome["how"]] = totals.get(outcome["how"], 0) + 1
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({"totals": totals, "tests": OUTCOMES}, indent=2) + "\n")
    print(f"\nSQL-on-FHIR suite through Spark: {totals}")


@pytest.mark.parametrize(
    ("file", "index", "suite"), CASES,
    ids=[f"{name}:{suite['tests'][i]['title']}" for name, i, suite in CASES])
def test_conformance_spark(spark: SparkSession, file: str, index: int,
                           suite: dict[str, Any]) -> None:
    case = suite["tests"][index]
    problem, how = _run_case(spark, suite, case)
    OUTCOMES[f"{file}:{case['title']}"] = {"passed": problem is None, "how": how}
    assert problem is None, problem


def test_how_many_suite_tests_run_compiled_on_spark() -> None:
    """The same views compile for Spark as for DuckDB (the same compiler, another dialect)."""
    compiled = fallback = invalid = 0
    reasons = []
    for _, suite in SUITE_FILES:
        for case in suite["tests"]:
            try:
                view = parse_view(case["view"])
            except ViewDefinitionError:
                invalid += 1
                continue
            why = spark_runner.compile_view(view).fallback
            assert why == duckdb_runner.compile_view(view).fallback
            if why is None:
                compiled += 1
            else:
                fallback += 1
                reasons.append(f"{case['title']}: {why}")
    print(f"\nSpark runner: {compiled} suite tests compiled, {fallback} on the fallback, "
          f"{invalid} invalid views")
    assert compiled + fallback + invalid == len(CASES)
    assert compiled >= COMPILED_AT_LEAST, reasons


def test_the_comparison_can_fail(spark: SparkSession) -> None:
    suite = {"resources": [{"resourceType": "Patient", "id": "p1", "gender": "female"}]}
    view = {"resource": "Patient", "select": [{"column": [{"name": "g", "path": "gender"}]}]}
    assert _run_case(spark, suite, {"view": view, "expect": [{"g": "female"}]})[0] is None
    assert _run_case(spark, suite, {"view": view, "expect": [{"g": "male"}]})[0] is not None
    assert _run_case(spark, suite, {"view": view, "expectError": True})[0] is not None


# -- DuckDB and Spark on a population --------------------------------------------------------------

@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 synthetic people with data-quality faults, as NDJSON files."""
    out = tmp_path_factory.mktemp("population")
    write_ndjson(SynthConfig(people=300, seed=5, provinces=(1,), communes_per_province=2,
                             years=2, faults=True), out, workers=1)
    return out


def _neutral(table: pa.Table, columns: tuple[tuple[str, str], ...]) -> pa.Table:
    """A runner's table cast to the neutral Arrow types of its columns."""
    return table.cast(pa.schema([(n, arrow_type(t)) for n, t in columns]))


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_spark_gives_duckdbs_rows_on_a_population(spark: SparkSession, name: str,
                                                  population: Path) -> None:
    view = parse_view(VIEWS[name])
    path = population / f"{view.resource}.ndjson"
    duck = duckdb_runner.execute(view, path)
    sparked = spark_runner.execute(view, path, spark=spark)
    assert sparked.compiled.columns == duck.compiled.columns
    assert (sparked.reader == spark_runner.FALLBACK) == name.startswith("fallback"), \
        sparked.compiled.fallback
    duck_table = _neutral(duck.table, duck.compiled.columns)
    assert sparked.table.schema == duck_table.schema
    got, want = sparked.table.to_pylist(), duck_table.to_pylist()
    assert len(want) > 20
    assert _sorted(got) == _sorted(want)


@pytest.mark.parametrize("index", range(len(EDGE_VIEWS)))
def test_same_rows_as_the_reference_on_edge_cases(spark: SparkSession, index: int) -> None:
    view = parse_view(EDGE_VIEWS[index])
    result = spark_runner.execute(view, EDGE_PATIENTS, spark=spark)
    assert result.compiled.fallback is None, result.compiled.fallback
    assert _sorted(_values(result)) == _sorted(list(evaluate(view, EDGE_PATIENTS)))


def test_repeat_over_deeper_data_runs_on_the_reference(spark: SparkSession) -> None:
    """Compiled for 4 levels, then 8 (both runs stop on 10 levels); then the reference, with
    the same column types (the compiled repeat is checked by the suite's repeat tests)."""
    resources = [_questionnaire_response("q", 10), _questionnaire_response("r", 2)]
    view = parse_view(REPEAT_VIEW)
    result = spark_runner.execute(view, resources, spark=spark)
    assert result.reader == spark_runner.FALLBACK, result.compiled.fallback
    assert "the repeat traversal goes deeper than the 8 levels" in str(result.compiled.fallback)
    assert result.compiled.columns == (("id", "VARCHAR"), ("link", "VARCHAR"),
                                       ("i", "BIGINT"), ("a", "VARCHAR"))
    assert _sorted(_values(result)) == _sorted(list(evaluate(view, resources)))


# -- errors ---------------------------------------------------------------------------------------

def test_several_values_in_a_single_column_is_an_error(spark: SparkSession) -> None:
    view = {"resource": "Patient", "select": [{"column": [_col("given", "name.given")]}]}
    with pytest.raises(ViewEvaluationError) as info:
        spark_runner.execute(view, EDGE_PATIENTS, spark=spark)
    assert info.value.path == "select[0].column[0].path"
    assert info.value.resource == "Patient/a"
    assert "column 'given' gives several values but is not a collection" in info.value.reason


def test_where_that_is_not_boolean_is_an_error(spark: SparkSession) -> None:
    with pytest.raises(ViewEvaluationError) as info:
        spark_runner.run_view({"resource": "Patient", "where": [{"path": "name.given"}],
                               "select": [{"column": [_col("id", "id")]}]}, EDGE_PATIENTS,
                              spark=spark)
    assert info.value.path == "where[0].path" and "one boolean" in info.value.reason


def test_the_fallback_gives_the_reference_rows_and_errors(spark: SparkSession) -> None:
    view = parse_view({"resource": "Patient", "select": [{"column": [
        _col("id", "id"), _col("upper", "name.family.upper()", collection=True)]}]})
    assert spark_runner.compile_view(view).fallback is not None
    result = spark_runner.execute(view, EDGE_PATIENTS, spark=spark)
    assert result.reader == spark_runner.FALLBACK
    assert _sorted(result.table.to_pylist()) == _sorted(list(evaluate(view, EDGE_PATIENTS)))
    with pytest.raises(ViewEvaluationError) as info:
        spark_runner.run_view({"resource": "Patient", "select": [{"column": [
            _col("x", "name.given.upper()")]}]}, EDGE_PATIENTS, spark=spark)
    assert info.value.path == "select[0].column[0].path"
    assert info.value.resource == "Patient/a"


def test_invalid_views_are_refused_before_running(spark: SparkSession) -> None:
    with pytest.raises(ViewDefinitionError) as info:
        spark_runner.run_view({"resource": "Patient", "select": []}, EDGE_PATIENTS,
                              spark=spark)
    assert info.value.path == "select"


def test_no_resource_of_the_type_gives_no_row_and_the_columns(spark: SparkSession) -> None:
    view = {"resource": "Condition", "select": [{"column": [
        _col("id", "id"), _col("n", "code.coding.count()")]}]}
    table = spark_runner.run_view(view, EDGE_PATIENTS, spark=spark)
    assert table.num_rows == 0 and table.column_names == ["id", "n"]


# -- outputs: Parquet, and SQL over registered tables ----------------------------------------------

def test_parquet_output_and_sql_over_view_tables(spark: SparkSession, population: Path,
                                                 tmp_path: Path) -> None:
    """The vital-signs view written to Parquet by Spark and by DuckDB; the same indicator-like
    query over each, on Spark (``register`` + ``sql``) and on DuckDB, gives the same table."""
    view = parse_view(VIEWS["vitals"])
    source = population / "Observation.ndjson"
    spark_out = tmp_path / "vitals_spark"
    written = spark_runner.to_parquet(view, source, spark_out, spark=spark)
    table = pq.read_table(spark_out)
    assert written == table.num_rows > 100
    assert table.column_names == list(view.column_names)
    assert str(table.schema.field("value").type) == "double"
    assert str(table.schema.field("high").type) == "bool"
    duck_out = tmp_path / "vitals.parquet"
    assert duckdb_runner.to_parquet(view, source, duck_out) == written
    query = ("SELECT patient, code, count(*) AS n, max(value) AS top, "
             "sum(CASE WHEN high THEN 1 ELSE 0 END) AS raised, min(effective) AS first_seen "
             "FROM vitals WHERE value IS NOT NULL GROUP BY patient, code "
             "ORDER BY patient, code")
    spark_runner.register(spark, "vitals", spark_out)
    from_parquet = spark_runner.sql(spark, query)
    spark_runner.register(spark, "vitals", pq.read_table(duck_out))
    from_arrow = spark_runner.sql(spark, query)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW vitals AS SELECT * FROM read_parquet('{duck_out}')")
    on_duckdb = con.sql(query).to_arrow_table()
    assert from_parquet.num_rows > 20
    assert from_parquet.to_pylist() == from_arrow.to_pylist() == on_duckdb.to_pylist()


def test_view_frame_is_a_lazy_dataframe(spark: SparkSession, tmp_path: Path) -> None:
    path = tmp_path / "edge.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in EDGE_PATIENTS))
    frame = spark_runner.view_frame(VIEWS["patients"], path, spark=spark)
    assert frame.columns == list(parse_view(VIEWS["patients"]).column_names)
    assert frame.where("official IS NOT NULL").count() == 0
    assert frame.select("id").distinct().count() == 1  # only Patient "a" is active


# -- the Spark date/time keys and the reference pattern, property-tested --------------------------

def _spark_rows(spark: SparkSession, select: str, rows: list[tuple[Any, ...]],
                names: str) -> dict[Any, Any]:
    values = ", ".join("(" + ", ".join(str(v) if isinstance(v, int) else SPARK.literal(v)
                                       for v in row) + ")" for row in rows)
    return dict(spark.sql(f"SELECT i, {select} FROM VALUES {values} AS t({names})").collect())


@settings(max_examples=3, deadline=None)
@given(st.lists(_PAIRS, min_size=100, max_size=100))
def test_spark_date_time_comparison_is_the_reference_comparison(
        spark: SparkSession, cases: list[tuple[str, str, str]]) -> None:
    """The Spark comparison keys and ``tcmp`` as :func:`temporal.compare`, 100 pairs a query."""
    got: dict[int, int | None] = {}
    for kind in ("dateTime", "date", "time"):
        rows = [(i, a, b) for i, (k, a, b) in enumerate(cases) if k == kind]
        if rows:
            compare = SPARK.tcmp(SPARK.temporal_key("a", kind), SPARK.temporal_key("b", kind))
            got.update(_spark_rows(spark, compare, rows, "i, a, b"))
    for i, (kind, a, b) in enumerate(cases):
        va, vb = tm.from_fhir(a, kind), tm.from_fhir(b, kind)
        assert va is not None and vb is not None
        assert got[i] == tm.compare(va, vb), (a, b)


@settings(max_examples=3, deadline=None)
@given(st.lists(st.one_of(_datetimes().map(lambda t: ("dateTime", t)),
                          _dates().map(lambda t: ("date", t)),
                          _times().map(lambda t: ("time", t))), min_size=60, max_size=60),
       st.booleans())
def test_spark_boundaries_are_the_reference_boundaries(
        spark: SparkSession, values: list[tuple[str, str]], high: bool) -> None:
    got: dict[int, str | None] = {}
    for kind in ("dateTime", "date", "time"):
        rows = [(i, text) for i, (k, text) in enumerate(values) if k == kind]
        if rows:
            got.update(_spark_rows(spark, SPARK.boundary("v", kind, high), rows, "i, v"))
    for i, (kind, text) in enumerate(values):
        value = tm.from_fhir(text, kind)
        assert value is not None
        want = tm.boundary(value, high)
        assert got[i] == (want.text if want is not None else None), (text, high)


def test_spark_date_keys_refuse_what_the_reference_refuses(spark: SparkSession) -> None:
    cases = [("2023-02-30", "date"), ("2023-13", "dateTime"), ("2023-01-01T24:00", "dateTime"),
             ("1999-1-1", "date"), ("24:00", "time"), ("12:61", "time"), (None, "date"),
             (None, "dateTime"), (None, "time")]
    keys = ", ".join(SPARK.temporal_key(SPARK.literal(text) if text is not None
                                        else "CAST(NULL AS STRING)", kind)
                     for text, kind in cases)
    assert list(spark.sql(f"SELECT {keys}").collect()[0]) == [None] * len(cases)
    for text, kind in cases:
        assert text is None or tm.from_fhir(text, kind) is None


@settings(max_examples=8, deadline=None)
@given(st.lists(st.tuples(_REF, st.sampled_from([None, "Patient", "Obs"])), min_size=40,
                max_size=40))
def test_spark_reference_pattern_is_the_reference_parser(
        spark: SparkSession, cases: list[tuple[str, str | None]]) -> None:
    rows = [(i, ref, _reference_pattern(rtype)) for i, (ref, rtype) in enumerate(cases)]
    got = _spark_rows(spark, "nullif(regexp_extract(ref, p, 1), '')", rows, "i, ref, p")
    for i, (ref, rtype) in enumerate(cases):
        parsed = None if ref.startswith("#") else parse_reference(ref)
        want = parsed[1] if parsed is not None and rtype in (None, parsed[0]) else None
        assert got[i] == want, (ref, rtype)
