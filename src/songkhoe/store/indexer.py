"""Search-index rows of a resource: every stored search parameter of its type, evaluated once.

For each parameter the catalog stores (``catalog.stored_params``), the expression selects
items (``paths``: plain paths are walked directly, the rest go through FHIRPath) and each item
becomes rows in the table of the parameter's type, following R4 Search's table of which
datatypes each parameter type matches (http://hl7.org/fhir/R4/search.html#ptypes):

- string (#string): string, markdown, HumanName (family, given, prefix, suffix, text, and
  the whole name in both orders), Address (line, city, district, state, postalCode, country,
  text). The key is diacritic-folded (``fold``); the text as written is kept only when it
  differs, for ``:exact``.
- token (#token): code, boolean, string/uri/id, Coding, CodeableConcept, Identifier,
  ContactPoint — (system, code, folded display and text for ``:text``), one row per distinct
  (system, code). An Identifier with a ``type`` also gets a row for ``:of-type``.
- reference (#reference): Reference (``Type/id``, versioned, absolute URLs), canonical and uri;
  a Reference's ``identifier`` gets a token row for ``:identifier``.
- date (#date): date, dateTime, instant, Period (an open end is unbounded), Timing events —
  inclusive µs ranges (``ranges.date_range``).
- number (#number) and quantity (#quantity): Quantity and its profiles (Age, Duration …),
  Range, Money — the number as written (``lo``; ``hi`` only for a Range or a comparator), and,
  when the unit is UCUM, the value in canonical units (``ucum``); for a known analyte a second
  row in the other dimension (mg/dL ↔ mmol/L).
- uri (#uri): uri, url, canonical.
- composite (#composite) rooted at a repeating element: one row per component per element,
  tagged with the element's position (``grp``).
- ``_text`` (#text): the distinct folded words of the narrative.

``_id`` and ``_lastUpdated`` are columns of ``resources``. Values the validator accepts but a
range cannot hold (a partial time) are skipped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from songkhoe.fhir.text import fold

from . import ucum
from .catalog import Param, identifier_sp, of_type_sp, stored_params, system_key
from .paths import Walk, compile_walk, is_a
from .ranges import MAX_US, MIN_US, RangeError, date_range

Rows = dict[str, list[tuple[Any, ...]]]  # index table -> rows (columns after rid)

TABLES = ("idx_string", "idx_token", "idx_reference", "idx_date", "idx_quantity", "idx_uri")
MAX_KEY = 512  # long strings are indexed by their first characters
MAX_WORDS = 1000  # narrative words indexed per resource
BIG = 1e300  # an open end of a quantity range (comparator < or >)

_NAME_PARTS = ("family", "given", "prefix", "suffix", "text", "line", "city", "district", "state",
               "postalCode", "country")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --- values per parameter type ----------------------------------------------------------------


def string_values(value: Any) -> Iterable[str]:
    """The strings a node is searchable by (HumanName and Address by each part and whole)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for part in _NAME_PARTS:
            item = value.get(part)
            if isinstance(item, str):
                yield item
            elif isinstance(item, list):
                yield from (p for p in item if isinstance(p, str))
        if "family" in value or "given" in value:  # the whole name, Vietnamese order first
            given = " ".join(p for p in value.get("given", []) if isinstance(p, str))
            family = value.get("family") if isinstance(value.get("family"), str) else ""
            if family and given:
                yield f"{family} {given}"
                yield f"{given} {family}"


