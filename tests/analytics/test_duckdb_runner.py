"""The DuckDB runner against the official SQL-on-FHIR v2 suite and against the reference evaluator.

1. Every test of the suite (``../shared/conformance/sql-on-fhir/tests``, loaded and compared by
   the helpers of :mod:`tests.analytics.test_sql_on_fhir`) runs through the DuckDB runner, in
   two reader modes: ``auto`` (the typed ``read_json``, or the filtered read when a mixed
   source does not fit it) and ``json_transform`` (always the filtered read). Rows are
   compared as the reference harness compares them, after turning DuckDB's values into the
   reference's JSON values (a ``DOUBLE`` into the ``Decimal`` of its shortest text; a JSON
   column of the fallback parsed). How many tests ran compiled and how many on the fallback is
   printed and written to ``build/sql-on-fhir/duckdb_report.json``; fewer compiled tests than
   today fail the run.
2. Views over a synthetic population and over hand-made edge cases give the same rows, in
   the same order, as :func:`songkhoe.analytics.rows.evaluate`.
3. The pieces with their own semantics: date/time comparison keys against
   :func:`songkhoe.fhir.fhirpath.temporal.compare`, the reference-key pattern against
   :func:`songkhoe.fhir.fhirpath.functions.parse_reference`, run-time errors, mixed sources,
   Parquet output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from songkhoe.analytics.duckdb_runner import (
    FALLBACK,
    FILTERED,
    TYPED,
    ViewResult,
    compile_view,
    execute,
    run_view,
    to_parquet,
)
from songkhoe.analytics.rows import ViewEvaluationError, evaluate
from songkhoe.analytics.sql_dialect import MACROS
from songkhoe.analytics.sql_fhirpath import _reference_pattern, literal
from songkhoe.analytics.viewdefinition import ViewDefinitionError, parse_view
from songkhoe.fhir.fhirpath import temporal as tm
from songkhoe.fhir.fhirpath.functions import parse_reference
from songkhoe.synth import SynthConfig, write_ndjson

from .test_sql_on_fhir import CASES, REPO, SUITE_FILES, rows_match

REPORT = REPO / "build" / "sql-on-fhir" / "duckdb_report.json"
#: suite tests that run fully compiled today (the rest take the fallback or are invalid views);
#: a change that compiles fewer fails the run
COMPILED_AT_LEAST = 122
READERS = ("auto", FILTERED)
#: one connection for the suite's runs (a run leaves nothing behind on it)
_SUITE_DB = duckdb.connect()
OUTCOMES: dict[tuple[str, str], dict[str, Any]] = {}


def _values(result: ViewResult) -> list[dict[str, Any]]:
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


def _run_case(suite: dict[str, Any], case: dict[str, Any], reader: str) -> tuple[str | None, str]:
    """(None when the runner meets the case's expectation, else why not; the outcome: how the
    rows were made, or ``invalid`` for a view rejected before running)."""
    mode = None if reader == "auto" else reader
    if case.get("expectError"):
        try:
            view = parse_view(case["view"])
        except ViewDefinitionError:
            return None, "invalid"
        how = FALLBACK if compile_view(view).fallback else "compiled"
        try:
            result = execute(view, suite["resources"], reader=mode, con=_SUITE_DB)
        except ViewEvaluationError:
            return None, how
        return f"expected the view to be rejected, got rows {_values(result)}", how
    try:
        result = execute(case["view"], suite["resources"], reader=mode, con=_SUITE_DB)
    except ViewDefinitionError as exc:
        return f"unexpected error: {exc}", "error"
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
    """Counts, prints and writes how the suite's tests ran (compiled or fallback)."""
    yield
    if not OUTCOMES:
        return
    report: dict[str, Any] = {}
    for (title, reader), outcome in sorted(OUTCOMES.items()):
        report.setdefault(reader, {})[title] = outcome
    totals = {reader: _tally(cases) for reader, cases in report.items()}
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({"totals": totals, "tests": report}, indent=2) + "\n")
    for reader, counts in totals.items():
        print(f"\nSQL-on-FHIR suite through DuckDB (reader {reader}): {counts}")


