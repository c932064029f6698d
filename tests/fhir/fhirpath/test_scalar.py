"""The scalar fast path gives exactly what the full FHIRPath engine gives, on random
conditions over single-valued and empty variables (or declines them)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from songkhoe.fhir.fhirpath import compile
from songkhoe.fhir.fhirpath.scalar import NotScalar, scalar

NUMBERS = st.one_of(st.integers(-5, 300), st.decimals(-5, 300, places=2, allow_nan=False))
names = st.sampled_from(["%a", "%b", "%s"])
literals = st.one_of(NUMBERS.map(str), st.sampled_from(["'x'", "'y'", "true", "false", "{}"]))
atoms = st.one_of(names, literals)


def binary(children: Any) -> Any:
    ops = st.sampled_from(["<", "<=", ">", ">=", "=", "!=", "+", "-", "*", "/", "and", "or",
                           "xor", "implies"])
    return st.tuples(children, ops, children).map(lambda t: f"({t[0]} {t[1]} {t[2]})") | \
        st.tuples(children).map(lambda t: f"({t[0]} in ('x' | 5 | true))")


expressions = st.recursive(atoms, binary, max_leaves=6)
values = st.one_of(st.just([]), NUMBERS, st.sampled_from(["x", "y", True, False]))


@settings(max_examples=400, deadline=None)
@given(expressions, values, values, values)
def test_the_fast_path_agrees_with_the_engine(text: str, a: Any, b: Any, s: Any) -> None:
    variables = {"a": a, "b": b, "s": s}
    fast = scalar(text)
    try:
        expected: Any = compile(text)(None, variables=variables)
    except Exception:  # noqa: BLE001 - the engine refuses it: the fast path must not answer
        expected = "error"
    if fast is None:
        return
    try:
        value = fast(variables)
    except NotScalar:
        return  # declined: the caller uses the engine
    got = [] if value is None else [value]
    if expected != "error":
        assert len(got) == len(expected)
        for x, y in zip(got, expected):
            assert type(x) is type(y) or (isinstance(x, int | Decimal) and
                                          isinstance(y, int | Decimal))
            assert x == y
    else:
        assert got == [], (text, variables, got)


def test_declines_what_it_does_not_cover() -> None:
    assert scalar("%c.where($this = 'x').exists()") is None
    assert scalar("%a.empty()") is None
    assert scalar("(%a >= 140 or %b >= 90) and %g in ('g1' | 'g2')") is not None
    assert scalar("%a >= 140")({"a": []}) is None
    assert scalar("%a >= 140 or %b >= 90")({"a": [], "b": Decimal(95)}) is True