def token_values(value: Any, typ: str | None = None
                 ) -> Iterable[tuple[str | None, str | None, str | None]]:
    """(system, code, folded display) triples of one node."""
    if isinstance(value, bool):
        yield None, "true" if value else "false", None
    elif isinstance(value, (str, int, float)):
        yield None, str(value), None
    elif isinstance(value, dict):
        if typ == "CodeableConcept" or (typ is None and ("coding" in value or (
                "text" in value and "code" not in value and "value" not in value))):
            text = _text(value.get("text"))
            codings = value.get("coding") or []
            folded_text = fold(text) if text else None
            for coding in codings:
                if not isinstance(coding, dict):
                    continue
                display = _text(coding.get("display"))
                yield coding.get("system"), coding.get("code"), \
                    _texts(fold(display) if display else None, folded_text)
            if folded_text and not codings:
                yield None, None, folded_text
        elif "code" in value:  # Coding, or a Quantity's unit code
            display = _text(value.get("display"))
            yield value.get("system"), value.get("code"), fold(display) if display else None
        elif "value" in value:  # Identifier or ContactPoint
            kind = value.get("type")
            type_text = kind.get("text") if isinstance(kind, dict) else None
            yield value.get("system"), str(value["value"]), fold(type_text) if \
                isinstance(type_text, str) and type_text else None


TEXT_SEPARATOR = "\x1f"  # between a Coding's display and its CodeableConcept's text


def _texts(display: str | None, text: str | None) -> str | None:
    """The ``:text`` key of a coding: its display and the concept's text, both searchable
    without a second row (``search_sql.token_term`` matches either)."""
    if display and text and display != text:
        return f"{display}{TEXT_SEPARATOR}{text}"
    return display or text


def of_type_values(value: Any) -> Iterable[tuple[str, str]]:
    """("type system|type code", value) of an Identifier with a type (``:of-type``)."""
    if not isinstance(value, dict) or "value" not in value or not isinstance(value.get("type"), dict):
        return
    for coding in value["type"].get("coding") or []:
        if isinstance(coding, dict) and coding.get("code"):
            yield f"{coding.get('system') or ''}|{coding['code']}", str(value["value"])


def reference_values(value: Any) -> Iterable[tuple[str | None, str | None, str | None]]:
    """(target type, target id, url) of a Reference, canonical or uri node."""
    text = value.get("reference") if isinstance(value, dict) else value
    if not isinstance(text, str) or not text or text.startswith("#"):
        return
    parts = text.split("/")
    if "://" not in text and not text.startswith("urn:") and len(parts) in (2, 4) and parts[1]:
        yield parts[0], parts[1], None
    else:
        yield None, None, text.split("|")[0][:MAX_KEY * 4]


def date_values(value: Any) -> Iterable[tuple[int, int]]:
    if isinstance(value, str):
        yield date_range(value)
    elif isinstance(value, dict):
        if "start" in value or "end" in value:  # Period: an open end is unbounded
            lo = date_range(value["start"])[0] if isinstance(value.get("start"), str) else MIN_US
            hi = date_range(value["end"])[1] if isinstance(value.get("end"), str) else MAX_US
            yield lo, hi
        elif "event" in value:  # Timing
            for event in value["event"]:
                if isinstance(event, str):
                    yield date_range(event)


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def quantity_values(value: Any, typ: str | None = None
                    ) -> Iterable[tuple[str | None, str | None, float, float | None]]:
    """(system, code or unit, lo, hi) of a Quantity (and profiles), Range or Money; ``hi`` is
    None for a plain value."""
    if not isinstance(value, dict):
        return
    number = _number(value.get("value"))
    if number is not None:
        if "currency" in value:  # Money
            yield "urn:iso:std:iso:4217", value["currency"], number, None
            return
        comparator = value.get("comparator")
        top: float | None = None
        if comparator in ("<", "<="):
            number, top = -BIG, number
        elif comparator in (">", ">="):
            top = BIG
        yield value.get("system"), value.get("code") or value.get("unit"), number, top
    elif typ == "Range" or (typ is None and ("low" in value or "high" in value)):
        low, high = value.get("low") or {}, value.get("high") or {}
        start, end = _number(low.get("value")), _number(high.get("value"))
        if start is None and end is None:
            return
        unit_of = low if start is not None else high
        yield unit_of.get("system"), unit_of.get("code") or unit_of.get("unit"), \
            -BIG if start is None else start, BIG if end is None else end


