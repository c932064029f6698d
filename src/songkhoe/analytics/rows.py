"""The rows of a SQL-on-FHIR v2 ViewDefinition over FHIR resources (a reference view runner).

Implements "Process a Resource" of the Processing Algorithm
(https://build.fhir.org/ig/FHIR/sql-on-fhir-v2/processing_model.html) and the semantics of the
ViewDefinition page (https://build.fhir.org/ig/FHIR/sql-on-fhir-v2/StructureDefinition-ViewDefinition.html,
"Unnesting semantics", "Multiple Select Expressions", "Unions", "Column Ordering"):

* a resource of another type than ``resource`` gives no row; ``where`` paths must each give
  ``true`` (an empty result counts as false; anything but one boolean is an error);
* a select gives, for each item of its focus, the cross join of its columns' row, each nested
  select's rows and the concatenation of its ``unionAll`` branches' rows;
* ``forEach`` makes each item of the expression's result a focus (no item: no row);
  ``forEachOrNull`` the same, but with no item the select is evaluated once on an empty focus,
  and if even that gives no row, one row of nulls is produced (a LEFT JOIN's unmatched row);
  ``repeat`` makes a focus of every item reached by applying its paths again and again,
  depth first (each item, then what its paths reach from it, paths in order);
* a column is the value of its path on the focus: ``null`` when empty, the value when single,
  an error when several unless ``collection`` is true, then a list (``[]`` when empty);
* ``%rowIndex`` is the 0-based index of the focus among the items of the nearest enclosing
  ``forEach``/``forEachOrNull``/``repeat`` (0 at the resource, and for the empty focus of a
  ``forEachOrNull``); constants are ``%name``.

Values are as FHIR JSON writes them (strings for dates and times, ``Decimal`` for decimals,
dicts for complex types), each row a dict whose keys are the view's columns in order.

    for row in evaluate(view, resources): ...      # view: ViewDefinition or its JSON
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from songkhoe.fhir.fhirpath import Expression, FHIRPathError

from .viewdefinition import (
    ROW_INDEX,
    Column,
    Select,
    ViewDefinition,
    ViewDefinitionError,
    parse_view,
)

Row = dict[str, Any]


class ViewEvaluationError(ViewDefinitionError):
    """A valid ViewDefinition that cannot be applied to a resource: a column that is not a
    collection gives several values, a ``where`` gives something else than a boolean, or a
    FHIRPath expression fails. ``path`` names the element of the view; ``resource`` is the
    reference (``Patient/p1``) of the resource being processed."""

    def __init__(self, path: str, reason: str, resource: str) -> None:
        self.resource = resource
        super().__init__(path, f"{reason} (in {resource})")


def evaluate(view: ViewDefinition | Mapping[str, Any], resources: Iterable[dict[str, Any]]
             ) -> Iterator[Row]:
    """The rows of ``view`` over ``resources`` (dicts parsed from FHIR JSON), resource by
    resource. A ViewDefinition given as JSON is parsed first (ViewDefinitionError if invalid);
    ViewEvaluationError when a resource breaks one of the view's rules."""
    if not isinstance(view, ViewDefinition):
        view = parse_view(view)
    for resource in resources:
        yield from resource_rows(view, resource)


def resource_rows(view: ViewDefinition, resource: dict[str, Any]) -> list[Row]:
    """The rows ``view`` produces for one resource (none for a resource of another type)."""
    if type(resource) is not dict:
        raise TypeError(f"a resource must be a dict parsed from FHIR JSON, not "
                        f"{type(resource).__name__}")
    if resource.get("resourceType") != view.resource:
        return []
    run = _Run(view, resource)
    env = run.env(0)
    for w in view.where:
        result = run.values(w.expression, None, env, w.location + ".path")
        if not result:
            return []
        if len(result) > 1 or type(result[0]) is not bool:
            shown = ", ".join(repr(v) for v in result[:3])
            raise ViewEvaluationError(w.location + ".path", f"a where path must give one "
                                                            f"boolean, got [{shown}]", run.ref)
        if not result[0]:
            return []
    out: list[Row] = [{}]
    for s in view.selects:
        out = _product(out, run.select(s, None, 0))
        if not out:
            return []
    names = view.column_names
    return [{n: r[n] for n in names} for r in out]


