"""Search-parameter expressions evaluated as direct walks over a resource's JSON.

R4 SearchParameter.expression (http://hl7.org/fhir/R4/searchparameter-definitions.html#
SearchParameter.expression) is FHIRPath, but 95% of the R4 definitions are plain paths:
``Observation.code``, ``Patient.name.family``, ``(Observation.value as Quantity)``,
``Observation.subject.where(resolve() is Patient)``, ``Patient.telecom.where(system='phone')``.
This module compiles those forms — paths, choice elements (``effective`` → ``effectiveDateTime``,
``effectivePeriod`` …, typed from the R4 element definitions), ``as``/``ofType``,
``where(resolve() is T)``, ``where(element='literal')`` and ``[n]`` — into walks over the JSON
that also report each item's FHIR type and the element it sits in (a quantity's sibling
``code`` names what it measures). Anything else is evaluated by the FHIRPath engine
(``songkhoe.fhir.fhirpath``), which gives the same items without the parent.

An item is ``(value, type, parent)``: the raw JSON value, its FHIR type (a datatype name, or a
backbone element's definition path such as ``Observation.component``), and the JSON object
holding it (None from the FHIRPath engine).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from songkhoe.fhir import definitions
from songkhoe.fhir import fhirpath
from songkhoe.fhir.fhirpath import Node

Item = tuple[Any, str | None, Any]
Walk = Callable[[dict[str, Any], Any], list[Item]]  # (resource, start) -> items


class NotSimple(Exception):
    """The expression is not of a form this module walks; use FHIRPath."""


# FHIRPath type names that differ from the FHIR type codes they stand for
_SYSTEM_TYPES = {"DateTime": "dateTime", "Date": "date", "Time": "time", "String": "string",
                 "Boolean": "boolean", "Integer": "integer", "Decimal": "decimal"}


@lru_cache(maxsize=None)
def _definition_path(type_name: str) -> str:
    """Where a type's children are listed: a profiled type (``Age``, ``SimpleQuantity``) lists
    none of its own, its base does."""
    name = type_name
    while name and not definitions.children(name):
        kind = definitions.type_kind(name)
        if kind is None:
            return type_name
        base = definitions.base_type(name)
        if base is None or base == name:
            return type_name
        name = base
    return name or type_name


@lru_cache(maxsize=None)
def is_a(type_name: str | None, wanted: str) -> bool:
    """Whether FHIR type ``type_name`` is ``wanted`` or a specialisation/profile of it."""
    name = type_name
    while name:
        if name == wanted:
            return True
        if definitions.type_kind(name) is None:
            return False
        base = definitions.base_type(name)
        if base == name:
            return False
        name = base
    return False


def _children(type_name: str) -> dict[str, tuple[list[tuple[str, str]], bool]]:
    """name -> ([(json key, item type)], repeats) for the elements under a type or backbone."""
    out: dict[str, tuple[list[tuple[str, str]], bool]] = {}
    for name, el in definitions.children(_definition_path(type_name)).items():
        if el.is_choice:
            base = name[:-3]
            keys = [(base + definitions.json_type_name(t)[:1].upper()
                     + definitions.json_type_name(t)[1:], t) for t in el.types]
            out[base] = (keys, el.repeats)
            continue
        if el.content_reference:
            item_type = el.content_reference.lstrip("#")
        elif not el.types or el.types[0] in ("BackboneElement", "Element"):
            item_type = el.path
        elif len(el.types) == 1:
            item_type = el.types[0]
        else:
            raise NotSimple(f"{el.path} has several types")
        out[name] = ([(name, item_type)], el.repeats)
    return out


_cached_children = lru_cache(maxsize=None)(_children)

_AS_INFIX = re.compile(r"^\((.+) as ([A-Za-z]+)\)(.*)$")
_AS_BARE = re.compile(r"^(.+) as ([A-Za-z]+)$")
_WHERE_RESOLVE = re.compile(r"^where\(resolve\(\) is ([A-Za-z]+)\)$")
_WHERE_EQ = re.compile(r"^where\(([a-z][A-Za-z]*) ?= ?'([^']*)'\)$")
_TYPE_CALL = re.compile(r"^(?:as|ofType)\(([A-Za-z]+)\)$")
_NAME = re.compile(r"^([a-z][A-Za-z0-9]*)(?:\[(\d+)\])?$")


def _normalise(part: str) -> str:
    part = part.strip()
    match = _AS_INFIX.match(part)
    if match:
        return f"{match.group(1).strip()}.as({match.group(2)}){match.group(3)}"
    match = _AS_BARE.match(part)
    if match and "(" not in match.group(1):
        return f"{match.group(1).strip()}.as({match.group(2)})"
    return part


def _segments(text: str) -> list[str]:
    """Split a path on dots outside parentheses and quotes."""
    out, depth, quote, start = [], 0, False, 0
    for i, c in enumerate(text):
        if c == "'":
            quote = not quote
        elif not quote and c == "(":
            depth += 1
        elif not quote and c == ")":
            depth -= 1
        elif not quote and depth == 0 and c == ".":
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return out


def _wanted_type(name: str) -> str:
    return _SYSTEM_TYPES.get(name, name)


Step = Callable[[list[Item]], list[Item]]


def _field_step(keymaps: dict[str | None, list[tuple[str, str]]]) -> Step:
    single = next(iter(keymaps.values())) if len(keymaps) == 1 else None

    def step(items: list[Item]) -> list[Item]:
        out: list[Item] = []
        for value, typ, _ in items:
            if type(value) is not dict:
                continue
            keys = single if single is not None else keymaps.get(typ)
            if not keys:
                continue
            for key, item_type in keys:
                child = value.get(key)
                if child is None:
                    continue
                if type(child) is list:
                    for c in child:
                        if c is not None:
                            out.append((c, item_type, value))
                else:
                    out.append((child, item_type, value))
        return out
    return step


def _type_step(wanted: str) -> Step:
    def step(items: list[Item]) -> list[Item]:
        return [it for it in items if it[1] is not None and is_a(it[1], wanted)]
    return step


def _resolve_step(target: str) -> Step:
    prefix, middle = target + "/", "/" + target + "/"

    def step(items: list[Item]) -> list[Item]:
        out = []
        for it in items:
            ref = it[0].get("reference") if type(it[0]) is dict else None
            if isinstance(ref, str) and (ref.startswith(prefix) or middle in ref):
                out.append(it)
        return out
    return step


def _where_step(name: str, literal: str) -> Step:
    def step(items: list[Item]) -> list[Item]:
        return [it for it in items if type(it[0]) is dict and it[0].get(name) == literal]
    return step


def _index_step(n: int) -> Step:
    def step(items: list[Item]) -> list[Item]:
        return items[n:n + 1]
    return step


def compile_part(part: str, start: str, *, rooted: bool) -> tuple[list[Step], frozenset[str]]:
    """Steps for one ``|``-part of an expression evaluated from type ``start``; ``rooted``: the
    part begins with the type name (``Observation.code``) rather than an element (``code``).
    Returns the steps and the JSON keys the first step reads."""
    segments = _segments(_normalise(part))
    if rooted:
        head = segments.pop(0)
        if head not in (start, "Resource", "DomainResource"):
            raise NotSimple(f"{part!r} does not start at {start}")
    types: set[str | None] = {start}
    steps: list[Step] = []
    first_keys: frozenset[str] = frozenset()
    for segment in segments:
        match = _TYPE_CALL.match(segment)
        if match:
            wanted = _wanted_type(match.group(1))
            types = {t for t in types if t is not None and is_a(t, wanted)}
            if not types:
                raise NotSimple(f"{part!r}: nothing is a {wanted}")
            steps.append(_type_step(wanted))
            continue
        match = _WHERE_RESOLVE.match(segment)
        if match:
            steps.append(_resolve_step(match.group(1)))
            continue
        match = _WHERE_EQ.match(segment)
        if match:
            steps.append(_where_step(match.group(1), match.group(2)))
            continue
        match = _NAME.match(segment)
        if not match:
            raise NotSimple(f"{part!r}: {segment!r}")
        name, index = match.group(1), match.group(2)
        keymaps: dict[str | None, list[tuple[str, str]]] = {}
        for t in types:
            if t is None:
                raise NotSimple(f"{part!r}: unknown type before {name}")
            children = _cached_children(t)
            if name not in children:
                continue
            keymaps[t] = children[name][0]
        if not keymaps:
            raise NotSimple(f"{part!r}: no element {name!r}")
        if not steps:
            first_keys = frozenset(k for keys in keymaps.values() for k, _ in keys)
        steps.append(_field_step(keymaps))
        types = {t for keys in keymaps.values() for _, t in keys}
        if index is not None:
            steps.append(_index_step(int(index)))
    return steps, first_keys


def compile_walk(expression: str, start: str, *, rooted: bool = True
                 ) -> tuple[Walk, frozenset[str] | None]:
    """A walk for ``expression`` from type ``start`` and the top-level keys it reads (None:
    any key may matter, as for the FHIRPath fallback)."""
    parts = _split_union(expression)
    try:
        compiled = [compile_part(p, start, rooted=rooted) for p in parts]
    except NotSimple:
        return _fhirpath_walk(expression, start if rooted else None), None
    step_lists = [steps for steps, _ in compiled]
    keys = frozenset(k for _, ks in compiled for k in ks) if rooted else None

    def walk(resource: dict[str, Any], focus: Any = None) -> list[Item]:
        out: list[Item] = []
        begin: list[Item] = [(resource if focus is None else focus, start, None)]
        for steps in step_lists:
            items = begin
            for step in steps:
                items = step(items)
                if not items:
                    break
            out.extend(items)
        return out
    return walk, keys


def _fhirpath_walk(expression: str, resource_type: str | None) -> Walk:
    compiled = fhirpath.compile(expression)

    def walk(resource: dict[str, Any], focus: Any = None) -> list[Item]:
        items = compiled.raw(resource) if focus is None else compiled.raw(resource, focus=focus)
        out: list[Item] = []
        for it in items:
            if type(it) is Node:
                if it.value is not None:
                    out.append((it.value, it.type, None))
            elif isinstance(it, (dict, str, int, float, bool)):
                out.append((it, None, None))
        return out
    return walk


def split_union(expression: str) -> list[str]:
    """The top-level ``|`` alternatives of an expression, stripped."""
    return [p.strip() for p in _split_union(expression)]


def _split_union(expression: str) -> list[str]:
    out, depth, quote, start = [], 0, False, 0
    for i, c in enumerate(expression):
        if c == "'":
            quote = not quote
        elif not quote and c == "(":
            depth += 1
        elif not quote and c == ")":
            depth -= 1
        elif not quote and depth == 0 and c == "|":
            out.append(expression[start:i])
            start = i + 1
    out.append(expression[start:])
    return [p.strip() for p in out if p.strip()]
