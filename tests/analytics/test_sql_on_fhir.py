"""The ViewDefinition engine against the official SQL-on-FHIR v2 test suite, and its own rules.

The suite (https://github.com/FHIR/sql-on-fhir-v2/tree/master/tests, format described by its
``tests.schema.json``) lives beside the repository in ``../shared/conformance/sql-on-fhir/tests``.
Every test of every file runs here, compared as the reference runner (sof-js
``tests/compliance.test.js``) compares: rows in any order, each expected row matched by one
produced row with the same keys and equal values; ``expectError`` passes only when the view is
rejected with a ViewDefinitionError (at parse or evaluation time); ``expectColumns`` also
checks the output columns and their order; ``expectCount`` the number of rows.

At the end of the session the results are written in the suite's report format,
``{"<file>.json": {"tests": [{"name": ..., "result": {"passed": ...}}]}}``, to
``build/sql-on-fhir/test_report.json``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from songkhoe.analytics.rows import ViewEvaluationError, evaluate, resource_rows
from songkhoe.analytics.viewdefinition import (
    OutputColumn,
    ViewDefinitionError,
    parse_view,
)
from songkhoe.fhir.fhirpath import Date, DateTime, compile

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO.parent / "shared" / "conformance" / "sql-on-fhir" / "tests"
REPORT = REPO / "build" / "sql-on-fhir" / "test_report.json"


def _load_suite() -> list[tuple[str, dict[str, Any]]]:
    if not SUITE.is_dir():
        return []
    files = sorted(p for p in SUITE.glob("*.json") if p.name != "tests.schema.json")
    # FHIR decimals keep their precision (0.95 stays 0.95, 1.0 keeps one decimal place)
    return [(p.name, json.loads(p.read_text(), parse_float=Decimal)) for p in files]


SUITE_FILES = _load_suite()
CASES = [(name, i, suite) for name, suite in SUITE_FILES for i in range(len(suite["tests"]))]
RESULTS: dict[str, dict[int, bool]] = {}


@pytest.fixture(scope="session", autouse=True)
def _test_report() -> Iterator[None]:
    """Writes the suite's test report once every test of this module has run."""
    yield
    if not RESULTS:
        return
    report = {}
    for name, suite in SUITE_FILES:
        ran = RESULTS.get(name, {})
        report[name] = {"tests": [{"name": suite["tests"][i]["title"],
                                   "result": {"passed": ran[i]}} for i in sorted(ran)]}
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")


def test_suite_is_present() -> None:
    assert SUITE.is_dir(), f"the SQL-on-FHIR test suite is expected at {SUITE}"
    assert len(SUITE_FILES) >= 22
    assert len(CASES) >= 134


# -- comparison as the reference runner does it -----------------------------------------------

def _equal(got: Any, want: Any) -> bool:
    """JSON equality: booleans are not numbers, numbers compare by value, arrays in order."""
    if isinstance(got, bool) or isinstance(want, bool):
        return got is want
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(_equal(a, b) for a, b in zip(got, want))
    if isinstance(got, (int, Decimal)) and isinstance(want, (int, Decimal)):
        return Decimal(got) == Decimal(want)
    return type(got) is type(want) and bool(got == want)