def _analyte(parent: Any) -> float | None:
    """The molar mass of the analyte the element holding a quantity measures (its ``code``)."""
    code = parent.get("code") if isinstance(parent, dict) else None
    if not isinstance(code, dict):
        return None
    for coding in code.get("coding") or ():
        if isinstance(coding, dict):
            mass = ucum.ANALYTES.get((str(coding.get("system")), str(coding.get("code"))))
            if mass is not None:
                return mass
    return None


def quantity_rows(value: Any, typ: str | None, parent: Any
                  ) -> Iterable[tuple[Any, ...]]:
    """(system, unit, lo, hi, clo, chi) rows of one quantity node (see the module docstring)."""
    for system, code, lo, hi in quantity_values(value, typ):
        if system == ucum.UCUM and code:
            low = ucum.canonical(lo, code) if abs(lo) < BIG else None
            high = ucum.canonical(hi, code) if hi is not None and abs(hi) < BIG else None
            if low is not None or (lo <= -BIG and high is not None):
                unit = (low or high)[0]  # type: ignore[index]
                clo = low[1] if low else -BIG
                chi = None if hi is None else (high[1] if high else BIG)
                yield ucum.UCUM, unit, lo, hi, clo, chi
                mass = _analyte(parent)
                if mass is not None:
                    swapped_lo = ucum.swap_substance(unit, clo, mass) if low else None
                    if swapped_lo is not None:
                        swapped_hi = None if chi is None else (
                            (ucum.swap_substance(unit, chi, mass) or (None, chi))[1]
                            if abs(chi) < BIG else BIG)
                        yield ucum.UCUM, swapped_lo[0], None, None, swapped_lo[1], swapped_hi
                continue
        yield system, code, lo, hi, (lo if code else None), (hi if code else None)


