"""One search parameter (all its OR-ed values) compiled to one SQL condition: a ``Term``.

R4 Search (http://hl7.org/fhir/R4/search.html) parameter types and modifiers:

- string (#string): starts-with on the folded key (case- and accent-insensitive, Đ = D);
  ``:exact`` (whole string, as written), ``:contains`` (anywhere);
- token (#token): ``code``, ``system|code``, ``|code``, ``system|``; ``:text`` (starts-with on
  the folded display/text), ``:not`` (no matching code — resources without any value included),
  ``:of-type`` (Identifier type + value), ``:in``/``:not-in`` (value sets the R4 definitions
  enumerate);
- reference (#reference): ``Type/id``, ``id``, absolute URL; ``:[type]``, ``:identifier``;
- date (#date), number (#number), quantity (#quantity): prefixes over ranges ("Prefixes",
  #prefix: the range of the search value against the range of the target value);
  quantities with a UCUM unit compare in canonical units (``ucum``);
- uri (#uri): equality, ``:below`` (starts with), ``:above`` (a prefix of the value at a
  ``/`` boundary);
- composite (#composite): components joined by ``$``;
- ``:missing`` for every type ("Modifiers").

A ``Term`` is a condition over the rows of one index table (``EXISTS``/``IN`` on ``rid``), or a
condition on the ``resources`` row itself. It carries what the planner in ``search_plan`` needs:
whether the rows it selects come out of the key index in ``rid`` order with at most one row per
resource (``ordered`` — such a term can drive a page that stops after ``_count`` rows), and a
rough selectivity class (``cost``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from songkhoe.fhir import definitions
from songkhoe.fhir.text import fold

from . import ucum
from .catalog import Param, Source, identifier_sp, of_type_sp, system_key
from .indexer import BIG, MAX_KEY, TEXT_SEPARATOR
from .schema import LONG_DATE_US
from .search_values import (
    DateValue,
    NumberValue,
    OfTypeValue,
    QuantityValue,
    TokenValue,
    bad,
    composite_parts,
    date_value,
    number_value,
    of_type_value,
    quantity_value,
    reference_value,
    token_value,
    unescape,
)

HIGH = "\U0010ffff"  # above every character: [key, key + HIGH) is "starts with key"


@dataclass
class Term:
    """One AND-ed condition of a search.

    ``table`` is None for a condition on the resource row (``where`` uses ``{r}``), else the
    index table whose rows (alias ``{x}``) satisfy ``where``. ``negate``: no such row exists.
    """

    where: str
    args: list[Any]
    table: str | None = None
    negate: bool = False
    ordered: bool = False
    cost: int = 5  # 1: a handful of rows … 9: most of the table
    shared: bool = False  # rows are tagged with a parameter shared by all types
    rids: str | None = None  # a condition ``{r}.rid IN (rids)``: the sub-select of row ids
    pure: bool = False  # ``rids`` holds only live resources of the type(s) searched
    live_only: bool = True  # ``table`` has rows for live resources only (not ``owners``)

    @property
    def rid_only(self) -> bool:
        """Whether the term reads nothing of the resource row but its ``rid``."""
        return self.table is not None or self.rids is not None

    @property
    def is_pure(self) -> bool:
        """Whether the rows it selects are all live resources of the searched type(s): index
        rows exist only for live current versions, and ``sp`` names the type."""
        if self.table is not None:
            return not self.shared and not self.negate and self.live_only
        return self.pure

    def condition(self, r: str, ctx: Ctx) -> tuple[str, list[Any]]:
        """This term as a condition on the resource alias ``r``."""
        if self.table is None:
            return self.where.replace("{r}", r), list(self.args)
        x = ctx.alias("x")
        sql = (f"EXISTS (SELECT 1 FROM {self.table} {x} WHERE {x}.rid = {r}.rid AND "
               f"({self.where.replace('{x}', x)}))")
        return ("NOT " + sql if self.negate else sql), list(self.args)

    def rid_set(self, ctx: Ctx) -> tuple[str, list[Any]]:
        """The rids this (positive) term selects, as a sub-select."""
        if self.rids is not None:
            return self.rids, list(self.args)
        assert self.table is not None and not self.negate
        x = ctx.alias("x")
        return (f"SELECT {x}.rid FROM {self.table} {x} WHERE {self.where.replace('{x}', x)}",
                list(self.args))


def rid_term(sub: str, args: list[Any], *, cost: int, pure: bool) -> Term:
    """A term ``{r}.rid IN (sub)``."""
    return Term(f"{{r}}.rid IN ({sub})", args, None, cost=cost, rids=sub, pure=pure)


@dataclass
class Ctx:
    """Compilation state shared by the terms of one statement: fresh aliases, the backend."""

    backend: str = "sqlite"
    counter: int = 0
    now_us: int = field(default_factory=lambda: time.time_ns() // 1000)
    #: the access limit on rows that chains and ``_has`` reach: (types, alias) → condition
    guard: Callable[[list[str], str], tuple[str, list[Any]] | None] | None = None

    def alias(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"


def sources_sql(x: str, sources: tuple[Source, ...] | list[Source]) -> tuple[str, list[Any]]:
    """Which rows of a table belong to a parameter: ``sp`` (and a target type restriction)."""
    plain = [s.sp for s in sources if s.target is None]
    parts: list[str] = []
    args: list[Any] = []
    if len(plain) == 1:
        parts.append(f"{x}.sp = ?")
        args.append(plain[0])
    elif plain:
        parts.append(f"{x}.sp IN ({', '.join('?' * len(plain))})")
        args += plain
    for s in sources:
        if s.target is not None:
            parts.append(f"({x}.sp = ? AND {x}.target_type = ?)")
            args += [s.sp, s.target]
    if len(parts) == 1:
        return parts[0], args
    return "(" + " OR ".join(parts) + ")", args


def _like_escape(text: str) -> str:
    return re.sub(r"([%_\\])", r"\\\1", text)


def _term(x_sources: tuple[Source, ...], alternatives: list[tuple[str, list[Any]]], table: str,
          *, negate: bool = False, ordered: bool = False, cost: int = 5,
          shared: bool = False) -> Term:
    """A term over ``table``: rows of the parameter's sources satisfying any alternative."""
    src, src_args = sources_sql("{x}", x_sources)
    if len(alternatives) == 1:
        body, args = alternatives[0]
        where = f"{src} AND {body}" if body else src
        return Term(where, [*src_args, *args], table, negate, ordered, cost, shared)
    ors = " OR ".join(f"({body})" for body, _ in alternatives)
    args = [a for _, alt_args in alternatives for a in alt_args]
    return Term(f"{src} AND ({ors})", [*src_args, *args], table, negate, False, cost, shared)


