"""SQL-on-FHIR v2 ViewDefinitions run by DuckDB: the view compiled to one SQL query over NDJSON.

Implements the Processing Algorithm of SQL on FHIR v2
(https://build.fhir.org/ig/FHIR/sql-on-fhir-v2/processing_model.html, "Process a Resource")
exactly as the reference evaluator :mod:`.rows` does, but as one DuckDB query (compiled by
:mod:`.sql_view` in the DuckDB dialect) so that the work happens in DuckDB's vectorised,
parallel engine:

* the resources are read once, by ``read_json`` with an explicit ``columns`` type holding only
  the elements the view reaches (the R4 model gives which repeat and which are complex; see
  :mod:`.sql_fhirpath`), and filtered on ``resourceType``; a source whose other resource types
  do not fit that type (a mixed file) is read instead with ``read_ndjson_objects``, filtered,
  then ``json_transform``-ed (``reader="json_transform"`` asks for this at once). The typed
  read refuses an element that does not have its R4 JSON shape (an object where the model
  says array); ``json_transform`` reads it as empty;
* each ``where`` is a SQL condition, each select a ``LIST`` of ``STRUCT``s (``list_transform``,
  ``list_filter``, ``list_concat``) ``unnest``-ed into rows beside the columns with one value
  per resource;
* a ``repeat`` run that meets items deeper than compiled for stops and is compiled again for
  more levels (4, then 8); deeper still, it runs on the reference evaluator with the same
  column types;
* a run-time error of the view (``error()``) is raised as a :class:`~.rows.ViewEvaluationError`
  naming the element and the resource, as in the reference.

A view this compiler cannot translate (see :mod:`.sql_fhirpath` for what it does not model;
a ``repeat`` path that is not a path of elements) is not refused: it runs through the
reference evaluator inside DuckDB, as a Python function returning each resource's rows
(``CompiledView.fallback`` says why), so every valid view gives the reference's rows, only
more slowly.

    table = run_view(view, "Observation.ndjson")             # a pyarrow.Table
    rows = to_parquet(view, ["a.ndjson", "b.ndjson"], "observations.parquet")
    compile_view(view).fallback                               # None when fully compiled
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
from duckdb.func import ARROW

from .ndjson import Source, ndjson_files
from .reference_arrow import evaluation_error, reference_rows
from .rows import ViewEvaluationError
from .sql_dialect import DUCKDB, MACROS
from .sql_fhirpath import literal, quote
from .sql_view import TOO_DEEP, CompiledView, fallback_view
from .sql_view import compile_view as compile_in
from .viewdefinition import ViewDefinition, parse_view

#: how a source is read: typed ``read_json``, or per-object ``json_transform`` after filtering
TYPED, FILTERED, FALLBACK = "read_json", "json_transform", "reference"
#: the depths a ``repeat`` is compiled for, in turn (deeper data runs on the reference): DuckDB
#: takes twice as long to bind each further level of nested lambdas (0.6 s at 12 levels)
REPEAT_DEPTHS = (4, 8)
#: the longest query compiled for a deeper ``repeat``: the STRUCT type read for a traversal
#: whose paths branch (``item`` and ``answer.item``) doubles with every level
MAX_QUERY = 200_000

T = TypeVar("T")


def _query(compiled: CompiledView, files: Sequence[str], reader: str = TYPED,
           udf: str = "") -> str:
    """The query giving the view's rows from NDJSON ``files`` read the ``reader`` way
    (``udf``: the name of the registered reference function, for a fallback view)."""
    paths = "[" + ", ".join(literal(f) for f in files) + "]"
    rtype = literal(compiled.view.resource)
    if reader == FALLBACK:
        source = (f"(SELECT {udf}(CAST(json AS VARCHAR)) AS _rows FROM "
                  f"read_ndjson_objects({paths}) WHERE "
                  f"json_extract_string(json, '$.resourceType') = {rtype}) AS _src")
        names = ", ".join(f"_u.{quote(n)} AS {quote(n)}" for n, _ in compiled.columns)
        return f"SELECT {names} FROM (SELECT unnest(_rows) AS _u FROM {source}) AS _s"
    assert compiled.schema is not None
    if reader == TYPED:
        cols = "{" + ", ".join(f"{literal(k)}: {literal(t)}"
                               for k, t in compiled.schema.columns().items()) + "}"
        source = (f"read_json({paths}, format='newline_delimited', records=true, "
                  f"columns={cols}) AS r")
        conditions = [f"r.\"resourceType\" = {rtype}", *compiled.where]
    else:
        structure = literal(json.dumps(compiled.schema.json_structure()))
        source = (f"(SELECT json_transform(json, {structure}) AS r FROM "
                  f"read_ndjson_objects({paths}) WHERE "
                  f"json_extract_string(json, '$.resourceType') = {rtype}) AS _src")
        conditions = list(compiled.where)
    where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    if compiled.outer is None:
        return f"SELECT {compiled.select} FROM {source}{where}"
    return f"SELECT {compiled.outer} FROM (SELECT {compiled.select} FROM {source}{where}) AS _s"


def compile_view(view: ViewDefinition | Mapping[str, Any],
                 repeat_depth: int = REPEAT_DEPTHS[0]) -> CompiledView:
    """The view compiled for DuckDB (parsed first when given as JSON: ViewDefinitionError if
    invalid); a view the compiler cannot translate comes back with ``fallback`` set.
    ``repeat_depth``: the levels a ``repeat`` traversal is compiled for (a run that meets
    deeper items stops with an error saying so, and the runner compiles deeper)."""
    if not isinstance(view, ViewDefinition):
        view = parse_view(view)
    return compile_in(view, DUCKDB, repeat_depth)


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
    with ndjson_files(source) as files, _connection(con) as db:
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
    with ndjson_files(source) as files, _connection(con) as db:
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
                len(_query(compiled, files)) > MAX_QUERY:
            break
        try:
            result, how = _run_compiled(db, compiled, files, action, reader)
            return result, how, compiled
        except ViewEvaluationError as exc:
            if not exc.reason.startswith(TOO_DEEP):
                raise
        tried = depth
    # the same column types as compiled, so that the output does not depend on the data
    compiled = fallback_view(view, DUCKDB,
                             f"{TOO_DEEP} the {tried} levels compiled for this source",
                             compiled.columns)
    result, how = _run_compiled(db, compiled, files, action, reader)
    return result, how, compiled


def _run_compiled(db: duckdb.DuckDBPyConnection, compiled: CompiledView, files: list[str],
                  action: Callable[[str], T], reader: str | None) -> tuple[T, str]:
    if compiled.fallback is not None:
        name = f"sof_reference_{id(compiled):x}"
        db.create_function(name, reference_rows(compiled.view, compiled.columns), ["VARCHAR"],
                           _rows_type(compiled.columns), type=ARROW, side_effects=False)
        try:
            return _guard(lambda: action(_query(compiled, files, FALLBACK, name))), FALLBACK
        finally:
            db.remove_function(name)
    if compiled.uses_macros:
        db.execute(";\n".join(MACROS))
    if reader != FILTERED:
        try:
            return _guard(lambda: action(_query(compiled, files, TYPED))), TYPED
        except duckdb.InvalidInputException as exc:
            if reader == TYPED or "JSON transform error" not in str(exc):
                raise
    # resources of other types whose elements do not fit the view's reading of them
    return _guard(lambda: action(_query(compiled, files, FILTERED))), FILTERED


def _guard(run: Callable[[], T]) -> T:
    """``run()``, with the view's run-time errors raised as ViewEvaluationError."""
    try:
        return run()
    except duckdb.Error as exc:
        error = evaluation_error(str(exc))
        if error is None:
            raise
        raise error from None


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


# -- the fallback: the reference evaluator as a DuckDB function ----------------------------------

def _rows_type(columns: tuple[tuple[str, str], ...]) -> str:
    return "STRUCT(" + ", ".join(f"{quote(n)} {t}" for n, t in columns) + ")[]"
