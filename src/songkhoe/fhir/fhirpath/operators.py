"""FHIRPath operators on values and collections: equality, equivalence, comparison, boolean
logic, arithmetic, string concatenation, union and membership.

FHIRPath N1 §6 Operations (http://hl7.org/fhirpath/N1/#operations): §6.1 equality (``=``,
``~``, ``!=``, ``!~``), §6.2 comparison, §6.4 collections (``|``, ``in``, ``contains``),
§6.5 boolean logic (three-valued, with empty as unknown), §6.6 math (Integer, Decimal, Quantity,
String ``+``/``&``, date/time arithmetic), and §4.5 singleton evaluation of collections.

Operands arrive as collections (Python lists) of items as described in :mod:`.model`;
:func:`value` turns an item into the System value the operators work on. Empty-collection
propagation: an operator whose operand is empty returns empty, except where N1 says otherwise
(``and``/``or``/``implies``, ``~``, ``&``, ``|``, ``in``/``contains``).
"""

from __future__ import annotations

import unicodedata
from decimal import ROUND_FLOOR, Decimal, DivisionByZero, InvalidOperation
from typing import Any

import orjson

from . import quantity as q
from . import temporal as tm
from .errors import FHIRPathError
from .model import TEMPORAL_FHIR_TYPES, Node, primitive_value
from .quantity import Quantity

_Temporal = tm.Temporal


def value(item: Any, static: str | None = None) -> Any:
    """The System value of one item: a Node's primitive (typed by its FHIR type), a float as
    Decimal, a string of a date/time-typed element as a temporal value; dicts unchanged;
    None for a primitive node without a value."""
    tp = type(item)
    if tp is Node:
        return primitive_value(item.value, item.type or static)
    if tp is float:
        return Decimal(repr(item))
    if tp is str and static in TEMPORAL_FHIR_TYPES:
        return primitive_value(item, static)
    return item


def singleton(items: list[Any], what: str) -> Any:
    """N1 §4.5: the one item of ``items``, None if empty, an error if several."""
    n = len(items)
    if n == 1:
        return items[0]
    if n == 0:
        return None
    raise FHIRPathError(f"{what} expects a single item, found {n}")


def to_bool(items: list[Any], what: str) -> bool | None:
    """A collection as a Boolean (N1 §4.5): empty → None, one boolean → it, one other item →
    True, several → error."""
    n = len(items)
    if n == 0:
        return None
    if n > 1:
        raise FHIRPathError(f"{what} expects a single boolean, found {n} items")
    v = items[0]
    if v is True or v is False:
        return v
    if type(v) is Node and (v.value is True or v.value is False):
        return v.value
    return True


# -- equality ---------------------------------------------------------------------------------

def _is_number(v: Any) -> bool:
    t = type(v)
    return t is int or t is Decimal


def _as_quantity(v: Any) -> Quantity | None:
    if type(v) is Quantity:
        return v
    if type(v) is dict:
        return q.from_fhir(v)
    return None


def equal_values(a: Any, b: Any) -> bool | None:
    """N1 §6.1.1 ``=`` on two System values; None means empty (not comparable)."""
    if a is None or b is None:
        return None
    ta, tb = type(a), type(b)
    if ta is tb and ta is not dict and not isinstance(a, _Temporal) and ta is not Quantity:
        return a == b
    if ta is bool or tb is bool:
        return False
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, _Temporal) or isinstance(b, _Temporal):
        if tb is str:
            b = tm.coerce_like(b, a)
        elif ta is str:
            a = tm.coerce_like(a, b)
        if not isinstance(a, _Temporal) or not isinstance(b, _Temporal):
            return False
        c = tm.compare(a, b)
        return None if c is None else c == 0
    if ta is Quantity or tb is Quantity:
        qa, qb = _as_quantity(a), _as_quantity(b)
        if qa is None or qb is None:
            return False
        c = q.compare(qa, qb, for_equality=True)
        return None if c is None else c == 0
    if ta is dict and tb is dict:
        return a == b
    return False


def equal(left: list[Any], right: list[Any], ls: str | None = None,
          rs: str | None = None) -> bool | None:
    """``left = right`` on collections: empty if either is empty; order-dependent itemwise."""
    if not left or not right:
        return None
    if len(left) != len(right):
        return False
    result: bool | None = True
    for a, b in zip(left, right):
        r = equal_values(value(a, ls), value(b, rs))
        if r is False:
            return False
        if r is None:
            result = None
    return result


def _norm_str(s: str) -> str:
    return " ".join(unicodedata.normalize("NFC", s).casefold().split())


def _decimal_places(d: Decimal) -> int:
    exp = d.as_tuple().exponent
    return -exp if isinstance(exp, int) and exp < 0 else 0


