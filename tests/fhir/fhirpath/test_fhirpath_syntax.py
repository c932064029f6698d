"""Lexing and parsing (FHIRPath N1 §9 grammar, §6.13 precedence, §3 literals)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from songkhoe.fhir.fhirpath import Date, DateTime, FHIRPathError, Quantity, Time, compile, evaluate

E: dict = {"resourceType": "Patient"}


def ev(text: str) -> list:
    return evaluate(E, text)


@pytest.mark.parametrize("text,position", [
    ("Patient.name.", 13),
    ("Patient..name", 8),
    ("name.where(use = 'x'", 20),
    ("name[0", 6),
    ("'unterminated", 0),
    ("1 +", 3),
    ("@2020-13-01", 0),
    ("name.given #", 11),
    ("", 0),
    ("(1 + 2", 6),
    ("name.where(use = 'a') )", 22),
    ("$that", 0),
    ("'\\q'", 1),
])
def test_syntax_errors_carry_the_position(text: str, position: int) -> None:
    with pytest.raises(FHIRPathError) as info:
        compile(text)
    assert info.value.position == position
    assert info.value.expression == text
    assert f"position {position}" in str(info.value)


def test_unknown_function_is_a_compile_error_with_position() -> None:
    with pytest.raises(FHIRPathError, match=r"unknown function frobnicate\(\)") as info:
        compile("name.frobnicate()")
    assert info.value.position == 5
    with pytest.raises(FHIRPathError, match="not supported"):
        compile("code.memberOf('http://x')")
    with pytest.raises(FHIRPathError, match=r"takes 1 argument"):
        compile("name.where()")


def test_literals() -> None:
    assert ev("true") == [True] and ev("false") == [False]
    assert ev("{}") == []
    assert ev("'a\\'b\\u00e9\\n'") == ["a'bé\n"]
    assert ev("42") == [42] and type(ev("42")[0]) is int
    assert ev("4.50") == [Decimal("4.50")]
    assert ev("-3") == [-3]
    assert ev("@2014-01-25") == [Date("2014-01-25")]
    assert ev("@2014-01") == [Date("2014-01")]
    assert ev("@2014-01-25T14:30:14.559+07:00") == [DateTime("2014-01-25T14:30:14.559+07:00")]
    assert ev("@2014T") == [DateTime("2014")]
    assert ev("@T14:30") == [Time("14:30")]
    assert ev("4.5 'mg'") == [Quantity(Decimal("4.5"), "mg")]
    assert ev("3 days") == [Quantity(Decimal(3), "day")]
    assert ev("1 year") == [Quantity(Decimal(1), "year")]


def test_precedence_and_associativity() -> None:
    assert ev("1 + 2 * 3") == [7]
    assert ev("(1 + 2) * 3") == [9]
    assert ev("10 - 4 - 3") == [3]
    assert ev("2 * 3 = 6 and 1 < 2") == [True]
    assert ev("true or false and false") == [True]  # and binds tighter than or
    assert ev("false implies false or true") == [True]
    assert ev("-2.abs()") == [-2]  # unary minus applies after the invocation
    assert ev("(-2).abs()") == [2]
    assert ev("1 | 2 | 1 = 1 | 2") == [True]  # | binds tighter than =
    assert ev("5 is Integer and 'a' is String") == [True]


def test_comments_whitespace_and_delimited_identifiers() -> None:
    p = {"resourceType": "Patient", "name": [{"given": ["An"]}], "div": 1}
    assert evaluate(p, "name // the names\n .given /* first */") == ["An"]
    assert evaluate(p, "`name`.`given`") == ["An"]
    assert evaluate(p, "div + 1") == [2]  # keyword-like member name at the start
    assert evaluate({"resourceType": "Task", "for": {"reference": "Patient/1"}},
                    "Task.for.reference") == ["Patient/1"]


def test_compile_is_cached_by_text() -> None:
    assert compile("Patient.name.given") is compile("Patient.name.given")
    assert compile("Patient.name.given") is not compile("Patient.name.family")
    with pytest.raises(FHIRPathError):
        compile(1)  # type: ignore[arg-type]
