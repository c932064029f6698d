"""The FHIRPath function library, compiled into closures by :mod:`.compiler`.

FHIRPath N1 §5 Functions (http://hl7.org/fhirpath/N1/#functions): §5.1 existence, §5.2
filtering and projection, §5.3 subsetting, §5.4 combining, §5.5 conversion, §5.6 string
manipulation, §5.7 math, §5.8 tree navigation, §5.9 utility; N1 §6.5 ``not()``, §6.3 ``is()``,
``as()``; §7 ``aggregate()``. FHIR R4 additions (http://hl7.org/fhir/R4/fhirpath.html#functions):
``extension(url)``, ``hasValue()``, ``getValue()``, ``resolve()``, ``htmlChecks()``; N1
reflection ``type()`` (as ``{namespace, name}``).
FHIRPath 2.0 additions used by SQL-on-FHIR v2 (https://build.fhir.org/ig/FHIR/sql-on-fhir-v2/
StructureDefinition-ViewDefinition.html#required-additional-functions): ``join()``,
``lowBoundary()``, ``highBoundary()``, ``precision()``, ``getResourceKey()``,
``getReferenceKey([type])``; also ``trim()``, ``split()``, ``encode()``, ``decode()``,
``escape()``, ``unescape()``, ``lastIndexOf()``, ``matchesFull()``.

Not provided (a compile-time FHIRPathError names them): ``memberOf()``, ``subsumes()``,
``subsumedBy()``, ``conformsTo()``, ``elementDefinition()``, ``slice()``, ``checkModifiers()``.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import logging
import re
from collections.abc import Callable
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from . import model as m
from . import operators as ops
from . import quantity as q
from . import syntax as s
from . import temporal as tm
from .errors import FHIRPathError
from .model import Node
from .quantity import Quantity

if TYPE_CHECKING:
    from .compiler import Compiler, Context, Fn, Inv

log = logging.getLogger("songkhoe.fhirpath")

Builder = Callable[["Compiler", s.Function, "str | None", "str | None"], "tuple[Inv, str | None]"]
_REGISTRY: dict[str, tuple[int, int, Builder]] = {}
_UNSUPPORTED = {"memberOf", "subsumes", "subsumedBy", "conformsTo", "elementDefinition",
                "slice", "checkModifiers"}


def compile_function(c: Compiler, node: s.Function, input_static: str | None,
                     scope_static: str | None) -> tuple[Inv, str | None]:
    entry = _REGISTRY.get(node.name)
    if entry is None:
        if node.name in _UNSUPPORTED:
            raise c.error(f"the function {node.name}() is not supported by this engine", node)
        raise c.error(f"unknown function {node.name}()", node)
    nmin, nmax, builder = entry
    n = len(node.args)
    if not nmin <= n <= nmax:
        expected = str(nmin) if nmin == nmax else f"{nmin} to {nmax}"
        raise c.error(f"{node.name}() takes {expected} argument(s), {n} given", node)
    return builder(c, node, input_static, scope_static)


def _register(name: str, nmin: int = 0, nmax: int = 0) -> Callable[[Builder], Builder]:
    def deco(builder: Builder) -> Builder:
        _REGISTRY[name] = (nmin, nmax, builder)
        return builder
    return deco


def simple(name: str, nmin: int = 0, nmax: int = 0, static: str | None = None,
           keep_static: bool = False) -> Callable[[Callable[..., list[Any]]], Any]:
    """Register ``impl(items, input_static, *args)`` whose arguments are evaluated once, on the
    scope of the invocation (N1 §5: arguments that are not lambda expressions)."""
    def deco(impl: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
        def builder(c: Compiler, node: s.Function, ist: str | None,
                    sst: str | None) -> tuple[Inv, str | None]:
            args = [c.expr(a, sst)[0] for a in node.args]
            inv: Inv
            if not args:
                inv = lambda items, ctx, scope: impl(items, ist)
            elif len(args) == 1:
                a0 = args[0]
                inv = lambda items, ctx, scope: impl(items, ist, a0(scope, ctx))
            else:
                def inv(items: list[Any], ctx: Context, scope: list[Any]) -> list[Any]:
                    return impl(items, ist, *[a(scope, ctx) for a in args])
            return inv, (ist if keep_static else static)
        _REGISTRY[name] = (nmin, nmax, builder)
        return impl
    return deco


def _one(items: list[Any], what: str, st: str | None = None) -> Any:
    """The System value of the single input item; None for empty; error for several."""
    v = ops.singleton(items, what)
    return None if v is None else ops.value(v, st)


def _arg(values: list[Any], what: str) -> Any:
    v = ops.singleton(values, what)
    return None if v is None else ops.value(v)


def _int_arg(values: list[Any], what: str) -> int | None:
    v = _arg(values, what)
    if v is None:
        return None
    if type(v) is not int:
        raise FHIRPathError(f"{what}() expects an Integer argument")
    return v


def _str_arg(values: list[Any], what: str) -> str | None:
    v = _arg(values, what)
    if v is None:
        return None
    if type(v) is not str:
        raise FHIRPathError(f"{what}() expects a String argument")
    return v


def _type_name(c: Compiler, node: s.Node) -> str:
    """The type specifier written as a function argument: ``Quantity``, ``FHIR.Quantity``."""
    if isinstance(node, s.Identifier):
        return node.name
    if isinstance(node, s.Invoke) and isinstance(node.invocation, s.Identifier):
        return _type_name(c, node.source) + "." + node.invocation.name
    if isinstance(node, s.Literal) and isinstance(node.value, str):
        return node.value
    raise c.error("expected a type name", node)


def _lambda(c: Compiler, node: s.Node, item_static: str | None) -> Fn:
    return c.expr(node, item_static)[0]


# -- existence (N1 §5.1) ------------------------------------------------------------------------

@_register("empty")
def _empty(c: Compiler, node: s.Function, ist: str | None, sst: str | None
           ) -> tuple[Inv, str | None]:
    return (lambda items, ctx, scope: [not items]), "boolean"


@_register("exists", 0, 1)
def _exists(c: Compiler, node: s.Function, ist: str | None, sst: str | None
            ) -> tuple[Inv, str | None]:
    if not node.args:
        return (lambda items, ctx, scope: [bool(items)]), "boolean"
    where_inv, _ = _where(c, node, ist, sst)
    return (lambda items, ctx, scope: [bool(where_inv(items, ctx, scope))]), "boolean"


@_register("all", 1, 1)
def _all(c: Compiler, node: s.Function, ist: str | None, sst: str | None
         ) -> tuple[Inv, str | None]:
    crit = _lambda(c, node.args[0], ist)

    def all_(items: list[Any], ctx: Context, scope: list[Any]) -> list[Any]:
        saved = ctx.index
        try:
            for i, it in enumerate(items):
                ctx.index = i
                if ops.to_bool(crit([it], ctx), "all") is not True:
                    return [False]
        finally:
            ctx.index = saved
        return [True]
    return all_, "boolean"


def _bools(items: list[Any], what: str) -> list[bool]:
    out = []
    for it in items:
        v = ops.value(it)
        if type(v) is not bool:
            raise FHIRPathError(f"{what}() expects Boolean items")
        out.append(v)
    return out


@simple("allTrue", static="boolean")
def _all_true(items: list[Any], st: str | None) -> list[Any]:
    return [all(_bools(items, "allTrue"))]


@simple("anyTrue", static="boolean")
def _any_true(items: list[Any], st: str | None) -> list[Any]:
    return [any(_bools(items, "anyTrue"))]


@simple("allFalse", static="boolean")
def _all_false(items: list[Any], st: str | None) -> list[Any]:
    return [not any(_bools(items, "allFalse"))]


@simple("anyFalse", static="boolean")
def _any_false(items: list[Any], st: str | None) -> list[Any]:
    return [not all(_bools(items, "anyFalse"))]


@simple("subsetOf", 1, 1, static="boolean")
def _subset_of(items: list[Any], st: str | None, other: list[Any]) -> list[Any]:
    return [all(ops.contains_item(other, it) for it in items)]


@simple("supersetOf", 1, 1, static="boolean")
def _superset_of(items: list[Any], st: str | None, other: list[Any]) -> list[Any]:
    return [all(ops.contains_item(items, it) for it in other)]


@simple("count", static="integer")
def _count(items: list[Any], st: str | None) -> list[Any]:
    return [len(items)]


@simple("distinct", keep_static=True)
def _distinct(items: list[Any], st: str | None) -> list[Any]:
    return ops.distinct(items)


@simple("isDistinct", static="boolean")
def _is_distinct(items: list[Any], st: str | None) -> list[Any]:
    return [len(ops.distinct(items)) == len(items)]


# -- filtering and projection (N1 §5.2) -----------------------------------------------------

@_register("where", 1, 1)
def _where(c: Compiler, node: s.Function, ist: str | None, sst: str | None
           ) -> tuple[Inv, str | None]:
    crit = _lambda(c, node.args[0], ist)

    def where(items: list[Any], ctx: Context, scope: list[Any]) -> list[Any]:
        out = []
        saved = ctx.index
        for i, it in enumerate(items):
            ctx.index = i
            r = crit([it], ctx)
            if r:
                if len(r) == 1:
                    v = r[0]
                    if v is True or (v is not False and ops.to_bool(r, "where") is True):
                        out.append(it)
                elif ops.to_bool(r, "where()"):
                    out.append(it)  # pragma: no cover - to_bool raises on several
        ctx.index = saved
        return out
    return where, ist


@_register("select", 1, 1)
def _select(c: Compiler, node: s.Function, ist: str | None, sst: str | None
            ) -> tuple[Inv, str | None]:
    proj, st = c.expr(node.args[0], ist)

    def select(items: list[Any], ctx: Context, scope: list[Any]) -> list[Any]:
        out: list[Any] = []
        saved = ctx.index
        for i, it in enumerate(items):
            ctx.index = i
            out.extend(proj([it], ctx))
        ctx.index = saved
        return out
    return select, st


@_register("repeat", 1, 1)
def _repeat(c: Compiler, node: s.Function, ist: str | None, sst: str | None
            ) -> tuple[Inv, str | None]:
    proj = _lambda(c, node.args[0], None)

    def repeat(items: list[Any], ctx: Context, scope: list[Any]) -> list[Any]:
        out: list[Any] = []
        seen_ids: set[int] = set()
        queue = list(items)
        while queue:
            nxt: list[Any] = []
            for it in queue:
                for r in proj([it], ctx):
                    key = id(r) if type(r) in (dict, Node) else None
                    if key is not None:
                        if key in seen_ids:
                            continue
                        seen_ids.add(key)
                    elif ops.contains_item(out, r):
                        continue
                    out.append(r)
                    nxt.append(r)
            queue = nxt
        return out
    return repeat, None


@_register("ofType", 1, 1)
def _of_type(c: Compiler, node: s.Function, ist: str | None, sst: str | None
             ) -> tuple[Inv, str | None]:
    name = _type_name(c, node.args[0])
    fn, st = c.type_op("as", name, lambda scope, ctx: scope, ist, node)
    return (lambda items, ctx, scope: fn(items, ctx)), st


@_register("as", 1, 1)
def _as(c: Compiler, node: s.Function, ist: str | None, sst: str | None
        ) -> tuple[Inv, str | None]:
    return _of_type(c, node, ist, sst)


@_register("is", 1, 1)
def _is(c: Compiler, node: s.Function, ist: str | None, sst: str | None
        ) -> tuple[Inv, str | None]:
    name = _type_name(c, node.args[0])
    fn, st = c.type_op("is", name, lambda scope, ctx: scope, ist, node)
    return (lambda items, ctx, scope: fn(items, ctx)), st


# -- subsetting (N1 §5.3) -----------------------------------------------------------------------

@_register("single")
def _single(c: Compiler, node: s.Function, ist: str | None, sst: str | None
            ) -> tuple[Inv, str | None]:
    def single(items: list[Any], ctx: Context, scope: list[Any]) -> list[Any]:
        if len(items) > 1:
            raise FHIRPathError(f"single() found {len(items)} items", c.text, node.pos)
        return items
    return single, ist


@_register("first")
def _first(c: Compiler, node: s.Function, ist: str | None, sst: str | None
           ) -> tuple[Inv, str | None]:
    return (lambda items, ctx, scope: items[:1]), ist


@_register("last")
def _last(c: Compiler, node: s.Function, ist: str | None, sst: str | None
          ) -> tuple[Inv, str | None]:
    return (lambda items, ctx, scope: items[-1:]), ist


@_register("tail")
def _tail(c: Compiler, node: s.Function, ist: str | None, sst: str | None
          ) -> tuple[Inv, str | None]:
    return (lambda items, ctx, scope: items[1:]), ist


@simple("skip", 1, 1, keep_static=True)
def _skip(items: list[Any], st: str | None, n: list[Any]) -> list[Any]:
    k = _int_arg(n, "skip")
    if k is None:
        return []
    return items[max(k, 0):]


@simple("take", 1, 1, keep_static=True)
def _take(items: list[Any], st: str | None, n: list[Any]) -> list[Any]:
    k = _int_arg(n, "take")
    if k is None or k <= 0:
        return []
    return items[:k]


@simple("intersect", 1, 1, keep_static=True)
def _intersect(items: list[Any], st: str | None, other: list[Any]) -> list[Any]:
    return [it for it in ops.distinct(items) if ops.contains_item(other, it)]


@simple("exclude", 1, 1, keep_static=True)
def _exclude(items: list[Any], st: str | None, other: list[Any]) -> list[Any]:
    return [it for it in items if not ops.contains_item(other, it)]


# -- combining (N1 §5.4) ------------------------------------------------------------------------

@simple("union", 1, 1)
def _union(items: list[Any], st: str | None, other: list[Any]) -> list[Any]:
    return ops.distinct(items + other)


@simple("combine", 1, 1)
def _combine(items: list[Any], st: str | None, other: list[Any]) -> list[Any]:
    return items + other


# -- conversion (N1 §5.5) -----------------------------------------------------------------------

@_register("iif", 2, 3)
def _iif(c: Compiler, node: s.Function, ist: str | None, sst: str | None
         ) -> tuple[Inv, str | None]:
    crit = c.expr(node.args[0], ist)[0]
    then, tst = c.expr(node.args[1], ist)
    other = c.expr(node.args[2], ist)[0] if len(node.args) == 3 else None

    def iif(items: list[Any], ctx: Context, scope: list[Any]) -> list[Any]:
        if len(items) > 1:
            raise FHIRPathError("iif() expects at most one input item", c.text, node.pos)
        focus = items if items else scope
        if ops.to_bool(crit(focus, ctx), "iif") is True:
            return then(focus, ctx)
        return other(focus, ctx) if other is not None else []
    return iif, tst


_TRUE_STRINGS = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE_STRINGS = {"false", "f", "no", "n", "0", "0.0"}
_INT_RE = re.compile(r"[+-]?\d+\Z")
_DEC_RE = re.compile(r"[+-]?\d+(\.\d+)?\Z")


def to_boolean(v: Any) -> bool | None:
    tp = type(v)
    if tp is bool:
        return v
    if tp is int:
        return {1: True, 0: False}.get(v)
    if tp is Decimal:
        return True if v == 1 else False if v == 0 else None
    if tp is str:
        low = v.lower()
        if low in _TRUE_STRINGS:
            return True
        if low in _FALSE_STRINGS:
            return False
    return None


def to_integer(v: Any) -> int | None:
    tp = type(v)
    if tp is int:
        return v
    if tp is bool:
        return int(v)
    if tp is str and _INT_RE.match(v):
        return int(v)
    return None


def to_decimal(v: Any) -> Decimal | None:
    tp = type(v)
    if tp is Decimal:
        return v
    if tp is int:
        return Decimal(v)
    if tp is bool:
        return Decimal(1 if v else 0)
    if tp is str and _DEC_RE.match(v):
        return Decimal(v)
    return None


def to_string(v: Any) -> str | None:
    tp = type(v)
    if tp is str:
        return v
    if tp is bool:
        return "true" if v else "false"
    if tp is int or tp is Decimal:
        return str(v)
    if isinstance(v, tm.Temporal):
        return v.text
    if tp is Quantity:
        return str(v)
    if tp is dict:
        qv = q.from_fhir(v)
        return str(qv) if qv is not None else None
    return None


def _temporal_of(v: Any, cls: type) -> Any:
    if isinstance(v, cls):
        return v
    if cls is tm.DateTime and isinstance(v, tm.Date):
        return v.to_datetime()
    if cls is tm.Date and isinstance(v, tm.DateTime):
        return tm.Date(v.text[:10][:{1: 4, 2: 7}.get(v.precision, 10)])
    if type(v) is str:
        try:
            return cls(v[1:] if cls is tm.Time and v.startswith("T") else v)
        except ValueError:
            return None
    return None


def to_quantity(v: Any) -> Quantity | None:
    tp = type(v)
    if tp is Quantity:
        return v
    if tp is int or tp is Decimal:
        return Quantity(Decimal(v), "1")
    if tp is bool:
        return Quantity(Decimal(1 if v else 0), "1")
    if tp is str:
        return q.parse_string(v)
    if tp is dict:
        return q.from_fhir(v)
    return None


_CONVERTERS: dict[str, tuple[Callable[[Any], Any], str | None]] = {
    "Boolean": (to_boolean, "boolean"),
    "Integer": (to_integer, "integer"),
    "Decimal": (to_decimal, "decimal"),
    "String": (to_string, "string"),
    "Date": (lambda v: _temporal_of(v, tm.Date), "date"),
    "DateTime": (lambda v: _temporal_of(v, tm.DateTime), "dateTime"),
    "Time": (lambda v: _temporal_of(v, tm.Time), "time"),
}


def _make_converters(kind: str, conv: Callable[[Any], Any], static: str | None) -> None:
    def to_(items: list[Any], st: str | None) -> list[Any]:
        v = _one(items, "to" + kind, st)
        if v is None:
            return []
        r = conv(v)
        return [] if r is None else [r]

    def converts_to(items: list[Any], st: str | None) -> list[Any]:
        v = _one(items, "convertsTo" + kind, st)
        if v is None:
            return []
        return [conv(v) is not None]
    simple("to" + kind, static=static)(to_)
    simple("convertsTo" + kind, static="boolean")(converts_to)


for _kind, (_conv, _st) in _CONVERTERS.items():
    _make_converters(_kind, _conv, _st)


@simple("toQuantity", 0, 1, static="Quantity")
def _to_quantity(items: list[Any], st: str | None, unit: list[Any] | None = None) -> list[Any]:
    v = _one(items, "toQuantity", st)
    if v is None:
        return []
    r = to_quantity(v)
    if r is None:
        return []
    if unit is not None:
        u = _str_arg(unit, "toQuantity")
        if u is not None and u != r.unit:
            c = q.compare(r, Quantity(Decimal(1), u))
            if c is None:
                return []
            ca, cb = r.canonical(False), Quantity(Decimal(1), u).canonical(False)
            assert ca is not None and cb is not None
            return [Quantity(ca[1] / cb[1], u)]
    return [r]


@simple("convertsToQuantity", 0, 1, static="boolean")
def _converts_to_quantity(items: list[Any], st: str | None,
                          unit: list[Any] | None = None) -> list[Any]:
    r = _to_quantity(items, st) if unit is None else _to_quantity(items, st, unit)
    if not items:
        return []
    return [bool(r)]


# -- strings (N1 §5.6) ----------------------------------------------------------------------

def _string_input(items: list[Any], what: str, st: str | None = None) -> str | None:
    v = _one(items, what, st)
    if v is None:
        return None
    s_ = to_string(v)
    if s_ is None:
        raise FHIRPathError(f"{what}() expects a String input")
    return s_


def _string_fn(name: str, nargs: int = 0, static: str | None = "string") -> Callable[..., Any]:
    def deco(impl: Callable[..., Any]) -> Callable[..., Any]:
        def run(items: list[Any], st: str | None, *args: list[Any]) -> list[Any]:
            text = _string_input(items, name, st)
            if text is None:
                return []
            values = []
            for a in args:
                v = _arg(a, name)
                if v is None:
                    return []
                values.append(v)
            r = impl(text, *values)
            return [] if r is None else (r if type(r) is list else [r])
        simple(name, nargs, nargs, static=static)(run)
        return impl
    return deco


@_string_fn("indexOf", 1, "integer")
def _index_of(text: str, sub: str) -> int:
    return text.find(sub)


@_string_fn("lastIndexOf", 1, "integer")
def _last_index_of(text: str, sub: str) -> int:
    return text.rfind(sub)


@simple("substring", 1, 2, static="string")
def _substring(items: list[Any], st: str | None, start: list[Any],
               length: list[Any] | None = None) -> list[Any]:
    text = _string_input(items, "substring", st)
    if text is None:
        return []
    i = _int_arg(start, "substring")
    if i is None or i < 0 or i >= len(text):
        return []
    if length is None:
        return [text[i:]]
    n = _int_arg(length, "substring")
    if n is None:
        return [text[i:]]
    return [text[i:i + max(n, 0)]]


@_string_fn("startsWith", 1, "boolean")
def _starts_with(text: str, prefix: str) -> bool:
    return text.startswith(prefix)


@_string_fn("endsWith", 1, "boolean")
def _ends_with(text: str, suffix: str) -> bool:
    return text.endswith(suffix)


@_string_fn("contains", 1, "boolean")
def _contains(text: str, sub: str) -> bool:
    return sub in text


@_string_fn("upper")
def _upper(text: str) -> str:
    return text.upper()


@_string_fn("lower")
def _lower(text: str) -> str:
    return text.lower()


@_string_fn("replace", 2)
def _replace(text: str, pattern: str, substitution: str) -> str:
    if pattern == "":
        return substitution + substitution.join(text) + substitution
    return text.replace(pattern, substitution)


def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as exc:
        raise FHIRPathError(f"invalid regular expression {pattern!r}: {exc}") from None


@_string_fn("matches", 1, "boolean")
def _matches(text: str, pattern: str) -> bool:
    return _regex(pattern).search(text) is not None


@_string_fn("matchesFull", 1, "boolean")
def _matches_full(text: str, pattern: str) -> bool:
    return _regex(pattern).fullmatch(text) is not None


@_string_fn("replaceMatches", 2)
def _replace_matches(text: str, pattern: str, substitution: str) -> str:
    # FHIRPath uses $1 for groups; Python uses \1
    repl = re.sub(r"\$(\d+)", r"\\\1", substitution.replace("\\", "\\\\"))
    return _regex(pattern).sub(repl, text)


@_string_fn("length", 0, "integer")
def _length(text: str) -> int:
    return len(text)


@_string_fn("toChars", 0)
def _to_chars(text: str) -> list[str]:
    return list(text)


@_string_fn("trim")
def _trim(text: str) -> str:
    return text.strip()


@_string_fn("split", 1)
def _split(text: str, sep: str) -> list[str]:
    return text.split(sep) if sep else list(text)


@_string_fn("encode", 1)
def _encode(text: str, fmt: str) -> str | None:
    raw = text.encode("utf-8")
    if fmt == "base64":
        return base64.b64encode(raw).decode("ascii")
    if fmt == "urlbase64":
        return base64.urlsafe_b64encode(raw).decode("ascii")
    if fmt == "hex":
        return raw.hex()
    return None


@_string_fn("decode", 1)
def _decode(text: str, fmt: str) -> str | None:
    try:
        if fmt == "base64":
            return base64.b64decode(text, validate=True).decode("utf-8")
        if fmt == "urlbase64":
            return base64.urlsafe_b64decode(text).decode("utf-8")
        if fmt == "hex":
            return bytes.fromhex(text).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return None


@_string_fn("escape", 1)
def _escape(text: str, target: str) -> str | None:
    if target == "html":
        return html.escape(text, quote=True)
    if target == "json":
        return json.dumps(text, ensure_ascii=False)[1:-1]
    return None


@_string_fn("unescape", 1)
def _unescape(text: str, target: str) -> str | None:
    if target == "html":
        return html.unescape(text)
    if target == "json":
        try:
            r = json.loads('"' + text + '"')
        except ValueError:
            return None
        return r if isinstance(r, str) else None
    return None


@simple("join", 0, 1, static="string")
def _join(items: list[Any], st: str | None, sep: list[Any] | None = None) -> list[Any]:
    separator = "" if sep is None else (_str_arg(sep, "join") or "")
    parts = []
    for it in items:
        v = to_string(ops.value(it, st))
        if v is None:
            raise FHIRPathError("join() expects String items")
        parts.append(v)
    return [separator.join(parts)]


# -- math (N1 §5.7) -----------------------------------------------------------------------------

def _number_input(items: list[Any], what: str) -> Any:
    v = _one(items, what)
    if v is None:
        return None
    if type(v) is dict:
        v = q.from_fhir(v)
    if type(v) not in (int, Decimal, Quantity):
        raise FHIRPathError(f"{what}() expects a number")
    return v


def _math(name: str, nargs: int = 0, static: str | None = None) -> Callable[..., Any]:
    def deco(impl: Callable[..., Any]) -> Callable[..., Any]:
        def run(items: list[Any], st: str | None, *args: list[Any]) -> list[Any]:
            v = _number_input(items, name)
            if v is None:
                return []
            values = [_arg(a, name) for a in args]
            if any(x is None for x in values):
                return []
            try:
                r = impl(v, *values)
            except (InvalidOperation, ValueError, OverflowError, ArithmeticError):
                return []
            return [] if r is None else [r]
        simple(name, 0 if name == "round" else nargs, nargs, static=static)(run)
        return impl
    return deco


@_math("abs")
def _abs(v: Any) -> Any:
    if type(v) is Quantity:
        return Quantity(abs(v.value), v.unit)
    return abs(v)


@_math("ceiling", static="integer")
def _ceiling(v: Any) -> int:
    return int(Decimal(v).to_integral_value(rounding=ROUND_CEILING))


@_math("floor", static="integer")
def _floor(v: Any) -> int:
    return int(Decimal(v).to_integral_value(rounding=ROUND_FLOOR))


@_math("truncate", static="integer")
def _truncate(v: Any) -> int:
    return int(Decimal(v).to_integral_value(rounding=ROUND_DOWN))


@_math("exp", static="decimal")
def _exp(v: Any) -> Decimal:
    return Decimal(v).exp()


@_math("ln", static="decimal")
def _ln(v: Any) -> Decimal:
    return Decimal(v).ln()


@_math("log", 1, static="decimal")
def _log(v: Any, base: Any) -> Decimal:
    return Decimal(v).ln() / Decimal(base).ln()


@_math("power", 1)
def _power(v: Any, exponent: Any) -> Any:
    if type(v) is int and type(exponent) is int and exponent >= 0:
        return v ** exponent
    r = Decimal(v) ** Decimal(exponent)
    return None if r.is_nan() else r


@_math("round", 1, static="decimal")
def _round(v: Any, precision: Any = 0) -> Decimal:
    if type(precision) is not int or precision < 0:
        raise ValueError("precision must be a non-negative Integer")
    return Decimal(v).quantize(Decimal(1).scaleb(-precision), rounding=ROUND_HALF_UP)


@_math("sqrt", static="decimal")
def _sqrt(v: Any) -> Decimal | None:
    if v < 0:
        return None
    return Decimal(v).sqrt()


# -- boundaries and precision (FHIRPath 2.0, SQL-on-FHIR v2) ---------------------------------

def _boundary_input(items: list[Any], st: str | None, what: str) -> Any:
    v = _one(items, what, st)
    if type(v) is str:  # a date/time-typed element of unknown static type
        v = tm.coerce_like(v, tm.Time("00:00")) if re.match(r"\d{2}:", v) else \
            tm.coerce_like(v, tm.Date("2000"))
    if type(v) is dict:
        v = q.from_fhir(v)
    return v


def decimal_boundary(v: Decimal, high: bool, precision: int | None) -> Decimal | None:
    places = ops._decimal_places(v)
    half = Decimal(5).scaleb(-(places + 1))
    r = v + half if high else v - half
    if precision is not None:
        if precision < 0 or precision > 28:
            return None
        r = r.quantize(Decimal(1).scaleb(-precision),
                       rounding=ROUND_CEILING if high else ROUND_FLOOR)
    return r


def _make_boundary(name: str, high: bool) -> None:
    def run(items: list[Any], st: str | None, prec: list[Any] | None = None) -> list[Any]:
        v = _boundary_input(items, st, name)
        if v is None:
            return []
        p = None if prec is None else _int_arg(prec, name)
        r: Any
        if type(v) is int:
            r = decimal_boundary(Decimal(v), high, p)
        elif type(v) is Decimal:
            r = decimal_boundary(v, high, p)
        elif type(v) is Quantity:
            b = decimal_boundary(v.value, high, p)
            r = None if b is None else Quantity(b, v.unit)
        elif isinstance(v, tm.Temporal):
            r = tm.boundary(v, high, p)
        else:
            return []
        return [] if r is None else [r]
    simple(name, 0, 1)(run)


_make_boundary("lowBoundary", False)
_make_boundary("highBoundary", True)


@simple("precision", static="integer")
def _precision(items: list[Any], st: str | None) -> list[Any]:
    v = _boundary_input(items, st, "precision")
    if v is None:
        return []
    if type(v) is int:
        return [0]
    if type(v) is Decimal:
        return [ops._decimal_places(v)]
    if isinstance(v, tm.Temporal):
        return [tm.digits_precision(v)]
    return []


# -- tree navigation (N1 §5.8) --------------------------------------------------------------

def children_of(item: Any) -> list[Any]:
    d = item
    if type(d) is Node:
        d = d.value if type(d.value) is dict else d.element
    if type(d) is not dict:
        return []
    out: list[Any] = []
    for key, v in d.items():
        if key[0] == "_" or key == "resourceType":
            continue
        t = None
        for suffix_start in range(1, len(key)):
            if key[suffix_start].isupper():
                t = m.CHOICE_SUFFIXES.get(key[suffix_start:])
                if t is not None:
                    break
        ext = d.get("_" + key)
        if type(v) is list:
            if v and type(v[0]) is dict:
                out.extend(v)
            else:
                exts = ext if type(ext) is list else []
                for i, x in enumerate(v):
                    e = exts[i] if i < len(exts) else None
                    if x is not None or e is not None:
                        out.append(x if e is None and t is None else Node(x, t, e))
        elif t is not None:
            out.append(Node(v, t, ext))
        elif ext is not None:
            out.append(Node(v, None, ext))
        else:
            out.append(v)
    return out


@simple("children")
def _children(items: list[Any], st: str | None) -> list[Any]:
    out: list[Any] = []
    for it in items:
        out.extend(children_of(it))
    return out


@simple("descendants")
def _descendants(items: list[Any], st: str | None) -> list[Any]:
    out: list[Any] = []
    queue = items
    while queue:
        nxt: list[Any] = []
        for it in queue:
            nxt.extend(children_of(it))
        out.extend(nxt)
        queue = nxt
    return out


# -- utility (N1 §5.9) ------------------------------------------------------------------------

@_register("trace", 1, 2)
def _trace(c: Compiler, node: s.Function, ist: str | None, sst: str | None
           ) -> tuple[Inv, str | None]:
    label = c.expr(node.args[0], sst)[0]
    proj = c.expr(node.args[1], ist)[0] if len(node.args) == 2 else None

    def trace(items: list[Any], ctx: Context, scope: list[Any]) -> list[Any]:
        shown = items if proj is None else [x for it in items for x in proj([it], ctx)]
        log.debug("fhirpath trace %s: %r", label(scope, ctx), shown)
        return items
    return trace, ist


@simple("now", static="dateTime")
def _now(items: list[Any], st: str | None) -> list[Any]:
    return [tm.now()]


@simple("today", static="date")
def _today(items: list[Any], st: str | None) -> list[Any]:
    return [tm.today()]


@simple("timeOfDay", static="time")
def _time_of_day(items: list[Any], st: str | None) -> list[Any]:
    return [tm.time_of_day()]


@simple("not", static="boolean")
def _not(items: list[Any], st: str | None) -> list[Any]:
    b = ops.to_bool(items, "not()")
    return [] if b is None else [not b]


@_register("aggregate", 1, 2)
def _aggregate(c: Compiler, node: s.Function, ist: str | None, sst: str | None
               ) -> tuple[Inv, str | None]:
    agg = _lambda(c, node.args[0], ist)
    init = c.expr(node.args[1], sst)[0] if len(node.args) == 2 else None

    def aggregate(items: list[Any], ctx: Context, scope: list[Any]) -> list[Any]:
        saved_total, saved_index = ctx.total, ctx.index
        total = init(scope, ctx) if init is not None else []
        try:
            for i, it in enumerate(items):
                ctx.total, ctx.index = total, i
                total = agg([it], ctx)
        finally:
            ctx.total, ctx.index = saved_total, saved_index
        return total
    return aggregate, None


# -- FHIR additions (R4 FHIRPath §2.1.9.2 http://hl7.org/fhir/R4/fhirpath.html#functions) ----

@_register("extension", 1, 1)
def _extension(c: Compiler, node: s.Function, ist: str | None, sst: str | None
               ) -> tuple[Inv, str | None]:
    url_fn = c.expr(node.args[0], sst)[0]

    def extension(items: list[Any], ctx: Context, scope: list[Any]) -> list[Any]:
        url = _str_arg(url_fn(scope, ctx), "extension")
        if url is None:
            return []
        out = []
        for it in items:
            d = it
            if type(d) is Node:
                d = d.value if type(d.value) is dict else d.element
            if type(d) is not dict:
                continue
            for e in d.get("extension") or ():
                if type(e) is dict and e.get("url") == url:
                    out.append(e)
        return out
    return extension, "Extension"


@simple("hasValue", static="boolean")
def _has_value(items: list[Any], st: str | None) -> list[Any]:
    if len(items) != 1:
        return [False]
    it = items[0]
    if type(it) is Node:
        return [it.value is not None and type(it.value) is not dict]
    return [type(it) is not dict and it is not None]


@simple("getValue")
def _get_value(items: list[Any], st: str | None) -> list[Any]:
    if len(items) != 1:
        return []
    it = items[0]
    v = ops.value(it, st)
    if v is None or type(v) is dict:
        return []
    return [v]


@simple("type")
def _type(items: list[Any], st: str | None) -> list[Any]:
    """N1 "Types and reflection": ``{namespace, name}`` of each item (FHIR types in namespace
    FHIR, values the engine computed in System; unknown types are left out)."""
    out: list[Any] = []
    for it in items:
        v = it.value if type(it) is Node else it
        computed = type(it) is not Node and (isinstance(it, (tm.Temporal, Quantity, Decimal))
                                             or type(it) is not dict and st is None)
        if computed:
            name = m.system_type(it)
            if name is not None:
                out.append({"namespace": "System", "name": name})
            continue
        t = m.fhir_type(it, st) if v is not None else (it.type or st)
        if t is not None:
            out.append({"namespace": "FHIR", "name": t})
    return out


@simple("htmlChecks", static="boolean")
def _html_checks(items: list[Any], st: str | None) -> list[Any]:
    return [True]  # xhtml content rules are the validator's job, not FHIRPath's


_REF_RE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_ref_cache: dict[str, tuple[str, str] | None] = {}


def parse_reference(ref: str) -> tuple[str, str] | None:
    """(type, id) of a literal reference ``Type/id``, ``http://…/Type/id[/_history/v]``."""
    hit = _ref_cache.get(ref, False)
    if hit is not False:
        return hit  # type: ignore[return-value]
    mt = _REF_RE.search(ref)
    r = (mt.group(1), mt.group(2)) if mt else None
    if len(_ref_cache) > 10000:
        _ref_cache.clear()
    _ref_cache[ref] = r
    return r


