"""SQL dialects the view compiler writes: DuckDB and Spark SQL.

The compilers (:mod:`.sql_fhirpath` for FHIRPath, :mod:`.sql_view` for a view's rows) build
one query per view out of the same few constructs in either engine: lists with lambdas
(DuckDB ``list_transform``/``list_filter``, Spark's higher-order functions ``transform``/
``filter``), struct and list literals, item access, identifiers and string literals, casts,
a run-time error and a handful of string functions. A :class:`Dialect` spells each of them;
:data:`DUCKDB` and :data:`SPARK` are the two in use. Types are written in a neutral form, the
DuckDB one (``VARCHAR``, ``BIGINT``, ``DOUBLE``, ``BOOLEAN``, ``JSON``, ``T[]``), and spelled by
:meth:`Dialect.type`.

Both dialects also write the date/time comparison keys and boundaries the compiled
comparisons use (N1 §6.1.1 and §6.2 for Date, DateTime and Time; ``lowBoundary()``/
``highBoundary()`` of FHIRPath 2.0), as :mod:`songkhoe.fhir.fhirpath.temporal` computes them:
DuckDB through macros created on the connection (:data:`MACROS`), Spark written out where they
are used, each value bound once by a one-item ``transform``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


def _duckdb_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# -- date/time comparison (N1 §6.1.1 and §6.2 for Date, DateTime and Time) ---------------------

_DATE_RE = r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?"
_TIME_RE = r"(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
_DATETIME_RE = (r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(?:(\d{2})(?::(\d{2})(?::(\d{2})"
                r"(?:\.(\d+))?)?)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?")


def _seconds(sec: str, frac: str) -> str:
    """Seconds and milliseconds as one component (N1 §6.2), as a DOUBLE."""
    return (f"(TRY_CAST({sec} AS DOUBLE) + CASE WHEN {frac} = '' THEN 0 ELSE "
            f"TRY_CAST(left({frac} || '000', 3) AS DOUBLE) / 1000 END)")


#: DuckDB macros the compiled views use, created on the runner's connection (in this order).
#: A macro's parameters are substituted where they appear, so each is used once and bound to a
#: lambda parameter (``list_transform([x], lambda p: ...)[1]``) when it is needed several times.
MACROS: tuple[str, ...] = (
    # the comparison key of a dateTime with a time of day: the UTC components down to its
    # precision (no offset: UTC, as the reference), from t, its instant, and p, its parts
    ("CREATE OR REPLACE TEMP MACRO sof_dt_utc_key(t, p) AS list_transform([t], lambda u: "
     "CASE WHEN u IS NULL THEN NULL "
     "  WHEN p.mi = '' THEN [year(u), month(u), day(u), hour(u)]::DOUBLE[] "
     "  WHEN p.s = '' THEN [year(u), month(u), day(u), hour(u), minute(u)]::DOUBLE[] "
     "  ELSE [year(u), month(u), day(u), hour(u), minute(u)]::DOUBLE[] || "
     f"  [{_seconds('p.s', 'p.f')}] END)[1]"),
    # the comparison key of a FHIR date/dateTime/instant from its parts: dates as [y, m, d]
    # down to the precision present; NULL for months, days, hours, minutes or seconds out of
    # range (temporal._check)
    ("CREATE OR REPLACE TEMP MACRO sof_dt_parts(p) AS "
     "CASE WHEN coalesce(p.y, '') = '' THEN NULL "
     "  WHEN NOT ((p.mo = '' OR TRY_CAST(p.mo AS BIGINT) BETWEEN 1 AND 12) "
     "    AND (p.d = '' OR try(make_date(TRY_CAST(p.y AS BIGINT), TRY_CAST(p.mo AS BIGINT), "
     "      TRY_CAST(p.d AS BIGINT))) IS NOT NULL) "
     "    AND (p.h = '' OR TRY_CAST(p.h AS BIGINT) <= 23) "
     "    AND (p.mi = '' OR TRY_CAST(p.mi AS BIGINT) <= 59) "
     "    AND (p.s = '' OR TRY_CAST(p.s AS BIGINT) <= 60)) THEN NULL "
     "  WHEN p.mo = '' THEN [TRY_CAST(p.y AS DOUBLE)] "
     "  WHEN p.d = '' THEN [TRY_CAST(p.y AS DOUBLE), TRY_CAST(p.mo AS DOUBLE)] "
     "  WHEN p.h = '' THEN "
     "    [TRY_CAST(p.y AS DOUBLE), TRY_CAST(p.mo AS DOUBLE), TRY_CAST(p.d AS DOUBLE)] "
     "  ELSE sof_dt_utc_key(try(make_timestamp(TRY_CAST(p.y AS BIGINT), TRY_CAST(p.mo AS BIGINT), "
     "    TRY_CAST(p.d AS BIGINT), TRY_CAST(p.h AS BIGINT), "
     "    TRY_CAST(CASE WHEN p.mi = '' THEN '0' ELSE p.mi END AS BIGINT), 0.0)) "
     "    - to_minutes(CASE WHEN p.tz IN ('', 'Z') THEN 0 "
     "      ELSE (CASE WHEN left(p.tz, 1) = '-' THEN -1 ELSE 1 END) * "
     "      (TRY_CAST(substr(p.tz, 2, 2) AS BIGINT) * 60 + TRY_CAST(substr(p.tz, 5, 2) AS BIGINT)) "
     "      END), p) END"),
    ("CREATE OR REPLACE TEMP MACRO sof_dt_key(v) AS list_transform("
     f"[regexp_extract(v, {_duckdb_literal('^' + _DATETIME_RE + '$')}, "
     "['y', 'mo', 'd', 'h', 'mi', 's', 'f', 'tz'])], lambda p: sof_dt_parts(p))[1]"),
    ("CREATE OR REPLACE TEMP MACRO sof_date_key(v) AS list_transform("
     f"[regexp_extract(v, {_duckdb_literal('^' + _DATE_RE + '$')}, ['y', 'mo', 'd'])], "
     "lambda p: sof_dt_parts({'y': p.y, 'mo': p.mo, 'd': p.d, 'h': '', 'mi': '', 's': '', "
     "'f': '', 'tz': ''}))[1]"),
    ("CREATE OR REPLACE TEMP MACRO sof_time_key(v) AS list_transform("
     f"[regexp_extract(v, {_duckdb_literal('^' + _TIME_RE + '$')}, ['h', 'mi', 's', 'f'])], "
     "lambda p: CASE WHEN coalesce(p.h, '') = '' OR TRY_CAST(p.h AS BIGINT) > 23 "
     "  OR (p.mi <> '' AND TRY_CAST(p.mi AS BIGINT) > 59) "
     "  OR (p.s <> '' AND TRY_CAST(p.s AS BIGINT) > 60) THEN NULL "
     "  WHEN p.mi = '' THEN [TRY_CAST(p.h AS DOUBLE)] "
     "  WHEN p.s = '' THEN [TRY_CAST(p.h AS DOUBLE), TRY_CAST(p.mi AS DOUBLE)] "
     "  ELSE [TRY_CAST(p.h AS DOUBLE), TRY_CAST(p.mi AS DOUBLE), "
     f"    {_seconds('p.s', 'p.f')}] END)[1]"),
    # -1/0/1, or NULL when either is NULL or they differ only in precision (N1 §6.2)
    ("CREATE OR REPLACE TEMP MACRO sof_tcmp(a, b) AS list_transform([{'a': a, 'b': b}], "
     "lambda q: CASE WHEN q.a IS NULL OR q.b IS NULL THEN NULL "
     "  WHEN q.a[1:least(len(q.a), len(q.b))] < q.b[1:least(len(q.a), len(q.b))] THEN -1 "
     "  WHEN q.a[1:least(len(q.a), len(q.b))] > q.b[1:least(len(q.a), len(q.b))] THEN 1 "
     "  WHEN len(q.a) = len(q.b) THEN 0 END)[1]"),
    # lowBoundary()/highBoundary() of a date, dateTime or time text (FHIRPath 2.0, as
    # temporal.boundary): missing components at their least/greatest, a dateTime without an
    # offset at +14:00 (low) or -12:00 (high); NULL when the text is not a valid value
    ("CREATE OR REPLACE TEMP MACRO sof_month(p, high) AS "
     "CASE WHEN p.mo <> '' THEN p.mo WHEN high THEN '12' ELSE '01' END"),
    ("CREATE OR REPLACE TEMP MACRO sof_day(p, high) AS "
     "CASE WHEN p.d <> '' THEN p.d WHEN high THEN lpad(CAST(day(last_day(make_date("
     "TRY_CAST(p.y AS BIGINT), TRY_CAST(sof_month(p, high) AS BIGINT), 1))) AS VARCHAR), 2, "
     "'0') ELSE '01' END"),
    ("CREATE OR REPLACE TEMP MACRO sof_clock(p, high) AS "
     "concat(CASE WHEN p.h <> '' THEN p.h WHEN high THEN '23' ELSE '00' END, ':', "
     " CASE WHEN p.mi <> '' THEN p.mi WHEN high THEN '59' ELSE '00' END, ':', "
     " CASE WHEN p.s <> '' THEN p.s WHEN high THEN '59' ELSE '00' END, '.', "
     " CASE WHEN p.f <> '' THEN left(p.f || '000', 3) WHEN high THEN '999' ELSE '000' END)"),
    ("CREATE OR REPLACE TEMP MACRO sof_date_boundary(v, high) AS list_transform("
     f"[regexp_extract(v, {_duckdb_literal('^' + _DATE_RE + '$')}, ['y', 'mo', 'd'])], lambda p: "
     "CASE WHEN sof_date_key(v) IS NULL THEN NULL "
     " ELSE concat(p.y, '-', sof_month(p, high), '-', sof_day(p, high)) END)[1]"),
    ("CREATE OR REPLACE TEMP MACRO sof_dt_boundary(v, high) AS list_transform("
     f"[regexp_extract(v, {_duckdb_literal('^' + _DATETIME_RE + '$')}, "
     "['y', 'mo', 'd', 'h', 'mi', 's', 'f', 'tz'])], lambda p: "
     "CASE WHEN sof_dt_key(v) IS NULL THEN NULL "
     " ELSE concat(p.y, '-', sof_month(p, high), '-', sof_day(p, high), 'T', "
     "  sof_clock(p, high), CASE WHEN p.tz = '' THEN (CASE WHEN high THEN '-12:00' "
     "  ELSE '+14:00' END) WHEN p.tz = '-00:00' THEN '+00:00' ELSE p.tz END) END)[1]"),
    ("CREATE OR REPLACE TEMP MACRO sof_time_boundary(v, high) AS list_transform("
     f"[regexp_extract(v, {_duckdb_literal('^' + _TIME_RE + '$')}, ['h', 'mi', 's', 'f'])], "
     "lambda p: CASE WHEN sof_time_key(v) IS NULL THEN NULL "
     " ELSE sof_clock(p, high) END)[1]"),
)


def _spark_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _let(value: str, var: str, body: str) -> str:
    """``body`` with ``var`` bound to ``value`` (computed once)."""
    return f"get(transform(array({value}), {var} -> {body}), 0)"


def _spark_parts(v: str, pattern: str, groups: Sequence[str]) -> str:
    """The parts of the text ``v`` matched by ``pattern`` (anchored) as a STRUCT of y, mo, d,
    h, mi, s, f, tz; empty text for a part absent or not in ``groups``."""
    regex = _spark_literal("^" + pattern + "$")
    fields = []
    for name in ("y", "mo", "d", "h", "mi", "s", "f", "tz"):
        value = (f"regexp_extract({v}, {regex}, {groups.index(name) + 1})" if name in groups
                 else "''")
        fields.append(f"'{name}', {value}")
    return "named_struct(" + ", ".join(fields) + ")"


_DATETIME_PARTS = ("y", "mo", "d", "h", "mi", "s", "f", "tz")
_PATTERNS = {"dateTime": (_DATETIME_RE, _DATETIME_PARTS), "date": (_DATE_RE, ("y", "mo", "d")),
             "time": (_TIME_RE, ("h", "mi", "s", "f"))}


def _spark_int(part: str) -> str:
    return f"TRY_CAST({part} AS INT)"


def _spark_date_key(p: str) -> str:
    """The comparison key of a date or dateTime from its parts ``p``, as ``sof_dt_parts``."""
    def doubles(*parts: str) -> str:
        return "array(" + ", ".join(f"TRY_CAST({p}.{x} AS DOUBLE)" for x in parts) + ")"
    minute = f"CASE WHEN {p}.mi = '' THEN '0' ELSE {p}.mi END"
    offset = (f"CASE WHEN {p}.tz IN ('', 'Z') THEN 0 "
              f"ELSE (CASE WHEN left({p}.tz, 1) = '-' THEN -1 ELSE 1 END) * "
              f"(TRY_CAST(substr({p}.tz, 2, 2) AS INT) * 60 + "
              f"TRY_CAST(substr({p}.tz, 5, 2) AS INT)) END")
    instant = (f"timestampadd(MINUTE, -({offset}), try_make_timestamp_ntz("
               f"{_spark_int(p + '.y')}, {_spark_int(p + '.mo')}, {_spark_int(p + '.d')}, "
               f"{_spark_int(p + '.h')}, {_spark_int(minute)}, 0))")
    clock = "year(_tu), month(_tu), day(_tu), hour(_tu)"
    utc = (f"CASE WHEN _tu IS NULL THEN NULL "
           f"WHEN {p}.mi = '' THEN CAST(array({clock}) AS ARRAY<DOUBLE>) "
           f"WHEN {p}.s = '' THEN CAST(array({clock}, minute(_tu)) AS ARRAY<DOUBLE>) "
           f"ELSE concat(CAST(array({clock}, minute(_tu)) AS ARRAY<DOUBLE>), "
           f"array({_seconds(p + '.s', p + '.f')})) END")
    return (f"CASE WHEN coalesce({p}.y, '') = '' THEN NULL "
            f"WHEN NOT (({p}.mo = '' OR TRY_CAST({p}.mo AS BIGINT) BETWEEN 1 AND 12) "
            f"AND ({p}.d = '' OR try_make_timestamp_ntz({_spark_int(p + '.y')}, "
            f"{_spark_int(p + '.mo')}, {_spark_int(p + '.d')}, 0, 0, 0) IS NOT NULL) "
            f"AND ({p}.h = '' OR TRY_CAST({p}.h AS BIGINT) <= 23) "
            f"AND ({p}.mi = '' OR TRY_CAST({p}.mi AS BIGINT) <= 59) "
            f"AND ({p}.s = '' OR TRY_CAST({p}.s AS BIGINT) <= 60)) THEN NULL "
            f"WHEN {p}.mo = '' THEN {doubles('y')} "
            f"WHEN {p}.d = '' THEN {doubles('y', 'mo')} "
            f"WHEN {p}.h = '' THEN {doubles('y', 'mo', 'd')} "
            f"ELSE {_let(instant, '_tu', utc)} END")


def _spark_time_key(p: str) -> str:
    """The comparison key of a time from its parts ``p``, as ``sof_time_key``."""
    return (f"CASE WHEN coalesce({p}.h, '') = '' OR TRY_CAST({p}.h AS BIGINT) > 23 "
            f"OR ({p}.mi <> '' AND TRY_CAST({p}.mi AS BIGINT) > 59) "
            f"OR ({p}.s <> '' AND TRY_CAST({p}.s AS BIGINT) > 60) THEN NULL "
            f"WHEN {p}.mi = '' THEN array(TRY_CAST({p}.h AS DOUBLE)) "
            f"WHEN {p}.s = '' THEN array(TRY_CAST({p}.h AS DOUBLE), TRY_CAST({p}.mi AS DOUBLE)) "
            f"ELSE array(TRY_CAST({p}.h AS DOUBLE), TRY_CAST({p}.mi AS DOUBLE), "
            f"{_seconds(p + '.s', p + '.f')}) END")


def _spark_key_of_parts(p: str, kind: str) -> str:
    return _spark_time_key(p) if kind == "time" else _spark_date_key(p)


def _spark_with_parts(v: str, kind: str, body: str) -> str:
    """``body`` (over ``_tp``) with ``_tp`` bound to the parts of the text ``v``."""
    pattern, groups = _PATTERNS[kind]
    return _let(v, "_tv", _let(_spark_parts("_tv", pattern, groups), "_tp", body))


def _spark_boundary(v: str, kind: str, high: bool) -> str:
    """``lowBoundary()``/``highBoundary()`` of a date, dateTime or time text, as the
    ``sof_*_boundary`` macros."""
    p, h = "_tp", "true" if high else "false"
    month = f"CASE WHEN {p}.mo <> '' THEN {p}.mo WHEN {h} THEN '12' ELSE '01' END"
    last_day = (f"lpad(CAST(day(last_day(CAST(try_make_timestamp_ntz({_spark_int(p + '.y')}, "
                f"{_spark_int(month)}, 1, 0, 0, 0) AS DATE))) AS STRING), 2, '0')")
    day = f"CASE WHEN {p}.d <> '' THEN {p}.d WHEN {h} THEN {last_day} ELSE '01' END"
    clock = (f"concat(CASE WHEN {p}.h <> '' THEN {p}.h WHEN {h} THEN '23' ELSE '00' END, ':', "
             f"CASE WHEN {p}.mi <> '' THEN {p}.mi WHEN {h} THEN '59' ELSE '00' END, ':', "
             f"CASE WHEN {p}.s <> '' THEN {p}.s WHEN {h} THEN '59' ELSE '00' END, '.', "
             f"CASE WHEN {p}.f <> '' THEN left({p}.f || '000', 3) WHEN {h} THEN '999' "
             f"ELSE '000' END)")
    if kind == "time":
        text = clock
    elif kind == "date":
        text = f"concat({p}.y, '-', {month}, '-', {day})"
    else:
        zone = (f"CASE WHEN {p}.tz = '' THEN '{'-12:00' if high else '+14:00'}' "
                f"WHEN {p}.tz = '-00:00' THEN '+00:00' ELSE {p}.tz END")
        text = f"concat({p}.y, '-', {month}, '-', {day}, 'T', {clock}, {zone})"
    body = f"CASE WHEN ({_spark_key_of_parts(p, kind)}) IS NULL THEN NULL ELSE {text} END"
    return _spark_with_parts(v, kind, body)


# -- the dialects ------------------------------------------------------------------------------

class Dialect:
    """How one SQL engine spells the constructs of a compiled view. Lists are 1-based where a
    method takes a constant position (``item``), 0-based where it takes an expression
    (``item_at``), as FHIRPath indexes."""
    name: ClassVar[str]

    def quote(self, name: str) -> str:
        raise NotImplementedError

    def literal(self, text: str) -> str:
        raise NotImplementedError

    def unliteral(self, sql: str) -> str | None:
        """The text of a string literal made by :meth:`literal`, else None."""
        raise NotImplementedError

    def type(self, neutral: str) -> str:
        """A neutral type (``VARCHAR``, ``BIGINT[]``…) in this dialect."""
        raise NotImplementedError

    def struct_type(self, fields: Sequence[tuple[str, str]]) -> str:
        """A STRUCT type of (key, type in this dialect) fields."""
        raise NotImplementedError

    def list_type(self, item: str) -> str:
        raise NotImplementedError

    def cast(self, sql: str, neutral: str) -> str:
        return f"CAST({sql} AS {self.type(neutral)})"

    def field(self, sql: str, key: str) -> str:
        """The element ``key`` of the STRUCT ``sql`` (a name, or any expression)."""
        raise NotImplementedError

    def array(self, items: Sequence[str]) -> str:
        raise NotImplementedError

    def struct(self, fields: Sequence[tuple[str, str]]) -> str:
        """A STRUCT value of (name, SQL) fields."""
        raise NotImplementedError

    def transform(self, items: str, var: str, body: str, index: str | None = None) -> str:
        """``body`` for each item bound to ``var`` (and its position to ``index``, read with
        :meth:`position`)."""
        raise NotImplementedError

    def position(self, index: str) -> str:
        """The 0-based BIGINT position bound by ``transform(..., index=...)``."""
        raise NotImplementedError

    def filter(self, items: str, var: str, cond: str) -> str:
        raise NotImplementedError

    def flatten(self, lists: str) -> str:
        """A list of lists concatenated, NULL lists skipped."""
        raise NotImplementedError

    def present(self, items: str, var: str, value: str) -> str:
        """``value`` for each item, the NULL ones left out."""
        raise NotImplementedError

    def length(self, items: str) -> str:
        """The number of items; NULL or 0 for a NULL list (callers treat both alike)."""
        raise NotImplementedError

    def item(self, items: str, n: int) -> str:
        """The ``n``-th item (1-based; -1 the last), NULL when there is none."""
        raise NotImplementedError

    def item_at(self, items: str, index: str) -> str:
        """The item at the 0-based ``index`` (an expression that is never negative)."""
        raise NotImplementedError

    def skip(self, items: str, n: str) -> str:
        """The items after the first ``n`` (``n`` ≥ 0)."""
        raise NotImplementedError

    def take(self, items: str, n: str) -> str:
        """The first ``n`` items (``n`` ≥ 0)."""
        raise NotImplementedError

    def concat(self, lists: Sequence[str]) -> str:
        """Lists concatenated, a NULL list counting as empty."""
        raise NotImplementedError

    def contains(self, items: str, value: str) -> str:
        raise NotImplementedError

    def join(self, items: str, sep: str) -> str:
        raise NotImplementedError

    def error(self, message: str) -> str:
        """A run-time error with the text ``message`` (SQL)."""
        raise NotImplementedError

    def full_match(self, text: str, pattern: str) -> str:
        raise NotImplementedError

    def starts_with(self, text: str, prefix: str) -> str:
        raise NotImplementedError

    def trunc(self, number: str) -> str:
        """A DOUBLE truncated towards zero, as a DOUBLE."""
        raise NotImplementedError

    def fmod(self, a: str, b: str) -> str:
        """The remainder of ``a / b``, with the sign of ``a``."""
        raise NotImplementedError

    def unnest(self, items: str) -> str:
        """In a select list: one output row per item."""
        raise NotImplementedError

    def temporal_key(self, text: str, kind: str) -> str:
        """The comparison key (a DOUBLE list, NULL when invalid) of a ``date``, ``dateTime`` or
        ``time`` text, as :meth:`songkhoe.fhir.fhirpath.temporal.Temporal.key`."""
        raise NotImplementedError

    def tcmp(self, a: str, b: str) -> str:
        """-1, 0 or 1 comparing two keys; NULL when either is NULL or they differ only in
        precision (N1 §6.2)."""
        raise NotImplementedError

    def boundary(self, text: str, kind: str, high: bool) -> str:
        """``lowBoundary()`` (``high`` false) or ``highBoundary()`` of a date/time text."""
        raise NotImplementedError


class DuckDBDialect(Dialect):
    name = "duckdb"
    _MACROS: ClassVar[dict[str, str]] = {"date": "sof_date", "dateTime": "sof_dt",
                                         "time": "sof_time"}

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def literal(self, text: str) -> str:
        return _duckdb_literal(text)

    def unliteral(self, sql: str) -> str | None:
        if len(sql) >= 2 and sql[0] == "'" and sql[-1] == "'" and \
                "'" not in sql[1:-1].replace("''", ""):
            return sql[1:-1].replace("''", "'")
        return None

    def type(self, neutral: str) -> str:
        return neutral

    def struct_type(self, fields: Sequence[tuple[str, str]]) -> str:
        return "STRUCT(" + ", ".join(f"{self.quote(k)} {t}" for k, t in fields) + ")"

    def list_type(self, item: str) -> str:
        return item + "[]"

    def field(self, sql: str, key: str) -> str:
        if _is_name(sql):
            return f"{sql}.{self.quote(key)}"
        return f"struct_extract({sql}, {self.literal(key)})"

    def array(self, items: Sequence[str]) -> str:
        return "[" + ", ".join(items) + "]"

    def struct(self, fields: Sequence[tuple[str, str]]) -> str:
        return "{" + ", ".join(f"{self.literal(n)}: {sql}" for n, sql in fields) + "}"

    def transform(self, items: str, var: str, body: str, index: str | None = None) -> str:
        params = var if index is None else f"{var}, {index}"
        return f"list_transform({items}, lambda {params}: {body})"

    def position(self, index: str) -> str:
        return f"CAST({index} - 1 AS BIGINT)"

    def filter(self, items: str, var: str, cond: str) -> str:
        return f"list_filter({items}, lambda {var}: {cond})"

    def flatten(self, lists: str) -> str:
        return f"flatten({lists})"

    def present(self, items: str, var: str, value: str) -> str:
        return f"[{value} for {var} in {items} if {value} IS NOT NULL]"

    def length(self, items: str) -> str:
        return f"len({items})"

    def item(self, items: str, n: int) -> str:
        return f"({items})[{n}]"

    def item_at(self, items: str, index: str) -> str:
        return f"({items})[{index} + 1]"

    def skip(self, items: str, n: str) -> str:
        return f"({items})[{n} + 1:]"

    def take(self, items: str, n: str) -> str:
        return f"({items})[1:{n}]"

    def concat(self, lists: Sequence[str]) -> str:
        return "list_concat(" + ", ".join(lists) + ")"

    def contains(self, items: str, value: str) -> str:
        return f"list_contains({items}, {value})"

    def join(self, items: str, sep: str) -> str:
        return f"array_to_string({items}, {sep})"

    def error(self, message: str) -> str:
        return f"error({message})"

    def full_match(self, text: str, pattern: str) -> str:
        return f"regexp_full_match({text}, {self.literal(pattern)})"

    def starts_with(self, text: str, prefix: str) -> str:
        return f"starts_with({text}, {prefix})"

    def trunc(self, number: str) -> str:
        return f"trunc({number})"

    def fmod(self, a: str, b: str) -> str:
        return f"fmod({a}, {b})"

    def unnest(self, items: str) -> str:
        return f"unnest({items})"

    def temporal_key(self, text: str, kind: str) -> str:
        return f"{self._MACROS[kind]}_key({text})"

    def tcmp(self, a: str, b: str) -> str:
        return f"sof_tcmp({a}, {b})"

    def boundary(self, text: str, kind: str, high: bool) -> str:
        return f"{self._MACROS[kind]}_boundary({text}, {'true' if high else 'false'})"


class SparkDialect(Dialect):
    """Spark SQL (3.4 and later; ANSI mode on or off): higher-order functions over arrays,
    positions read with ``get``/``try_element_at`` so that a missing item is NULL; the
    date/time keys written out where they are used (nothing to create on a session)."""
    name = "spark"
    _TYPES: ClassVar[dict[str, str]] = {"VARCHAR": "STRING", "JSON": "STRING",
                                        "BIGINT": "BIGINT", "DOUBLE": "DOUBLE",
                                        "BOOLEAN": "BOOLEAN"}

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def literal(self, text: str) -> str:
        return _spark_literal(text)

    def unliteral(self, sql: str) -> str | None:
        if len(sql) < 2 or sql[0] != "'" or sql[-1] != "'":
            return None
        out, i, body = [], 0, sql[1:-1]
        while i < len(body):
            ch = body[i]
            if ch == "'":
                return None
            if ch == "\\":
                if i + 1 == len(body) or body[i + 1] not in "\\'":
                    return None
                i += 1
                ch = body[i]
            out.append(ch)
            i += 1
        return "".join(out)

    def type(self, neutral: str) -> str:
        if neutral.endswith("[]"):
            return self.list_type(self.type(neutral[:-2]))
        return self._TYPES.get(neutral, neutral)

    def struct_type(self, fields: Sequence[tuple[str, str]]) -> str:
        return "STRUCT<" + ", ".join(f"{self.quote(k)}: {t}" for k, t in fields) + ">"

    def list_type(self, item: str) -> str:
        return f"ARRAY<{item}>"

    def field(self, sql: str, key: str) -> str:
        if _is_name(sql):
            return f"{sql}.{self.quote(key)}"
        return f"({sql}).{self.quote(key)}"

    def array(self, items: Sequence[str]) -> str:
        return "array(" + ", ".join(items) + ")"

    def struct(self, fields: Sequence[tuple[str, str]]) -> str:
        return "named_struct(" + ", ".join(f"{self.literal(n)}, {sql}"
                                           for n, sql in fields) + ")"

    def transform(self, items: str, var: str, body: str, index: str | None = None) -> str:
        params = var if index is None else f"({var}, {index})"
        return f"transform({items}, {params} -> {body})"

    def position(self, index: str) -> str:
        return f"CAST({index} AS BIGINT)"

    def filter(self, items: str, var: str, cond: str) -> str:
        return f"filter({items}, {var} -> {cond})"

    def flatten(self, lists: str) -> str:
        # Spark's flatten is NULL when one of the lists is
        return f"flatten(filter({lists}, _l -> _l IS NOT NULL))"

    def present(self, items: str, var: str, value: str) -> str:
        return f"filter(transform({items}, {var} -> {value}), _p -> _p IS NOT NULL)"

    def length(self, items: str) -> str:
        # 0 for NULL: size(NULL) is NULL or -1 (ANSI mode off, spark.sql.legacy.sizeOfNull),
        # and nullif() would compute the list twice
        return f"greatest(size({items}), 0)"

    def item(self, items: str, n: int) -> str:
        if n < 0:
            return f"try_element_at({items}, {n})"
        return f"get({items}, {n - 1})"

    def item_at(self, items: str, index: str) -> str:
        return f"get({items}, CAST({index} AS INT))"

    def skip(self, items: str, n: str) -> str:
        return f"filter({items}, (_s, _i) -> _i >= {n})"

    def take(self, items: str, n: str) -> str:
        return f"filter({items}, (_s, _i) -> _i < {n})"

    def concat(self, lists: Sequence[str]) -> str:
        return "concat(" + ", ".join(f"coalesce({x}, array())" for x in lists) + ")"

    def contains(self, items: str, value: str) -> str:
        return f"array_contains({items}, {value})"

    def join(self, items: str, sep: str) -> str:
        return f"array_join({items}, {sep})"

    def error(self, message: str) -> str:
        return f"raise_error({message})"

    def full_match(self, text: str, pattern: str) -> str:
        return f"({text} RLIKE {self.literal('^(?:' + pattern + ')$')})"

    def starts_with(self, text: str, prefix: str) -> str:
        return f"startswith({text}, {prefix})"

    def trunc(self, number: str) -> str:
        return (f"(CASE WHEN {number} >= 0 THEN CAST(floor({number}) AS DOUBLE) "
                f"ELSE CAST(ceil({number}) AS DOUBLE) END)")

    def fmod(self, a: str, b: str) -> str:
        return f"({a} % {b})"

    def unnest(self, items: str) -> str:
        return f"explode({items})"

    def temporal_key(self, text: str, kind: str) -> str:
        return _spark_with_parts(text, kind, _spark_key_of_parts("_tp", kind))

    def tcmp(self, a: str, b: str) -> str:
        shared = "slice({0}, 1, least(size(_tq.a), size(_tq.b)))"
        a_, b_ = shared.format("_tq.a"), shared.format("_tq.b")
        return _let(f"named_struct('a', {a}, 'b', {b})", "_tq",
                    f"CASE WHEN _tq.a IS NULL OR _tq.b IS NULL THEN NULL "
                    f"WHEN {a_} < {b_} THEN -1 WHEN {a_} > {b_} THEN 1 "
                    f"WHEN size(_tq.a) = size(_tq.b) THEN 0 END")

    def boundary(self, text: str, kind: str, high: bool) -> str:
        return _spark_boundary(text, kind, high)


def _is_name(sql: str) -> bool:
    return sql.isidentifier() and sql.isascii()


DUCKDB = DuckDBDialect()
SPARK = SparkDialect()
