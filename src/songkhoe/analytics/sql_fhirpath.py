"""FHIRPath compiled to SQL over FHIR resources read as typed structs (the expression compiler of
the DuckDB and Spark runners; the SQL is written in a :class:`~.sql_dialect.Dialect`).

SQL on FHIR v2 names the FHIRPath subset a view runner must support: the ViewDefinition page
(https://build.fhir.org/ig/FHIR/sql-on-fhir-v2/StructureDefinition-ViewDefinition.html),
"FHIRPath Functionality": paths, ``where``/``exists``/``empty``/``first``/``join``/``ofType``/
``extension``/``not``, boolean logic, comparison and math operators, indexers, constants
(``%name``), the view functions ``getResourceKey()`` / ``getReferenceKey([type])`` and
(experimental) ``lowBoundary()``/``highBoundary()``. This module compiles that subset (and
``last``, ``count``, ``single``, ``tail``, ``skip``, ``take``, ``in``/``contains``, ``&``,
``is``/``as``) to SQL; anything else raises :class:`Unsupported`, and the runner then
evaluates the whole view with the reference evaluator (see :mod:`.sql_view`).

Data model. A resource is read once, with the R4 model (:mod:`songkhoe.fhir.definitions`), into
a ``STRUCT`` holding only the elements the view's expressions reach (the
:class:`SchemaNode` tree the compiler builds as it goes): an element that repeats is a ``LIST``,
a complex element a ``STRUCT``, a primitive ``VARCHAR``/``BOOLEAN``/``BIGINT``/``DOUBLE``
(dates and times stay text, as written). A FHIRPath collection (N1 §4 "Expressions":
everything is a collection) is then a SQL value of one of two shapes (:class:`Val`): a scalar
when the model says it holds at most one item (``NULL`` is the empty collection), or a
``LIST`` otherwise (``NULL`` or ``[]`` is empty). Member navigation over a list flattens
(N1 §3 "Path selection"): ``name.given`` is ``flatten(list_transform(name, x -> x.given))``.
Lambdas (``where(...)``) become ``list_filter``/``list_transform`` lambdas (Spark's ``filter``/
``transform``), so every row is computed by the engine (DuckDB's vectorised one, Spark's
generated code).

Semantics kept from FHIRPath N1 and the reference evaluator (:mod:`songkhoe.fhir.fhirpath`):

* §4.5 singleton evaluation: a multi-item operand of a comparison, of boolean logic or of
  math is an error (raised at run time, reported as a view evaluation error); a single
  non-Boolean operand of ``and``/``or``/``not()`` counts as true;
* §6.1 equality: ``=``/``!=`` with an empty side are empty, collections of different sizes
  are unequal, values of different kinds (string vs number) are unequal; date/time values
  compare precision-aware (different precision and equal shared components: empty), a
  dateTime with a time of day at its UTC instant (no offset: UTC), like
  :func:`songkhoe.fhir.fhirpath.temporal.compare`;
* §6.2 comparison of numbers, strings and dates/times; §6.5 three-valued ``and``/``or``/
  ``xor``/``implies`` (SQL's NULL logic is the same); §6.6 math (``/`` is always decimal,
  division by zero is empty);
* ``ofType(T)`` (N1 §5.2 "Filtering and projection") on a choice element ``value[x]`` reads
  the JSON keys of the choice types that are ``T`` or derive from it (``valueQuantity``);
  on other values it is decided from the model's type at compile time.

Not modelled (the view falls back): choice elements without ``ofType`` (but for ``exists()``,
``empty()`` and ``is``), elements the R4 model does not know, complex values in columns,
Quantity arithmetic and comparison, the ``_name`` extension of primitives, the N1 functions
outside the list above, and the boundaries of a decimal (they need its number of decimal
places as written, which a ``DOUBLE`` does not keep) or with a precision argument.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from songkhoe.fhir import definitions
from songkhoe.fhir.fhirpath import model as m
from songkhoe.fhir.fhirpath import syntax as s
from songkhoe.fhir.fhirpath import temporal as tm
from songkhoe.fhir.fhirpath.parser import parse

from .sql_dialect import DUCKDB, Dialect
from .viewdefinition import ROW_INDEX, Constant

#: the FHIR primitive types read as text, as integers, as dates and times
STRING_TYPES = frozenset({"string", "code", "id", "markdown", "uri", "url", "canonical", "oid",
                          "uuid", "base64Binary", "xhtml"})
INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})
TEMPORAL_TYPES = frozenset({"date", "dateTime", "instant", "time"})


def sql_type_of(fhir_type: str) -> str | None:
    """The DuckDB type of a FHIR primitive's value, None for a complex type."""
    if fhir_type == "boolean":
        return "BOOLEAN"
    if fhir_type in INTEGER_TYPES:
        return "BIGINT"
    if fhir_type == "decimal":
        return "DOUBLE"
    if fhir_type in STRING_TYPES or fhir_type in TEMPORAL_TYPES:
        return "VARCHAR"
    return None


def _kind(fhir_type: str | None) -> str | None:
    """The comparison class of a primitive type: string, number, boolean, date, dateTime, time."""
    if fhir_type is None:
        return None
    if fhir_type in STRING_TYPES:
        return "string"
    if fhir_type in INTEGER_TYPES or fhir_type == "decimal":
        return "number"
    if fhir_type == "boolean":
        return "boolean"
    if fhir_type == "instant":
        return "dateTime"
    if fhir_type in TEMPORAL_TYPES:
        return fhir_type
    return None