def _find_in_bundle(root: Any, ref: str, parsed: tuple[str, str] | None) -> Any:
    if type(root) is not dict or root.get("resourceType") != "Bundle":
        return None
    for entry in root.get("entry") or ():
        if type(entry) is not dict:
            continue
        res = entry.get("resource")
        if entry.get("fullUrl") == ref:
            return res
        if parsed and type(res) is dict and res.get("resourceType") == parsed[0] and \
                res.get("id") == parsed[1]:
            return res
    return None


def resolve_reference(item: Any, ctx: Context) -> Any:
    """What ``resolve()`` yields for one item (R4 FHIRPath "Functions"): the contained resource for
    ``#id``, the Bundle entry for a reference within the root Bundle, the caller's resolver's
    answer, else a stub ``{"resourceType": Type, "id": id}`` for ``Type/id`` or an absolute URL
    ending so (or ``{"resourceType": type}`` from ``Reference.type``). None if unresolvable."""
    v = item.value if type(item) is Node else item
    rtype = None
    if type(v) is dict:
        ref = v.get("reference")
        rtype = v.get("type")
    elif type(v) is str:
        ref = v
    else:
        return None
    if type(ref) is str:
        if ref.startswith("#"):
            container = ctx.resource
            if ref == "#":
                return container
            for res in (container.get("contained") or ()) if type(container) is dict else ():
                if type(res) is dict and res.get("id") == ref[1:]:
                    return res
            return None
        if ctx.resolver is not None:
            found = ctx.resolver(ref)
            if found is not None:
                return found
        parsed = parse_reference(ref)
        if ctx.root is not ctx.resource or (type(ctx.root) is dict and
                                             ctx.root.get("resourceType") == "Bundle"):
            found = _find_in_bundle(ctx.root, ref, parsed)
            if found is not None:
                return found
        if parsed is not None:
            return {"resourceType": parsed[0], "id": parsed[1]}
    if type(rtype) is str:
        return {"resourceType": rtype}
    return None


