"""A ViewDefinition compiled to the SQL of its rows, in a dialect (DuckDB or Spark SQL).

Implements the Processing Algorithm of SQL on FHIR v2
(https://build.fhir.org/ig/FHIR/sql-on-fhir-v2/processing_model.html, "Process a Resource")
with the semantics of the ViewDefinition page
(https://build.fhir.org/ig/FHIR/sql-on-fhir-v2/StructureDefinition-ViewDefinition.html:
"Unnesting semantics", "Multiple Select Expressions", "Unions", "Column Ordering", "Where";
the column ``type`` and ``collection`` rules) exactly as the reference evaluator
:mod:`.rows` does, as SQL expressions over one resource ``r`` read as a typed STRUCT (the
runners read it; :mod:`.sql_fhirpath` compiles the FHIRPath and builds what ``r`` holds):

* each ``where`` is a SQL condition (no result: no row; a result that is not one boolean: an
  error, like the reference);
* each select is a SQL expression giving the rows of one resource as a LIST of STRUCTs:
  ``forEach`` transforms the items with their index (the ``%rowIndex``), ``forEachOrNull`` adds
  the empty-focus evaluation or a row of nulls when there is no item (the LEFT JOIN of the
  spec), nested selects are a cross product, ``unionAll`` a concatenation; the list is
  unnested into rows, which keeps the order the reference produces. A view without any of
  these is a plain projection;
* ``repeat`` is compiled for a fixed number of levels, each level's items visited by one
  lambda that adds the item and then its children's traversal (depth first, paths in order);
  the items of every level are projected onto what the columns read. Data deeper than that
  stops the query with an error starting with :data:`TOO_DEEP`;
* columns are cast to their declared ``type`` (string-like, date and time types as text,
  ``integer``/``positiveInt``/``unsignedInt``/``integer64`` as ``BIGINT``, ``decimal`` as
  ``DOUBLE``, ``boolean``) or to the type of their expression; ``collection`` columns are lists
  (``[]`` when empty); a column that is not a collection and gets several values is a run-time
  error, as in the reference.

What the compilers cannot translate raises :class:`~.sql_fhirpath.Unsupported`;
:func:`compile_view` then returns the view with ``fallback`` set (why), and the runner runs it on
the reference evaluator.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from songkhoe.fhir.fhirpath import syntax as s
from songkhoe.fhir.fhirpath.parser import parse

from .sql_dialect import Dialect
from .sql_fhirpath import (
    ExpressionCompiler,
    SchemaNode,
    Scope,
    UnknownElement,
    Unsupported,
    Val,
    sql_type_of,
)
from .viewdefinition import Column, OutputColumn, Select, ViewDefinition, Where

#: the start of the reason of the error a compiled ``repeat`` stops with on deeper data
TOO_DEEP = "the repeat traversal goes deeper than"


@dataclass(frozen=True)
class CompiledView:
    """A view compiled for one dialect: the output columns with their neutral types
    (``VARCHAR``, ``BIGINT[]``…), and ``fallback``: None when the view compiled to SQL, else why
    it runs on the reference evaluator. A compiled view's rows are ``SELECT select FROM
    <resources as r> WHERE where...``, and when ``outer`` is set ``SELECT outer FROM (that)``
    (the rows unnested as ``_u``); ``schema``: what each resource ``r`` must be read as."""
    view: ViewDefinition
    dialect: Dialect
    columns: tuple[tuple[str, str], ...]
    fallback: str | None
    schema: SchemaNode | None
    select: str
    outer: str | None
    where: tuple[str, ...]

    @property
    def uses_macros(self) -> bool:
        """Whether the query calls the DuckDB date/time macros (:data:`.sql_dialect.MACROS`)."""
        return any("sof_" in part for part in (self.select, self.outer or "", *self.where))


def compile_view(view: ViewDefinition, dialect: Dialect, repeat_depth: int) -> CompiledView:
    """The view compiled to ``dialect``, ``repeat`` for ``repeat_depth`` levels; a view the
    compiler cannot translate comes back with ``fallback`` set."""
    try:
        return _ViewCompiler(view, dialect, repeat_depth).compile()
    except Unsupported as exc:
        return fallback_view(view, dialect, str(exc))


def fallback_view(view: ViewDefinition, dialect: Dialect, reason: str,
                  columns: tuple[tuple[str, str], ...] | None = None) -> CompiledView:
    """The view run on the reference evaluator; ``columns``: their types (default: the
    declared ones, else the static type of the expression, else JSON)."""
    if columns is None:
        columns = tuple((c.name, _fallback_type(view, c)) for c in view.columns)
    return CompiledView(view, dialect, columns, reason, None, "", None, ())


def _fallback_type(view: ViewDefinition, col: OutputColumn) -> str:
    """The type of a column the reference evaluator fills: its declared type, else the
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