def _tally(cases: dict[str, dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {"passed": 0, "failed": 0}
    for c in cases.values():
        counts["passed" if c["passed"] else "failed"] += 1
        counts[c["how"]] = counts.get(c["how"], 0) + 1
    return counts


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(
    ("file", "index", "suite"), CASES,
    ids=[f"{name}:{suite['tests'][i]['title']}" for name, i, suite in CASES])
def test_conformance_duckdb(file: str, index: int, suite: dict[str, Any], reader: str) -> None:
    case = suite["tests"][index]
    problem, how = _run_case(suite, case, reader)
    if reader == FILTERED:
        assert how != TYPED
    if how in (TYPED, FILTERED):
        how = "compiled"
    OUTCOMES[(f"{file}:{case['title']}", reader)] = {"passed": problem is None, "how": how}
    assert problem is None, problem


def test_how_many_suite_tests_run_compiled() -> None:
    """Every suite test is compiled except the views that need what the compiler does not
    model (the boundaries of a decimal; a ``repeat`` whose paths name no R4 element of the
    resource); the count may only go up."""
    compiled = fallback = invalid = 0
    reasons = []
    for _, suite in SUITE_FILES:
        for case in suite["tests"]:
            try:
                view = parse_view(case["view"])
            except ViewDefinitionError:
                invalid += 1
                continue
            why = compile_view(view).fallback
            if why is None:
                compiled += 1
            else:
                fallback += 1
                reasons.append(f"{case['title']}: {why}")
    print(f"\nDuckDB runner: {compiled} suite tests compiled, {fallback} on the fallback, "
          f"{invalid} invalid views")
    assert compiled + fallback + invalid == len(CASES)
    assert compiled >= COMPILED_AT_LEAST, reasons
    assert all("no path names an element" in r or "Boundary() of decimal" in r
               for r in reasons), reasons


def test_the_comparison_can_fail() -> None:
    """A wrong expectation is noticed (the harness compares, it does not just run)."""
    suite = {"resources": [{"resourceType": "Patient", "id": "p1", "gender": "female"}]}
    view = {"resource": "Patient", "select": [{"column": [{"name": "g", "path": "gender"}]}]}
    assert _run_case(suite, {"view": view, "expect": [{"g": "female"}]}, "auto")[0] is None
    assert _run_case(suite, {"view": view, "expect": [{"g": "male"}]}, "auto")[0] is not None
    assert _run_case(suite, {"view": view, "expectCount": 2}, "auto")[0] is not None
    assert _run_case(suite, {"view": view, "expectError": True}, "auto")[0] is not None


# -- the same rows as the reference evaluator --------------------------------------------------

@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic population with data-quality faults, as NDJSON files."""
    out = tmp_path_factory.mktemp("population")
    write_ndjson(SynthConfig(people=300, seed=5, provinces=(1,), communes_per_province=2,
                             years=2, faults=True), out, workers=1)
    return out


def _col(name: str, path: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "path": path, **extra}


VIEWS: dict[str, dict[str, Any]] = {
    "patients": {"resource": "Patient", "where": [{"path": "active"}], "select": [
        {"column": [_col("id", "getResourceKey()"), _col("gender", "gender"),
                    _col("born", "birthDate", type="date"),
                    _col("born_before_1970", "birthDate < @1970-01-01"),
                    _col("official", "name.where(use = 'official').family.first()"),
                    _col("given", "name.given.join(' ')"),
                    _col("names", "name.count()"),
                    _col("lines", "address.line", collection=True),
                    _col("cccd", "identifier.where(system = 'urn:vn:cccd').value.first()"),
                    _col("has_phone", "telecom.where(system = 'phone').exists()"),
                    _col("org", "managingOrganization.getReferenceKey(Organization)"),
                    _col("org_any", "managingOrganization.getReferenceKey()")]},
        {"forEach": "name", "column": [_col("i", "%rowIndex"), _col("family", "family"),
                                       _col("first_given", "given[0]"),
                                       _col("givens", "given", collection=True)]},
        {"forEachOrNull": "telecom.where(system = 'email')",
         "column": [_col("email", "value")]}]},
    "vitals": {"resource": "Observation", "where": [
        {"path": "category.coding.where(code = 'vital-signs').exists()"}], "select": [
        {"column": [_col("id", "getResourceKey()"),
                    _col("patient", "subject.getReferenceKey(Patient)"),
                    _col("effective", "effective.ofType(dateTime)", type="dateTime"),
                    _col("in_2026", "effective.ofType(dateTime) >= @2026-01-01")]},
        {"unionAll": [
            {"forEach": "where(value.ofType(Quantity).exists())", "column": [
                _col("code", "code.coding.code.first()"),
                _col("value", "value.ofType(Quantity).value", type="decimal"),
                _col("high", "value.ofType(Quantity).value > 140"),
                _col("unit", "value.ofType(Quantity).code")]},
            {"forEach": "component", "column": [
                _col("code", "code.coding.code.first()"),
                _col("value", "value.ofType(Quantity).value", type="decimal"),
                _col("high", "value.ofType(Quantity).value > 140"),
                _col("unit", "value.ofType(Quantity).code")]}]}]},
    "observation_math": {"resource": "Observation", "select": [{"column": [
        _col("id", "id"), _col("n", "component.count()"),
        _col("double", "value.ofType(Quantity).value * 2"),
        _col("ratio", "component[0].value.ofType(Quantity).value / "
                      "component[1].value.ofType(Quantity).value"),
        _col("diff", "component.first().value.ofType(Quantity).value - "
                     "component.last().value.ofType(Quantity).value"),
        _col("bp", "code.coding.code contains '85354-9'"),
        _col("final", "status = 'final' and effective.exists()"),
        _col("not_final", "(status = 'final').not() or status.empty()"),
        _col("coded", "value.ofType(CodeableConcept).coding.code.first()"),
        _col("label", "code.text & ' (' & status & ')'")]}]},
    "conditions": {"resource": "Condition", "select": [
        {"column": [_col("id", "getResourceKey()"),
                    _col("patient", "subject.getReferenceKey(Patient)"),
                    _col("icd10", "code.coding.where(system = "
                                  "'http://hl7.org/fhir/sid/icd-10').code.first()"),
                    _col("onset", "onset.ofType(dateTime)"),
                    _col("recent", "onset.ofType(dateTime) > @2020"),
                    _col("same_day", "onset.ofType(dateTime) = recordedDate")]},
        {"forEachOrNull": "category.coding", "column": [_col("category", "code")]}]},
    "encounters": {"resource": "Encounter", "select": [
        {"column": [_col("id", "id"), _col("start", "period.start"),
                    _col("ended", "period.end.exists()"),
                    _col("long", "period.end > period.start"),
                    _col("provider", "serviceProvider.getReferenceKey(Organization)")]},
        {"forEachOrNull": "participant", "column": [
            _col("who", "individual.getReferenceKey()"), _col("k", "%rowIndex")],
         "select": [{"forEachOrNull": "type.coding", "column": [_col("type", "code")]}]}]},
    # a view the compiler leaves to the fallback: its rows must still be the reference's
    "fallback_union_operator": {"resource": "Patient", "select": [{"column": [
        _col("id", "id"), _col("contacts", "telecom.value | address.text", collection=True)]}]},
}


def _doubles(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Decimals to the precision of a DOUBLE (the runner's decimal type), to 12 significant
    digits (the reference divides in 28)."""
    def value(v: Any) -> Any:
        if isinstance(v, list):
            return [value(x) for x in v]
        if type(v) is Decimal:
            return float(f"{v:.12g}")
        return v
    return [{k: value(v) for k, v in row.items()} for row in rows]


def _first_difference(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> str:
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return f"row {i}: {a} != {b}"
    return f"{len(got)} rows, expected {len(want)}"


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_same_rows_as_the_reference_on_a_population(name: str, population: Path) -> None:
    view = parse_view(VIEWS[name])
    path = population / f"{view.resource}.ndjson"
    resources = [json.loads(line, parse_float=Decimal)
                 for line in path.read_text(encoding="utf-8").splitlines()]
    want = list(evaluate(view, resources))
    result = execute(view, path)
    assert (result.reader == FALLBACK) == name.startswith("fallback"), result.compiled.fallback
    got = _values(result)
    assert len(want) > 20
    assert _doubles(got) == _doubles(want), _first_difference(got, want)


EDGE_PATIENTS: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "a", "active": True, "birthDate": "1970",
     "deceasedDateTime": "2020-03-04T10:00:00+07:00",
     "name": [{"use": "official", "given": ["A", "B"]}, {"family": "X"}, {}],
     "telecom": [{"system": "email", "value": "a@x.vn"}, {"system": "email", "value": "b@x.vn"}],
     "managingOrganization": {"reference": "http://h.vn/fhir/Organization/o1/_history/3"},
     "link": [{"other": {"reference": "#contained"}, "type": "refer"},
              {"other": {"reference": "Patient/b"}, "type": "seealso"}],
     "extension": [{"url": "http://x/eth", "valueCode": "kinh"},
                   {"url": "http://x/nested", "extension": [
                       {"url": "part", "valueString": "one"},
                       {"url": "part", "valueString": "two"}]}]},
    {"resourceType": "Patient", "id": "b", "active": False, "birthDate": "1970-06-15",
     "deceasedBoolean": False, "name": [{"given": ["C"]}],
     "managingOrganization": {"reference": "Organization/o2"}},
    {"resourceType": "Patient", "id": "c", "birthDate": "1969-12",
     "managingOrganization": {"display": "no reference"}},
    {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"}},
    {"resourceType": "Patient", "id": "d", "deceasedDateTime": "2020-03-04T03:00:00Z",
     "telecom": [{"system": "phone"}]},
]

EDGE_VIEWS: list[dict[str, Any]] = [
    {"resource": "Patient", "select": [{"column": [
        _col("id", "id"),
        _col("born_1970", "birthDate = @1970"),
        _col("born_before", "birthDate < @1970-01-01"),
        _col("born_after", "birthDate >= '1970-01'"),
        _col("died_same", "deceased.ofType(dateTime) = @2020-03-04T03:00:00Z"),
        _col("died_before", "deceased.ofType(dateTime) < @2020-03-04T10:00:00+07:00"),
        _col("died_day", "deceased.ofType(dateTime) > @2020-03-03"),
        _col("alive", "deceased.ofType(boolean).not()"),
        _col("eth", "extension('http://x/eth').value.ofType(code).first()"),
        _col("parts", "extension('http://x/nested').extension('part').value.ofType(string)",
             collection=True),
        _col("org", "managingOrganization.getReferenceKey(Organization)"),
        _col("links", "link.other.getReferenceKey()", collection=True),
        _col("self_link", "getResourceKey() = link.other.getReferenceKey(Patient)"),
        _col("given", "name.given.join(',')"),
        _col("third_name_empty", "name[2].given.empty()"),
        _col("second_given", "name.given.skip(1).first()"),
        _col("two_givens", "name.given.take(2)", collection=True),
        _col("tail", "name.given.tail()", collection=True),
        _col("single_use", "name.use.single()"),
        _col("official_in", "'official' in name.use"),
        _col("email_or_phone", "telecom.exists(system = 'email') xor "
                               "telecom.exists(system = 'phone')"),
        _col("implies", "active implies name.exists()"),
        _col("is_bool", "deceased is boolean"),
        _col("as_date", "(deceased as dateTime).exists()"),
        _col("quotient", "name.count() div 2"),
        _col("remainder", "name.count() mod 2"),
        _col("minus", "-name.count()"),
        _col("by_zero", "name.count() / 0")]}]},
    {"resource": "Patient", "select": [
        {"column": [_col("id", "id")]},
        {"forEachOrNull": "name", "column": [_col("n", "%rowIndex")], "select": [
            {"forEach": "given", "column": [_col("g", "$this"), _col("gi", "%rowIndex")]}]},
        {"unionAll": [{"forEach": "telecom", "column": [_col("t", "system")]},
                      {"column": [_col("t", "'none'")]}]}]},
    {"resource": "Patient", "where": [{"path": "name.exists() and active.exists()"}],
     "select": [{"forEach": "name.first()", "column": [_col("f", "family")]},
                {"forEachOrNull": "name.where(family.exists()).first()",
                 "column": [_col("fam", "family")]}]},
]


@pytest.mark.parametrize("index", range(len(EDGE_VIEWS)))
def test_same_rows_as_the_reference_on_edge_cases(index: int) -> None:
    view = parse_view(EDGE_VIEWS[index])
    result = execute(view, EDGE_PATIENTS)
    assert result.compiled.fallback is None, result.compiled.fallback
    assert _values(result) == list(evaluate(view, EDGE_PATIENTS))


def test_what_does_not_compile_runs_on_the_reference_and_says_why() -> None:
    view = parse_view({"resource": "Patient", "select": [{"column": [
        _col("id", "id"), _col("upper", "name.family.upper()")]}]})
    compiled = compile_view(view)
    assert compiled.fallback == "select[0].column[1].path: upper() is not supported"
    rows = run_view(view, EDGE_PATIENTS).to_pylist()
    assert rows == list(evaluate(view, EDGE_PATIENTS))
    for why, path in [("is not an R4 element", "name.nickname"),
                      ("used without ofType()", "deceased"),
                      ("(not a primitive)", "name.first()"),
                      ("'$this' is not a path of elements", None)]:
        select: dict[str, Any] = {"column": [_col("x", path or "linkId")]}
        if path is None:
            select["repeat"] = ["item", "$this"]
        reason = compile_view({"resource": "Patient" if path else "Questionnaire",
                               "select": [select]}).fallback
        assert reason is not None and why in reason, reason


def _questionnaire_response(rid: str, depth: int) -> dict[str, Any]:
    """Items nested ``depth`` deep, each with an answer that has an item of its own."""
    item: dict[str, Any] = {"linkId": f"{rid}.{depth}"}
    for d in range(depth - 1, 0, -1):
        item = {"linkId": f"{rid}.{d}", "item": [item],
                "answer": [{"valueString": f"a{d}", "item": [{"linkId": f"{rid}.x{d}"}]}]}
    return {"resourceType": "QuestionnaireResponse", "id": rid, "status": "completed",
            "item": [item, {"linkId": f"{rid}.last"}]}


REPEAT_VIEW = {"resource": "QuestionnaireResponse", "select": [
    {"column": [_col("id", "id")]},
    {"repeat": ["item", "answer.item"], "column": [_col("link", "linkId"), _col("i", "%rowIndex")],
     "select": [{"forEachOrNull": "answer", "column": [_col("a", "value.ofType(string)")]}]}]}


@pytest.mark.parametrize(("depth", "how"), [(3, TYPED), (6, TYPED), (10, FALLBACK)])
def test_repeat_is_compiled_for_the_depth_of_the_data(depth: int, how: str) -> None:
    """Compiled for 4 levels, then 8; deeper data runs on the reference, with the same column
    types."""
    resources = [_questionnaire_response("q", depth), _questionnaire_response("r", 2)]
    view = parse_view(REPEAT_VIEW)
    result = execute(view, resources)
    assert result.reader == how, result.compiled.fallback
    assert result.compiled.columns == (("id", "VARCHAR"), ("link", "VARCHAR"),
                                       ("i", "BIGINT"), ("a", "VARCHAR"))
    assert _values(result) == list(evaluate(view, resources))
    assert len(result.table) > 2 * depth


# -- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("reader", [None, FILTERED])
def test_several_values_in_a_single_column_is_an_error(reader: str | None) -> None:
    view = {"resource": "Patient", "select": [{"column": [_col("given", "name.given")]}]}
    with pytest.raises(ViewEvaluationError) as info:
        execute(view, EDGE_PATIENTS, reader=reader)
    assert info.value.path == "select[0].column[0].path"
    assert info.value.resource == "Patient/a"
    assert "column 'given' gives several values but is not a collection" in info.value.reason


def test_where_that_is_not_boolean_and_comparison_of_several_are_errors() -> None:
    with pytest.raises(ViewEvaluationError) as info:
        run_view({"resource": "Patient", "where": [{"path": "name.given"}],
                  "select": [{"column": [_col("id", "id")]}]}, EDGE_PATIENTS)
    assert info.value.path == "where[0].path" and "one boolean" in info.value.reason
    with pytest.raises(ViewEvaluationError) as info:
        run_view({"resource": "Patient", "select": [{"column": [
            _col("x", "name.given < 'B'")]}]}, EDGE_PATIENTS)
    assert info.value.path == "select[0].column[0].path"


def test_errors_of_the_fallback_name_the_element_and_the_resource() -> None:
    view = {"resource": "Patient", "select": [{"column": [
        _col("x", "name.given.upper()")]}]}
    assert compile_view(view).fallback is not None
    with pytest.raises(ViewEvaluationError) as info:
        run_view(view, EDGE_PATIENTS)
    assert info.value.path == "select[0].column[0].path"
    assert info.value.resource == "Patient/a"


def test_invalid_views_are_refused_before_running() -> None:
    with pytest.raises(ViewDefinitionError) as info:
        run_view({"resource": "Patient", "select": []}, EDGE_PATIENTS)
    assert info.value.path == "select"


# -- sources and outputs --------------------------------------------------------------------------

def test_a_mixed_source_is_read_filtered(tmp_path: Path) -> None:
    """Another type's ``code`` is a string where the view reads a CodeableConcept: the typed
    read fails on it, and the source is read again, filtered first."""
    path = tmp_path / "mixed.ndjson"
    lines = [{"resourceType": "Observation", "id": "o1", "code": {"text": "bp"}},
             {"resourceType": "Basic", "id": "b1", "code": "not a CodeableConcept"},
             {"resourceType": "Observation", "id": "o2", "code": {"text": "hr"}}]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    view = {"resource": "Observation", "select": [{"column": [
        _col("id", "id"), _col("code", "code.text")]}]}
    result = execute(view, path)
    assert result.reader == FILTERED
    assert result.table.to_pylist() == [{"id": "o1", "code": "bp"}, {"id": "o2", "code": "hr"}]
    assert execute(view, [str(path), str(path)]).table.num_rows == 4


def test_parquet_output_has_the_rows_and_types(tmp_path: Path, population: Path) -> None:
    view = parse_view(VIEWS["vitals"])
    out = tmp_path / "vitals.parquet"
    written = to_parquet(view, population / "Observation.ndjson", out)
    table = pq.read_table(out)
    assert written == table.num_rows > 100
    assert table.column_names == list(view.column_names)
    assert str(table.schema.field("value").type) == "double"
    assert str(table.schema.field("high").type) == "bool"
    assert table.equals(run_view(view, population / "Observation.ndjson"))


def test_a_caller_connection_is_used_and_left_open() -> None:
    con = duckdb.connect()
    view = {"resource": "Patient", "select": [{"column": [_col("id", "id")]}]}
    assert run_view(view, EDGE_PATIENTS, con=con).num_rows == 4
    assert con.execute("SELECT 1").fetchall() == [(1,)]
    assert run_view({"resource": "Patient", "select": [{"column": [
        _col("u", "name.family.upper()")]}]}, EDGE_PATIENTS, con=con).num_rows == 4
    assert not [f for f in con.execute("SELECT function_name FROM duckdb_functions() "
                                       "WHERE function_name LIKE 'sof_reference%'").fetchall()]


def test_no_resource_of_the_type_gives_no_row_and_the_columns() -> None:
    view = {"resource": "Condition", "select": [{"column": [
        _col("id", "id"), _col("n", "code.coding.count()")]}]}
    table = run_view(view, EDGE_PATIENTS)
    assert table.num_rows == 0 and table.column_names == ["id", "n"]


# -- date/time comparison and reference keys, property-tested ------------------------------------

def _date_text(draw: Any, min_precision: int = 1) -> str:
    y = draw(st.integers(1999, 2001))
    mo = draw(st.integers(1, 12))
    d = draw(st.integers(1, 28 if mo == 2 else 30))
    parts = [f"{y:04d}", f"-{mo:02d}", f"-{d:02d}"]
    return "".join(parts[:draw(st.integers(min_precision, 3))])


@st.composite
def _datetimes(draw: Any) -> str:
    text = _date_text(draw)
    if text.count("-") < 2 or draw(st.booleans()):
        return text
    time_parts = [f"T{draw(st.integers(0, 23)):02d}", f":{draw(st.sampled_from([0, 30, 59])):02d}",
                  f":{draw(st.integers(0, 59)):02d}",
                  "." + draw(st.sampled_from(["0", "5", "500", "123", "1234"]))]
    text += "".join(time_parts[:draw(st.integers(1, 4))])
    return text + draw(st.sampled_from(["", "Z", "+07:00", "-05:30", "+00:00"]))


@st.composite
def _times(draw: Any) -> str:
    parts = [f"{draw(st.integers(0, 23)):02d}", f":{draw(st.sampled_from([0, 30])):02d}",
             f":{draw(st.integers(0, 2)):02d}", "." + draw(st.sampled_from(["0", "000", "5"]))]
    return "".join(parts[:draw(st.integers(1, 4))])


_MACRO_DB = duckdb.connect()
for _macro in MACROS:
    _MACRO_DB.execute(_macro)


@st.composite
def _dates(draw: Any) -> str:
    return _date_text(draw)


_PAIRS = st.one_of(st.tuples(st.just("dateTime"), _datetimes(), _datetimes()),
                  st.tuples(st.just("date"), _dates(), _dates()),
                  st.tuples(st.just("time"), _times(), _times()))


@settings(max_examples=40, deadline=None)
@given(st.lists(_PAIRS, min_size=25, max_size=25))
def test_date_time_comparison_is_the_reference_comparison(
        cases: list[tuple[str, str, str]]) -> None:
    """Dates, dateTimes (partial, with and without offsets) and times, 25 pairs a query; the
    compiler never compares a time with a date (the reference: empty for =, an error for <)."""
    got: dict[int, int | None] = {}
    for kind, key in [("dateTime", "sof_dt_key"), ("date", "sof_date_key"),
                      ("time", "sof_time_key")]:
        rows = [(i, a, b) for i, (k, a, b) in enumerate(cases) if k == kind]
        if rows:
            values = ", ".join(f"({i}, {literal(a)}, {literal(b)})" for i, a, b in rows)
            got.update(_MACRO_DB.execute(f"SELECT i, sof_tcmp({key}(a), {key}(b)) FROM "
                                         f"(VALUES {values}) AS t(i, a, b)").fetchall())
    for i, (kind, a, b) in enumerate(cases):
        va, vb = tm.from_fhir(a, kind), tm.from_fhir(b, kind)
        assert va is not None and vb is not None
        assert got[i] == tm.compare(va, vb), (a, b)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.one_of(_datetimes().map(lambda t: ("dateTime", t)),
                          _dates().map(lambda t: ("date", t)),
                          _times().map(lambda t: ("time", t))), min_size=20, max_size=20),
       st.booleans())
