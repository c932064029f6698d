"""A fast path for FHIRPath over single-valued variables: conditions such as
``%sbp >= 140 or %dbp >= 90`` or ``%grade in ('grade1' | 'grade2')`` compiled to plain Python
closures, with FHIRPath's rules for empty values (http://hl7.org/fhirpath/N1/):

- a variable holding nothing (``[]`` or ``None``) is empty; comparisons (§6.2) and arithmetic
  (§6.6) with an empty operand are empty, and division by zero is empty;
- ``and``/``or``/``xor``/``implies`` follow the three-valued tables of §6.5;
- ``=``/``!=`` compare numbers as numbers (``140 = 140.0``), other values by type and value;
- ``x in (a | b | …)`` over literals (§6.4.3) is empty for an empty ``x``.

:func:`scalar` returns None for any expression outside this subset (functions, paths, lists),
and the returned closure raises :class:`NotScalar` for a value it cannot take (a list with
items, mismatched types in an ordering): callers then use the full engine, which gives the same
answer or the proper error. Empty is returned as None.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, DivisionByZero, InvalidOperation
from typing import Any

from . import syntax as s
from .parser import parse

Scalar = Callable[[dict[str, Any]], Any]


class NotScalar(Exception):
    """A value the fast path does not take; evaluate with the full engine instead."""


def scalar(text: str) -> Scalar | None:
    """The closure for ``text``, or None when ``text`` is outside the subset."""
    try:
        return _compile(parse(text))
    except _Unsupported:
        return None


class _Unsupported(Exception):
    pass


def _compile(node: s.Node) -> Scalar:
    if isinstance(node, s.Literal):
        if not isinstance(node.value, bool | int | str | Decimal) and node.value is not None:
            raise _Unsupported
        value = node.value
        return lambda v: value
    if isinstance(node, s.External):
        name = node.name

        def variable(v: dict[str, Any]) -> Any:
            value = v.get(name)
            if isinstance(value, list):
                if value:
                    raise NotScalar(name)
                return None
            if isinstance(value, float):
                return Decimal(str(value))
            return value
        return variable
    if isinstance(node, s.Unary) and node.op in ("-", "+"):
        inner = _compile(node.operand)
        sign = -1 if node.op == "-" else 1

        def unary(v: dict[str, Any]) -> Any:
            x = inner(v)
            if x is None:
                return None
            if isinstance(x, bool) or not isinstance(x, int | Decimal):
                raise NotScalar(node.op)
            return sign * x
        return unary
    if isinstance(node, s.Binary):
        if node.op == "in":
            return _in(node)
        if node.op in _LOGIC:
            return _logic(node.op, _compile(node.left), _compile(node.right))
        if node.op in _COMPARE or node.op in _ARITHMETIC:
            return _operator(node.op, _compile(node.left), _compile(node.right))
    raise _Unsupported


def _number(x: Any) -> bool:
    return isinstance(x, int | Decimal) and not isinstance(x, bool)


def _equal(a: Any, b: Any) -> bool:
    if _number(a) and _number(b):
        return bool(a == b)
    return type(a) is type(b) and a == b


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    "=": _equal, "!=": lambda a, b: not _equal(a, b),
}


def _divide(a: Any, b: Any) -> Any:
    try:
        return Decimal(a) / Decimal(b)
    except (DivisionByZero, InvalidOperation):
        return None


_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": _divide,
}


def _operator(op: str, left: Scalar, right: Scalar) -> Scalar:
    ordering = op in ("<", "<=", ">", ">=")
    fn = _COMPARE.get(op) or _ARITHMETIC[op]
    arithmetic = op in _ARITHMETIC

    def apply(v: dict[str, Any]) -> Any:
        a, b = left(v), right(v)
        if a is None or b is None:
            return None
        if (ordering or arithmetic) and not (_number(a) and _number(b)) and \
                not (ordering and type(a) is type(b) is str):
            raise NotScalar(op)
        return fn(a, b)
    return apply


def _truth(x: Any) -> bool | None:
    if x is None or isinstance(x, bool):
        return x
    raise NotScalar("not a boolean")


_LOGIC = ("and", "or", "xor", "implies")


def _logic(op: str, left: Scalar, right: Scalar) -> Scalar:
    def and_(v: dict[str, Any]) -> Any:
        a = _truth(left(v))
        if a is False:
            return False
        b = _truth(right(v))
        if b is False:
            return False
        return None if a is None or b is None else True

    def or_(v: dict[str, Any]) -> Any:
        a = _truth(left(v))
        if a is True:
            return True
        b = _truth(right(v))
        if b is True:
            return True
        return None if a is None or b is None else False

    def xor(v: dict[str, Any]) -> Any:
        a, b = _truth(left(v)), _truth(right(v))
        return None if a is None or b is None else a != b

    def implies(v: dict[str, Any]) -> Any:
        a = _truth(left(v))
        if a is False:
            return True
        b = _truth(right(v))
        if b is True:
            return True
        return None if a is None or b is None else False
    return {"and": and_, "or": or_, "xor": xor, "implies": implies}[op]


def _in(node: s.Binary) -> Scalar:
    members: list[Any] = []

    def collect(n: s.Node) -> None:
        if isinstance(n, s.Binary) and n.op == "|":
            collect(n.left)
            collect(n.right)
        elif isinstance(n, s.Literal) and isinstance(n.value, str | int | Decimal | bool):
            members.append(n.value)
        else:
            raise _Unsupported
    collect(node.right)
    left = _compile(node.left)

    def in_(v: dict[str, Any]) -> Any:
        x = left(v)
        if x is None:
            return None
        return any(_equal(x, m) for m in members)
    return in_