# --- string ------------------------------------------------------------------------------------


def string_term(name: str, p: Param, sources: tuple[Source, ...], modifier: str,
                values: list[str]) -> Term:
    alts: list[tuple[str, list[Any]]] = []
    cost = 1
    ordered = False
    for raw in values:
        v = unescape(raw)
        if not v:
            raise bad(name, "expected text to search for")
        key = fold(v)[:MAX_KEY]
        if modifier == "exact":
            alts.append(("{x}.value = ? AND COALESCE({x}.exact, {x}.value) = ?", [key, v[:MAX_KEY]]))
            cost, ordered = 1, True
        elif modifier == "contains":
            alts.append(("{x}.value LIKE ? ESCAPE '\\'", [f"%{_like_escape(key)}%"]))
            cost = 6
        else:
            alts.append(("{x}.value >= ? AND {x}.value < ?", [key, key + HIGH]))
            # a family name alone is a large share of Vietnamese names (Nguyễn: ~38%)
            cost = max(cost, 3 if len(key) >= 8 else 4 if len(key) >= 3 else 6)
    return _term(sources, alts, "idx_string", ordered=ordered and len(sources) == 1, cost=cost,
                 shared=p.shared)


def text_words_term(name: str, sources: tuple[Source, ...], values: list[str],
                    ctx: Ctx) -> Term:
    """``_text``/``_content`` (R4 Search "Text Search Parameters", #text): every word of a
    value starts an indexed word (narrative) or value (string parameters); alternatives are
    OR-ed."""
    alternatives = []
    for raw in values:
        words = list(dict.fromkeys(re.findall(r"\w+", fold(unescape(raw)))))
        if not words:
            raise bad(name, "expected words to search for")
        alternatives.append(words)
    if len(alternatives) == 1 and len(alternatives[0]) == 1:
        word = alternatives[0][0]
        return _term(sources, [("{x}.value >= ? AND {x}.value < ?", [word, word + HIGH])],
                     "idx_string", cost=3, shared=True)
    ors, args = [], []
    for words in alternatives:
        ands = []
        for word in words:
            term = _term(sources, [("{x}.value >= ? AND {x}.value < ?", [word, word + HIGH])],
                         "idx_string", cost=3)
            sql, term_args = term.condition("{r}", ctx)
            ands.append(sql)
            args += term_args
        ors.append("(" + " AND ".join(ands) + ")")
    return Term("(" + " OR ".join(ors) + ")", args, None, cost=3)