@dataclass(frozen=True)
class _Rows:
    """The rows of a select for one focus, columns ``names`` in output order: ``cols`` are
    the (name, SQL) of columns with one value for all its rows, ``items`` the SQL of a LIST of
    STRUCTs holding the other columns, one per row (None: exactly one row)."""
    names: tuple[str, ...]
    cols: tuple[tuple[str, str], ...] = ()
    items: str | None = None

    def struct(self, d: Dialect) -> str:
        """The one row as a STRUCT (``items`` is None)."""
        return d.struct(self.cols)

    def as_list(self, x: ExpressionCompiler) -> str:
        """All the rows as a LIST of STRUCTs (fields in output order)."""
        d = x.d
        if self.items is None:
            return d.array([self.struct(d)])
        if not self.cols:
            return self.items
        q = x.var()
        fixed = dict(self.cols)
        fields = [(n, fixed[n] if n in fixed else d.field(q, n)) for n in self.names]
        return d.transform(self.items, q, d.struct(fields))


class _ViewCompiler:
    def __init__(self, view: ViewDefinition, dialect: Dialect, repeat_depth: int) -> None:
        self.view = view
        self.d = dialect
        self.depth = repeat_depth
        self.x = ExpressionCompiler(view.resource, {c.name: c for c in view.constants},
                                    dialect)
        self.types: dict[str, str] = {}  # output column → neutral type
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
        q = self.d.quote
        if rows.items is None:
            select = ", ".join(f"{fixed[n]} AS {q(n)}" for n in names)
            return CompiledView(self.view, self.d, columns, None, self.x.schema, select, None,
                                where)
        # the columns with one value per resource are computed once, beside the unnest
        inner = ", ".join([f"{sql} AS {q(n)}" for n, sql in rows.cols] +
                          [f"{self.d.unnest(rows.items)} AS _u"])
        outer = ", ".join(q(n) if n in fixed else f"{self.d.field('_u', n)} AS {q(n)}"
                          for n in names)
        return CompiledView(self.view, self.d, columns, None, self.x.schema, inner, outer,
                            where)

    # -- where

    def where(self, w: Where) -> str:
        location = w.location + ".path"
        v = self.x.compile(w.path, Scope(self.x.root, "CAST(0 AS BIGINT)", location))
        err = self.x.error(location, "a where path must give one boolean")
        if v.fhir_type != "boolean":
            return f"(CASE WHEN {self.x.exists(v)} THEN {err} ELSE false END)"
        if v.many:
            return (f"(CASE WHEN {self.d.length(v.sql)} > 1 THEN {err} "
                    f"ELSE coalesce({self.d.item(v.sql, 1)}, false) END)")
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
                                          f"{rows.as_list(self.x)} ELSE {self.empty} END)")
            rows = self.body(sel, items, zero)
            if or_null:
                if rows.items is None:
                    return rows  # one row: on an empty focus its columns are empty
                rows_list = rows.as_list(self.x)
                return _Rows(names, items=f"(CASE WHEN {items.sql} IS NULL AND "
                                          f"coalesce({self.d.length(rows_list)}, 0) = 0 THEN "
                                          f"{self.d.array([self.nulls(sel)])} "
                                          f"ELSE {rows_list} END)")
            return _Rows(names, items=f"(CASE WHEN {items.sql} IS NULL THEN {self.empty} ELSE "
                                      f"{rows.as_list(self.x)} END)")
        it, i = self.x.var(), self.x.var()
        item = Val(it, False, items.fhir_type, items.node)
        rows = self.body(sel, item, self.d.position(i))
        if rows.items is None:
            each = self.d.transform(items.sql, it, rows.struct(self.d), index=i)
        else:
            each = self.d.flatten(self.d.transform(items.sql, it, rows.as_list(self.x), index=i))
        if not or_null:
            return _Rows(names, items=f"coalesce({each}, {self.empty})")
        empty = Val(self.d.item(items.sql, 1), False, items.fhir_type, items.node)
        none = self.body(sel, empty, zero)
        if none.items is None:
            otherwise = none.as_list(self.x)
        else:
            found = none.as_list(self.x)
            otherwise = (f"(CASE WHEN coalesce({self.d.length(found)}, 0) > 0 THEN {found} "
                         f"ELSE {self.d.array([self.nulls(sel)])} END)")
        return _Rows(names, items=f"(CASE WHEN coalesce({self.d.length(items.sql)}, 0) > 0 "
                                  f"THEN {each} ELSE {otherwise} END)")

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
                         self.d.position(i))
        _identify_empty(payload)
        for children, _ in levels:
            assert children.node is not None
            children.node.merge(payload)
        err = self.x.error(location, f"{TOO_DEEP} {self.depth} levels")
        traversal = ""
        for n in reversed(range(len(levels))):
            children, item = levels[n]
            entry = self.d.array([_project(self.x, item, payload)])
            if n == len(levels) - 1 and check is not None:
                entry = f"(CASE WHEN {self.x.exists(check)} THEN {err} ELSE {entry} END)"
            elif n < len(levels) - 1:
                entry = self.d.concat([entry, traversal])
            traversal = self.d.flatten(self.d.transform(self.x.as_list(children), item, entry))
        names = tuple(c.name for c in sel.output)
        if rows.items is None:
            each = self.d.transform(traversal, it, rows.struct(self.d), index=i)
        else:
            each = self.d.flatten(self.d.transform(traversal, it, rows.as_list(self.x), index=i))
        return _Rows(names, items=f"coalesce({each}, {self.empty})")

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
        sql = self.d.concat([self.x.as_list(v) for v in found]) \
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
                branches[0].names, items=self.d.concat([b.as_list(self.x) for b in branches]))
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
        row = self.d.struct([(n, self.d.field(p, n)) for n in a_names] +
                            [(n, self.d.field(q, n)) for n in b_names])
        return _Rows(names, cols, self.d.flatten(
            self.d.transform(a.items, p, self.d.transform(b.items, q, row))))

    @property
    def empty(self) -> str:
        """An empty list (of any item type)."""
        return self.d.array([])

    def nulls(self, sel: Select) -> str:
        """The row of a forEachOrNull without items: null, or [] for a collection."""
        return self.d.struct([
            (c.name, self.d.cast(self.empty if c.collection else "NULL", self.types[c.name]))
            for c in sel.output])

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
            items = self.d.filter(items, "_n", "_n IS NOT NULL")
        if col.collection:
            return self.d.cast(f"coalesce({items}, {self.empty})", t)
        if not v.many:
            return self.d.cast(v.sql, t)
        reason = (f"column '{col.name}' gives several values but is not a collection (set "
                  f"\"collection\": true, or pick one value, e.g. with first())")
        err = self.x.error(location, reason)
        return self.d.cast(f"(CASE WHEN {self.d.length(items)} > 1 THEN {err} "
                           f"ELSE {self.d.item(items, 1)} END)", t)


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
        get = x.d.field(sql, key)
        if f.node is None:
            value = get
        elif f.repeats:
            z = x.var()
            value = x.d.transform(get, z, _project(x, z, f.node))
        else:
            value = f"(CASE WHEN {get} IS NULL THEN NULL ELSE {_project(x, get, f.node)} END)"
        parts.append((key, value))
    return x.d.struct(parts)