def _product(left: list[Row], right: list[Row]) -> list[Row]:
    """The cross join of two lists of partial rows."""
    if len(right) == 1:
        only = right[0]
        return [{**a, **only} for a in left]
    return [{**a, **b} for a in left for b in right]


def _json(value: Any) -> Any:
    return Decimal(repr(value)) if type(value) is float else value


class _Run:
    """The evaluation of a view over one resource."""

    __slots__ = ("constants", "ref", "resource")

    def __init__(self, view: ViewDefinition, resource: dict[str, Any]) -> None:
        self.resource = resource
        self.constants = view.variables
        self.ref = f"{view.resource}/{resource.get('id')}"

    def env(self, row_index: int) -> dict[str, Any]:
        return {**self.constants, ROW_INDEX: row_index}

    def raw(self, expr: Expression, focus: list[Any] | None, env: dict[str, Any],
            where: str) -> list[Any]:
        """The engine's items (to be a further focus). ``focus`` None: the resource."""
        try:
            return expr.raw(self.resource, env, focus=focus)
        except FHIRPathError as exc:
            raise ViewEvaluationError(where, str(exc), self.ref) from exc

    def values(self, expr: Expression, focus: list[Any] | None, env: dict[str, Any],
               where: str) -> list[Any]:
        """The result as FHIR JSON values (primitives whose value is absent left out)."""
        try:
            nodes = expr.nodes(self.resource, env, focus=focus)
        except FHIRPathError as exc:
            raise ViewEvaluationError(where, str(exc), self.ref) from exc
        return [_json(n.value) for n in nodes if n.value is not None]

    def select(self, sel: Select, focus: list[Any] | None, row_index: int) -> list[Row]:
        """The rows of ``sel`` for the parent's ``focus`` (None: the resource) whose own
        ``%rowIndex`` is ``row_index``."""
        env = self.env(row_index)
        if sel.for_each is not None:
            items = self.raw(sel.for_each, focus, env, sel.location + ".forEach")
        elif sel.for_each_or_null is not None:
            items = self.raw(sel.for_each_or_null, focus, env, sel.location + ".forEachOrNull")
            if not items:
                rows = self.body(sel, [], 0)
                return rows if rows else [_nulls(sel)]
        elif sel.repeat:
            items = self.repeat(sel, focus, env)
        else:
            return self.body(sel, focus, row_index)
        out: list[Row] = []
        for i, item in enumerate(items):
            out.extend(self.body(sel, [item], i))
        return out

    def repeat(self, sel: Select, focus: list[Any] | None, env: dict[str, Any]) -> list[Any]:
        """Every item the ``repeat`` paths reach from the focus, depth first."""
        out: list[Any] = []
        where = sel.location + ".repeat"
        ancestors: list[int] = []

        def visit(node: list[Any] | None) -> None:
            for expr in sel.repeat:
                for child in self.raw(expr, node, env, where):
                    if id(child) in ancestors:
                        raise ViewEvaluationError(where, f"the path {expr.text!r} leads back to "
                                                         f"an item it came from", self.ref)
                    out.append(child)
                    ancestors.append(id(child))
                    visit([child])
                    ancestors.pop()
        visit(focus)
        return out

    def body(self, sel: Select, focus: list[Any] | None, row_index: int) -> list[Row]:
        """The rows of ``sel``'s columns, nested selects and unionAll on one focus."""
        rows: list[Row] = [{}]
        if sel.columns:
            env = self.env(row_index)
            rows = [{c.name: self.column(c, focus, env) for c in sel.columns}]
        for nested in sel.selects:
            rows = _product(rows, self.select(nested, focus, row_index))
            if not rows:
                return rows
        if sel.union_all:
            union: list[Row] = []
            for branch in sel.union_all:
                union.extend(self.select(branch, focus, row_index))
            rows = _product(rows, union)
        return rows

    def column(self, col: Column, focus: list[Any] | None, env: dict[str, Any]) -> Any:
        values = self.values(col.expression, focus, env, col.location + ".path")
        if col.collection:
            return values
        if len(values) > 1:
            raise ViewEvaluationError(
                col.location + ".path", f"column '{col.name}' gives {len(values)} values "
                                        f"but is not a collection (set \"collection\": true, or "
                                        f"pick one value, e.g. with first())", self.ref)
        return values[0] if values else None


def _nulls(sel: Select) -> Row:
    """The row of a forEachOrNull without any item: null in every column ([] in collections)."""
    return {c.name: [] if c.collection else None for c in sel.output}