# --- token -------------------------------------------------------------------------------------


def _low_cardinality(p: Param) -> bool:
    """Tokens over ``code``/``boolean`` elements (status, gender) select large shares."""
    return bool(p.element_types) and p.element_types <= {"code", "boolean"}


def token_term(name: str, p: Param, sources: tuple[Source, ...], modifier: str,
               values: list[str]) -> Term:
    if modifier == "text":  # the display, or the concept's text after the separator
        alts = []
        for v in values:
            key = fold(unescape(v))
            alts.append(("({x}.display >= ? AND {x}.display < ?) OR {x}.display LIKE ? ESCAPE '\\'",
                         [key, key + HIGH, f"%{TEXT_SEPARATOR}{_like_escape(key)}%"]))
        return _term(sources, alts, "idx_token", cost=6, shared=p.shared)
    if modifier == "of-type":
        parsed = [of_type_value(name, v) for v in values]
        ot_sources = tuple(Source(of_type_sp(s.sp)) for s in sources)
        return _term(ot_sources, [_of_type_alt(o) for o in parsed], "idx_token",
                     ordered=len(parsed) == 1 and len(ot_sources) == 1, cost=1)
    if modifier in ("in", "not-in"):
        alts = [_valueset_alt(name, unescape(v)) for v in values]
        return _term(sources, alts, "idx_token", negate=modifier == "not-in", cost=5,
                     shared=p.shared)
    tokens = [token_value(name, v) for v in values]
    alts = [_token_alt(p, t) for t in tokens]
    exact = len(tokens) == 1 and tokens[0].code is not None and tokens[0].system is not None \
        and len(sources) == 1 and not _low_cardinality(p)
    if "Identifier" in p.element_types or p.code in ("_id", "identifier"):
        cost = 1
    elif _low_cardinality(p):
        cost = 5
    elif all(t.code is None for t in tokens):
        cost = 6
    else:
        cost = 2
    return _term(sources, alts, "idx_token", negate=modifier == "not", ordered=exact,
                 cost=cost, shared=p.shared)


def _token_alt(p: Param, t: TokenValue) -> tuple[str, list[Any]]:
    if t.code is None:  # system|
        return "{x}.system = ?", [system_key(t.system)]
    if t.system is None:
        return "{x}.code = ?", [t.code]
    if t.system == "":
        return "{x}.code = ? AND {x}.system IS NULL", [t.code]
    if _low_cardinality(p):
        # a ``code`` element has no system of its own: the value set's system is implied
        return ("{x}.code = ? AND ({x}.system = ? OR {x}.system IS NULL)",
                [t.code, system_key(t.system)])
    return "{x}.code = ? AND {x}.system = ?", [t.code, system_key(t.system)]


def _of_type_alt(o: OfTypeValue) -> tuple[str, list[Any]]:
    return "{x}.code = ? AND {x}.system = ?", [o.value,
                                                system_key(f"{o.type_system}|{o.type_code}")]


def _valueset_alt(name: str, url: str) -> tuple[str, list[Any]]:
    systems = definitions.valueset_systems(url)
    if systems is None:
        raise bad(name, f"the value set {url!r} is not one this server can expand "
                        "(the value sets of the R4 required bindings are)", code="not-supported")
    parts, args = [], []
    for system, codes in systems.items():
        if not codes:
            continue
        parts.append(f"({{x}}.code IN ({', '.join('?' * len(codes))}) AND "
                     "({x}.system = ? OR {x}.system IS NULL))")
        args += [*sorted(codes), system_key(system)]
    return (" OR ".join(parts) or "1 = 0"), args