class Unsupported(Exception):
    """An expression (or view construct) this compiler does not translate; ``str()`` says what
    and where. The runner then evaluates the view with the reference evaluator."""


class UnknownElement(Unsupported):
    """A path names an element its focus's type does not have in the R4 model."""


def quote(name: str) -> str:
    """A DuckDB identifier."""
    return DUCKDB.quote(name)


def literal(text: str) -> str:
    """A DuckDB string literal."""
    return DUCKDB.literal(text)


# -- the projection schema -------------------------------------------------------------------

@dataclass(eq=False)
class SchemaNode:
    """The elements read from a JSON object (a resource, a datatype or a backbone element), by
    JSON key, in the order first reached."""
    fields: dict[str, SchemaField] = field(default_factory=dict)

    def add(self, key: str, fhir_type: str, repeats: bool) -> SchemaField:
        have = self.fields.get(key)
        if have is None:
            complex_ = sql_type_of(fhir_type) is None
            have = SchemaField(key, fhir_type, repeats, SchemaNode() if complex_ else None)
            self.fields[key] = have
        return have

    def merge(self, other: SchemaNode) -> None:
        """Add the elements ``other`` reads (recursively)."""
        for key, f in other.fields.items():
            mine = self.fields.setdefault(key, f)
            if mine is not f and mine.node is not None and f.node is not None:
                mine.node.merge(f.node)

    def struct_type(self, d: Dialect = DUCKDB) -> str:
        """``STRUCT(...)``; a complex element read only for its presence keeps its ``id``."""
        if not self.fields:
            return d.struct_type([("id", d.type("VARCHAR"))])
        return d.struct_type([(k, f.sql_type(d)) for k, f in self.fields.items()])

    def json_structure(self) -> dict[str, Any]:
        """The same type as a ``json_transform`` structure."""
        if not self.fields:
            return {"id": "VARCHAR"}
        return {k: f.json_structure() for k, f in self.fields.items()}

    def columns(self, d: Dialect = DUCKDB) -> dict[str, str]:
        """The top-level elements and their types (``read_json(columns=...)`` in DuckDB, a
        ``from_json`` schema in Spark)."""
        return {k: f.sql_type(d) for k, f in self.fields.items()}


@dataclass(eq=False)
class SchemaField:
    key: str
    fhir_type: str
    repeats: bool
    node: SchemaNode | None  # for a complex element

    def item_type(self, d: Dialect) -> str:
        if self.node is not None:
            return self.node.struct_type(d)
        t = sql_type_of(self.fhir_type)
        assert t is not None
        return d.type(t)

    def sql_type(self, d: Dialect) -> str:
        item = self.item_type(d)
        return d.list_type(item) if self.repeats else item

    def json_structure(self) -> Any:
        item = self.node.json_structure() if self.node is not None else sql_type_of(
            self.fhir_type)
        return [item] if self.repeats else item


def resource_schema() -> SchemaNode:
    """The schema of a view's resource: ``resourceType`` and ``id`` are always read (the
    type filter and the resource named in error messages)."""
    root = SchemaNode()
    root.add("resourceType", "code", False)
    root.add("id", "id", False)
    return root


# -- the R4 model ----------------------------------------------------------------------------

def _children(fhir_type: str) -> Mapping[str, definitions.ElementDef]:
    kids = definitions.children(fhir_type)
    if not kids and "." not in fhir_type and definitions.type_kind(fhir_type) is not None:
        kids = definitions.children(definitions.json_type_name(fhir_type))
    return kids


def _element_type(el: definitions.ElementDef) -> str:
    if el.content_reference:
        return el.content_reference.lstrip("#")
    t = el.types[0]
    if t in ("BackboneElement", "Element"):
        return el.path
    return t


def _choice_suffix(fhir_type: str) -> str:
    name = definitions.json_type_name(fhir_type)
    return name[0].upper() + name[1:]


def _is_type(fhir_type: str, spec: str) -> bool:
    """``is spec`` for a value whose FHIR type is known at compile time (N1 §6.3, FHIR R4
    "FHIRPath types": System types through the primitive mapping)."""
    ns, name = m.split_type(spec)
    if ns == "System" or (ns is None and name in m.SYSTEM_TYPES and name not in m.COMPLEX_TYPES):
        return name == "Any" or m.SYSTEM_TYPE.get(fhir_type) == name
    return m.is_subtype(fhir_type, name)