def equivalent_values(a: Any, b: Any) -> bool:
    """N1 §6.1.2 ``~`` on two System values."""
    if a is None or b is None:
        return a is None and b is None
    ta, tb = type(a), type(b)
    if ta is str and tb is str:
        return _norm_str(a) == _norm_str(b)
    if ta is bool or tb is bool:
        return a is b
    if _is_number(a) and _is_number(b):
        if ta is Decimal or tb is Decimal:
            da, db = Decimal(a), Decimal(b)
            places = min(_decimal_places(da), _decimal_places(db))
            return round(da, places) == round(db, places)
        return bool(a == b)
    if isinstance(a, _Temporal) or isinstance(b, _Temporal):
        if tb is str:
            b = tm.coerce_like(b, a)
        elif ta is str:
            a = tm.coerce_like(a, b)
        if not isinstance(a, _Temporal) or not isinstance(b, _Temporal):
            return False
        return tm.compare(a, b) == 0
    if ta is Quantity or tb is Quantity:
        qa, qb = _as_quantity(a), _as_quantity(b)
        if qa is None or qb is None:
            return False
        return q.compare(qa, qb) == 0
    if ta is dict and tb is dict:
        if a.keys() != b.keys():
            return False
        return all(equivalent_values(_json_child(a[k]), _json_child(b[k])) for k in a)
    if ta is list and tb is list:
        return equivalent(a, b)
    return False


def _json_child(v: Any) -> Any:
    return Decimal(repr(v)) if type(v) is float else v


def equivalent(left: list[Any], right: list[Any], ls: str | None = None,
               rs: str | None = None) -> bool:
    """``left ~ right`` on collections: both empty → true; order-independent."""
    if len(left) != len(right):
        return False
    remaining = [value(b, rs) for b in right]
    for a in left:
        va = value(a, ls)
        for i, vb in enumerate(remaining):
            if equivalent_values(va, vb):
                del remaining[i]
                break
        else:
            return False
    return True


# -- comparison -------------------------------------------------------------------------------

def compare_values(a: Any, b: Any, op: str) -> int | None:
    """-1/0/1 for N1 §6.2 comparison of two System values; None for empty; error when the
    types cannot be compared."""
    ta, tb = type(a), type(b)
    if _is_number(a) and _is_number(b) and ta is not bool and tb is not bool:
        return 0 if a == b else (-1 if a < b else 1)
    if ta is str and tb is str:
        return 0 if a == b else (-1 if a < b else 1)
    if isinstance(a, _Temporal) or isinstance(b, _Temporal):
        if tb is str:
            b = tm.coerce_like(b, a)
        elif ta is str:
            a = tm.coerce_like(a, b)
        if isinstance(a, _Temporal) and isinstance(b, _Temporal):
            if (a.kind == "time") != (b.kind == "time"):
                raise FHIRPathError(f"cannot compare {a.kind} with {b.kind} using {op}")
            return tm.compare(a, b)
    if ta is Quantity or tb is Quantity or (ta is dict and tb is dict):
        qa, qb = _as_quantity(a), _as_quantity(b)
        if qa is not None and qb is not None:
            return q.compare(qa, qb)
    raise FHIRPathError(f"cannot compare {_tname(a)} with {_tname(b)} using {op}")


def _tname(v: Any) -> str:
    if isinstance(v, _Temporal):
        return v.kind
    return {bool: "Boolean", int: "Integer", Decimal: "Decimal", str: "String", dict: "object",
            Quantity: "Quantity"}.get(type(v), type(v).__name__)


def compare(left: list[Any], right: list[Any], op: str, ls: str | None = None,
            rs: str | None = None) -> bool | None:
    a = singleton(left, op)
    b = singleton(right, op)
    if a is None or b is None:
        return None
    a, b = value(a, ls), value(b, rs)
    if a is None or b is None:
        return None
    c = compare_values(a, b, op)
    if c is None:
        return None
    if op == "<":
        return c < 0
    if op == "<=":
        return c <= 0
    if op == ">":
        return c > 0
    return c >= 0


# -- collections ------------------------------------------------------------------------------

def _hash_key(v: Any) -> Any:
    """A hashable identity for distinct(): (type tag, value); for JSON objects their canonical
    JSON text (so that unions of many elements stay linear); None when there is none."""
    tp = type(v)
    if tp is str or tp is bool:
        return (tp, v)
    if tp is int or tp is Decimal or tp is float:
        return ("num", Decimal(repr(v)) if tp is float else v)
    if tp is dict:
        try:
            return ("obj", orjson.dumps(v, option=orjson.OPT_SORT_KEYS))
        except TypeError:  # e.g. Decimal values from a parse_float=Decimal reader
            return None
    return None