# --- reference ---------------------------------------------------------------------------------


def reference_term(name: str, p: Param, sources: tuple[Source, ...], modifier: str,
                   values: list[str]) -> Term:
    if modifier == "identifier":
        tokens = [token_value(name, v) for v in values]
        id_sources = tuple(Source(identifier_sp(s.sp)) for s in sources)
        return _term(id_sources, [_token_alt(p, t) for t in tokens], "idx_token", cost=1,
                     ordered=len(tokens) == 1 and tokens[0].system not in (None, "")
                     and tokens[0].code is not None and len(id_sources) == 1)
    target_filter = modifier or None
    alts: list[tuple[str, list[Any]]] = []
    exact = len(values) == 1
    for raw in values:
        ref = reference_value(name, raw, definitions.is_resource_type)
        if ref.url is not None:
            alts.append(("{x}.url = ?", [ref.url]))
            exact = False
            continue
        rtype = ref.type
        if target_filter:
            if rtype is not None and rtype != target_filter:
                raise bad(name, f"{raw!r} is not a {target_filter} reference")
            rtype = target_filter
        if rtype is None:
            targets = tuple(t for t in p.targets)
            restricted = {s.target for s in sources if s.target}
            if len(restricted) == 1:
                rtype = next(iter(restricted))
            elif len(targets) == 1:
                rtype = targets[0]
        if rtype is None:
            alts.append(("{x}.target_id = ?", [ref.id]))
            exact = False
        else:
            alts.append(("{x}.target_id = ? AND {x}.target_type = ?", [ref.id, rtype]))
    return _term(sources, alts, "idx_reference", ordered=exact and len(sources) == 1, cost=1,
                 shared=p.shared)


# --- date, number, quantity --------------------------------------------------------------------


