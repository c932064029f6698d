"""SQL-on-FHIR v2 ViewDefinitions run by DuckDB: the view compiled to one SQL query over NDJSON.

Implements the Processing Algorithm of SQL on FHIR v2
(https://build.fhir.org/ig/FHIR/sql-on-fhir-v2/processing_model.html, "Process a Resource")
with the semantics of the ViewDefinition page
(https://build.fhir.org/ig/FHIR/sql-on-fhir-v2/StructureDefinition-ViewDefinition.html:
"Unnesting semantics", "Multiple Select Expressions", "Unions", "Column Ordering", "Where";
the column ``type`` and ``collection`` rules) exactly as the reference evaluator
:mod:`.rows` does, but as one DuckDB query so that the work happens in DuckDB's vectorised,
parallel engine:

* the resources are read once, by ``read_json`` with an explicit ``columns`` type holding only
  the elements the view reaches (the R4 model gives which repeat and which are complex; see
  :mod:`.sql_fhirpath`), and filtered on ``resourceType``; a source whose other resource types
  do not fit that type (a mixed file) is read instead with ``read_ndjson_objects``, filtered,
  then ``json_transform``-ed (``reader="json_transform"`` asks for this at once). The typed
  read refuses an element that does not have its R4 JSON shape (an object where the model
  says array); ``json_transform`` reads it as empty;
* each ``where`` is a SQL condition (no result: no row; a result that is not one boolean: an
  error, like the reference);
* each select is a SQL expression giving the rows of one resource as a ``LIST`` of
  ``STRUCT``s: ``forEach`` is a ``list_transform`` over the items with their index (the
  ``%rowIndex``), ``forEachOrNull`` adds the empty-focus evaluation or a row of nulls when
  there is no item (the LEFT JOIN of the spec), nested selects are a cross product,
  ``unionAll`` a ``list_concat``; the list is ``unnest``-ed into rows, which keeps the order
  the reference produces. A view without any of these is a plain projection;
* ``repeat`` is compiled for a fixed number of levels, each level's items visited by one
  lambda that adds the item and then its children's traversal (depth first, paths in order);
  the items of every level are projected onto what the columns read. A run that meets items
  deeper than compiled for stops and is compiled again for more levels (4, then 8); deeper
  still, it runs on the reference evaluator with the same column types;
* columns are cast to their declared ``type`` (string-like, date and time types as text
  ``VARCHAR``, ``integer``/``positiveInt``/``unsignedInt``/``integer64`` as ``BIGINT``,
  ``decimal`` as ``DOUBLE``, ``boolean``) or to the type of their expression; ``collection``
  columns are lists (``[]`` when empty); a column that is not a collection and gets several
  values stops the run with a :class:`~.rows.ViewEvaluationError`, as in the reference.

A view this compiler cannot translate (see :mod:`.sql_fhirpath` for what it does not model;
a ``repeat`` path that is not a path of elements) is not refused: it runs through the reference evaluator inside DuckDB, as a
Python function returning each resource's rows (``CompiledView.fallback`` says why), so every
valid view gives the reference's rows, only more slowly.

    table = run_view(view, "Observation.ndjson")             # a pyarrow.Table
    rows = to_parquet(view, ["a.ndjson", "b.ndjson"], "observations.parquet")
    compile_view(view).fallback                               # None when fully compiled
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
from duckdb.func import ARROW

from songkhoe.fhir.fhirpath import syntax as s
from songkhoe.fhir.fhirpath.parser import parse

from .rows import ViewEvaluationError, resource_rows
from .sql_fhirpath import (
    MACROS,
    ExpressionCompiler,
    SchemaNode,
    Scope,
    UnknownElement,
    Unsupported,
    Val,
    error_sql,
    literal,
    quote,
    sql_type_of,
)
from .viewdefinition import Column, OutputColumn, Select, ViewDefinition, Where, parse_view

#: how a source is read: typed ``read_json``, or per-object ``json_transform`` after filtering
TYPED, FILTERED, FALLBACK = "read_json", "json_transform", "reference"
#: the depths a ``repeat`` is compiled for, in turn (deeper data runs on the reference): DuckDB
#: takes twice as long to bind each further level of nested lambdas (0.6 s at 12 levels)
REPEAT_DEPTHS = (4, 8)
#: the longest query compiled for a deeper ``repeat``: the STRUCT type read for a traversal
#: whose paths branch (``item`` and ``answer.item``) doubles with every level
MAX_QUERY = 200_000
#: the start of the reason of the error a compiled ``repeat`` stops with on deeper data
TOO_DEEP = "the repeat traversal goes deeper than"

T = TypeVar("T")
Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Iterable[Mapping[str, Any]]

_ARROW_TYPES = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(),
                "BOOLEAN": pa.bool_(), "JSON": pa.string()}


@dataclass(frozen=True)
class CompiledView:
    """A view ready for DuckDB: the query over a source (:meth:`sql`), the output columns with
    their DuckDB types, and ``fallback``: None when the view compiled to SQL, else why it runs
    on the reference evaluator."""
    view: ViewDefinition
    columns: tuple[tuple[str, str], ...]
    fallback: str | None
    schema: SchemaNode | None
    _select: str  # the select list over the resources (``r``)
    _outer: str | None  # the select list over its unnested rows (``_u``), if rows are unnested
    _where: tuple[str, ...]

    @property
    def uses_macros(self) -> bool:
        """Whether the query calls the :data:`~.sql_fhirpath.MACROS` (date/time comparison)."""
        return any("sof_" in part for part in (self._select, self._outer or "", *self._where))

    def sql(self, files: Sequence[str], reader: str = TYPED, udf: str = "") -> str:
        """The query giving the view's rows from NDJSON ``files`` read the ``reader`` way
        (``udf``: the name of the registered reference function, for a fallback view)."""
        paths = "[" + ", ".join(literal(f) for f in files) + "]"
        rtype = literal(self.view.resource)
        if reader == FALLBACK:
            source = (f"(SELECT {udf}(CAST(json AS VARCHAR)) AS _rows FROM "
                      f"read_ndjson_objects({paths}) WHERE "
                      f"json_extract_string(json, '$.resourceType') = {rtype}) AS _src")
            names = ", ".join(f"_u.{quote(n)} AS {quote(n)}" for n, _ in self.columns)
            return f"SELECT {names} FROM (SELECT unnest(_rows) AS _u FROM {source}) AS _s"
        assert self.schema is not None
        if reader == TYPED:
            cols = "{" + ", ".join(f"{literal(k)}: {literal(t)}"
                                   for k, t in self.schema.columns().items()) + "}"
            source = (f"read_json({paths}, format='newline_delimited', records=true, "
                      f"columns={cols}) AS r")
            conditions = [f"r.\"resourceType\" = {rtype}", *self._where]
        else:
            structure = literal(json.dumps(self.schema.json_structure()))
            source = (f"(SELECT json_transform(json, {structure}) AS r FROM "
                      f"read_ndjson_objects({paths}) WHERE "
                      f"json_extract_string(json, '$.resourceType') = {rtype}) AS _src")
            conditions = list(self._where)
        where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
        if self._outer is None:
            return f"SELECT {self._select} FROM {source}{where}"
        return f"SELECT {self._outer} FROM (SELECT {self._select} FROM {source}{where}) AS _s"


def compile_view(view: ViewDefinition | Mapping[str, Any],
                 repeat_depth: int = REPEAT_DEPTHS[0]) -> CompiledView:
    """The view compiled for DuckDB (parsed first when given as JSON: ViewDefinitionError if
    invalid); a view the compiler cannot translate comes back with ``fallback`` set.
    ``repeat_depth``: the levels a ``repeat`` traversal is compiled for (a run that meets
    deeper items stops with an error saying so, and the runner compiles deeper)."""
    if not isinstance(view, ViewDefinition):
        view = parse_view(view)
    try:
        return _ViewCompiler(view, repeat_depth).compile()
    except Unsupported as exc:
        return _fallback_view(view, str(exc))


def _fallback_view(view: ViewDefinition, reason: str,
                   columns: tuple[tuple[str, str], ...] | None = None) -> CompiledView:
    """The view run on the reference evaluator; ``columns``: their types (default: the
    declared ones, else the static type of the expression, else JSON)."""
    if columns is None:
        columns = tuple((c.name, _fallback_type(view, c)) for c in view.columns)
    return CompiledView(view, columns, reason, None, "", None, ())


@dataclass(frozen=True)
class ViewResult:
    """The rows of a run, and how they were made: ``reader`` is ``read_json`` (typed read),
    ``json_transform`` (a mixed source, filtered first) or ``reference`` (the fallback)."""
    table: pa.Table
    compiled: CompiledView
    reader: str


def execute(view: ViewDefinition | Mapping[str, Any], source: Source, *,
            con: duckdb.DuckDBPyConnection | None = None,
            reader: str | None = None) -> ViewResult:
    """Run ``view`` over ``source``: an NDJSON file path (plain or compressed as DuckDB
    reads it), a list of paths, or resources as dicts. ``reader``: ``json_transform`` to
    read filtered from the start (a source known to mix resource types), default: typed, then
    filtered if the source does not fit. ViewEvaluationError when a resource breaks one of
    the view's rules."""
    if not isinstance(view, ViewDefinition):
        view = parse_view(view)
    with _files(source) as files, _connection(con) as db:
        def fetch(sql: str) -> pa.Table:
            return db.sql(sql).to_arrow_table()
        table, how, compiled = _run(db, view, files, fetch, reader)
    return ViewResult(table, compiled, how)