def rows_match(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> str | None:
    """None when ``got`` holds exactly the rows of ``want`` in any order, else what differs."""
    if len(got) != len(want):
        return f"expected {len(want)} rows, got {len(got)}: {got}"
    left = list(got)
    for row in want:
        for i, candidate in enumerate(left):
            if candidate.keys() == row.keys() and \
                    all(_equal(candidate[k], row[k]) for k in row):
                del left[i]
                break
        else:
            return f"expected row {row} is missing from {got}"
    return None


def run_case(suite: dict[str, Any], case: dict[str, Any]) -> str | None:
    """None when the engine meets the case's expectation, else why not."""
    if case.get("expectError"):
        try:
            rows = list(evaluate(case["view"], suite["resources"]))
        except ViewDefinitionError:
            return None
        return f"expected the view to be rejected, got rows {rows}"
    try:
        view = parse_view(case["view"])
        rows = list(evaluate(view, suite["resources"]))
    except ViewDefinitionError as exc:
        return f"unexpected error: {exc}"
    if "expectColumns" in case:
        names = list(view.column_names)
        if names != case["expectColumns"]:
            return f"expected columns {case['expectColumns']}, got {names}"
        for row in rows:
            if list(row) != names:
                return f"expected columns {names} in order, got row {row}"
    if "expectCount" in case and len(rows) != case["expectCount"]:
        return f"expected {case['expectCount']} rows, got {len(rows)}"
    if "expect" in case:
        return rows_match(rows, case["expect"])
    if "expectCount" not in case:
        return "the test has no expectation"
    return None


@pytest.mark.parametrize(
    ("file", "index", "suite"), CASES,
    ids=[f"{name}:{suite['tests'][i]['title']}" for name, i, suite in CASES])
def test_conformance(file: str, index: int, suite: dict[str, Any]) -> None:
    problem = run_case(suite, suite["tests"][index])
    RESULTS.setdefault(file, {})[index] = problem is None
    assert problem is None, problem


def test_comparison_is_strict() -> None:
    """The comparison itself can fail: order is free, but keys, values and types are not."""
    want = [{"a": 1, "b": True}, {"a": Decimal("1.5"), "b": None}]
    assert rows_match([{"a": Decimal("1.5"), "b": None}, {"a": 1, "b": True}], want) is None
    assert rows_match([{"a": 1, "b": True}], want) is not None
    assert rows_match([{"a": 1, "b": 1}, {"a": Decimal("1.5"), "b": None}], want) is not None
    assert rows_match([{"a": "1", "b": True}, {"a": Decimal("1.5"), "b": None}], want) \
        is not None
    assert rows_match([{"a": 1, "b": True}, {"a": Decimal("1.5")}], want) is not None
    assert rows_match([{"a": 1, "b": True}, {"a": 1, "b": True}], want) is not None
    assert rows_match([{"a": [1, 2]}], [{"a": [2, 1]}]) is not None


def test_an_error_that_is_not_a_view_error_does_not_pass_an_expect_error_case() -> None:
    suite = {"resources": [{"resourceType": "Patient", "id": "p1"}]}
    case = {"view": {"resource": "Patient", "select": [{"column": [
        {"name": "id", "path": "id"}]}]}, "expectError": True}
    assert run_case(suite, case) is not None


# -- invalid views: where and why -------------------------------------------------------------

def _view(*select: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
            "select": list(select) or [{"column": [{"name": "id", "path": "id"}]}], **extra}


def _col(name: Any = "id", path: Any = "id", **extra: Any) -> dict[str, Any]:
    return {"name": name, "path": path, **extra}


INVALID = [
    ({}, "resource", "is required"),
    ([], "", "expected an object, got an empty array"),
    (_view(resource="patient"), "resource", "expected a FHIR resource type"),
    (_view(resourceType="Patient"), "resourceType", "expected 'ViewDefinition'"),
    (_view(status="final"), "status", "expected one of draft, active, retired, unknown"),
    (_view(name="my view"), "name", "usable as a database name"),
    (_view(fhirVersion=["4"]), "fhirVersion[0]", "expected a FHIR version"),
    (_view(select=[]), "select", "expected a non-empty array, got an empty array"),
    (_view(select=None), "select", "expected a non-empty array, got null"),
    (_view(colour="red"), "colour", "unknown element"),
    (_view({"column": [_col("1st")]}), "select[0].column[0].name",
     "letters, digits and underscores starting with a letter"),
    (_view({"column": [_col("_id")]}), "select[0].column[0].name", "got '_id'"),
    (_view({"column": [_col(), {"name": "gender"}]}), "select[0].column[1].path",
     "is required"),
    (_view({"column": [_col(path="")]}), "select[0].column[0].path",
     "expected a FHIRPath expression"),
    (_view({"column": [_col(path="name.given.where(")]}), "select[0].column[0].path",
     "invalid FHIRPath"),
    (_view({"column": [_col(path="name.nosuchfunction()")]}), "select[0].column[0].path",
     "invalid FHIRPath"),
    (_view({"column": [_col(collection="yes")]}), "select[0].column[0].collection",
     "expected true or false"),
    (_view({"column": [_col(collection=None)]}), "select[0].column[0].collection",
     "expected true or false, got null"),
    (_view({"column": [_col(type="a string")]}), "select[0].column[0].type",
     "expected a FHIR type"),
    (_view({"column": [_col(tag=[{"name": "ansi/type"}])]}), "select[0].column[0].tag[0].value",
     "is required"),
    (_view({"column": [_col(alias="x")]}), "select[0].column[0].alias", "unknown element"),
    (_view({"column": [_col()]}, {"column": [_col(path="getResourceKey()")]}),
     "select[1].column[0].name", "column 'id' is already defined at select[0].column[0]"),
    (_view({"column": [_col()], "select": [{"forEach": "name", "column": [_col(path="family")]}]}),
     "select[0].select[0].column[0].name", "already defined"),
    (_view({"forEach": "name", "forEachOrNull": "name", "column": [_col(path="family")]}),
     "select[0]", "at most one of forEach, forEachOrNull, repeat"),
    (_view({"forEach": "name"}), "select[0]", "at least one of column, select, unionAll"),
    (_view({"forEach": 1, "column": [_col()]}), "select[0].forEach",
     "expected a FHIRPath expression (a non-empty string), got a number (1)"),
    (_view({"repeat": "item", "column": [_col()]}), "select[0].repeat",
     "expected a non-empty array, got 'item'"),
    (_view({"repeat": [], "column": [_col()]}), "select[0].repeat", "non-empty array"),
    (_view({"unionAll": []}), "select[0].unionAll", "non-empty array"),
    (_view({"unionAll": [{"column": [_col("a"), _col("b")]},
                         {"column": [_col("a"), _col("c")]}]}),
     "select[0].unionAll[1]",
     "same columns in the same order as select[0].unionAll[0] (a, b), got (a, c)"),
    (_view({"unionAll": [{"column": [_col("a", type="string")]},
                         {"column": [_col("a", type="integer")]}]}),
     "select[0].unionAll[1]", "column 'a' has type 'integer' here but 'string'"),
    (_view({"unionAll": [{"column": [_col("a")]},
                         {"column": [_col("a", collection=True)]}]}),
     "select[0].unionAll[1]", "column 'a' is a collection here but is not"),
    (_view(where=[{"path": "active", "note": "x"}]), "where[0].note", "unknown element"),
    (_view(where=[{"description": "no path"}]), "where[0].path", "is required"),
    (_view(where=[{"path": "name.where(use = %use).exists()"}]), "where[0].path",
     "%use is not a constant of this view"),
    (_view({"forEach": "name.where(use = %use)", "column": [_col(path="family")]},
           constant=[{"name": "other", "valueCode": "official"}]),
     "select[0].forEach", "%use is not a constant"),
    (_view(constant=[{"name": "use"}]), "constant[0]", "expected exactly one value[x]"),
    (_view(constant=[{"name": "use", "valueString": "a", "valueCode": "b"}]), "constant[0]",
     "got valueString and valueCode"),
    (_view(constant=[{"name": "n", "valueInteger": "1"}]), "constant[0].valueInteger",
     "expected an integer"),
    (_view(constant=[{"name": "d", "valueDate": "2023-02-30"}]), "constant[0].valueDate",
     "2023-02 has 28 days"),
    (_view(constant=[{"name": "u", "valueUuid": "53fefa32"}]), "constant[0].valueUuid",
     "expected a uuid"),
    (_view(constant=[{"name": "n", "valueInteger64": "12a"}]), "constant[0].valueInteger64",
     "expected an integer64"),
    (_view(constant=[{"name": "x", "valueQuantity": {"value": 1}}]), "constant[0].valueQuantity",
     "unknown element"),
    (_view(constant=[{"name": "a", "valueCode": "x"}, {"name": "a", "valueCode": "y"}]),
     "constant[1].name", "constant 'a' is defined more than once"),
    (_view(constant=[{"name": "rowIndex", "valueInteger": 1}]), "constant[0].name",
     "reserved"),
    (_view(constant=[{"name": "my-use", "valueCode": "x"}]), "constant[0].name",
     "usable as a database name"),
]


@pytest.mark.parametrize(("view", "path", "reason"), INVALID,
                         ids=[f"{p or 'view'}: {r}" for _, p, r in INVALID])
def test_invalid_view_is_rejected_saying_where_and_why(view: Any, path: str, reason: str
                                                       ) -> None:
    with pytest.raises(ViewDefinitionError) as info:
        parse_view(view)
    assert not isinstance(info.value, ViewEvaluationError)
    assert info.value.path == path, str(info.value)
    assert reason in info.value.reason, str(info.value)
    assert str(info.value) == (f"{path}: {info.value.reason}" if path else info.value.reason)


PATIENT = {"resourceType": "Patient", "id": "p1", "active": True,
           "name": [{"use": "official", "family": "Nguyen", "given": ["Van", "An"]},
                    {"use": "nickname", "given": ["Bo"]}],
           "contact": [{"name": {"family": "Tran"}}]}


@pytest.mark.parametrize(("view", "path", "reason"), [
    (_view({"column": [_col("given", "name.given")]}), "select[0].column[0].path",
     "column 'given' gives 3 values but is not a collection"),
    (_view(where=[{"path": "name.family"}]), "where[0].path",
     "a where path must give one boolean, got ['Nguyen']"),
    (_view(where=[{"path": "name.exists() | true"}, {"path": "name.use"}]), "where[1].path",
     "a where path must give one boolean"),
    (_view({"repeat": ["$this"], "column": [_col()]}), "select[0].repeat",
     "leads back to an item it came from"),
    (_view({"column": [_col("n", "name.family + 1")]}), "select[0].column[0].path",
     "in Patient/p1"),
])
def test_evaluation_error_names_the_element_and_the_resource(view: dict[str, Any], path: str,
                                                             reason: str) -> None:
    parsed = parse_view(view)
    with pytest.raises(ViewEvaluationError) as info:
        resource_rows(parsed, PATIENT)
    assert info.value.path == path, str(info.value)
    assert reason in info.value.reason, str(info.value)
    assert info.value.resource == "Patient/p1"


# -- the parsed structure -----------------------------------------------------------------------

def test_output_columns_follow_the_column_ordering_rule() -> None:
    """The "Column Ordering" example of the ViewDefinition page: a select's columns, then its
    nested selects', then its unionAll's; types and collection flags carried along."""
    view = parse_view(_view(
        {"column": [_col("a", "'A'", type="string"), _col("b", "'B'")],
         "select": [{"forEach": "name", "column": [_col("c", "given", collection=True),
                                                   _col("d", "'D'")]}],
         "unionAll": [{"column": [_col("e", "'E1'"), _col("f", "'F1'", type="code")]},
                      {"column": [_col("e", "'E2'", type="string"), _col("f", "'F2'")]}]},
        {"column": [_col("g", "'G'", type="integer"), _col("h", "'H'")]}))
    assert view.column_names == tuple("abcdefgh")
    assert view.columns == (
        OutputColumn("a", "string", False), OutputColumn("b", None, False),
        OutputColumn("c", None, True), OutputColumn("d", None, False),
        OutputColumn("e", "string", False), OutputColumn("f", "code", False),
        OutputColumn("g", "integer", False), OutputColumn("h", None, False))
    assert view.columns[2].location == "select[0].select[0].column[0]"
    assert view.columns[5].location == "select[0].unionAll[0].column[1]"
    rows = resource_rows(view, PATIENT)
    assert [list(r) for r in rows] == [list("abcdefgh")] * 4
    assert {(r["c"] == ["Van", "An"], r["e"]) for r in rows} == \
        {(True, "E1"), (True, "E2"), (False, "E1"), (False, "E2")}


def test_constants_are_typed_fhirpath_values() -> None:
    view = parse_view(_view(constant=[
        {"name": "d", "valueDate": "1978-03-12"},
        {"name": "t", "valueDateTime": "2016-11-12T10:00:00Z"},
        {"name": "x", "valueDecimal": 1.2},
        {"name": "y", "valueDecimal": 2},
        {"name": "n", "valueInteger64": "9007199254740993"},
        {"name": "c", "valueCode": "female"},
        {"name": "b", "valueBoolean": False}]))
    by_name = {c.name: c for c in view.constants}
    assert by_name["d"].type == "date" and by_name["d"].json == "1978-03-12"
    assert isinstance(view.variables["d"], Date)
    assert isinstance(view.variables["t"], DateTime)
    assert view.variables["x"] == Decimal("1.2") and by_name["x"].json == Decimal("1.2")
    assert type(view.variables["y"]) is Decimal and type(by_name["y"].json) is Decimal
    assert view.variables["n"] == 9007199254740993
    assert view.variables["c"] == "female" and view.variables["b"] is False


def test_parsed_view_is_immutable() -> None:
    view = parse_view(_view(constant=[{"name": "c", "valueCode": "x"}]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.resource = "Observation"  # type: ignore[misc]
    with pytest.raises(TypeError):
        view.variables["c"] = "y"  # type: ignore[index]
    assert isinstance(view.selects, tuple) and isinstance(view.selects[0].columns, tuple)


def test_expressions_read_only_constants_and_row_index() -> None:
    """What the undefined-constant check rests on: the %names an expression needs."""
    assert compile("name.where(use = %use)[%rowIndex].family | %resource.id | %ucum"
                   ).free_variables == {"use", "rowIndex"}
    view = parse_view(_view({"forEach": "name", "column": [
        _col("i", "%rowIndex"), _col("u", "use = %use")]},
        constant=[{"name": "use", "valueCode": "official"}]))
    assert resource_rows(view, PATIENT) == [{"i": 0, "u": True}, {"i": 1, "u": False}]


# -- evaluation ---------------------------------------------------------------------------------

def test_rows_over_many_resources() -> None:
    """Tens of thousands of resources: each expression compiled once per view."""
    view = parse_view(_view(
        {"column": [_col("id", "getResourceKey()"), _col("born", "birthDate", type="date")]},
        {"forEach": "name", "column": [_col("family", "family"),
                                       _col("given", "given.join(' ')"),
                                       _col("i", "%rowIndex", type="integer")]},
        {"forEachOrNull": "address", "column": [_col("city", "city")]},
        where=[{"path": "active"}]))
    patients = [{"resourceType": "Patient", "id": f"p{i}", "active": i % 10 != 0,
                 "birthDate": str(date(1950, 1, 1).replace(year=1950 + i % 50)),
                 "name": [{"family": f"F{i}", "given": ["A", "B"]}, {"family": "Alias"}],
                 **({"address": [{"city": "Hue"}]} if i % 2 else {})}
                for i in range(20_000)]
    patients.append({"resourceType": "Observation", "id": "o1"})
    rows = list(evaluate(view, patients))
    assert len(rows) == 2 * 18_000
    assert rows[0] == {"id": "p1", "born": "1951-01-01", "family": "F1", "given": "A B",
                       "i": 0, "city": "Hue"}
    assert rows[3] == {"id": "p2", "born": "1952-01-01", "family": "Alias", "given": "",
                       "i": 1, "city": None}


def test_for_each_or_null_without_items_gives_one_row_of_nulls() -> None:
    """Even when what it contains yields no row (here a nested forEach on the empty focus)."""
    view = parse_view(_view(
        {"column": [_col()]},
        {"forEachOrNull": "telecom", "column": [_col("system", "system")],
         "select": [{"forEach": "period", "column": [_col("start", "start")]}]}))
    assert resource_rows(view, PATIENT) == [{"id": "p1", "system": None, "start": None}]


def test_repeat_goes_depth_first_with_row_index() -> None:
    qr = {"resourceType": "QuestionnaireResponse", "id": "q", "item": [
        {"linkId": "1", "item": [{"linkId": "1.1"}],
         "answer": [{"item": [{"linkId": "1.a"}]}]},
        {"linkId": "2"}]}
    view = parse_view({"resource": "QuestionnaireResponse", "select": [
        {"repeat": ["item", "answer.item"], "column": [_col("link", "linkId"),
                                                        _col("i", "%rowIndex")]}]})
    assert resource_rows(view, qr) == [{"link": "1", "i": 0}, {"link": "1.1", "i": 1},
                                       {"link": "1.a", "i": 2}, {"link": "2", "i": 3}]


def test_resources_of_another_type_and_failed_where_give_no_rows() -> None:
    view = parse_view(_view(where=[{"path": "active = false"}]))
    assert resource_rows(view, PATIENT) == []
    assert resource_rows(view, {"resourceType": "Observation", "id": "o"}) == []
    with pytest.raises(TypeError):
        resource_rows(view, "Patient/p1")  # type: ignore[arg-type]