def distinct(items: list[Any]) -> list[Any]:
    """Items without duplicates (by ``=``), first occurrence kept, order preserved."""
    if len(items) < 2:
        return list(items)
    seen: set[Any] = set()
    out: list[Any] = []
    others: list[Any] = []
    for it in items:
        k = _hash_key(it)
        if k is not None:
            if k in seen:
                continue
            seen.add(k)
            out.append(it)
            continue
        v = value(it)
        if any(equal_values(v, value(o)) for o in others):
            continue
        others.append(it)
        out.append(it)
    return out


def contains_item(items: list[Any], item: Any, static: str | None = None) -> bool:
    v = value(item, static)
    return any(equal_values(value(x, static), v) is True for x in items)


# -- math -------------------------------------------------------------------------------------

def arithmetic(op: str, a: Any, b: Any) -> Any:
    """N1 §6.6 on two System values; None for an empty result (e.g. division by zero)."""
    ta, tb = type(a), type(b)
    if op == "&":
        return (a if ta is str else "") + (b if tb is str else "")
    if ta is bool or tb is bool:
        raise FHIRPathError(f"operator {op} does not apply to Boolean")
    if _is_number(a) and _is_number(b):
        try:
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "/":
                if b == 0:
                    return None
                return Decimal(a) / Decimal(b)
            if op == "div":
                if b == 0:
                    return None
                r = (Decimal(a) / Decimal(b)).to_integral_value(rounding="ROUND_DOWN")
                return int(r) if ta is int and tb is int else r
            if op == "mod":
                if b == 0:
                    return None
                if ta is int and tb is int:
                    return int(Decimal(a) % Decimal(b))
                return Decimal(a) % Decimal(b)
        except (DivisionByZero, InvalidOperation):
            return None
    if ta is str and tb is str and op == "+":
        return a + b
    if isinstance(a, _Temporal) and op in ("+", "-"):
        qb = _as_quantity(b)
        if qb is not None:
            unit = q.UCUM_TO_CALENDAR.get(qb.unit, qb.unit)
            if unit in ("year", "month") and qb.unit in ("a", "mo"):
                raise FHIRPathError(f"cannot add UCUM '{qb.unit}' to a date; use a calendar "
                                    f"duration ({unit}s)")
            if unit not in ("year", "month", "week", "day", "hour", "minute", "second",
                            "millisecond"):
                raise FHIRPathError(f"cannot add {qb} to a {a.kind}")
            amount = qb.value if op == "+" else -qb.value
            try:
                return tm.add_duration(a, amount, unit)
            except ValueError:
                return None
    qa, qb2 = _as_quantity(a), _as_quantity(b)
    if qa is not None or qb2 is not None:
        if qa is None and _is_number(a):
            qa = Quantity(Decimal(a), "1")
        if qb2 is None and _is_number(b):
            qb2 = Quantity(Decimal(b), "1")
        if qa is not None and qb2 is not None:
            return _quantity_math(op, qa, qb2)
    raise FHIRPathError(f"operator {op} does not apply to {_tname(a)} and {_tname(b)}")


def _quantity_math(op: str, a: Quantity, b: Quantity) -> Quantity | None:
    if op in ("+", "-"):
        if a.unit != b.unit:
            ca, cb = a.canonical(False), b.canonical(False)
            if ca is None or cb is None or ca[0] != cb[0]:
                return None
            factor = cb[1] / b.value if b.value else None
            if factor is None:
                return a
            conv = (ca[1] / a.value) if a.value else None
            if conv is None:
                return None
            bval = b.value * factor / conv
        else:
            bval = b.value
        return Quantity(a.value + bval if op == "+" else a.value - bval, a.unit)
    if op == "*":
        if b.unit == "1":
            return Quantity(a.value * b.value, a.unit)
        if a.unit == "1":
            return Quantity(a.value * b.value, b.unit)
        return Quantity(a.value * b.value, f"{a.unit}.{b.unit}")
    if op == "/":
        if b.value == 0:
            return None
        if b.unit == "1":
            return Quantity(a.value / b.value, a.unit)
        if a.unit == b.unit:
            return Quantity(a.value / b.value, "1")
        return Quantity(a.value / b.value, f"{a.unit}/{b.unit}")
    raise FHIRPathError(f"operator {op} does not apply to Quantity")


def negate(v: Any) -> Any:
    if type(v) is bool:
        raise FHIRPathError("unary - does not apply to Boolean")
    if _is_number(v) or type(v) is Quantity:
        return -v
    qv = _as_quantity(v)
    if qv is not None:
        return -qv
    raise FHIRPathError(f"unary - does not apply to {_tname(v)}")


def floor_decimal(d: Decimal) -> Decimal:
    return d.to_integral_value(rounding=ROUND_FLOOR)