# -- compiled values ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    """A choice element (``value`` of ``value[x]``) navigated but not yet narrowed by
    ``ofType()``: the focus it was reached from and its definition."""
    focus: Val
    name: str
    element: definitions.ElementDef


@dataclass(frozen=True)
class Val:
    """A compiled collection: ``sql`` is a scalar (at most one item, NULL when empty) unless
    ``many``, then a LIST (NULL or [] when empty). ``fhir_type``: the items' FHIR type (a
    primitive, datatype, backbone path or resource type); ``node``: where a complex value's
    elements are added to the schema; ``nulls``: the list may hold NULL items (a JSON null in
    a primitive array); ``choice``: set while a choice element awaits ``ofType()``;
    ``guard``/``base``: a single item kept only when the SQL condition ``guard`` holds
    (``where()`` on one item), ``base`` being the item unguarded, so that its elements can be
    read as ``CASE WHEN guard THEN base.element END`` without building the item; ``field``:
    the schema field a member navigation read (the runner's ``repeat`` unifies them)."""
    sql: str
    many: bool
    fhir_type: str | None
    node: SchemaNode | None = None
    nulls: bool = False
    choice: Choice | None = None
    guard: str | None = None
    base: str | None = None
    field: SchemaField | None = None

    @property
    def sql_type(self) -> str | None:
        """The DuckDB type of one item, when it is a primitive."""
        return None if self.fhir_type is None else sql_type_of(self.fhir_type)


@dataclass(frozen=True)
class Scope:
    """Where an expression is compiled: ``this`` is ``$this`` (the focus the expression starts
    from, or the item inside a ``where()``), ``row_index`` the SQL of ``%rowIndex``, and
    ``location`` the view element (``select[0].column[1].path``) named in run-time errors."""
    this: Val
    row_index: str
    location: str


def error_sql(location: str, reason: str, resource_type: str, d: Dialect = DUCKDB) -> str:
    """A SQL run-time error whose message the runner turns back into a ViewEvaluationError:
    unit-separated marker, element, reason and the resource (``Patient/<id>``)."""
    return d.error(f"concat(chr(31), 'sof', chr(31), {d.literal(location)}, chr(31), "
                   f"{d.literal(reason)}, chr(31), {d.literal(resource_type + '/')}, "
                   f"coalesce({d.field('r', 'id')}, ''))")


def _temporal_key_literal(value: tm.Temporal, d: Dialect) -> str:
    """The comparison key of a constant date/time, computed here."""
    return d.cast(d.array([f"CAST({d.literal(str(k))} AS DOUBLE)" for k in value.key()]),
                  "DOUBLE[]")


# -- the compiler --------------------------------------------------------------------------------

_COMPARISONS = frozenset({"<", ">", "<=", ">="})


class ExpressionCompiler:
    """Compiles the FHIRPath expressions of one view (sharing its schema and lambda names).

    ``root``: the resource (SQL ``r``); ``constants``: the view's ``%name`` values; ``dialect``:
    the SQL written.
    """

    def __init__(self, resource_type: str, constants: Mapping[str, Constant],
                 dialect: Dialect = DUCKDB) -> None:
        self.d = dialect
        self.resource_type = resource_type
        self.schema = resource_schema()
        self.root = Val("r", False, resource_type, self.schema)
        self.constants = constants
        self._names = 0

    # -- entry points

    def compile(self, text: str, scope: Scope) -> Val:
        """The compiled expression ``text`` evaluated on ``scope.this``."""
        val = self.expr(parse(text), scope.this, scope)
        if val.choice is not None:
            raise Unsupported(f"{scope.location}: the choice element '{val.choice.name}' is "
                              f"used without ofType()")
        return val

    def var(self) -> str:
        self._names += 1
        return f"_v{self._names}"

    def fail(self, scope: Scope, what: str) -> Unsupported:
        return Unsupported(f"{scope.location}: {what}")

    # -- shapes

    def single(self, v: Val, scope: Scope, what: str) -> str:
        """The one item of ``v`` (N1 §4.5); several items are an error at run time."""
        if not v.many:
            return v.sql
        err = self.error(scope.location, f"{what} expects a single item")
        return (f"(CASE WHEN {self.d.length(v.sql)} > 1 THEN {err} "
                f"ELSE {self.d.item(v.sql, 1)} END)")

    def error(self, location: str, reason: str) -> str:
        return error_sql(location, reason, self.resource_type, self.d)

    def exists(self, v: Val) -> str:
        if v.many:
            return f"(coalesce({self.d.length(v.sql)}, 0) > 0)"
        return f"({v.sql} IS NOT NULL)"

    def boolean(self, v: Val, scope: Scope, what: str) -> str:
        """``v`` as a Boolean (N1 §4.5): empty → NULL, one Boolean → it, one other item →
        true, several → error."""
        one = self.single(v, scope, what)
        if v.fhir_type == "boolean":
            return one
        return f"(CASE WHEN {one} IS NOT NULL THEN true END)"

    def as_list(self, v: Val) -> str:
        if v.many:
            return v.sql
        return self.d.filter(self.d.array([v.sql]), "_z", "_z IS NOT NULL")

    # -- the tree

    def expr(self, node: s.Node, focus: Val, scope: Scope) -> Val:
        method: Callable[[Any, Val, Scope], Val] | None = getattr(
            self, "c_" + type(node).__name__, None)
        if method is None:
            raise self.fail(scope, f"{type(node).__name__} is not supported")
        return method(node, focus, scope)

    def c_Literal(self, node: s.Literal, focus: Val, scope: Scope) -> Val:
        return self.value(node.value, scope)

    def value(self, v: Any, scope: Scope, fhir_type: str | None = None) -> Val:
        """A constant: a literal or a ``%name`` of the view."""
        if v is True or v is False:
            return Val("true" if v else "false", False, "boolean")
        if type(v) is int:
            return Val(f"CAST({v} AS BIGINT)", False, fhir_type or "integer")
        if type(v) is Decimal:
            return Val(f"CAST({self.d.literal(str(v))} AS DOUBLE)", False, "decimal")
        if type(v) is str:
            return Val(self.d.literal(v), False, fhir_type or "string")
        if isinstance(v, tm.Temporal):
            kind = fhir_type if fhir_type in TEMPORAL_TYPES else v.kind
            return Val(self.d.literal(v.text), False, kind)
        raise self.fail(scope, f"the value {v!r} is not supported")

    def c_External(self, node: s.External, focus: Val, scope: Scope) -> Val:
        if node.name == ROW_INDEX:
            return Val(scope.row_index, False, "integer")
        if node.name in ("resource", "rootResource", "context"):
            return self.root
        constant = self.constants.get(node.name)
        if constant is None:
            raise self.fail(scope, f"%{node.name} is not supported")
        fhir_type = "integer" if constant.type == "integer64" else constant.type
        return self.value(constant.value, scope, fhir_type)

    def c_Special(self, node: s.Special, focus: Val, scope: Scope) -> Val:
        if node.name == "this":
            return scope.this
        raise self.fail(scope, f"${node.name} is not supported")

    def c_Identifier(self, node: s.Identifier, focus: Val, scope: Scope) -> Val:
        return self.navigate(focus, node.name, scope)

    def c_Invoke(self, node: s.Invoke, focus: Val, scope: Scope) -> Val:
        source = self.expr(node.source, focus, scope)
        inv = node.invocation
        if isinstance(inv, s.Identifier):
            return self.navigate(source, inv.name, scope)
        if isinstance(inv, s.Function):
            return self.function(inv, source, scope)
        return self.expr(inv, source, scope)

    def c_Function(self, node: s.Function, focus: Val, scope: Scope) -> Val:
        return self.function(node, focus, scope)

    def c_Indexer(self, node: s.Indexer, focus: Val, scope: Scope) -> Val:
        source = self.defined(self.expr(node.source, focus, scope), scope)
        index = self.expr(node.index, scope.this, scope)
        if index.many or _kind(index.fhir_type) != "number" or index.fhir_type == "decimal":
            raise self.fail(scope, "an index must be a single integer")
        if not source.many:
            return replace(source, sql=f"(CASE WHEN {index.sql} = 0 THEN {source.sql} END)")
        m_ = re.fullmatch(r"CAST\((\d+) AS BIGINT\)", index.sql)
        if m_ is not None:
            sql = self.d.item(source.sql, int(m_.group(1)) + 1)
        else:
            sql = (f"(CASE WHEN {index.sql} >= 0 THEN {self.d.item_at(source.sql, index.sql)} "
                   f"END)")
        return replace(source, sql=sql, many=False, nulls=False)

    def c_Unary(self, node: s.Unary, focus: Val, scope: Scope) -> Val:
        v = self.defined(self.expr(node.operand, focus, scope), scope)
        if _kind(v.fhir_type) != "number":
            raise self.fail(scope, f"unary {node.op} applies to numbers")
        one = self.single(v, scope, f"unary {node.op}")
        return Val(one if node.op == "+" else f"(-{one})", False, v.fhir_type)

    def c_TypeOp(self, node: s.TypeOp, focus: Val, scope: Scope) -> Val:
        operand = self.expr(node.operand, focus, scope)
        narrowed = self.of_type(operand, node.type_name, scope)
        if node.op == "as":
            return narrowed
        test = self.exists(narrowed)
        if operand.choice is not None:  # one choice element: at most one of its keys is set
            if operand.choice.focus.many:
                raise self.fail(scope, "'is' on the choice elements of several items")
            present = self.choice_present(operand.choice)
        else:
            present = f"{self.single(operand, scope, 'is')} IS NOT NULL"
        return Val(f"(CASE WHEN {present} THEN {test} END)", False, "boolean")

    # -- navigation (N1 §3; FHIR JSON arrays flatten)

    def defined(self, v: Val, scope: Scope) -> Val:
        if v.choice is not None:
            raise self.fail(scope, f"the choice element '{v.choice.name}' is used without "
                                   f"ofType()")
        return v

    def navigate(self, focus: Val, name: str, scope: Scope) -> Val:
        focus = self.defined(focus, scope)
        if focus is self.root and name == self.resource_type:
            return focus  # a path may start with the resource type (N1 "Path selection")
        if focus.node is None or focus.fhir_type is None:
            raise self.fail(scope, f"'{name}' on a value of type {focus.fhir_type} is not "
                                   f"supported")
        kids = _children(focus.fhir_type)
        el = kids.get(name)
        if el is None:
            choice = kids.get(name + "[x]")
            if choice is None:
                raise UnknownElement(f"{scope.location}: {focus.fhir_type}.{name} is not an R4 "
                                     f"element")
            return Val("NULL", focus.many, None, choice=Choice(focus, name, choice))
        if not el.types and not el.content_reference:
            raise self.fail(scope, f"{el.path} has no type")
        return self.member(focus, ((name, _element_type(el)),), _element_type(el), el.repeats)

    def member(self, focus: Val, keys: tuple[tuple[str, str], ...], fhir_type: str,
               repeats: bool) -> Val:
        """Navigate a JSON key on every item of ``focus``: ``keys`` holds (key, FHIR type)
        pairs, several for a choice narrowed to several types (at most one is present in
        FHIR JSON: the first present is taken); ``fhir_type`` is the result's type."""
        assert focus.node is not None
        fields = [focus.node.add(k, t, repeats) for k, t in keys]
        node = fields[0].node
        if node is not None:
            for f in fields[1:]:  # one schema for all keys, so that their values coalesce
                if f.node is not node:
                    assert f.node is not None
                    node.merge(f.node)
                    f.node = node
        primitive = node is None

        def get(item: str) -> str:
            parts = [self.d.field(item, f.key) for f in fields]
            return parts[0] if len(parts) == 1 else "coalesce(" + ", ".join(parts) + ")"

        field = fields[0] if len(fields) == 1 else None
        if not focus.many:
            if focus.guard is not None and focus.base is not None:
                sql = f"(CASE WHEN {focus.guard} THEN {get(focus.base)} END)"
            else:
                sql = get(focus.sql)
            return Val(sql, repeats, fhir_type, node, nulls=repeats and primitive, field=field)
        x = self.var()
        if repeats:
            sql = self.d.flatten(self.d.transform(focus.sql, x, get(x)))
            return Val(sql, True, fhir_type, node, nulls=primitive, field=field)
        sql = self.d.present(focus.sql, x, get(x))
        return Val(sql, True, fhir_type, node, field=field)

    def of_type(self, v: Val, spec: str, scope: Scope) -> Val:
        """``ofType(spec)``: a choice element narrowed to its matching JSON keys, or a value of
        known type kept or dropped."""
        _, name = m.split_type(spec)
        if v.choice is not None:
            c = v.choice
            matching = [t for t in c.element.types if _is_type(t, spec)]
            if not matching:
                return Val("NULL", c.focus.many, name)
            if len({sql_type_of(t) for t in matching}) > 1:
                raise self.fail(scope, f"ofType({spec}) on {c.element.path} mixes types")
            keys = tuple((c.name + _choice_suffix(t), t) for t in matching)
            return self.member(c.focus, keys, matching[0] if len(matching) == 1 else name,
                               False)
        if v.fhir_type is None:
            raise self.fail(scope, f"ofType({spec}) on a value of unknown type")
        if _is_type(v.fhir_type, spec):
            return v
        return Val("NULL", v.many, v.fhir_type)

    def choice_present(self, c: Choice) -> str:
        """Whether any item of the focus has a value for the choice element (any of its
        JSON keys ``value<Type>``)."""
        assert c.focus.node is not None
        keys = [c.name + _choice_suffix(t) for t in c.element.types]
        for k, t in zip(keys, c.element.types, strict=True):
            c.focus.node.add(k, t, False)

        def test(item: str) -> str:
            return "(" + " OR ".join(f"{self.d.field(item, k)} IS NOT NULL" for k in keys) + ")"
        if not c.focus.many:
            return test(c.focus.sql)
        x = self.var()
        return f"(coalesce({self.d.length(self.d.filter(c.focus.sql, x, test(x)))}, 0) > 0)"

    # -- functions (N1 §5; SQL on FHIR v2 "FHIRPath Functionality")

    def function(self, node: s.Function, focus: Val, scope: Scope) -> Val:
        name, args = node.name, node.args
        if name == "ofType":
            return self.of_type(focus, _type_arg(node, scope, self), scope)
        if focus.choice is not None and name in ("exists", "empty") and not args:
            present = self.choice_present(focus.choice)
            return Val(present if name == "exists" else f"(NOT {present})", False, "boolean")
        focus = self.defined(focus, scope)
        handler = _FUNCTIONS.get(name)
        if handler is None:
            raise self.fail(scope, f"{name}() is not supported")
        arity = handler[1]
        if len(args) not in arity:
            raise self.fail(scope, f"{name}() with {len(args)} arguments")
        return handler[0](self, node, focus, scope)

    def where(self, focus: Val, cond: s.Node, scope: Scope) -> Val:
        """``focus.where(cond)``: the items for which ``cond`` is true."""
        if not focus.many:
            inner = replace(scope, this=focus)
            test = self.boolean(self.expr(cond, focus, inner), inner, "where()")
            if focus.guard is not None:
                test = f"({focus.guard} AND {test})"
            base = focus.base if focus.base is not None else focus.sql
            kept = f"(CASE WHEN {test} THEN {base} END)"
            if _is_name(base):
                return replace(focus, sql=kept, guard=test, base=base)
            return replace(focus, sql=kept, guard=None, base=None)
        x = self.var()
        item = Val(x, False, focus.fhir_type, focus.node)
        inner = replace(scope, this=item)
        test = self.boolean(self.expr(cond, item, inner), inner, "where()")
        return replace(focus, sql=self.d.filter(focus.sql, x, test), nulls=False)

    def argument(self, node: s.Node, scope: Scope) -> Val:
        """A non-lambda argument: evaluated once, on ``$this`` of the invocation."""
        return self.defined(self.expr(node, scope.this, scope), scope)

    # -- operators (N1 §6)

    def c_Binary(self, node: s.Binary, focus: Val, scope: Scope) -> Val:
        op = node.op
        left = self.defined(self.expr(node.left, focus, scope), scope)
        right = self.defined(self.expr(node.right, focus, scope), scope)
        if op in ("=", "!="):
            eq = self.equal(left, right, scope, op)
            return Val(eq if op == "=" else f"(NOT {eq})", False, "boolean")
        if op in _COMPARISONS:
            return Val(self.compare(left, right, scope, op), False, "boolean")
        if op in ("and", "or", "xor", "implies"):
            a = self.boolean(left, scope, op)
            b = self.boolean(right, scope, op)
            sql = {"and": f"({a} AND {b})", "or": f"({a} OR {b})",
                   "xor": f"({a} <> {b})", "implies": f"((NOT {a}) OR {b})"}[op]
            return Val(sql, False, "boolean")
        if op in ("+", "-", "*", "/", "div", "mod", "&"):
            return self.math(left, right, scope, op)
        if op in ("in", "contains"):
            item, coll = (left, right) if op == "in" else (right, left)
            return self.membership(item, coll, scope, op)
        raise self.fail(scope, f"the operator {op} is not supported")

    def _pair(self, left: Val, right: Val, scope: Scope, op: str) -> tuple[str, str, str]:
        """Both sides as SQL of the same comparison class; (a, b, kind)."""
        ka, kb = _kind(left.fhir_type), _kind(right.fhir_type)
        if ka is None or kb is None:
            raise self.fail(scope, f"{op} on {left.fhir_type} and {right.fhir_type} is not "
                                   f"supported")
        a = self.single(left, scope, op)
        b = self.single(right, scope, op)
        temporal = {"date", "dateTime", "time"}
        if ka in temporal or kb in temporal:
            if ka == "string" and not left.many:
                a_lit = self.d.unliteral(left.sql)
                if a_lit is None:
                    raise self.fail(scope, f"{op} between a string and a {kb}")
                return self._temporal_literal(a_lit, kb, scope, op), \
                    self.d.temporal_key(b, kb), "temporal"
            if kb == "string" and not right.many:
                b_lit = self.d.unliteral(right.sql)
                if b_lit is None:
                    raise self.fail(scope, f"{op} between a {ka} and a string")
                return self.d.temporal_key(a, ka), \
                    self._temporal_literal(b_lit, ka, scope, op), "temporal"
            if ka not in temporal or kb not in temporal:
                return a, b, "mismatch"
            if (ka == "time") != (kb == "time"):
                return a, b, "mismatch"
            return self._temporal_side(left, a, ka), self._temporal_side(right, b, kb), \
                "temporal"
        if ka != kb:
            return a, b, "mismatch"
        return a, b, ka

    def _temporal_side(self, v: Val, sql: str, kind: str) -> str:
        text = self.d.unliteral(v.sql)
        if text is not None:  # a literal or constant: its key is computed here
            parsed = tm.from_fhir(text, kind)
            if parsed is not None:
                return _temporal_key_literal(parsed, self.d)
        return self.d.temporal_key(sql, kind)

    def _temporal_literal(self, text: str, kind: str, scope: Scope, op: str) -> str:
        like = {"date": tm.Date("2000"), "dateTime": tm.DateTime("2000"),
                "time": tm.Time("00")}[kind]
        parsed = tm.coerce_like(text, like)
        if parsed is None:
            return self.d.cast("NULL", "DOUBLE[]")
        return _temporal_key_literal(parsed, self.d)

    def equal(self, left: Val, right: Val, scope: Scope, op: str) -> str:
        """N1 §6.1.1 ``=`` (collections item by item; empty if either side is empty)."""
        if left.many and right.many:
            raise self.fail(scope, f"{op} between two collections is not supported")
        if left.many or right.many:
            many, one = (left, right) if left.many else (right, left)
            one_item = Val(one.sql, False, one.fhir_type, one.node)
            first = replace(many, sql=self.d.item(many.sql, 1), many=False)
            pair = (first, one_item) if left.many else (one_item, first)
            eq = self._equal_items(*pair, scope, op)
            return (f"(CASE WHEN coalesce({self.d.length(many.sql)}, 0) > 1 "
                    f"AND {one.sql} IS NOT NULL "
                    f"THEN false ELSE {eq} END)")
        return self._equal_items(left, right, scope, op)

    def _equal_items(self, left: Val, right: Val, scope: Scope, op: str) -> str:
        a, b, kind = self._pair(left, right, scope, op)
        if kind == "mismatch":
            return f"(CASE WHEN {a} IS NOT NULL AND {b} IS NOT NULL THEN false END)"
        if kind == "temporal":
            return f"({self.d.tcmp(a, b)} = 0)"
        return f"({a} = {b})"

    def compare(self, left: Val, right: Val, scope: Scope, op: str) -> str:
        a, b, kind = self._pair(left, right, scope, op)
        if kind == "mismatch" or kind == "boolean":
            raise self.fail(scope, f"{op} on {left.fhir_type} and {right.fhir_type}")
        if kind == "temporal":
            return f"({self.d.tcmp(a, b)} {op} 0)"
        return f"({a} {op} {b})"

    def math(self, left: Val, right: Val, scope: Scope, op: str) -> Val:
        ka, kb = _kind(left.fhir_type), _kind(right.fhir_type)
        a = self.single(left, scope, op)
        b = self.single(right, scope, op)
        if op == "&":
            if ka != "string" or kb != "string":
                raise self.fail(scope, "& applies to strings")
            return Val(f"(coalesce({a}, '') || coalesce({b}, ''))", False, "string")
        if ka == "string" and kb == "string" and op == "+":
            return Val(f"({a} || {b})", False, "string")
        if ka != "number" or kb != "number":
            raise self.fail(scope, f"{op} on {left.fhir_type} and {right.fhir_type}")
        integers = left.fhir_type in INTEGER_TYPES and right.fhir_type in INTEGER_TYPES
        if op == "/":
            return Val(f"(CASE WHEN {b} <> 0 THEN CAST({a} AS DOUBLE) / {b} END)", False,
                       "decimal")
        if op == "div":
            sql = f"(CASE WHEN {b} <> 0 THEN {self.d.trunc(f'CAST({a} AS DOUBLE) / {b}')} END)"
            return Val(f"CAST({sql} AS BIGINT)" if integers else sql, False,
                       "integer" if integers else "decimal")
        if op == "mod":
            sql = f"(CASE WHEN {b} <> 0 THEN {self.d.fmod(a, b)} END)"
            return Val(f"CAST({sql} AS BIGINT)" if integers else sql, False,
                       "integer" if integers else "decimal")
        return Val(f"({a} {op} {b})", False, "integer" if integers else "decimal")

    def membership(self, item: Val, coll: Val, scope: Scope, op: str) -> Val:
        one = self.single(item, scope, op)
        ki, kc = _kind(item.fhir_type), _kind(coll.fhir_type)
        if ki is None or ki != kc or ki in ("date", "dateTime", "time"):
            raise self.fail(scope, f"{op} on {item.fhir_type} and {coll.fhir_type}")
        contained = f"coalesce({self.d.contains(self.as_list(coll), one)}, false)"
        return Val(f"(CASE WHEN {one} IS NOT NULL THEN {contained} END)", False, "boolean")


def _is_name(sql: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", sql) is not None


def _type_arg(node: s.Function, scope: Scope, c: ExpressionCompiler) -> str:
    if len(node.args) != 1:
        raise c.fail(scope, f"{node.name}() takes a type")
    arg = node.args[0]
    if isinstance(arg, s.Identifier):
        return arg.name
    if isinstance(arg, s.Invoke) and isinstance(arg.source, s.Identifier) and \
            isinstance(arg.invocation, s.Identifier):
        return f"{arg.source.name}.{arg.invocation.name}"
    raise c.fail(scope, f"{node.name}() takes a type name")


# -- the functions ---------------------------------------------------------------------------------

Handler = Callable[[ExpressionCompiler, s.Function, Val, Scope], Val]


def _f_where(c: ExpressionCompiler, node: s.Function, v: Val, scope: Scope) -> Val:
    return c.where(v, node.args[0], scope)


def _f_exists(c: ExpressionCompiler, node: s.Function, v: Val, scope: Scope) -> Val:
    if node.args:
        v = c.where(v, node.args[0], scope)
    return Val(c.exists(v), False, "boolean")


def _f_empty(c: ExpressionCompiler, node: s.Function, v: Val, scope: Scope) -> Val:
    return Val(f"(NOT {c.exists(v)})", False, "boolean")


def _f_first(c: ExpressionCompiler, node: s.Function, v: Val, scope: Scope) -> Val:
    return replace(v, sql=c.d.item(v.sql, 1), many=False, nulls=False) if v.many else v


def _f_last(c: ExpressionCompiler, node: s.Function, v: Val, scope: Scope) -> Val:
    return replace(v, sql=c.d.item(v.sql, -1), many=False, nulls=False) if v.many else v


def _f_single(c: ExpressionCompiler, node: s.Function, v: Val, scope: Scope) -> Val:
    return replace(v, sql=c.single(v, scope, "single()"), many=False, nulls=False)


def _f_count(c: ExpressionCompiler, node: s.Function, v: Val, scope: Scope) -> Val:
    if v.many:
        return Val(f"CAST(coalesce({c.d.length(v.sql)}, 0) AS BIGINT)", False, "integer")
    return Val(f"CAST(CASE WHEN {v.sql} IS NULL THEN 0 ELSE 1 END AS BIGINT)", False,
               "integer")


def _count_arg(c: ExpressionCompiler, node: s.Function, scope: Scope) -> str:
    n = c.argument(node.args[0], scope)
    if n.many or n.fhir_type not in INTEGER_TYPES:
        raise c.fail(scope, f"{node.name}() takes an integer")
    return n.sql


def _f_tail(c: ExpressionCompiler, node: s.Function, v: Val, scope: Scope) -> Val:
    return replace(v, sql=c.d.skip(c.as_list(v), "1"), many=True)


def _f_skip(c: ExpressionCompiler, node: s.Function, v: Val, scope: Scope) -> Val:
    n = _count_arg(c, node, scope)
    return replace(v, sql=c.d.skip(c.as_list(v), f"greatest({n}, 0)"), many=True)


def _f_take(c: ExpressionCompiler, node: s.Function, v: Val, scope: Scope) -> Val:
    n = _count_arg(c, node, scope)
    return replace(v, sql=c.d.take(c.as_list(v), f"greatest({n}, 0)"), many=True)


def _f_not(c: ExpressionCompiler, node: s.Function, v: Val, scope: Scope) -> Val:
    return Val(f"(NOT {c.boolean(v, scope, 'not()')})", False, "boolean")


def _f_join(c: ExpressionCompiler, node: s.Function, v: Val, scope: Scope) -> Val:
    if _kind(v.fhir_type) != "string":
        raise c.fail(scope, "join() of values that are not strings")
    sep = "''"
    if node.args:
        arg = c.argument(node.args[0], scope)
        if arg.many or _kind(arg.fhir_type) != "string":
            raise c.fail(scope, "join() takes a string")
        sep = f"coalesce({arg.sql}, '')"
    return Val(f"coalesce({c.d.join(c.as_list(v), sep)}, '')", False, "string")


def _f_extension(c: ExpressionCompiler, node: s.Function, v: Val, scope: Scope) -> Val:
    url = c.argument(node.args[0], scope)
    if url.many or _kind(url.fhir_type) != "string":
        raise c.fail(scope, "extension() takes a url")
    ext = c.navigate(v, "extension", scope)
    assert ext.node is not None
    ext.node.add("url", "uri", False)
    x = c.var()
    sql = c.d.filter(ext.sql, x, f"{c.d.field(x, 'url')} = {url.sql}")
    return replace(ext, sql=sql)


def _f_resource_key(c: ExpressionCompiler, node: s.Function, v: Val, scope: Scope) -> Val:
    if v is not c.root:
        raise c.fail(scope, "getResourceKey() on something else than the resource")
    return Val(c.d.field("r", "id"), False, "id")


#: a resource id (R4 ``id``)
_ID = r"[A-Za-z0-9\-.]{1,64}"


def _reference_pattern(resource_type: str | None) -> str:
    """The reference evaluator's literal-reference pattern (``Type/id`` at the end, optionally
    after a base URL and before ``/_history/v``) anchored, refusing a contained ``#id``, with
    the id as group 1. A reference string matches it at one position at most, so anchoring
    does not change which type and id are found."""
    rtype = re.escape(resource_type) if resource_type is not None else "[A-Z][A-Za-z]+"
    return rf"^(?:(?:[^#].*)?/)?{rtype}/([A-Za-z0-9\-.]{{1,64}})(?:/_history/[^/]+)?$"


def _f_reference_key(c: ExpressionCompiler, node: s.Function, v: Val, scope: Scope) -> Val:
    """getReferenceKey([type]): the id of a literal reference ``Type/id`` (also absolute and
    versioned), not of a contained ``#id``, like the reference evaluator."""
    if v.fhir_type != "Reference":
        raise c.fail(scope, "getReferenceKey() on something else than a Reference")
    want = _type_arg(node, scope, c).rpartition(".")[2] if node.args else None
    ref = c.member(v, (("reference", "string"),), "string", False)
    pattern = c.d.literal(_reference_pattern(want))

    def key(sql: str) -> str:
        slow = f"nullif(regexp_extract({sql}, {pattern}, 1), '')"
        if want is None:
            return slow
        # the usual relative reference Type/id is answered without the regular expression
        n = len(want) + 1
        fast = (f"{c.d.starts_with(sql, c.d.literal(want + '/'))} AND "
                f"{c.d.full_match(f'substr({sql}, {n + 1})', _ID)}")
        return f"(CASE WHEN {fast} THEN substr({sql}, {n + 1}) ELSE {slow} END)"
    if not ref.many:
        return Val(key(ref.sql), False, "id")
    x = c.var()
    return Val(c.d.present(ref.sql, x, key(x)), True, "id")


def _boundary(high: bool) -> Handler:
    def boundary(c: ExpressionCompiler, node: s.Function, v: Val, scope: Scope) -> Val:
        """``lowBoundary()``/``highBoundary()`` of a date, dateTime or time (without the
        precision argument); a decimal's needs its places as written, which a DOUBLE lost."""
        kind = _kind(v.fhir_type)
        if kind is None or kind not in ("date", "dateTime", "time") or node.args:
            raise c.fail(scope, f"{node.name}({'...' if node.args else ''}) of "
                                f"{v.fhir_type} is not supported")
        one = c.single(v, scope, f"{node.name}()")
        return Val(c.d.boundary(one, kind, high), False, kind)
    return boundary


_FUNCTIONS: dict[str, tuple[Handler, tuple[int, ...]]] = {
    "where": (_f_where, (1,)),
    "exists": (_f_exists, (0, 1)),
    "empty": (_f_empty, (0,)),
    "first": (_f_first, (0,)),
    "last": (_f_last, (0,)),
    "single": (_f_single, (0,)),
    "count": (_f_count, (0,)),
    "tail": (_f_tail, (0,)),
    "skip": (_f_skip, (1,)),
    "take": (_f_take, (1,)),
    "not": (_f_not, (0,)),
    "join": (_f_join, (0, 1)),
    "extension": (_f_extension, (1,)),
    "getResourceKey": (_f_resource_key, (0,)),
    "getReferenceKey": (_f_reference_key, (0, 1)),
    "lowBoundary": (_boundary(False), (0, 1)),
    "highBoundary": (_boundary(True), (0, 1)),
}