def run_view(view: ViewDefinition | Mapping[str, Any], source: Source, *,
             con: duckdb.DuckDBPyConnection | None = None,
             reader: str | None = None) -> pa.Table:
    """The rows of ``view`` over ``source`` as an Arrow table, columns in the view's order."""
    return execute(view, source, con=con, reader=reader).table


def to_parquet(view: ViewDefinition | Mapping[str, Any], source: Source,
               out_path: str | os.PathLike[str], *,
               con: duckdb.DuckDBPyConnection | None = None, reader: str | None = None) -> int:
    """Write the rows of ``view`` over ``source`` to a Parquet file with DuckDB's ``COPY``;
    the number of rows written."""
    if not isinstance(view, ViewDefinition):
        view = parse_view(view)
    target = literal(os.fspath(out_path))
    with _files(source) as files, _connection(con) as db:
        def copy(sql: str) -> int:
            result = db.execute(f"COPY ({sql}) TO {target} (FORMAT parquet)").fetchall()
            return int(result[0][0]) if result else 0
        count, _, _ = _run(db, view, files, copy, reader)
    return count


# -- running -------------------------------------------------------------------------------------

def _run(db: duckdb.DuckDBPyConnection, view: ViewDefinition, files: list[str],
         action: Callable[[str], T], reader: str | None) -> tuple[T, str, CompiledView]:
    """``action(query)`` for the view's query over ``files``; with how the rows were made and
    the view as compiled. A ``repeat`` that meets deeper data than compiled for is compiled
    again for more levels, and beyond the last runs on the reference evaluator."""
    if reader not in (None, TYPED, FILTERED):
        raise ValueError(f"reader must be {TYPED!r} or {FILTERED!r}, not {reader!r}")
    tried = REPEAT_DEPTHS[0]
    for depth in REPEAT_DEPTHS:
        compiled = compile_view(view, depth)
        if depth > REPEAT_DEPTHS[0] and compiled.fallback is None and \
                len(compiled.sql(files)) > MAX_QUERY:
            break
        try:
            result, how = _run_compiled(db, compiled, files, action, reader)
            return result, how, compiled
        except ViewEvaluationError as exc:
            if not exc.reason.startswith(TOO_DEEP):
                raise
        tried = depth
    # the same column types as compiled, so that the output does not depend on the data
    compiled = _fallback_view(view, f"{TOO_DEEP} the {tried} levels compiled for this source",
                              compiled.columns)
    result, how = _run_compiled(db, compiled, files, action, reader)
    return result, how, compiled


