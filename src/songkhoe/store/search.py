"""FHIR search parameters compiled to one SQL statement.

Implements R4 Search (http://hl7.org/fhir/R4/search.html): parameter types string (§3.1.1.4.9,
starts-with on diacritic-folded keys; ``:exact``, ``:contains``), token (§3.1.1.4.10:
``code``, ``system|code``, ``|code``, ``system|``; ``:text``, ``:not``), reference
(§3.1.1.4.12: ``Type/id``, ``id``, absolute URL; ``:Type``), date (§3.1.1.4.5 with prefixes
eq ne gt lt ge le sa eb ap over implicit ranges), number and quantity (§3.1.1.4.6/§3.1.1.4.8),
uri (§3.1.1.4.11); ``_id``, ``_lastUpdated``; OR with commas, AND by repetition; ``_count``
with keyset paging (``_cursor``) and ``_total``/``_summary=count``.

Every search becomes one statement: ``resources`` filtered by ``rid IN (index sub-select)``
per parameter, ordered by ``rid`` for stable keyset pages. Unknown parameters are ignored and
left out of the ``self`` link (lenient handling, the R4 default); a value of the wrong form is a
400 naming the parameter.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from songkhoe.fhir import definitions
from songkhoe.fhir.outcome import FhirError, Issue
from songkhoe.fhir.text import fold

from .ranges import RangeError, date_range, number_range

DEFAULT_COUNT = 50
MAX_COUNT = 1000
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
# Result parameters the store applies itself, and ones the REST layer handles.
_CONTROL = {"_count", "_cursor", "_total", "_summary"}
_IGNORED = {"_format", "_pretty", "_elements"}


@dataclass
class Query:
    """A parsed search: SQL conditions on ``r`` (resources) and how to page and count."""

    type: str | None
    conditions: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    applied: list[tuple[str, str]] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    cursor: int | None = None
    total: str = "none"  # none | estimate | accurate
    summary_count: bool = False

    def where(self, condition: str, *args: Any) -> None:
        self.conditions.append(condition)
        self.args.extend(args)


def _bad(name: str, message: str) -> FhirError:
    return FhirError(400, Issue("invalid", f"search parameter {name}: {message}", name))


def split_or(value: str) -> list[str]:
    """Comma-separated alternatives, honouring ``\\,`` escapes (§3.1.1.6)."""
    parts = re.split(r"(?<!\\),", value)
    return [p.replace("\\,", ",") for p in parts]


def _split_pipe(value: str) -> tuple[str | None, str]:
    match = re.search(r"(?<!\\)\|", value)
    if not match:
        return None, value.replace("\\|", "|")
    return value[:match.start()].replace("\\|", "|"), value[match.end():].replace("\\|", "|")


def _prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in _PREFIXES and not value[2].isalpha():
        return value[:2], value[2:]
    return "eq", value


def range_clause(prefix: str, lo_col: str, hi_col: str, lo: Any, hi: Any) -> tuple[str, list[Any]]:
    """Compare a stored range [lo_col, hi_col] with the search range [lo, hi] under a prefix,
    as R4 Search §3.1.1.4 words it ("the range above the search value intersects…")."""
    inside = f"({lo_col} >= ? AND {hi_col} <= ?)"
    if prefix == "eq":
        return inside, [lo, hi]
    if prefix == "ne":
        return f"NOT {inside}", [lo, hi]
    if prefix == "gt":
        return f"{hi_col} > ?", [hi]
    if prefix == "lt":
        return f"{lo_col} < ?", [lo]
    if prefix == "ge":
        return f"({hi_col} > ? OR {inside})", [hi, lo, hi]
    if prefix == "le":
        return f"({lo_col} < ? OR {inside})", [lo, lo, hi]
    if prefix == "sa":
        return f"{lo_col} > ?", [hi]
    if prefix == "eb":
        return f"{hi_col} < ?", [lo]
    # ap: within 10% — of the value for numbers, of the distance from now for dates (§3.1.1.4)
    if isinstance(lo, int):
        margin = abs(time.time_ns() // 1000 - lo) // 10
    else:
        margin = abs(lo + hi) / 2 * 0.1
    return f"({hi_col} >= ? AND {lo_col} <= ?)", [lo - margin, hi + margin]


def _date_search_range(name: str, text: str) -> tuple[int, int]:
    try:
        return date_range(text)
    except RangeError as exc:
        raise _bad(name, str(exc)) from None


def _number_search_range(name: str, text: str) -> tuple[float, float]:
    try:
        return number_range(text)
    except RangeError as exc:
        raise _bad(name, str(exc)) from None


def _index(table: str, rtype: str | None, code: str, condition: str) -> str:
    type_filter = "type = ? AND " if rtype else ""
    return f"r.rid IN (SELECT rid FROM {table} WHERE {type_filter}param = ? AND ({condition}))"


def _string(q: Query, code: str, modifier: str, values: list[str]) -> None:
    ors, args = [], []
    for v in values:
        if modifier == "exact":
            ors.append("exact = ?")
            args.append(v)
        elif modifier == "contains":
            ors.append("value LIKE ? ESCAPE '\\'")
            args.append("%" + re.sub(r"([%_\\])", r"\\\1", fold(v)) + "%")
        else:
            key = fold(v)
            ors.append("(value >= ? AND value < ?)")
            args += [key, key + "\U0010ffff"]
    _add(q, "idx_string", code, " OR ".join(ors), args, negate=False)


def _token(q: Query, code: str, modifier: str, values: list[str]) -> None:
    ors, args = [], []
    for v in values:
        if modifier == "text":
            ors.append("(display >= ? AND display < ?)")
            args += [fold(v), fold(v) + "\U0010ffff"]
            continue
        system, value = _split_pipe(v)
        if system is None:
            ors.append("code = ?")
            args.append(value)
        elif system == "":
            ors.append("(code = ? AND system IS NULL)")
            args.append(value)
        elif value == "":
            ors.append("system = ?")
            args.append(system)
        else:
            ors.append("(code = ? AND system = ?)")
            args += [value, system]
    _add(q, "idx_token", code, " OR ".join(ors), args, negate=modifier == "not")


def _reference(q: Query, code: str, modifier: str, values: list[str], targets: tuple[str, ...]) -> None:
    ors, args = [], []
    for v in values:
        if "://" in v or v.startswith("urn:"):
            ors.append("url = ?")
            args.append(v)
            continue
        parts = v.split("/")
        if len(parts) in (2, 4) and definitions.is_resource_type(parts[0]):
            ors.append("(target_id = ? AND target_type = ?)")
            args += [parts[1], parts[0]]
        elif len(parts) == 1 and parts[0]:
            target = modifier or (targets[0] if len(targets) == 1 else None)
            if target:
                ors.append("(target_id = ? AND target_type = ?)")
                args += [v, target]
            else:
                ors.append("target_id = ?")
                args.append(v)
        else:
            raise _bad(code, f"expected Type/id, an id or an absolute URL, got {v!r}")
    _add(q, "idx_reference", code, " OR ".join(ors), args, negate=False)


def _ranged(q: Query, code: str, table: str, values: list[str], kind: str) -> None:
    ors, args = [], []
    for v in values:
        prefix, rest = _prefix(v)
        if kind == "date":
            lo, hi = _date_search_range(code, rest)
            extra, extra_args = "", []
        else:
            number_text, system, unit = rest, None, None
            if kind == "quantity":
                number_text, _, tail = rest.partition("|")
                if tail:
                    system, _, unit = tail.partition("|")
            lo, hi = _number_search_range(code, number_text)
            if prefix not in ("eq", "ne", "ap"):  # §3.1.1.4.1: precision ignored for these
                lo = hi = float(number_text)
            extra, extra_args = "", []
            if unit:
                extra, extra_args = " AND code = ?", [unit]
                if system:
                    extra, extra_args = " AND code = ? AND system = ?", [unit, system]
        clause, clause_args = range_clause(prefix, "lo", "hi", lo, hi)
        ors.append(f"({clause}{extra})")
        args += [*clause_args, *extra_args]
    _add(q, table, code, " OR ".join(ors), args, negate=False)


def _uri(q: Query, code: str, modifier: str, values: list[str]) -> None:
    if modifier == "below":
        ors = ["value LIKE ? ESCAPE '\\'"] * len(values)
        args: list[Any] = [re.sub(r"([%_\\])", r"\\\1", v) + "%" for v in values]
    else:
        ors, args = ["value = ?"] * len(values), list(values)
    _add(q, "idx_uri", code, " OR ".join(ors), args, negate=False)


def _add(q: Query, table: str, code: str, condition: str, args: list[Any], *, negate: bool) -> None:
    sql = _index(table, q.type, code, condition)
    if negate:
        sql = "NOT " + sql
    q.where(sql, *([q.type] if q.type else []), code, *args)


def _special(q: Query, name: str, values: list[str]) -> bool:
    """``_id`` and ``_lastUpdated``: columns of ``resources``."""
    if name == "_id":
        q.where(f"r.id IN ({', '.join('?' * len(values))})", *values)
        return True
    if name == "_lastUpdated":
        ors, args = [], []
        for v in values:
            prefix, rest = _prefix(v)
            lo, hi = _date_search_range(name, rest)
            clause, clause_args = range_clause(prefix, "r.last_updated", "r.last_updated", lo, hi)
            ors.append(clause)
            args += clause_args
        q.where("(" + " OR ".join(ors) + ")", *args)
        return True
    return False


def _control(q: Query, name: str, value: str) -> None:
    if name == "_count":
        if not value.isdigit():
            raise _bad(name, f"expected a whole number, got {value!r}")
        q.count = min(int(value), MAX_COUNT)
    elif name == "_cursor":
        if not value.isdigit():
            raise _bad(name, "this paging link is not valid: start the search again")
        q.cursor = int(value)
    elif name == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise _bad(name, f"expected none, estimate or accurate, got {value!r}")
        q.total = value
    elif name == "_summary":
        q.summary_count = value == "count"


def parse(rtype: str | None, params: list[tuple[str, str]], *, strict: bool = False) -> Query:
    """A Query for ``rtype`` (None: every type) from (name, value) pairs."""
    q = Query(rtype)
    known = definitions.search_parameters(rtype or "Resource")
    for raw_name, value in params:
        name, _, modifier = raw_name.partition(":")
        if name in _CONTROL:
            _control(q, name, value)
            if name not in ("_cursor",):
                q.applied.append((raw_name, value))
            continue
        if name in _IGNORED:
            continue
        values = split_or(value)
        if _special(q, name, values):
            q.applied.append((raw_name, value))
            continue
        sp = known.get(name)
        if sp is None or sp.type not in ("string", "token", "reference", "date", "number",
                                         "quantity", "uri"):
            if strict:
                raise _bad(raw_name, f"unknown or unsupported for {rtype or 'all types'}")
            continue
        if modifier == "missing":
            if value not in ("true", "false"):
                raise _bad(raw_name, f"expected true or false, got {value!r}")
            table = {"string": "idx_string", "token": "idx_token", "reference": "idx_reference",
                     "date": "idx_date", "number": "idx_number", "quantity": "idx_quantity",
                     "uri": "idx_uri"}[sp.type]
            _add(q, table, name, "1 = 1", [], negate=value == "true")
        elif sp.type == "string":
            _string(q, name, modifier, values)
        elif sp.type == "token":
            _token(q, name, modifier, values)
        elif sp.type == "reference":
            _reference(q, name, modifier, values, tuple(sp.targets))
        elif sp.type in ("date", "number", "quantity"):
            _ranged(q, name, {"date": "idx_date", "number": "idx_number",
                              "quantity": "idx_quantity"}[sp.type], values, sp.type)
        else:
            _uri(q, name, modifier, values)
        q.applied.append((raw_name, value))
    return q