@_register("resolve")
def _resolve(c: Compiler, node: s.Function, ist: str | None, sst: str | None
             ) -> tuple[Inv, str | None]:
    def resolve(items: list[Any], ctx: Context, scope: list[Any]) -> list[Any]:
        out = []
        for it in items:
            r = resolve_reference(it, ctx)
            if r is not None:
                out.append(r)
        return out
    return resolve, None


@_register("getResourceKey")
def _get_resource_key(c: Compiler, node: s.Function, ist: str | None, sst: str | None
                      ) -> tuple[Inv, str | None]:
    def key(items: list[Any], ctx: Context, scope: list[Any]) -> list[Any]:
        out = []
        for it in items:
            if type(it) is dict and isinstance(it.get("id"), str):
                out.append(it["id"])
        return out
    return key, "string"


@_register("getReferenceKey", 0, 1)
def _get_reference_key(c: Compiler, node: s.Function, ist: str | None, sst: str | None
                       ) -> tuple[Inv, str | None]:
    want = m.split_type(_type_name(c, node.args[0]))[1] if node.args else None

    def key(items: list[Any], ctx: Context, scope: list[Any]) -> list[Any]:
        out = []
        for it in items:
            v = it.value if type(it) is Node else it
            if type(v) is not dict or type(v.get("reference")) is not str:
                continue
            ref = v["reference"]
            if ref.startswith("#"):
                continue
            parsed = parse_reference(ref)
            if parsed is None:
                continue
            if want is not None and parsed[0] != want:
                continue
            out.append(parsed[1])
        return out
    return key, "string"