def _run_compiled(db: duckdb.DuckDBPyConnection, compiled: CompiledView, files: list[str],
                  action: Callable[[str], T], reader: str | None) -> tuple[T, str]:
    if compiled.fallback is not None:
        name = f"sof_reference_{id(compiled):x}"
        db.create_function(name, _reference_function(compiled), ["VARCHAR"],
                           _rows_type(compiled.columns), type=ARROW, side_effects=False)
        try:
            return _guard(lambda: action(compiled.sql(files, FALLBACK, name))), FALLBACK
        finally:
            db.remove_function(name)
    if compiled.uses_macros:
        db.execute(";\n".join(MACROS))
    if reader != FILTERED:
        try:
            return _guard(lambda: action(compiled.sql(files, TYPED))), TYPED
        except duckdb.InvalidInputException as exc:
            if reader == TYPED or "JSON transform error" not in str(exc):
                raise
    # resources of other types whose elements do not fit the view's reading of them
    return _guard(lambda: action(compiled.sql(files, FILTERED))), FILTERED


def _guard(run: Callable[[], T]) -> T:
    """``run()``, with the view's run-time errors raised as ViewEvaluationError."""
    try:
        return run()
    except duckdb.Error as exc:
        text = str(exc)
        mark = text.find("\x1fsof\x1f")
        if mark < 0:
            raise
        parts = text[mark:].split("\x1f")
        raise ViewEvaluationError(parts[2], parts[3], parts[4].rstrip()) from None


