"""The reference evaluator over Arrow: what the SQL runners fall back to, and how their run-time
errors come back as the reference's.

A view the compilers cannot translate runs through :func:`.rows.resource_rows` inside the
engine, as a function from a batch of resources (their JSON text) to their rows
(:func:`reference_rows`; one resource at a time: :func:`resource_cells`), typed as the
compiled columns would be (:func:`arrow_type` of the neutral types ``VARCHAR``, ``BIGINT``,
``DOUBLE``, ``BOOLEAN``, ``JSON``, ``T[]``). Errors of a
view's rules travel through the engine as text (unit-separated marker, element, reason,
resource) and are raised again by the runners as :class:`~.rows.ViewEvaluationError`
(:func:`evaluation_error`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]

from .rows import ViewEvaluationError, resource_rows
from .viewdefinition import ViewDefinition

#: the start of an error message that carries a view's run-time error
MARK = "\x1fsof\x1f"

_ARROW_TYPES = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(),
                "BOOLEAN": pa.bool_(), "JSON": pa.string()}


def arrow_type(neutral: str) -> pa.DataType:
    if neutral.endswith("[]"):
        return pa.list_(arrow_type(neutral[:-2]))
    return _ARROW_TYPES[neutral]


def row_type(columns: tuple[tuple[str, str], ...]) -> pa.StructType:
    """The Arrow STRUCT of one row."""
    return pa.struct([(n, arrow_type(t)) for n, t in columns])


def evaluation_error(text: str) -> ViewEvaluationError | None:
    """The view's run-time error an engine's error message carries, if it carries one."""
    mark = text.find(MARK)
    if mark < 0:
        return None
    parts = text[mark:].split("\x1f")
    resource = parts[4].split()  # Type/id, then whatever the engine adds
    return ViewEvaluationError(parts[2], parts[3], resource[0] if resource else "")


def reference_rows(view: ViewDefinition, columns: tuple[tuple[str, str], ...]
                   ) -> Callable[[pa.Array], pa.Array]:
    """A function: JSON texts of resources → a LIST of row STRUCTs for each, made by
    :func:`.rows.resource_rows`; a view's error is raised as a ValueError carrying it."""
    rows_type = pa.list_(row_type(columns))
    rows = resource_cells(view, columns)

    def batch(texts: pa.Array) -> pa.Array:
        return pa.array([rows(text) for text in texts.to_pylist()], type=rows_type)
    return batch


def resource_cells(view: ViewDefinition, columns: tuple[tuple[str, str], ...]
                   ) -> Callable[[str], list[dict[str, Any]]]:
    """A function: JSON text of a resource → its rows, by :func:`.rows.resource_rows`, each
    value of its column's type (decimals as floats, JSON columns as text); a view's error is
    raised as a ValueError carrying it."""
    def rows(text: str) -> list[dict[str, Any]]:
        resource = json.loads(text, parse_float=Decimal)
        ref = f"{view.resource}/{resource.get('id')}"
        try:
            produced = resource_rows(view, resource)
        except ViewEvaluationError as exc:
            reason = exc.reason.removesuffix(f" (in {exc.resource})")
            raise ValueError(f"{MARK}{exc.path}\x1f{reason}\x1f{exc.resource}") from None
        return [{n: _cell(row[n], t, n, ref) for n, t in columns} for row in produced]
    return rows


def _cell(value: Any, neutral: str, name: str, ref: str) -> Any:
    if neutral.endswith("[]"):
        return [_cell(v, neutral[:-2], name, ref) for v in value]
    if value is None:
        return None
    if neutral == "JSON":
        return json.dumps(_plain(value), ensure_ascii=False)
    ok = {"VARCHAR": type(value) is str, "BOOLEAN": type(value) is bool,
          "BIGINT": type(value) is int,
          "DOUBLE": type(value) in (int, float, Decimal)}[neutral]
    if not ok:
        raise ValueError(f"{MARK}{name}\x1fcolumn '{name}' is read as {neutral}, got "
                         f"{value!r}\x1f{ref}")
    return float(value) if neutral == "DOUBLE" else value


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) \
            else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
