"""SQL-on-FHIR v2 ViewDefinitions run by Apache Spark, and SQL over view tables on Spark.

The distributed path of the architecture: the same ViewDefinition the DuckDB runner
(:mod:`.duckdb_runner`) runs on one machine runs here as one Spark SQL query, compiled by the
same compiler (:mod:`.sql_view`, :mod:`.sql_fhirpath`) in the Spark dialect
(:data:`.sql_dialect.SPARK`), so both give the rows of the reference evaluator :mod:`.rows`
(SQL on FHIR v2, https://build.fhir.org/ig/FHIR/sql-on-fhir-v2/processing_model.html,
"Process a Resource"; the ViewDefinition page's unnesting, union, column and where rules):

* resources are read by Spark's JSON source (NDJSON files, plain or compressed, on any file
  system the cluster reads; resources given as dicts are written to a local temporary file
  first, so only in local mode) with an explicit schema holding only the elements the view
  reaches (from the R4 model): each line is parsed once, and the ``resourceType`` filter is
  applied as it is read. An element that does not have its R4 JSON shape is read as empty
  (Spark's partial results), as DuckDB's filtered read;
* selects are arrays of row structs built with Spark's higher-order functions (``transform``,
  ``filter``, ``concat``, ``named_struct``), ``explode``-d beside the columns with one value per
  resource; dates and times compare precision-aware by the comparison keys the DuckDB macros
  compute, written out in Spark SQL (nothing is created on the session);
* a ``repeat`` is compiled for 4 levels, then 8 when the data is deeper, then runs on the
  reference evaluator (as the DuckDB runner);
* a view the compiler cannot translate runs on the reference evaluator in the Python workers
  (a Python UDF giving each resource's rows, exploded); ``CompiledView.fallback`` says why.
  Executors then need songkhoe installed, as the driver;
* a run-time error of the view (several values in a column that is not a collection, a
  ``where`` that is not one boolean) stops the job and is raised as
  :class:`~.rows.ViewEvaluationError` naming the element and the resource.

Indicators (SQL over view tables) run unchanged on a session: :func:`register` makes a Parquet
file or folder, or an Arrow table, a table by name, and :func:`sql` runs a query into Arrow.

    spark = spark_session()                                  # local[2]; or a cluster URL
    table = run_view(view, "Observation.ndjson", spark=spark)  # pyarrow.Table
    to_parquet(view, "Observation.ndjson", "vitals", spark=spark)  # a folder of part files
    register(spark, "vitals", "vitals")
    sql(spark, "SELECT count(*) AS n FROM vitals")
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa  # type: ignore[import-untyped]
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from .ndjson import Source, ndjson_files
from .reference_arrow import arrow_type, evaluation_error, resource_cells
from .rows import ViewEvaluationError
from .sql_dialect import SPARK
from .sql_view import TOO_DEEP, CompiledView, fallback_view
from .sql_view import compile_view as compile_in
from .viewdefinition import ViewDefinition, parse_view

#: how the rows were made: by the compiled query, or by the reference evaluator
COMPILED, FALLBACK = "compiled", "reference"
#: the depths a ``repeat`` is compiled for, in turn (deeper data runs on the reference)
REPEAT_DEPTHS = (4, 8)
#: the longest query compiled for a deeper ``repeat`` (its STRUCT type doubles per level when
#: the paths branch)
MAX_QUERY = 200_000

T = TypeVar("T")


# -- sessions and SQL over tables -----------------------------------------------------------------

def spark_session(master: str = "local[2]", *, app_name: str = "songkhoe",
                  driver_memory: str = "1g", shuffle_partitions: int = 2,
                  config: Mapping[str, str] | None = None) -> SparkSession:
    """A Spark session (the one already running in this process, if any): ``master`` is
    ``local[N]`` for N cores of this machine or a cluster URL (``spark://host:7077``,
    ``yarn``). The web UI is off, Python workers run this interpreter (unless
    ``PYSPARK_PYTHON`` says otherwise) and the session time zone is UTC. ``config``: further
    Spark settings."""
    settings = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": driver_memory,
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
    }
    if master.startswith("local"):
        settings["spark.driver.host"] = "127.0.0.1"
        settings["spark.driver.bindAddress"] = "127.0.0.1"
    settings.update(config or {})
    # the Python workers (the fallback's UDF) run this interpreter unless told otherwise
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def register(spark: SparkSession, name: str,
             source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | pa.Table
             ) -> DataFrame:
    """Make ``source`` the table ``name`` of the session (a temporary view, replaced if it
    exists): a Parquet file or folder (``to_parquet``'s output, the warehouse's view folders),
    several of them, or an Arrow table (sent from the driver)."""
    if isinstance(source, pa.Table):
        frame = spark.createDataFrame(source)
    elif isinstance(source, (str, os.PathLike)):
        frame = spark.read.parquet(os.fspath(source))
    else:
        frame = spark.read.parquet(*[os.fspath(p) for p in source])
    frame.createOrReplaceTempView(name)
    return frame


def sql(spark: SparkSession, text: str) -> pa.Table:
    """The result of the Spark SQL query ``text`` (over the registered tables) as Arrow."""
    return spark.sql(text).toArrow()


# -- views -------------------------------------------------------------------------------------

def compile_view(view: ViewDefinition | Mapping[str, Any],
                 repeat_depth: int = REPEAT_DEPTHS[0]) -> CompiledView:
    """The view compiled to Spark SQL (parsed first when given as JSON: ViewDefinitionError if
    invalid); a view the compiler cannot translate comes back with ``fallback`` set."""
    if not isinstance(view, ViewDefinition):
        view = parse_view(view)
    return compile_in(view, SPARK, repeat_depth)


@dataclass(frozen=True)
class ViewResult:
    """The rows of a run, and how they were made: ``reader`` is ``compiled`` or ``reference``
    (the fallback)."""
    table: pa.Table
    compiled: CompiledView
    reader: str


def execute(view: ViewDefinition | Mapping[str, Any], source: Source, *,
            spark: SparkSession | None = None) -> ViewResult:
    """Run ``view`` over ``source`` (NDJSON paths, or resources as dicts) on Spark; the rows
    as an Arrow table typed as the compiled columns (``VARCHAR`` → string, ``BIGINT`` → int64,
    ``DOUBLE`` → float64, ``BOOLEAN`` → bool, lists of them). ViewEvaluationError when a
    resource breaks one of the view's rules."""
    if not isinstance(view, ViewDefinition):
        view = parse_view(view)
    session = spark or _default_session()

    def fetch(frame: DataFrame, compiled: CompiledView) -> pa.Table:
        return _typed(frame.toArrow(), compiled)
    table, compiled = _run(session, view, source, fetch)
    return ViewResult(table, compiled, FALLBACK if compiled.fallback else COMPILED)


