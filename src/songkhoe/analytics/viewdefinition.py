"""SQL-on-FHIR v2 ViewDefinitions: parsed, validated and compiled into an immutable structure.

Implements the ViewDefinition logical model of SQL on FHIR v2
(https://build.fhir.org/ig/FHIR/sql-on-fhir-v2/StructureDefinition-ViewDefinition.html):
``resource``, ``status``, ``constant`` (``name`` + one ``value[x]``), ``select`` (``column``
with ``name``/``path``/``type``/``collection``/``description``/``tag``, nested ``select``,
``forEach``/``forEachOrNull``/``repeat``, ``unionAll``) and ``where``; the invariants
``sql-name`` (names match ``^[A-Za-z][A-Za-z0-9_]*$``) and "at most one of forEach,
forEachOrNull, repeat"; and the column rules of the "Processing Algorithm" page
(https://build.fhir.org/ig/FHIR/sql-on-fhir-v2/processing_model.html, "Validate Columns":
a column name is defined once per view, the branches of a ``unionAll`` produce the same
columns in the same order) with the "Column Ordering" rule of the ViewDefinition page (a
select's own columns, then its nested selects' columns, then its ``unionAll``'s).

Every FHIRPath expression is compiled here, once (see :mod:`songkhoe.fhir.fhirpath`), and every
``%name`` it reads must be a constant of the view or ``%rowIndex`` (the runner's position of the
current row, see :mod:`.rows`).

    view = parse_view(json.loads(text))     # ViewDefinitionError if invalid
    view.columns                            # (OutputColumn(name, type, collection), ...)

An invalid definition raises :class:`ViewDefinitionError`, whose ``path`` names the offending
element the way FHIR locates it (``select[0].column[1].name``) and whose ``reason`` says what
was expected and what was found.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from songkhoe.fhir.fhirpath import Expression, FHIRPathError, compile
from songkhoe.fhir.fhirpath.model import PRIMITIVE_TYPES, primitive_value
from songkhoe.fhir.primitives import check, describe

#: the ``sql-name`` invariant of ViewDefinition.name, constant.name and column.name
SQL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: the environment variable the runner sets to the index of the current row (not a constant)
ROW_INDEX = "rowIndex"
#: ViewDefinition.status (binding to publication-status, required)
STATUSES = frozenset({"draft", "active", "retired", "unknown"})
#: the types a constant's ``value[x]`` may have, by the suffix of its JSON key
CONSTANT_TYPES: dict[str, str] = {
    t[0].upper() + t[1:]: t for t in (
        "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id",
        "instant", "integer", "integer64", "oid", "string", "positiveInt", "time",
        "unsignedInt", "uri", "url", "uuid")
}
_INT64 = re.compile(r"-?(0|[1-9][0-9]{0,18})")
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]+")
_TYPE_CODE = re.compile(r"[A-Z][A-Za-z0-9_]*|http://hl7\.org/fhirpath/System\.[A-Z][A-Za-z]+")
_FHIR_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(-[A-Za-z0-9.]+)?")

# the elements a ViewDefinition may have: its own and those of CanonicalResource (FHIR R5)
_VIEW_ELEMENTS = frozenset({
    "resourceType", "id", "meta", "implicitRules", "language", "text", "contained",
    "extension", "modifierExtension", "url", "identifier", "version", "versionAlgorithmString",
    "versionAlgorithmCoding", "name", "title", "status", "experimental", "date", "publisher",
    "contact", "description", "useContext", "jurisdiction", "purpose", "copyright",
    "copyrightLabel", "resource", "fhirVersion", "constant", "select", "where",
})
_ELEMENT = frozenset({"id", "extension", "modifierExtension"})  # any BackboneElement has these
_SELECT_ELEMENTS = _ELEMENT | {"column", "select", "forEach", "forEachOrNull", "repeat",
                               "unionAll"}
_COLUMN_ELEMENTS = _ELEMENT | {"name", "path", "description", "collection", "type", "tag"}
_TAG_ELEMENTS = _ELEMENT | {"name", "value"}
_WHERE_ELEMENTS = _ELEMENT | {"path", "description"}


class ViewDefinitionError(ValueError):
    """A ViewDefinition that does not conform to SQL on FHIR v2.

    ``path``: the offending element, e.g. ``select[0].column[1].name`` (empty for the whole
    definition); ``reason``: what was expected, and what was found.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


