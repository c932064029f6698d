"""Search-index rows of a resource: every R4 search parameter of its type, evaluated once.

For each SearchParameter of the resource's type (R4 SearchParameter definitions, generated in
``songkhoe.fhir.definitions``), the FHIRPath ``expression`` selects nodes, and each node
becomes rows in the table of the parameter's type, following the R4 Search page's table of
which datatypes each parameter type matches (http://hl7.org/fhir/R4/search.html#ptypes):

- string: string, HumanName (family, given, prefix, suffix, text and the whole name),
  Address (line, city, district, state, postalCode, country, text) — keys are diacritic-folded;
- token: code, boolean, string/uri/id, Coding, CodeableConcept, Identifier, ContactPoint;
- reference: Reference (``Type/id``, versioned, absolute URLs), canonical and uri;
- date: date, dateTime, instant, Period, Timing events — as inclusive µs ranges;
- number, quantity (Quantity, Age, Duration, Money…), uri.

``_id`` and ``_lastUpdated`` are columns of ``resources``; composite and special parameters are
not indexed here (see docs/architecture.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from songkhoe.fhir import definitions
from songkhoe.fhir import fhirpath
from songkhoe.fhir.fhirpath import Node
from songkhoe.fhir.text import fold

from .ranges import MAX_US, MIN_US, RangeError, date_range, number_range

Rows = dict[str, list[tuple[Any, ...]]]  # index table -> rows (type, param, ...) without rid

INDEXED_TYPES = {"string": "idx_string", "token": "idx_token", "reference": "idx_reference",
                 "date": "idx_date", "number": "idx_number", "quantity": "idx_quantity",
                 "uri": "idx_uri"}
_NOT_INDEXED = {"_id", "_lastUpdated"}
_MAX_KEY = 512  # long strings are indexed by their first characters


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def token_values(value: Any) -> Iterable[tuple[str | None, str | None, str | None]]:
    """(system, code, folded display) triples of one node."""
    if isinstance(value, bool):
        yield None, "true" if value else "false", None
    elif isinstance(value, (str, int, float)):
        yield None, str(value), None
    elif isinstance(value, dict):
        if "coding" in value or ("text" in value and "code" not in value and "value" not in value):
            text = _text(value.get("text"))
            codings = value.get("coding") or []
            for coding in codings:
                display = _text(coding.get("display")) or text
                yield coding.get("system"), coding.get("code"), fold(display) if display else None
            if text and not codings:
                yield None, None, fold(text)
        elif "code" in value:  # Coding, or a Quantity's unit code
            display = _text(value.get("display"))
            yield value.get("system"), value.get("code"), fold(display) if display else None
        elif "value" in value:  # Identifier or ContactPoint
            type_text = (value.get("type") or {}).get("text") if isinstance(value.get("type"), dict) else None
            yield value.get("system"), str(value["value"]), fold(type_text) if type_text else None


_NAME_PARTS = ("family", "given", "prefix", "suffix", "text", "line", "city", "district", "state",
               "postalCode", "country")


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


def reference_values(value: Any) -> Iterable[tuple[str | None, str | None, str | None]]:
    """(target type, target id, url) of a Reference, canonical or uri node."""
    text = value.get("reference") if isinstance(value, dict) else value
    if not isinstance(text, str) or not text or text.startswith("#"):
        return
    parts = text.split("/")
    if "://" not in text and not text.startswith("urn:") and len(parts) in (2, 4):
        yield parts[0], parts[1], None
    else:
        yield None, None, text.split("|")[0]


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


def number_values(value: Any) -> Iterable[tuple[float, float]]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        yield number_range(value)


def quantity_values(value: Any) -> Iterable[tuple[str | None, str | None, float, float]]:
    if isinstance(value, dict) and isinstance(value.get("value"), (int, float)):
        lo, hi = number_range(value["value"])
        if "currency" in value:  # Money
            yield "urn:iso:std:iso:4217", value["currency"], lo, hi
        else:
            yield value.get("system"), value.get("code") or value.get("unit"), lo, hi


def uri_values(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value


@dataclass(frozen=True)
class _Param:
    code: str
    table: str
    keys: frozenset[str]  # top-level element names the expression can touch
    evaluate: Callable[[dict[str, Any]], list[Any]]


_TOP_ELEMENT = re.compile(r"(?<![\w.%])([A-Z][A-Za-z]+)\.([a-z][A-Za-z0-9]*)")


def _top_keys(resource_type: str, expression: str) -> frozenset[str] | None:
    """Top-level element names an expression reads, or None when it cannot tell."""
    names = {elem for typ, elem in _TOP_ELEMENT.findall(expression)
             if typ in (resource_type, "Resource", "DomainResource")}
    return frozenset(names) if names else None


@lru_cache(maxsize=None)
def _params(resource_type: str) -> tuple[_Param, ...]:
    out = []
    for code, sp in definitions.search_parameters(resource_type).items():
        table = INDEXED_TYPES.get(sp.type)
        if table is None or code in _NOT_INDEXED or not sp.expression:
            continue
        compiled = fhirpath.compile(sp.expression)
        keys = _top_keys(resource_type, sp.expression) or frozenset()
        out.append(_Param(code, table, keys, compiled.raw))
    return tuple(out)


class _TypeParams:
    """The indexed parameters of one resource type and which top-level JSON keys wake them."""

    def __init__(self, resource_type: str) -> None:
        self.params = _params(resource_type)
        self.always = tuple(i for i, p in enumerate(self.params) if not p.keys)
        self._by_key: dict[str, tuple[int, ...]] = {}

    def for_key(self, key: str) -> tuple[int, ...]:
        """Parameters reading JSON key ``key`` (``valueQuantity`` wakes those reading ``value``)."""
        found = self._by_key.get(key)
        if found is None:
            found = tuple(i for i, p in enumerate(self.params)
                          if key in p.keys or any(key.startswith(k) and len(key) > len(k)
                                                  and key[len(k)].isupper() for k in p.keys))
            self._by_key[key] = found
        return found

    def relevant(self, resource: dict[str, Any]) -> list[_Param]:
        chosen = set(self.always)
        for key in resource:
            chosen.update(self.for_key(key))
        return [self.params[i] for i in sorted(chosen)]


@lru_cache(maxsize=None)
def _type_params(resource_type: str) -> _TypeParams:
    return _TypeParams(resource_type)


def index_rows(resource: dict[str, Any]) -> Rows:
    """All search-index rows of ``resource`` (its type taken from ``resourceType``)."""
    rtype = resource["resourceType"]
    rows: Rows = {table: [] for table in INDEXED_TYPES.values()}
    for param in _type_params(rtype).relevant(resource):
        code, table, out = param.code, param.table, rows[param.table]
        seen: set[tuple[Any, ...]] = set()
        for item in param.evaluate(resource):
            value = item.value if type(item) is Node else item
            for row in _rows_of(table, value):
                if row not in seen:
                    seen.add(row)
                    out.append((rtype, code, *row))
    return rows


def _rows_of(table: str, value: Any) -> Iterable[tuple[Any, ...]]:
    try:
        if table == "idx_string":
            for text in string_values(value):
                yield fold(text)[:_MAX_KEY], text[:_MAX_KEY]
        elif table == "idx_token":
            for system, code, display in token_values(value):
                yield system, code, display
        elif table == "idx_reference":
            yield from reference_values(value)
        elif table == "idx_date":
            yield from date_values(value)
        elif table == "idx_number":
            yield from number_values(value)
        elif table == "idx_quantity":
            yield from quantity_values(value)
        elif table == "idx_uri":
            for uri in uri_values(value):
                yield (uri[:_MAX_KEY * 4],)
    except RangeError:
        return  # a value the validator let through but search cannot range (e.g. partial time)