def run_view(view: ViewDefinition | Mapping[str, Any], source: Source, *,
             spark: SparkSession | None = None) -> pa.Table:
    """The rows of ``view`` over ``source`` as an Arrow table, columns in the view's order."""
    return execute(view, source, spark=spark).table


def to_parquet(view: ViewDefinition | Mapping[str, Any], source: Source,
               out_path: str | os.PathLike[str], *, spark: SparkSession | None = None) -> int:
    """Write the rows of ``view`` over ``source`` as Parquet into the folder ``out_path``
    (replaced; one ``part-*.parquet`` file per Spark task); the number of rows written."""
    if not isinstance(view, ViewDefinition):
        view = parse_view(view)
    session = spark or _default_session()
    target = os.fspath(out_path)

    def write(frame: DataFrame, compiled: CompiledView) -> int:
        counted = Observation("rows")
        frame.observe(counted, F.count(F.lit(1)).alias("rows")) \
            .write.mode("overwrite").parquet(target)
        return int(counted.get["rows"])
    count, _ = _run(session, view, source, write)
    return count


def view_frame(view: ViewDefinition | Mapping[str, Any],
               files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
               spark: SparkSession | None = None) -> DataFrame:
    """The rows of ``view`` over NDJSON ``files`` as a lazy DataFrame (for further Spark work;
    a ``repeat`` is compiled for the deepest level, a run-time error is Spark's error)."""
    if not isinstance(view, ViewDefinition):
        view = parse_view(view)
    paths = [os.fspath(files)] if isinstance(files, (str, os.PathLike)) else \
        [os.fspath(f) for f in files]
    compiled = compile_view(view, REPEAT_DEPTHS[-1])
    return _frame(spark or _default_session(), compiled, paths)