@dataclass(frozen=True, slots=True)
class Tag:
    """``select.column.tag``: implementation-specific metadata such as ``ansi/type``."""
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class OutputColumn:
    """A column of the view's output: its name, FHIR type (None if not declared), whether each
    value is a collection (a list), and where it is defined (``select[0].column[1]``; for a
    ``unionAll``, in its first branch; not part of equality)."""
    name: str
    type: str | None
    collection: bool
    location: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Column:
    """``select.column``: a value computed by ``expression`` from the select's focus."""
    location: str
    name: str
    path: str
    expression: Expression
    type: str | None
    collection: bool
    description: str | None
    tags: tuple[Tag, ...]

    @property
    def output(self) -> OutputColumn:
        return OutputColumn(self.name, self.type, self.collection, self.location)


@dataclass(frozen=True, slots=True)
class Select:
    """``select`` (or a branch of a ``unionAll``): columns and nested selects, evaluated once
    per item of ``for_each`` / ``for_each_or_null`` / the ``repeat`` traversal when one is
    given (at most one is), else on the parent's focus.

    ``output`` is the columns this select produces, in output order.
    """
    location: str
    columns: tuple[Column, ...]
    selects: tuple[Select, ...]
    union_all: tuple[Select, ...]
    for_each: Expression | None
    for_each_or_null: Expression | None
    repeat: tuple[Expression, ...]
    output: tuple[OutputColumn, ...]


@dataclass(frozen=True, slots=True)
class Where:
    """``where``: a FHIRPath condition on the resource (must give a boolean or nothing)."""
    location: str
    path: str
    expression: Expression
    description: str | None


@dataclass(frozen=True, slots=True)
class Constant:
    """``constant``: ``%name`` in the view's expressions.

    ``type``: the FHIR type of ``value[x]``; ``json``: the value as written (a decimal as
    :class:`~decimal.Decimal`, an integer64 as int); ``value``: the FHIRPath value the
    expressions see (a date as :class:`~songkhoe.fhir.fhirpath.Date`, etc.).
    """
    location: str
    name: str
    type: str
    json: Any
    value: Any


@dataclass(frozen=True, slots=True)
class ViewDefinition:
    """A valid, compiled ViewDefinition. ``columns``: the output columns in order;
    ``variables``: the constants by name as FHIRPath values (read-only)."""
    resource: str
    name: str | None
    url: str | None
    title: str | None
    status: str | None
    description: str | None
    fhir_versions: tuple[str, ...]
    constants: tuple[Constant, ...]
    selects: tuple[Select, ...]
    where: tuple[Where, ...]
    columns: tuple[OutputColumn, ...]
    variables: Mapping[str, Any]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def parse_view(definition: Any) -> ViewDefinition:
    """The validated, compiled form of a ViewDefinition given as parsed JSON.

    Raises :class:`ViewDefinitionError` naming the first invalid element.
    """
    return _Parser().view(definition)


# -- parsing ------------------------------------------------------------------------------------

