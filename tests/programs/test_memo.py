"""Conditions, formulas and classifications remember their results by the values of the
variables they read (``definition.Memo``): a remembered result must be the one the expression
gives, whatever values came before — numbers written differently, true against 1, empty
against not given, lists."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from songkhoe.fhir.fhirpath import compile
from songkhoe.programs.definition import Condition, Formula

D = Decimal


def condition(text: str) -> Condition:
    return Condition.of(text, compile(text))  # type: ignore[no-any-return]


@pytest.mark.parametrize("text, runs", [
    # numbers compare by value: 7.0 and 7.00 give the same answer
    ("%x >= 7.0", [(D("7.00"), True), (D("6.99"), False), (D("7.0"), True), (7, True),
                   (None, False), ([], False)]),
    # true is not 1, though Python's True == 1
    ("%x = 1", [(True, False), (1, True), (D("1.0"), True), (True, False)]),
    ("%x = true", [(1, False), (True, True), (1, False)]),
    # toString tells 7.0 from 7.00: those are different keys
    ("%x.toString() = '7.0'", [(D("7.0"), True), (D("7.00"), False), (D("7.0"), True)]),
    # lists
    ("%c.where($this.startsWith('I1')).exists()", [(["I10"], True), ([], False),
                                                   (["E11"], False), (["E11", "I15"], True),
                                                   (["I10"], True)]),
    # a list with items where one value is expected: the full engine answers
    ("%x = 'a' or %y > 1", [(["a"], True), ("b", False), (["a"], True)]),
])
def test_a_remembered_result_is_the_expressions(text: str, runs: list[tuple[Any, bool]]) -> None:
    cond = condition(text)
    for value, expected in runs:
        variables = {"x": value, "y": 0} if "%x" in text else {"c": value}
        assert cond.holds(variables) is expected, (text, value)
        assert cond.compute(variables) is expected
    assert cond.memo is not None and cond.memo.table


def test_a_variable_not_given_differs_from_one_given_empty() -> None:
    cond = condition("%ucum.exists()")  # %ucum is a constant unless a variable shadows it
    assert cond.holds({}) is True
    assert cond.holds({"ucum": None}) is False
    assert cond.holds({}) is True


def test_a_formula_keeps_the_digits_it_computed() -> None:
    half = Formula.of("%w / 2", compile("%w / 2"))
    for w in (D("70"), D("70.0"), D("70.00"), D("70")):
        assert str(half.value({"w": w})) == str(half.compute({"w": w}))
    assert str(half.value({"w": D("70.0")})) == "35.0"


def test_an_expression_that_reads_the_clock_is_not_remembered() -> None:
    assert condition("today() > @2000-01-01").memo is None
    assert condition("%x > 1").memo is not None


@pytest.mark.parametrize("text, runs", [
    # one variable and two, on the native closures and on the full engine: the keys of one
    # or two variables are built apart from the others (``definition.remembered``)
    ("%x.toString() = '7.0' and %y.exists()", [
        ((D("7.0"), 1), True), ((D("7.00"), 1), False), ((D("7.0"), None), False),
        ((D("7.0"), []), False), ((D("7.0"), [1]), True), ((D("7.0"), True), True)]),
    ("%x = 1 and %y = 'a'", [((True, "a"), False), ((1, "a"), True), ((D("1.0"), "a"), True),
                             ((1, "b"), False), ((1, ["a"]), True), ((True, "a"), False)]),
    ("%x.where($this = 1).exists() or %y = true", [
        (([1], False), True), (([True], False), False), ((None, 1), False),
        ((None, True), True), (([], True), True), (([1], False), True)]),
])
def test_a_remembered_result_of_two_variables_is_the_expressions(
        text: str, runs: list[tuple[tuple[Any, Any], bool]]) -> None:
    cond = condition(text)
    for (x, y), expected in runs:
        variables = {"x": x, "y": y}
        assert cond.holds(variables) is expected, (text, x, y)
        assert cond.compute(variables) is expected
    assert cond.holds({"x": 1}) is cond.compute({"x": 1})  # %y not given


def test_a_formula_of_two_variables_keeps_the_digits_it_computed() -> None:
    bmi = Formula.of("%w / (%h * %h)", compile("%w / (%h * %h)"))
    for w, h in ((D("70"), D("1.7")), (D("70.0"), D("1.7")), (D("70"), D("1.70")),
                 (70, D("1.7")), (D("70"), D("1.7"))):
        assert str(bmi.value({"w": w, "h": h})) == str(bmi.compute({"w": w, "h": h}))


def test_a_points_score_evaluates_rules_on_the_same_variables_together() -> None:
    from songkhoe.programs.cli import definitions
    findrisc = next(s for p in definitions().values() for s in p.scores if s.id == "findrisc")
    people = [{"age": age, "sex": sex, "bmi": bmi, "waist": waist, "conditions": [],
               "medications": [], "daily_activity": None, "activity": D("100"),
               "vegetables": None, "bp_medication": None, "high_glucose": "yes",
               "family_diabetes": None}
              for age in (44, 45, 54, 60, 70) for sex in ("male", "female")
              for bmi in (D("22.9"), D("23"), D("27.5"), None) for waist in (D("85"), 95, 99)]
    for variables in people * 2:  # the second time from the memos
        assert findrisc.points(variables) == sum(
            r.points for r in findrisc.rules if r.when.compute(variables)), variables