def uri_values(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value


_TAG = re.compile(r"<[^>]*>")
_WORD = re.compile(r"\w+")


def narrative_words(resource: dict[str, Any]) -> list[str]:
    """The distinct folded words of a resource's narrative (``text.div``), for ``_text``."""
    text = resource.get("text")
    div = text.get("div") if isinstance(text, dict) else None
    if not isinstance(div, str):
        return []
    words = dict.fromkeys(w[:64] for w in _WORD.findall(fold(html.unescape(_TAG.sub(" ", div)))))
    return list(words)[:MAX_WORDS]


# --- compiled parameters per resource type ----------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    param: Param
    walk: Walk
    keys: frozenset[str] | None  # top-level keys it reads; None: always evaluate
    components: tuple[tuple[int, str, Walk], ...] = ()  # composite: (sp, table, walk from root)


def _component_walks(p: Param, root_type: str | None) -> tuple[tuple[int, str, Walk], ...]:
    out = []
    for comp in p.components:
        walk, _ = compile_walk(comp.expression, root_type or p.rtype, rooted=False)
        out.append((comp.sources[0].sp, comp.table, walk))
    return tuple(out)


class _TypePlans:
    """The stored parameters of one resource type and which top-level JSON keys wake them."""

    def __init__(self, rtype: str) -> None:
        plans = []
        for p in stored_params(rtype):
            if p.kind == "composite":
                assert p.root is not None
                walk, keys = compile_walk(p.root, rtype)
                plans.append(_Plan(p, walk, keys))
            else:
                assert p.expression is not None
                walk, keys = compile_walk(p.expression, rtype)
                plans.append(_Plan(p, walk, keys))
        self.plans = tuple(plans)
        self.always = tuple(i for i, p in enumerate(self.plans) if p.keys is None)
        self._by_key: dict[str, tuple[int, ...]] = {}
        self._component_walks: dict[tuple[str, str | None], tuple[tuple[int, str, Walk], ...]] = {}

    def for_key(self, key: str) -> tuple[int, ...]:
        found = self._by_key.get(key)
        if found is None:
            found = tuple(i for i, p in enumerate(self.plans) if p.keys and key in p.keys)
            self._by_key[key] = found
        return found

    def relevant(self, resource: dict[str, Any]) -> list[_Plan]:
        chosen = set(self.always)
        for key in resource:
            chosen.update(self.for_key(key))
        return [self.plans[i] for i in sorted(chosen)]

    def component_walks(self, p: Param, root_type: str | None) -> tuple[tuple[int, str, Walk], ...]:
        key = (p.code, root_type)
        found = self._component_walks.get(key)
        if found is None:
            found = self._component_walks[key] = _component_walks(p, root_type)
        return found


@lru_cache(maxsize=None)
def _type_plans(rtype: str) -> _TypePlans:
    return _TypePlans(rtype)


#: top-level elements read beyond the parameters' own keys: ``text`` (``_text``) and
#: ``contained`` (a reference to ``#id`` resolves inside the resource)
_ALSO_READ = frozenset({"text", "contained"})
_VERSION_META = ("versionId", "lastUpdated")


def same_index(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether ``new`` has exactly the index rows of ``old``, a version of the same resource:
    every element they differ in is one no stored parameter of the type reads (the keys
    ``index_rows`` wakes its parameters by), and their ``meta`` differs at most in
    ``versionId`` and ``lastUpdated`` (``_id`` and ``_lastUpdated`` are columns of
    ``resources``, not index rows). An Observation given its ``interpretation`` keeps its rows."""
    rtype = new.get("resourceType")
    if rtype != old.get("resourceType") or new.get("id") != old.get("id"):
        return False
    plans = _type_plans(rtype)
    if plans.always:
        return False
    for key in old.keys() | new.keys():
        before, after = old.get(key), new.get(key)
        if key == "meta":
            before, after = _unversioned(before), _unversioned(after)
        if before != after and (key in _ALSO_READ or plans.for_key(key)):
            return False
    return True


def _unversioned(meta: Any) -> Any:
    """``meta`` without what the store sets on every version (None when nothing is left)."""
    if isinstance(meta, dict) and any(k in meta for k in _VERSION_META):
        return {k: v for k, v in meta.items() if k not in _VERSION_META} or None
    return meta


# --- rows -------------------------------------------------------------------------------------


def index_rows(resource: dict[str, Any]) -> Rows:
    """All search-index rows of ``resource`` (its type taken from ``resourceType``)."""
    plans = _type_plans(resource["resourceType"])
    rows: Rows = {table: [] for table in TABLES}
    for plan in plans.relevant(resource):
        p = plan.param
        if p.kind == "composite":
            _composite_rows(plans, plan, resource, rows)
            continue
        _add(p.kind, p.sp, plan.walk(resource, None), rows, None)
    words = narrative_words(resource) if "text" in resource else ()
    if words:
        text_sp = _TEXT_SP
        rows["idx_string"].extend((text_sp, w, None, None) for w in words)
    return rows


def _text_sp() -> int:
    from .catalog import sp_id
    return sp_id("Resource._text")


_TEXT_SP = _text_sp()


def _composite_rows(plans: _TypePlans, plan: _Plan, resource: dict[str, Any], rows: Rows) -> None:
    for grp, (node, node_type, _) in enumerate(plan.walk(resource, None)):
        parts: list[tuple[str, int, Rows]] = []
        for sp, table, walk in plans.component_walks(plan.param, node_type):
            kind = _KIND_OF_TABLE[table]
            part: Rows = {table: []}
            _add(kind, sp, walk(resource, node), part, grp)
            if not part[table]:
                break
            parts.append((table, sp, part))
        else:
            for table, _, part in parts:
                rows[table].extend(part[table])


_KIND_OF_TABLE = {"idx_string": "string", "idx_token": "token", "idx_reference": "reference",
                  "idx_date": "date", "idx_quantity": "quantity", "idx_uri": "uri"}


Items = list[tuple[Any, str | None, Any]]


def _add(kind: str, sp: int, items: Items, rows: Rows, grp: int | None) -> None:
    """Rows of ``items`` for a parameter of type ``kind`` tagged ``sp``."""
    if items:
        try:
            _BUILDERS[kind](sp, items, rows, grp)
        except RangeError:
            return  # a value the validator let through but a range cannot hold


def _token_rows(sp: int, items: Items, rows: Rows, grp: int | None) -> None:
    out = rows["idx_token"]
    seen: set[tuple[Any, Any]] = set()
    for value, typ, _ in items:
        for system, code, display in token_values(value, typ):
            key = (system, code if code is not None else display)
            if key not in seen:
                seen.add(key)
                out.append((sp, system_key(system), code, display, grp))
        if typ == "Identifier" or (typ is None and isinstance(value, dict) and "type" in value):
            for type_key, ident in of_type_values(value):
                out.append((of_type_sp(sp), system_key(type_key), ident, None, grp))


def _reference_rows(sp: int, items: Items, rows: Rows, grp: int | None) -> None:
    out = rows["idx_reference"]
    seen: set[tuple[Any, ...]] = set()
    for value, _, _ in items:
        for row in reference_values(value):
            if row not in seen:
                seen.add(row)
                out.append((sp, *row, grp))
        ident = value.get("identifier") if isinstance(value, dict) else None
        if isinstance(ident, dict) and ident.get("value") is not None:
            rows["idx_token"].append((identifier_sp(sp), system_key(ident.get("system")),
                                      str(ident["value"]), None, grp))


def _string_rows(sp: int, items: Items, rows: Rows, grp: int | None) -> None:
    out = rows["idx_string"]
    seen: set[tuple[str, str | None]] = set()
    for value, _, _ in items:
        for text in string_values(value):
            text = text[:MAX_KEY]
            key = fold(text)
            row = (key, None if key == text else text)
            if row not in seen:
                seen.add(row)
                out.append((sp, *row, grp))


def _date_rows(sp: int, items: Items, rows: Rows, grp: int | None) -> None:
    out = rows["idx_date"]
    seen: set[tuple[int, int]] = set()
    for value, _, _ in items:
        try:
            for row in date_values(value):
                if row not in seen:
                    seen.add(row)
                    out.append((sp, *row, grp))
        except RangeError:
            continue


def _number_rows(sp: int, items: Items, rows: Rows, grp: int | None) -> None:
    out = rows["idx_quantity"]
    seen: set[tuple[float, float | None]] = set()
    for value, typ, _ in items:
        number = _number(value)
        ranges = [(number, None)] if number is not None else [
            (lo, hi) for _, _, lo, hi in quantity_values(value, typ)]  # a Range
        for lo, hi in ranges:
            if (lo, hi) not in seen:
                seen.add((lo, hi))
                out.append((sp, None, None, lo, hi, None, None, grp))


def _quantity_rows(sp: int, items: Items, rows: Rows, grp: int | None) -> None:
    out = rows["idx_quantity"]
    seen: set[tuple[Any, ...]] = set()
    for value, typ, holder in items:
        if typ is not None and not (is_a(typ, "Quantity") or typ in ("Range", "Money")):
            continue  # SampledData and the like: no value to compare
        for system, *rest in quantity_rows(value, typ, holder):
            row = (system_key(system), *rest)
            if row not in seen:
                seen.add(row)
                out.append((sp, *row, grp))


def _uri_rows(sp: int, items: Items, rows: Rows, grp: int | None) -> None:
    out = rows["idx_uri"]
    seen: set[str] = set()
    for value, _, _ in items:
        for uri in uri_values(value):
            uri = uri[:MAX_KEY * 4]
            if uri not in seen:
                seen.add(uri)
                out.append((sp, uri, grp))


_BUILDERS = {"token": _token_rows, "reference": _reference_rows, "string": _string_rows,
             "date": _date_rows, "number": _number_rows, "quantity": _quantity_rows,
             "uri": _uri_rows}