def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Parser:
    """One parse: remembers the constants so expressions can be checked against them."""

    def __init__(self) -> None:
        self.constant_names: frozenset[str] = frozenset()

    # generic shapes

    @staticmethod
    def _object(value: Any, path: str, allowed: frozenset[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise ViewDefinitionError(path, f"expected an object, got {describe(value)}")
        for key in value:
            if key not in allowed and not (isinstance(key, str) and key.startswith("_")
                                           and key[1:] in allowed):
                known = ", ".join(sorted(k for k in allowed if k not in _ELEMENT))
                raise ViewDefinitionError(_at(path, str(key)),
                                          f"unknown element (expected one of: {known})")
        return value

    # FHIR JSON has neither null nor empty arrays (http://hl7.org/fhir/R4/json.html)

    @staticmethod
    def _array(obj: Mapping[str, Any], key: str, path: str, *, required: bool = False
               ) -> list[Any]:
        where = _at(path, key)
        if key not in obj:
            if required:
                raise ViewDefinitionError(where, "is required (a non-empty array)")
            return []
        value = obj[key]
        if not isinstance(value, list) or not value:
            raise ViewDefinitionError(where, f"expected a non-empty array, got "
                                             f"{describe(value)}")
        return value

    @staticmethod
    def _string(obj: Mapping[str, Any], key: str, path: str, *, required: bool = False
                ) -> str | None:
        where = _at(path, key)
        if key not in obj:
            if required:
                raise ViewDefinitionError(where, "is required (a string)")
            return None
        value = obj[key]
        if not isinstance(value, str) or not value.strip():
            raise ViewDefinitionError(where, f"expected a non-empty string, got "
                                             f"{describe(value)}")
        return value

    @staticmethod
    def _sql_name(obj: Mapping[str, Any], key: str, path: str, *, required: bool) -> str | None:
        name = _Parser._string(obj, key, path, required=required)
        if name is not None and SQL_NAME.fullmatch(name) is None:
            raise ViewDefinitionError(
                _at(path, key), f"expected a name of letters, digits and underscores starting "
                                f"with a letter (usable as a database name), got '{name}'")
        return name

    def _expression(self, text: Any, path: str, base_type: str | None) -> Expression:
        if not isinstance(text, str) or not text.strip():
            raise ViewDefinitionError(path, f"expected a FHIRPath expression (a non-empty "
                                            f"string), got {describe(text)}")
        try:
            expr = compile(text, base_type)
        except FHIRPathError as exc:
            raise ViewDefinitionError(path, f"invalid FHIRPath: {exc}") from exc
        undefined = sorted(expr.free_variables - self.constant_names - {ROW_INDEX})
        if undefined:
            names = ", ".join(f"%{n}" for n in undefined)
            raise ViewDefinitionError(path, f"{names} is not a constant of this view")
        return expr

    # the view

    def view(self, definition: Any) -> ViewDefinition:
        view = self._object(definition, "", _VIEW_ELEMENTS)
        rt = view.get("resourceType", "ViewDefinition")
        if rt != "ViewDefinition":
            raise ViewDefinitionError("resourceType",
                                      f"expected 'ViewDefinition', got {describe(rt)}")
        resource = self._string(view, "resource", "", required=True)
        assert resource is not None
        if _RESOURCE_TYPE.fullmatch(resource) is None:
            raise ViewDefinitionError("resource", f"expected a FHIR resource type such as "
                                                  f"'Patient', got '{resource}'")
        status = self._string(view, "status", "")
        if status is not None and status not in STATUSES:
            raise ViewDefinitionError("status", f"expected one of draft, active, retired, "
                                                f"unknown, got '{status}'")
        versions = self._array(view, "fhirVersion", "")
        for i, v in enumerate(versions):
            if not isinstance(v, str) or _FHIR_VERSION.fullmatch(v) is None:
                raise ViewDefinitionError(f"fhirVersion[{i}]", f"expected a FHIR version such "
                                                               f"as '4.0.1', got {describe(v)}")
        name = self._sql_name(view, "name", "", required=False)
        constants = tuple(self.constant(c, f"constant[{i}]")
                          for i, c in enumerate(self._array(view, "constant", "")))
        seen: set[str] = set()
        for c in constants:
            if c.name in seen:
                raise ViewDefinitionError(_at(c.location, "name"),
                                          f"constant '{c.name}' is defined more than once")
            seen.add(c.name)
        self.constant_names = frozenset(seen)

        selects = tuple(self.select(s, f"select[{i}]", resource) for i, s in
                        enumerate(self._array(view, "select", "", required=True)))
        where = tuple(self.where(w, f"where[{i}]", resource)
                      for i, w in enumerate(self._array(view, "where", "")))
        # every select has a column (at least one of column, select, unionAll, recursively)
        columns: list[OutputColumn] = []
        names: dict[str, str] = {}
        for s in selects:
            self._add_columns(columns, names, s)
        return ViewDefinition(
            resource=resource, name=name, url=self._string(view, "url", ""),
            title=self._string(view, "title", ""), status=status,
            description=self._string(view, "description", ""),
            fhir_versions=tuple(versions), constants=constants, selects=selects, where=where,
            columns=tuple(columns),
            variables=MappingProxyType({c.name: c.value for c in constants}))

    def constant(self, value: Any, path: str) -> Constant:
        obj = self._object(value, path, _ELEMENT | {"name"} |
                           {"value" + s for s in CONSTANT_TYPES})
        name = self._sql_name(obj, "name", path, required=True)
        assert name is not None
        if name == ROW_INDEX:
            raise ViewDefinitionError(_at(path, "name"), f"'{ROW_INDEX}' is reserved for the "
                                                         f"index of the current row")
        keys = [k for k in obj if k.startswith("value")]
        if len(keys) != 1:
            got = "none" if not keys else " and ".join(keys)
            raise ViewDefinitionError(path, f"expected exactly one value[x] (valueString, "
                                            f"valueInteger, valueDate, ...), got {got}")
        key = keys[0]
        fhir_type = CONSTANT_TYPES[key[5:]]
        raw = obj[key]
        if fhir_type == "integer64":  # R5: a JSON string holding a 64-bit integer
            if not isinstance(raw, str) or _INT64.fullmatch(raw) is None or \
                    not -2**63 <= int(raw) < 2**63:
                raise ViewDefinitionError(_at(path, key), f"expected an integer64 (a string of "
                                                          f"digits), got {describe(raw)}")
            json: Any = int(raw)
        else:
            problem = check(fhir_type, raw)
            if problem is not None:
                raise ViewDefinitionError(_at(path, key), problem)
            json = raw
            if fhir_type == "decimal":
                json = Decimal(repr(raw)) if type(raw) is float else Decimal(raw)
        fhirpath_type = "integer" if fhir_type == "integer64" else fhir_type
        value = primitive_value(json, fhirpath_type)
        return Constant(path, name, fhir_type, json, value)

    def where(self, value: Any, path: str, resource: str) -> Where:
        obj = self._object(value, path, _WHERE_ELEMENTS)
        if "path" not in obj:
            raise ViewDefinitionError(_at(path, "path"), "is required (a FHIRPath expression)")
        expr = self._expression(obj["path"], _at(path, "path"), resource)
        return Where(path, expr.text, expr, self._string(obj, "description", path))

    def select(self, value: Any, path: str, base_type: str | None) -> Select:
        obj = self._object(value, path, _SELECT_ELEMENTS)
        present = [k for k in ("forEach", "forEachOrNull", "repeat") if k in obj]
        if len(present) > 1:
            raise ViewDefinitionError(path, f"at most one of forEach, forEachOrNull, repeat "
                                            f"may be given, got {' and '.join(present)}")
        for_each = for_each_or_null = None
        repeat: tuple[Expression, ...] = ()
        inner = base_type
        if "forEach" in obj:
            for_each = self._expression(obj["forEach"], _at(path, "forEach"), base_type)
            inner = for_each.static_type
        elif "forEachOrNull" in obj:
            for_each_or_null = self._expression(obj["forEachOrNull"],
                                                _at(path, "forEachOrNull"), base_type)
            inner = for_each_or_null.static_type
        elif "repeat" in obj:
            paths = self._array(obj, "repeat", path)
            # the paths apply at every depth of the traversal: no one static type
            repeat = tuple(self._expression(p, f"{path}.repeat[{i}]", None)
                           for i, p in enumerate(paths))
            inner = None
        columns = tuple(self.column(c, f"{path}.column[{i}]", inner)
                        for i, c in enumerate(self._array(obj, "column", path)))
        selects = tuple(self.select(s, f"{path}.select[{i}]", inner)
                        for i, s in enumerate(self._array(obj, "select", path)))
        union_all = tuple(self.select(s, f"{path}.unionAll[{i}]", inner)
                          for i, s in enumerate(self._array(obj, "unionAll", path)))
        if not (columns or selects or union_all):
            raise ViewDefinitionError(path, "expected at least one of column, select, unionAll")

        output: list[OutputColumn] = []
        names: dict[str, str] = {}
        for c in columns:
            self._add(output, names, c.output)
        for s in selects:
            self._add_columns(output, names, s)
        if union_all:
            merged = list(union_all[0].output)
            for branch in union_all[1:]:
                merged = self._union_columns(merged, branch, union_all[0].location)
            for col in merged:
                self._add(output, names, col)
        return Select(path, columns, selects, union_all, for_each, for_each_or_null, repeat,
                      tuple(output))

    def column(self, value: Any, path: str, base_type: str | None) -> Column:
        obj = self._object(value, path, _COLUMN_ELEMENTS)
        name = self._sql_name(obj, "name", path, required=True)
        assert name is not None
        if "path" not in obj:
            raise ViewDefinitionError(_at(path, "path"), "is required (a FHIRPath expression)")
        expr = self._expression(obj["path"], _at(path, "path"), base_type)
        type_code = self._string(obj, "type", path)
        if type_code is not None and type_code not in PRIMITIVE_TYPES and \
                type_code != "integer64" and _TYPE_CODE.fullmatch(type_code) is None:
            raise ViewDefinitionError(_at(path, "type"), f"expected a FHIR type such as "
                                                         f"'string' or 'Quantity', got "
                                                         f"'{type_code}'")
        collection = obj.get("collection", False)
        if type(collection) is not bool:
            raise ViewDefinitionError(_at(path, "collection"), f"expected true or false, got "
                                                               f"{describe(collection)}")
        tags = []
        for i, t in enumerate(self._array(obj, "tag", path)):
            where = f"{path}.tag[{i}]"
            tobj = self._object(t, where, _TAG_ELEMENTS)
            tag_name = self._string(tobj, "name", where, required=True)
            tag_value = self._string(tobj, "value", where, required=True)
            assert tag_name is not None and tag_value is not None
            tags.append(Tag(tag_name, tag_value))
        return Column(path, name, expr.text, expr, type_code, collection,
                      self._string(obj, "description", path), tuple(tags))

    # column bookkeeping (the "Validate Columns" step)

    @staticmethod
    def _add(output: list[OutputColumn], names: dict[str, str], col: OutputColumn) -> None:
        if col.name in names:
            raise ViewDefinitionError(_at(col.location, "name"),
                                      f"column '{col.name}' is already defined at "
                                      f"{names[col.name]}")
        names[col.name] = col.location
        output.append(col)

    def _add_columns(self, output: list[OutputColumn], names: dict[str, str],
                     select: Select) -> None:
        for col in select.output:
            self._add(output, names, col)

    @staticmethod
    def _union_columns(merged: list[OutputColumn], branch: Select, first: str
                       ) -> list[OutputColumn]:
        ours = [c.name for c in merged]
        theirs = [c.name for c in branch.output]
        if ours != theirs:
            raise ViewDefinitionError(
                branch.location, f"a unionAll branch must produce the same columns in the same "
                                 f"order as {first} ({', '.join(ours)}), got "
                                 f"({', '.join(theirs)})")
        out = []
        for a, b in zip(merged, branch.output, strict=True):
            if a.type is not None and b.type is not None and a.type != b.type:
                raise ViewDefinitionError(
                    branch.location, f"column '{a.name}' has type '{b.type}' here but "
                                     f"'{a.type}' in {first}")
            if a.collection != b.collection:
                raise ViewDefinitionError(
                    branch.location, f"column '{a.name}' is {'' if b.collection else 'not '}a "
                                     f"collection here but is{'' if a.collection else ' not'} "
                                     f"in {first}")
            out.append(OutputColumn(a.name, a.type or b.type, a.collection, a.location))
        return out