def test_boundaries_are_the_reference_boundaries(values: list[tuple[str, str]],
                                                 high: bool) -> None:
    got: dict[int, str | None] = {}
    for kind, macro in [("dateTime", "sof_dt_boundary"), ("date", "sof_date_boundary"),
                        ("time", "sof_time_boundary")]:
        rows = [(i, text) for i, (k, text) in enumerate(values) if k == kind]
        if rows:
            table = ", ".join(f"({i}, {literal(text)})" for i, text in rows)
            got.update(_MACRO_DB.execute(f"SELECT i, {macro}(v, {str(high).lower()}) FROM "
                                         f"(VALUES {table}) AS t(i, v)").fetchall())
    for i, (kind, text) in enumerate(values):
        value = tm.from_fhir(text, kind)
        assert value is not None
        want = tm.boundary(value, high)
        assert got[i] == (want.text if want is not None else None), (text, high)


def test_date_keys_refuse_what_the_reference_refuses() -> None:
    for text, key in [("2023-02-30", "sof_date_key"), ("2023-13", "sof_dt_key"),
                      ("2023-01-01T24:00", "sof_dt_key"), ("1999-1-1", "sof_date_key"),
                      ("24:00", "sof_time_key"), ("12:61", "sof_time_key"),
                      (None, "sof_date_key"), (None, "sof_dt_key"), (None, "sof_time_key")]:
        got = _MACRO_DB.execute(f"SELECT {key}(?)", [text]).fetchone()
        assert got == (None,), text
        assert text is None or tm.from_fhir(text, {"sof_date_key": "date", "sof_dt_key":
                                                   "dateTime", "sof_time_key": "time"}[key]) \
            is None


_REF = st.lists(st.sampled_from(["Patient", "Obs", "/", "#", "1", "a-b", "_history", "x",
                                 "http:", ".", "P"]), min_size=1, max_size=7).map("".join)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(_REF, st.sampled_from([None, "Patient", "Obs"])), min_size=25,
                max_size=25))
def test_reference_key_pattern_is_the_reference_parser(
        cases: list[tuple[str, str | None]]) -> None:
    values = ", ".join(f"({i}, {literal(ref)}, {literal(_reference_pattern(rtype))})"
                       for i, (ref, rtype) in enumerate(cases))
    got = dict(_MACRO_DB.execute(f"SELECT i, nullif(regexp_extract(ref, p, 1), '') FROM "
                                 f"(VALUES {values}) AS t(i, ref, p)").fetchall())
    for i, (ref, rtype) in enumerate(cases):
        parsed = None if ref.startswith("#") else parse_reference(ref)
        want = parsed[1] if parsed is not None and rtype in (None, parsed[0]) else None
        match = re.search(_reference_pattern(rtype), ref)
        assert (match.group(1) if match else None) == want, (ref, rtype)
        assert got[i] == want, (ref, rtype)