# -- running -------------------------------------------------------------------------------------

def _default_session() -> SparkSession:
    active = SparkSession.getActiveSession()
    if active is None:
        return spark_session()
    return active


def _run(spark: SparkSession, view: ViewDefinition, source: Source,
         action: Callable[[DataFrame, CompiledView], T]) -> tuple[T, CompiledView]:
    """``action`` on the view's rows over ``source``, with the view as compiled; a ``repeat``
    that meets deeper data than compiled for is compiled again for more levels, and beyond the
    last runs on the reference evaluator."""
    with ndjson_files(source) as files:
        def attempt(compiled: CompiledView) -> tuple[T, CompiledView]:
            return _guard(lambda: action(_frame(spark, compiled, files), compiled)), compiled
        tried = REPEAT_DEPTHS[0]
        for depth in REPEAT_DEPTHS:
            compiled = compile_view(view, depth)
            if depth > REPEAT_DEPTHS[0] and compiled.fallback is None and \
                    len(compiled.select) > MAX_QUERY:
                break
            try:
                return attempt(compiled)
            except ViewEvaluationError as exc:
                if not exc.reason.startswith(TOO_DEEP):
                    raise
            tried = depth
        return attempt(fallback_view(view, SPARK,
                                     f"{TOO_DEEP} the {tried} levels compiled for this source",
                                     compiled.columns))


def _frame(spark: SparkSession, compiled: CompiledView, files: list[str]) -> DataFrame:
    """The view's rows over NDJSON ``files``: the compiled query, or the reference
    evaluator."""
    rtype = SPARK.literal(compiled.view.resource)
    if compiled.fallback is not None:
        rows = F.udf(resource_cells(compiled.view, compiled.columns),
                     f"ARRAY<STRUCT<{_fields(compiled)}>>", useArrow=False)
        return spark.read.text(files) \
            .where(f"get_json_object(value, '$.resourceType') = {rtype}") \
            .select(F.explode(rows("value")).alias("_u")).select("_u.*")
    assert compiled.schema is not None
    schema = ", ".join(f"{SPARK.quote(k)} {t}" for k, t in compiled.schema.columns(SPARK).items())
    name = f"sof_resources_{uuid.uuid4().hex}"
    spark.read.schema(schema).json(files).createOrReplaceTempView(name)
    try:
        source = f"(SELECT struct(*) AS r FROM {name}) AS _src"
        conditions = [f"r.`resourceType` = {rtype}", *compiled.where]
        query = f"SELECT {compiled.select} FROM {source} WHERE {' AND '.join(conditions)}"
        if compiled.outer is not None:
            query = f"SELECT {compiled.outer} FROM ({query}) AS _s"
        return spark.sql(query)
    finally:
        spark.catalog.dropTempView(name)


def _guard(run: Callable[[], T]) -> T:
    """``run()``, with the view's run-time errors raised as ViewEvaluationError."""
    try:
        return run()
    except ViewEvaluationError:
        raise
    except Exception as exc:  # Spark's errors come as several classes (JVM, Python worker)
        error = evaluation_error(str(exc))
        if error is None:
            raise
        raise error from None


def _typed(table: pa.Table, compiled: CompiledView) -> pa.Table:
    """Spark's Arrow output cast to the neutral column types (the DuckDB runner's)."""
    schema = pa.schema([(n, arrow_type(t)) for n, t in compiled.columns])
    return table.cast(schema)


def _fields(compiled: CompiledView) -> str:
    """The output columns as the fields of a Spark STRUCT type."""
    return ", ".join(f"{SPARK.quote(n)}: {SPARK.type(t)}" for n, t in compiled.columns)