@contextmanager
def _connection(con: duckdb.DuckDBPyConnection | None) -> Iterator[duckdb.DuckDBPyConnection]:
    if con is not None:
        yield con
        return
    db = duckdb.connect()
    try:
        yield db
    finally:
        db.close()


@contextmanager
def _files(source: Source) -> Iterator[list[str]]:
    """The NDJSON files of a source; resources given as dicts are written to a temporary
    file first, so that they are read exactly as files are."""
    if isinstance(source, (str, os.PathLike)):
        yield [os.fspath(source)]
        return
    items = list(source)
    if items and all(isinstance(i, (str, os.PathLike)) for i in items):
        yield [os.fspath(i) for i in items]  # type: ignore[arg-type]
        return
    with tempfile.TemporaryDirectory(prefix="sof-") as tmp:
        path = Path(tmp) / "resources.ndjson"
        with path.open("w", encoding="utf-8") as out:
            for resource in items:
                if not isinstance(resource, Mapping):
                    raise TypeError(f"a resource must be a dict parsed from FHIR JSON, not "
                                    f"{type(resource).__name__}")
                out.write(_json_text(resource))
                out.write("\n")
        yield [str(path)]


def _json_text(value: Any) -> str:
    """JSON text of parsed JSON, decimals (``Decimal``) written exactly as they are."""
    if isinstance(value, Mapping):
        return "{" + ",".join(json.dumps(str(k)) + ":" + _json_text(v)
                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json_text(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


# -- the fallback: the reference evaluator as a DuckDB function ----------------------------------

def _fallback_type(view: ViewDefinition, col: OutputColumn) -> str:
    """The DuckDB type of a column the reference evaluator fills: its declared type, else the
    static type of its expression, else JSON."""
    for t in (col.type, _static_type(view, col)):
        if t is not None:
            sql = sql_type_of(t)
            if sql is not None:
                return sql + ("[]" if col.collection else "")
    return "JSON[]" if col.collection else "JSON"


def _static_type(view: ViewDefinition, col: OutputColumn) -> str | None:
    def find(selects: Iterable[Select]) -> Column | None:
        for sel in selects:
            for c in sel.columns:
                if c.name == col.name:
                    return c
            hit = find(sel.selects) or find(sel.union_all)
            if hit is not None:
                return hit
        return None
    column = find(view.selects)
    return column.expression.static_type if column is not None else None


def _rows_type(columns: tuple[tuple[str, str], ...]) -> str:
    return "STRUCT(" + ", ".join(f"{quote(n)} {t}" for n, t in columns) + ")[]"


def _arrow_type(sql: str) -> pa.DataType:
    if sql.endswith("[]"):
        return pa.list_(_arrow_type(sql[:-2]))
    return _ARROW_TYPES[sql]


def _reference_function(compiled: CompiledView) -> Any:
    """A DuckDB (Arrow) function: JSON text of a resource → its rows, by :func:`.rows.
    resource_rows`."""
    view = compiled.view
    columns = compiled.columns
    row_type = pa.list_(pa.struct([(n, _arrow_type(t)) for n, t in columns]))

    def rows(texts: pa.Array) -> pa.Array:
        out = []
        for text in texts.to_pylist():
            resource = json.loads(text, parse_float=Decimal)
            ref = f"{view.resource}/{resource.get('id')}"
            try:
                produced = resource_rows(view, resource)
            except ViewEvaluationError as exc:
                reason = exc.reason.removesuffix(f" (in {exc.resource})")
                raise ValueError(f"\x1fsof\x1f{exc.path}\x1f{reason}\x1f{exc.resource}") \
                    from None
            out.append([{n: _cell(row[n], t, n, ref) for n, t in columns} for row in produced])
        return pa.array(out, type=row_type)
    return rows


def _cell(value: Any, sql: str, name: str, ref: str) -> Any:
    if sql.endswith("[]"):
        return [_cell(v, sql[:-2], name, ref) for v in value]
    if value is None:
        return None
    if sql == "JSON":
        return json.dumps(_plain(value), ensure_ascii=False)
    ok = {"VARCHAR": type(value) is str, "BOOLEAN": type(value) is bool,
          "BIGINT": type(value) is int,
          "DOUBLE": type(value) in (int, float, Decimal)}[sql]
    if not ok:
        raise ValueError(f"\x1fsof\x1f{name}\x1fcolumn '{name}' is read as {sql}, got "
                         f"{value!r}\x1f{ref}")
    return float(value) if sql == "DOUBLE" else value


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) \
            else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# -- the view compiler ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Rows:
    """The rows of a select for one focus, columns ``names`` in output order: ``cols`` are
    the (name, SQL) of columns with one value for all its rows, ``items`` the SQL of a LIST of
    STRUCTs holding the other columns, one per row (None: exactly one row)."""
    names: tuple[str, ...]
    cols: tuple[tuple[str, str], ...] = ()
    items: str | None = None

    def struct(self) -> str:
        """The one row as a STRUCT (``items`` is None)."""
        return "{" + ", ".join(f"{literal(n)}: {sql}" for n, sql in self.cols) + "}"

    def as_list(self, x: ExpressionCompiler) -> str:
        """All the rows as a LIST of STRUCTs (fields in output order)."""
        if self.items is None:
            return f"[{self.struct()}]"
        if not self.cols:
            return self.items
        q = x.var()
        fixed = dict(self.cols)
        fields = ", ".join(f"{literal(n)}: {fixed[n] if n in fixed else f'{q}.{quote(n)}'}"
                           for n in self.names)
        return f"list_transform({self.items}, lambda {q}: {{{fields}}})"


class _ViewCompiler:
    def __init__(self, view: ViewDefinition, repeat_depth: int) -> None:
        self.view = view
        self.depth = repeat_depth
        self.x = ExpressionCompiler(view.resource, {c.name: c for c in view.constants})
        self.types: dict[str, str] = {}  # output column → DuckDB type
        self.collections = {c.name: c.collection for c in view.columns}

    def compile(self) -> CompiledView:
        rows: _Rows | None = None
        for sel in self.view.selects:
            r = self.select(sel, self.x.root, "CAST(0 AS BIGINT)")
            rows = r if rows is None else self.product(rows, r)
        assert rows is not None
        where = tuple(self.where(w) for w in self.view.where)
        names = self.view.column_names
        columns = tuple((n, self.types[n]) for n in names)
        fixed = dict(rows.cols)
        if rows.items is None:
            select = ", ".join(f"{fixed[n]} AS {quote(n)}" for n in names)
            return CompiledView(self.view, columns, None, self.x.schema, select, None, where)
        # the columns with one value per resource are computed once, beside the unnest
        inner = ", ".join([f"{sql} AS {quote(n)}" for n, sql in rows.cols] +
                          [f"unnest({rows.items}) AS _u"])
        outer = ", ".join(quote(n) if n in fixed else f"_u.{quote(n)} AS {quote(n)}"
                          for n in names)
        return CompiledView(self.view, columns, None, self.x.schema, inner, outer, where)

    # -- where

    def where(self, w: Where) -> str:
        location = w.location + ".path"
        v = self.x.compile(w.path, Scope(self.x.root, "CAST(0 AS BIGINT)", location))
        err = error_sql(location, "a where path must give one boolean", self.view.resource)
        if v.fhir_type != "boolean":
            return f"(CASE WHEN {self.x.exists(v)} THEN {err} ELSE false END)"
        if v.many:
            return f"(CASE WHEN len({v.sql}) > 1 THEN {err} ELSE coalesce(({v.sql})[1], false) END)"
        return f"coalesce({v.sql}, false)"

    # -- selects

    def select(self, sel: Select, focus: Val, row_index: str) -> _Rows:
        if sel.repeat:
            return self.repeat(sel, focus)
        if sel.for_each is None and sel.for_each_or_null is None:
            return self.body(sel, focus, row_index)
        or_null = sel.for_each is None
        text = sel.for_each_or_null if or_null else sel.for_each
        assert text is not None
        location = sel.location + (".forEachOrNull" if or_null else ".forEach")
        items = self.x.compile(text.text, Scope(focus, row_index, location))
        zero = "CAST(0 AS BIGINT)"
        names = tuple(c.name for c in sel.output)
        if not items.many:
            if items.guard is not None and items.base is not None and not or_null:
                # forEach: "where(...)" on one item: the rows, only when the guard holds
                base = replace(items, sql=items.base, guard=None, base=None)
                rows = self.body(sel, base, zero)
                return _Rows(names, items=f"(CASE WHEN {items.guard} THEN "
                                          f"{rows.as_list(self.x)} ELSE [] END)")
            rows = self.body(sel, items, zero)
            if or_null:
                if rows.items is None:
                    return rows  # one row: on an empty focus its columns are empty
                return _Rows(names, items=f"(CASE WHEN {items.sql} IS NULL AND "
                                          f"coalesce(len({rows.as_list(self.x)}), 0) = 0 THEN "
                                          f"[{self.nulls(sel)}] ELSE {rows.as_list(self.x)} END)")
            return _Rows(names, items=f"(CASE WHEN {items.sql} IS NULL THEN [] ELSE "
                                      f"{rows.as_list(self.x)} END)")
        it, i = self.x.var(), self.x.var()
        item = Val(it, False, items.fhir_type, items.node)
        rows = self.body(sel, item, f"CAST({i} - 1 AS BIGINT)")
        if rows.items is None:
            each = f"list_transform({items.sql}, lambda {it}, {i}: {rows.struct()})"
        else:
            each = (f"flatten(list_transform({items.sql}, lambda {it}, {i}: "
                    f"{rows.as_list(self.x)}))")
        if not or_null:
            return _Rows(names, items=f"coalesce({each}, [])")
        empty = Val(f"({items.sql})[1]", False, items.fhir_type, items.node)
        none = self.body(sel, empty, zero)
        if none.items is None:
            otherwise = none.as_list(self.x)
        else:
            found = none.as_list(self.x)
            otherwise = (f"(CASE WHEN coalesce(len({found}), 0) > 0 THEN {found} "
                         f"ELSE [{self.nulls(sel)}] END)")
        return _Rows(names, items=f"(CASE WHEN coalesce(len({items.sql}), 0) > 0 THEN {each} "
                                  f"ELSE {otherwise} END)")

    def repeat(self, sel: Select, focus: Val) -> _Rows:
        """``repeat``: every item its paths reach from the focus, depth first (an item, then
        what the paths reach from it, paths in order), each a focus of the select's columns
        with its position as ``%rowIndex``. Compiled for ``self.depth`` levels: each level's
        children are the paths' results concatenated, visited by one lambda that adds the
        item and then its own children's traversal; the last level fails the query if its
        items have children. Items of all levels are projected onto what the columns read
        (one STRUCT type for every level)."""
        location = sel.location + ".repeat"
        for path in sel.repeat:
            if any(not isinstance(n, (s.Identifier, s.Invoke)) for n in s.walk(parse(path.text))):
                raise Unsupported(f"{location}: {path.text!r} is not a path of elements")
        levels: list[tuple[Val, str]] = []  # the children of each level, the lambda's item
        current = focus
        for _ in range(self.depth + 1):
            children = self.repeat_children(sel, current, location)
            if children is None:
                if not levels:
                    raise Unsupported(f"{location}: no path names an element of "
                                      f"{focus.fhir_type}")
                break  # the paths name no element of the items' type: no deeper level
            if levels and children.fhir_type != levels[0][0].fhir_type:
                raise Unsupported(f"{location}: the paths reach {levels[0][0].fhir_type} and "
                                  f"then {children.fhir_type}")
            item = self.x.var()
            levels.append((children, item))
            current = Val(item, False, children.fhir_type, children.node)
        check = levels.pop()[0] if len(levels) > self.depth else None
        payload = SchemaNode()
        it, i = self.x.var(), self.x.var()
        rows = self.body(sel, Val(it, False, levels[0][0].fhir_type, payload),
                         f"CAST({i} - 1 AS BIGINT)")
        _identify_empty(payload)
        for children, _ in levels:
            assert children.node is not None
            children.node.merge(payload)
        err = error_sql(location, f"{TOO_DEEP} {self.depth} levels", self.view.resource)
        traversal = ""
        for n in reversed(range(len(levels))):
            children, item = levels[n]
            entry = f"[{_project(self.x, item, payload)}]"
            if n == len(levels) - 1 and check is not None:
                entry = f"(CASE WHEN {self.x.exists(check)} THEN {err} ELSE {entry} END)"
            elif n < len(levels) - 1:
                entry = f"list_concat({entry}, {traversal})"
            traversal = (f"flatten(list_transform({self.x.as_list(children)}, "
                         f"lambda {item}: {entry}))")
        names = tuple(c.name for c in sel.output)
        if rows.items is None:
            each = f"list_transform({traversal}, lambda {it}, {i}: {rows.struct()})"
        else:
            each = (f"flatten(list_transform({traversal}, lambda {it}, {i}: "
                    f"{rows.as_list(self.x)}))")
        return _Rows(names, items=f"coalesce({each}, [])")

    def repeat_children(self, sel: Select, focus: Val, location: str) -> Val | None:
        """What the repeat paths reach from ``focus``, concatenated in path order, with one
        schema for all; a path naming an element the focus's type does not have reaches
        nothing (the paths apply at every level: ``item`` and ``answer.item`` from a
        QuestionnaireResponse, then from its items). None when no path applies."""
        found: list[Val] = []
        for path in sel.repeat:
            try:
                v = self.x.compile(path.text, Scope(focus, "CAST(0 AS BIGINT)", location))
            except UnknownElement:
                continue
            if v.node is None or v.field is None:
                raise Unsupported(f"{location}: {path.text!r} does not reach elements")
            found.append(v)
        if not found:
            return None
        if len({v.fhir_type for v in found}) > 1:
            raise Unsupported(f"{location}: the paths reach different types")
        node = found[0].node
        assert node is not None
        for v in found[1:]:  # one STRUCT type for the items of every path
            assert v.field is not None and v.field.node is not None
            if v.field.node is not node:
                node.merge(v.field.node)
                v.field.node = node
        sql = "list_concat(" + ", ".join(self.x.as_list(v) for v in found) + ")" \
            if len(found) > 1 else self.x.as_list(found[0])
        return Val(sql, True, found[0].fhir_type, node)

    def body(self, sel: Select, focus: Val, row_index: str) -> _Rows:
        rows: _Rows | None = None
        if sel.columns:
            rows = _Rows(tuple(c.name for c in sel.columns),
                         cols=tuple((c.name, self.column(c, focus, row_index))
                                    for c in sel.columns))
        for nested in sel.selects:
            r = self.select(nested, focus, row_index)
            rows = r if rows is None else self.product(rows, r)
        if sel.union_all:
            branches = [self.select(b, focus, row_index) for b in sel.union_all]
            union = branches[0] if len(branches) == 1 else _Rows(
                branches[0].names,
                items="list_concat(" + ", ".join(b.as_list(self.x) for b in branches) + ")")
            rows = union if rows is None else self.product(rows, union)
        assert rows is not None
        return rows

    def product(self, a: _Rows, b: _Rows) -> _Rows:
        """Every row of ``a`` joined with every row of ``b`` (the cross join of selects)."""
        names, cols = a.names + b.names, a.cols + b.cols
        if a.items is None or b.items is None:
            return _Rows(names, cols, a.items if b.items is None else b.items)
        p, q = self.x.var(), self.x.var()
        a_names = [n for n in a.names if n not in dict(a.cols)]
        b_names = [n for n in b.names if n not in dict(b.cols)]
        row = "{" + ", ".join([f"{literal(n)}: {p}.{quote(n)}" for n in a_names] +
                              [f"{literal(n)}: {q}.{quote(n)}" for n in b_names]) + "}"
        return _Rows(names, cols, f"flatten(list_transform({a.items}, lambda {p}: "
                                  f"list_transform({b.items}, lambda {q}: {row})))")

    def nulls(self, sel: Select) -> str:
        """The row of a forEachOrNull without items: null, or [] for a collection."""
        parts = []
        for c in sel.output:
            t = self.types[c.name]
            parts.append(f"{literal(c.name)}: CAST({'[]' if c.collection else 'NULL'} AS {t})")
        return "{" + ", ".join(parts) + "}"

    # -- columns

    def column(self, col: Column, focus: Val, row_index: str) -> str:
        location = col.location + ".path"
        v = self.x.compile(col.path, Scope(focus, row_index, location))
        natural = v.sql_type
        if natural is None:
            raise Unsupported(f"{location}: a column of type {v.fhir_type} (not a primitive)")
        declared = sql_type_of(col.type) if col.type is not None else None
        if col.type is not None and declared is None:
            raise Unsupported(f"{col.location}.type: columns of type {col.type}")
        item = declared or natural
        t = item + ("[]" if col.collection else "")
        if self.types.setdefault(col.name, t) != t:
            raise Unsupported(f"{col.location}: unionAll branches give '{col.name}' the types "
                              f"{self.types[col.name]} and {t}")
        items = self.x.as_list(v)
        if v.nulls:
            items = f"list_filter({items}, lambda _n: _n IS NOT NULL)"
        if col.collection:
            return f"CAST(coalesce({items}, []) AS {t})"
        if not v.many:
            return f"CAST({v.sql} AS {t})"
        reason = (f"column '{col.name}' gives several values but is not a collection (set "
                  f"\"collection\": true, or pick one value, e.g. with first())")
        err = error_sql(location, reason, self.view.resource)
        return f"CAST((CASE WHEN len({items}) > 1 THEN {err} ELSE ({items})[1] END) AS {t})"


def _identify_empty(node: SchemaNode) -> None:
    """Give every complex element read only for its presence its ``id``, so that a projection
    onto ``node`` names a field the read STRUCTs have."""
    if not node.fields:
        node.add("id", "id", False)
    for f in node.fields.values():
        if f.node is not None:
            _identify_empty(f.node)


def _project(x: ExpressionCompiler, sql: str, node: SchemaNode) -> str:
    """``sql`` (a STRUCT that has at least ``node``'s elements) as a STRUCT of exactly them."""
    parts = []
    for key, f in node.fields.items():
        get = f"{sql}.{quote(key)}"
        if f.node is None:
            value = get
        elif f.repeats:
            z = x.var()
            value = f"list_transform({get}, lambda {z}: {_project(x, z, f.node)})"
        else:
            value = f"(CASE WHEN {get} IS NULL THEN NULL ELSE {_project(x, get, f.node)} END)"
        parts.append(f"{literal(key)}: {value}")
    return "{" + ", ".join(parts) + "}"