def range_alt(prefix: str, lo_col: str, hi_col: str, lo: Any, hi: Any, *, now: int | None = None,
              long_col: str | None = None, long_min: Any = None) -> tuple[str, list[Any]]:
    """A stored range [lo_col, hi_col] against the search range [lo, hi] (both inclusive)
    under a prefix, as R4 Search "Prefixes" words it:

    eq: the search range fully contains the target; ne: it does not; gt/lt: the range above/below
    the search value intersects the target; ge/le: gt/lt or eq; sa/eb: the target starts after
    the end / ends before the start of the search range; ap: within 10% (of the value for a
    number, of the distance from now for a date).

    ``long_col``/``long_min``: when given, every row whose ``hi`` exceeds ``lo`` by less than
    ``long_min`` also satisfies ``lo > bound - long_min``, which lets ``gt``/``ge``/``sa``
    ranges use the index on ``lo`` (the rest come from the partial index on long ranges).
    """
    def above(bound: Any, strict: bool) -> tuple[str, list[Any]]:
        op = ">" if strict else ">="
        if long_col is None:
            return f"{hi_col} {op} ?", [bound]
        return (f"(({lo_col} > ? AND {hi_col} {op} ?) OR ({long_col} AND {hi_col} {op} ?))",
                [bound - long_min, bound, bound])

    # a stored range starts before it ends, so "inside" also bounds lo from above: an index on
    # lo reads just the search range
    inside = f"{lo_col} >= ? AND {lo_col} <= ? AND {hi_col} <= ?"
    if prefix == "eq":
        return inside, [lo, hi, hi]
    if prefix == "ne":
        return f"NOT ({inside})", [lo, hi, hi]
    if prefix == "gt":
        return above(hi, True)
    if prefix == "lt":
        return f"{lo_col} < ?", [lo]
    if prefix == "ge":
        sql, args = above(hi, True)
        return f"({sql} OR ({inside}))", [*args, lo, hi, hi]
    if prefix == "le":
        return f"({lo_col} < ? OR ({inside}))", [lo, lo, hi, hi]
    if prefix == "sa":
        return f"{lo_col} > ?", [hi]
    if prefix == "eb":
        return f"{hi_col} < ?", [lo]
    # ap
    if isinstance(lo, int):
        margin = abs((now or time.time_ns() // 1000) - lo) // 10
    else:
        margin = abs(lo + hi) / 2 * 0.1
    return f"{hi_col} >= ? AND {lo_col} <= ?", [lo - margin, hi + margin]


_LONG_DATE = f"{{x}}.hi - {{x}}.lo >= {LONG_DATE_US}"


def date_alt(d: DateValue, now: int) -> tuple[str, list[Any]]:
    return range_alt(d.prefix, "{x}.lo", "{x}.hi", d.lo, d.hi, now=now, long_col=_LONG_DATE,
                     long_min=LONG_DATE_US)


def date_term(name: str, p: Param, sources: tuple[Source, ...], values: list[str],
              now: int) -> Term:
    dates = [date_value(name, v) for v in values]
    day = 86_400_000_000
    if all(d.prefix == "eq" and d.hi - d.lo < day for d in dates):
        cost = 2  # a day: a birth date, a visit
    elif all(d.prefix == "eq" and d.hi - d.lo < 366 * day for d in dates):
        cost = 3  # a month or a year (a birth year: about 1/70 of people)
    else:
        cost = 6
    return _term(sources, [date_alt(d, now) for d in dates], "idx_date", cost=cost,
                 shared=p.shared)


def number_alt(n: NumberValue, lo_col: str = "{x}.lo", hi_col: str = "{x}.hi"
               ) -> tuple[str, list[Any]]:
    """A number search against stored numbers (``hi`` NULL: a plain value, else a range).
    The search value's own precision counts for eq, ne and ap (R4 "number": ``100`` is
    [99.5, 100.5)); the other prefixes compare with the exact value written."""
    top = f"COALESCE({hi_col}, {lo_col})"
    if n.prefix in ("eq", "ne"):
        inside = f"{lo_col} >= ? AND {lo_col} < ? AND ({hi_col} IS NULL OR {hi_col} < ?)"
        if n.prefix == "eq":
            return inside, [n.lo, n.hi, n.hi]
        return f"NOT ({inside})", [n.lo, n.hi, n.hi]
    v = n.value
    if n.prefix in ("gt", "sa"):
        return f"({lo_col} > ? OR {hi_col} > ?)", [v, v]
    if n.prefix == "ge":
        return f"({lo_col} >= ? OR {hi_col} >= ?)", [v, v]
    if n.prefix in ("lt", "eb"):
        return f"{lo_col} < ?", [v]
    if n.prefix == "le":
        return f"{lo_col} <= ?", [v]
    margin = abs(v) * 0.1  # ap
    return f"{top} >= ? AND {lo_col} <= ?", [n.lo - margin, n.hi + margin]


def number_term(name: str, p: Param, sources: tuple[Source, ...], values: list[str]) -> Term:
    numbers = [number_value(name, unescape(v)) for v in values]
    cost = 3 if all(n.prefix == "eq" for n in numbers) else 6
    return _term(sources, [number_alt(n) for n in numbers], "idx_quantity", cost=cost,
                 shared=p.shared)


def quantity_alt(q: QuantityValue) -> tuple[str, list[Any]]:
    """A quantity search: without a unit against the number as written; with a UCUM unit in
    canonical units (so 1 m finds 100 cm, and mg/dL finds mmol/L where the analyte is known);
    with another unit against that system and code; ``||code`` against the code or unit."""
    n = q.number
    if q.code is None:
        return number_alt(n)
    if q.system in (None, ucum.UCUM):
        scaled = ucum.canonical_bounds(n.lo, n.hi, q.code)
        exact = ucum.canonical(n.value, q.code)
        if scaled is not None and exact is not None:
            unit, lo, hi = scaled
            canonical = NumberValue(n.prefix, exact[1], lo, hi)
            sql, args = number_alt(canonical, "{x}.clo", "{x}.chi")
            return (f"{{x}}.unit = ? AND {{x}}.system = ? AND {sql}",
                    [unit, system_key(ucum.UCUM), *args])
    sql, args = number_alt(n, "{x}.clo", "{x}.chi")
    if q.system is None:
        return f"{{x}}.unit = ? AND {sql}", [q.code, *args]
    return f"{{x}}.unit = ? AND {{x}}.system = ? AND {sql}", [q.code, system_key(q.system), *args]


def quantity_term(name: str, p: Param, sources: tuple[Source, ...], values: list[str]) -> Term:
    quantities = [quantity_value(name, v) for v in values]
    cost = 3 if all(q.number.prefix == "eq" for q in quantities) else 6
    return _term(sources, [quantity_alt(q) for q in quantities], "idx_quantity", cost=cost,
                 shared=p.shared)


# --- uri ---------------------------------------------------------------------------------------


def uri_term(name: str, p: Param, sources: tuple[Source, ...], modifier: str,
             values: list[str]) -> Term:
    alts: list[tuple[str, list[Any]]] = []
    cost, ordered = 1, len(values) == 1 and not modifier
    for raw in values:
        v = unescape(raw)
        if modifier == "below":
            alts.append(("{x}.value >= ? AND {x}.value < ?", [v, v + HIGH]))
            cost = 4
        elif modifier == "above":
            prefixes = [v[:i] for i in range(1, len(v) + 1) if i == len(v) or v[i] == "/"]
            prefixes = [x for x in prefixes if "://" not in x or x.index("://") + 3 < len(x)]
            alts.append((f"{{x}}.value IN ({', '.join('?' * len(prefixes))})", prefixes))
        else:
            alts.append(("{x}.value = ?", [v]))
    return _term(sources, alts, "idx_uri", ordered=ordered and len(sources) == 1, cost=cost,
                 shared=p.shared)


# --- :missing ----------------------------------------------------------------------------------


def missing_term(name: str, sources: tuple[Source, ...], table: str, value: str,
                 shared: bool) -> Term:
    if value not in ("true", "false"):
        raise bad(name, f"expected true or false, got {value!r}")
    return _term(sources, [("", [])], table, negate=value == "true", cost=6, shared=shared)


# --- composite ---------------------------------------------------------------------------------


def composite_condition(name: str, p: Param, value: str, r: str, ctx: Ctx,
                        now: int) -> tuple[str, list[Any]]:
    """One composite value (components separated by ``$``) as a condition on ``r``.

    Rooted at the resource: each component is its own parameter's rows (an AND on the
    resource). Rooted at a repeating element: the component rows tagged with the same
    element position (``grp``) join."""
    parts = composite_parts(name, value, len(p.components))
    if p.root is None:
        conds, args = [], []
        for comp, part in zip(p.components, parts):
            term = component_term(name, comp.kind, comp.sources, part, now)
            sql, term_args = term.condition(r, ctx)
            conds.append(sql)
            args += term_args
        return "(" + " AND ".join(conds) + ")", args
    aliases = [ctx.alias("c") for _ in p.components]
    froms, conds, args = [], [], []
    for i, (comp, part, a) in enumerate(zip(p.components, parts, aliases)):
        term = component_term(name, comp.kind, comp.sources, part, now)
        froms.append(f"{comp.table} {a}")
        conds.append(term.where.replace("{x}", a))
        args += term.args
        if i:
            conds.append(f"{a}.rid = {aliases[0]}.rid AND {a}.grp = {aliases[0]}.grp")
    sql = (f"EXISTS (SELECT 1 FROM {', '.join(froms)} WHERE {aliases[0]}.rid = {r}.rid AND "
           + " AND ".join(conds) + ")")
    return sql, args


def component_term(name: str, kind: str, sources: tuple[Source, ...], value: str,
                   now: int) -> Term:
    fake = Param("", "", kind, None, 0, None)
    if kind == "token":
        return token_term(name, fake, sources, "", [value])
    if kind == "quantity":
        return quantity_term(name, fake, sources, [value])
    if kind == "number":
        return number_term(name, fake, sources, [value])
    if kind == "date":
        return date_term(name, fake, sources, [value], now)
    if kind == "string":
        return string_term(name, fake, sources, "", [value])
    if kind == "reference":
        return reference_term(name, fake, sources, "", [value])
    if kind == "uri":
        return uri_term(name, fake, sources, "", [value])
    raise bad(name, f"composite parts of type {kind} are not supported", code="not-supported")


__all__ = ["BIG", "Ctx", "Term", "bad", "sources_sql"]
