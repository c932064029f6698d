"""Structural validation of FHIR R4 resources in their JSON form.

Checks a resource against the R4 definitions (``songkhoe.fhir.definitions``):

- JSON representation (http://hl7.org/fhir/R4/json.html): known ``resourceType``; known
  element names at every level (datatypes, backbone elements, ``contentReference``); JSON
  arrays exactly for repeating elements; one key per choice element, named after an allowed
  type (``valueQuantity``); primitive extensions ``_name``, repeating ones as arrays aligned
  with the values, ``null`` only as the filler of such a pair; no ``null``, ``{}``, ``[]``
  or ``""`` anywhere else.
- Cardinality and required elements (http://hl7.org/fhir/R4/elementdefinition.html).
- Primitive values (``songkhoe.fhir.primitives``, http://hl7.org/fhir/R4/datatypes.html).
- Required bindings (http://hl7.org/fhir/R4/terminologies.html#required): ``code`` values,
  and the codings of a ``CodeableConcept`` whose system the value set uses (R4 binds no
  ``Coding`` element with strength required); value sets that cannot be enumerated (mime
  types, languages, UCUM) are not checked.
- References (http://hl7.org/fhir/R4/references.html): ``Type/id``,
  ``Type/id/_history/vid``, ``#id`` of a contained resource, an absolute URL, ``urn:uuid:``
  or ``urn:oid:`` (and ``Type?query`` inside a transaction or batch Bundle); the type must be
  an R4 resource type allowed by the element's target profiles.
- Contained resources (http://hl7.org/fhir/R4/references.html#contained, rules dom-2..5):
  validated as resources, with an ``id``, no nested ``contained``, no ``meta.versionId``,
  ``meta.lastUpdated`` or ``meta.security``, and referenced from the container (or
  referring to it with ``#``).
- Extensions (http://hl7.org/fhir/R4/extensibility.html, rule ext-1): a ``url``, and either
  a ``value[x]`` or nested extensions, not both.

Every issue carries the FHIRPath of the element at fault with indexes
(``Observation.component[1].valueQuantity.value``) and says what was found and what was
expected. The element model is compiled once into plain dicts and slotted objects; the walk
allocates nothing on the happy path but the child paths it needs.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from songkhoe.fhir import definitions as defs
from songkhoe.fhir import primitives
from songkhoe.fhir.outcome import Issue
from songkhoe.fhir.primitives import describe

# Prop kinds: how the value under one JSON key is checked.
_PRIMITIVE, _PRIMITIVE_EXT, _COMPLEX, _RESOURCE, _CONTAINED = range(5)

_URI_TYPES = frozenset({"uri", "url", "canonical"})
_RELATIVE = re.compile(r"([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?")
_REST_TAIL = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]*://\S*/([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}"
    r"(/_history/[A-Za-z0-9\-.]{1,64})?")
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^ \t\r\n]+")
_CONDITIONAL = re.compile(r"([A-Z][A-Za-z]+)\?[^ \t\r\n]*")
_REFERENCE_FORMS = ("Type/id, Type/id/_history/version, #contained-id, an absolute URL, "
                    "urn:uuid: or urn:oid:")
_MAX_LISTED_CODES = 12
_MAX_SUGGESTIONS = 20  # "did you mean" look-ups per validation: bounded work on junk input


class _Node:
    """A resource, datatype or backbone element: the props under each JSON key."""

    __slots__ = ("choices", "forbidden", "is_resource", "name", "props", "required")

    def __init__(self, name: str, is_resource: bool) -> None:
        self.name = name
        self.props: dict[str, _Prop] = {}
        self.required: list[tuple[str, tuple[str, ...]]] = []  # (element name, JSON keys)
        self.choices: dict[str, tuple[str, ...]] = {}  # "value" -> ("valueQuantity", ...)
        self.forbidden: set[str] = set()  # keys of elements constrained to max 0
        self.is_resource = is_resource


Post = Callable[["_Run", dict[str, Any], "_Prop", str], None]


class _Prop:
    """How to check the value under one JSON key of a node."""

    __slots__ = (
        "array",
        "binding",
        "check",
        "choice",
        "codes",
        "extra",
        "key",
        "kind",
        "name",
        "node",
        "post",
        "systems",
        "targets",
        "type",
        "uri",
        "value_key",
    )

    def __init__(self, key: str, name: str, kind: int, el: defs.ElementDef, type_code: str,
                 node: _Node | None = None) -> None:
        self.key = key
        self.name = name  # the name in FHIRPath expressions: given, valueQuantity
        self.kind = kind
        self.array = el.repeats  # R4 has no finite max above 1: an array is unbounded
        self.type = type_code
        self.check: Callable[[Any], str | None] = _unchecked
        self.node = node
        self.codes: frozenset[str] | None = None
        self.binding = el.binding
        self.systems: Mapping[str, frozenset[str]] | None = None  # bound CodeableConcept
        self.targets = el.targets.get("Reference")  # None: any resource type
        self.choice: str | None = el.name[:-3] if el.is_choice else None
        self.value_key: str = ""  # for a primitive extension "_given": "given"
        self.uri = type_code in _URI_TYPES
        self.extra = False  # a primitive needing more than its checker: binding, "#id" uri
        self.post: Post | None = None


class _Model:
    """The compiled element model: one node per resource type, datatype, backbone element.
    Built whole before first use, so that threads never see a node half-built."""

    def __init__(self) -> None:
        self.nodes: dict[str, _Node] = {}
        self.resources = {rt: self.node(rt) for rt in sorted(defs.resource_types())}

    def node(self, path: str) -> _Node:
        found = self.nodes.get(path)
        if found is not None:
            return found
        node = _Node(path, defs.type_kind(path) == "resource")
        self.nodes[path] = node
        for name, el in defs.children(path).items():
            keys: list[str] = []
            if el.max == 0:  # SimpleQuantity.comparator
                node.forbidden.update((name, "_" + name))
            elif el.content_reference:
                target = el.content_reference.lstrip("#")
                prop = _Prop(name, name, _COMPLEX, el, target, self.node(target))
                keys.append(self._add(node, prop))
            elif el.is_choice:
                base = name[:-3]
                for code in el.types:
                    key = base + _upper_first(defs.json_type_name(code))
                    keys.extend(self._add_typed(node, key, el, code))
                node.choices[base] = tuple(k for k in keys if not k.startswith("_"))
            else:
                keys.extend(self._add_typed(node, name, el, el.types[0]))
            if el.min > 0:
                node.required.append((name, tuple(keys)))
        return node

    def _add_typed(self, node: _Node, key: str, el: defs.ElementDef, code: str) -> list[str]:
        if code in defs.primitive_types():
            prop = _Prop(key, key, _PRIMITIVE, el, code)
            prop.check = primitives.CHECKERS[code]
            if el.binding:
                prop.codes = defs.valueset_codes(el.binding)
            prop.extra = prop.codes is not None or prop.uri
            keys = [self._add(node, prop)]
            if code != "xhtml":  # xhtml has no id or extensions (xhtml.extension is 0..0)
                ext = _Prop("_" + key, key, _PRIMITIVE_EXT, el, code, self.node("Element"))
                ext.value_key = key
                ext.choice = None
                keys.append(self._add(node, ext))
            return keys
        if code == "Resource":
            kind = _CONTAINED if node.is_resource and key == "contained" else _RESOURCE
            return [self._add(node, _Prop(key, key, kind, el, code))]
        child = self.node(el.path if code in ("BackboneElement", "Element") else code)
        prop = _Prop(key, key, _COMPLEX, el, code, child)
        if code == "Reference":
            prop.post = _Run.reference
        elif code == "Extension":
            prop.post = _Run.extension
        elif el.binding and code == "CodeableConcept":  # R4 binds no Coding element required
            prop.systems = defs.valueset_systems(el.binding)
            if prop.systems is not None:
                prop.post = _Run.codeable_concept
        return [self._add(node, prop)]

    @staticmethod
    def _add(node: _Node, prop: _Prop) -> str:
        node.props[prop.key] = prop
        return prop.key


def _unchecked(value: Any) -> None:
    """The checker of props that are not primitives (never called)."""


def _upper_first(name: str) -> str:
    return name[:1].upper() + name[1:]


@cache
def _model() -> _Model:
    return _Model()


class _Scope:
    """What a top-level resource (not a contained one) knows about its contained resources."""

    __slots__ = ("contained", "current", "referenced", "refers_back")

    def __init__(self, contained: dict[str, tuple[str, int]]) -> None:
        self.contained = contained  # id -> (resourceType, index in contained)
        self.referenced: set[str] = set()  # ids named by "#id"
        self.refers_back: set[str] = set()  # contained ids whose resource refers to "#"
        self.current: str | None = None  # the contained resource being walked


class _Run:
    """One validation: the issues found so far and the reference scope."""

    __slots__ = ("conditional", "issues", "model", "scope", "suggestions")

    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self.suggestions = 0
        self.model = _model()
        self.scope = _Scope({})
        self.conditional = False  # inside a transaction or batch: Type?query references

    def issue(self, code: str, diagnostics: str, expression: str | None) -> None:
        self.issues.append(Issue(code, diagnostics, expression))

    # ----------------------------------------------------------------- resources

    def resource(self, res: dict[str, Any], path: str, contained: bool) -> None:
        resource_type = res.get("resourceType")
        if resource_type is None:
            self.issue("required", "missing resourceType", path)
            return
        node = self.model.resources.get(resource_type) if type(resource_type) is str else None
        if node is None:
            self.issue("invalid", f"unknown resourceType {describe(resource_type)}: expected an "
                       f"R4 resource type such as Patient or Observation", path)
            return
        if contained:
            self.contained_rules(res, path)
            outer_current, self.scope.current = self.scope.current, res.get("id")
            self.object(res, node, path)
            self.scope.current = outer_current
            return
        outer, self.scope = self.scope, _Scope(self.contained_ids(res, path))
        outer_conditional = self.conditional
        if resource_type == "Bundle":
            self.conditional = res.get("type") in ("transaction", "batch")
        self.object(res, node, path)
        self.conditional = outer_conditional
        for cid, (_, index) in self.scope.contained.items():
            if cid not in self.scope.referenced and cid not in self.scope.refers_back:
                self.issue("invariant", f"dom-3: contained resource '{cid}' is not referenced "
                           f"from the resource (expected a reference '#{cid}') and does not "
                           "refer to it (with '#')", f"{path}.contained[{index}]")
        self.scope = outer

    def contained_ids(self, res: dict[str, Any], path: str) -> dict[str, tuple[str, int]]:
        items = res.get("contained")
        ids: dict[str, tuple[str, int]] = {}
        if type(items) is not list:
            return ids
        for i, item in enumerate(items):
            if type(item) is dict and type(item.get("id")) is str:
                if item["id"] in ids:
                    self.issue("invalid", f"duplicate contained id '{item['id']}'",
                               f"{path}.contained[{i}].id")
                ids[item["id"]] = (str(item.get("resourceType")), i)
        return ids

    def contained_rules(self, res: dict[str, Any], path: str) -> None:
        if "id" not in res:
            self.issue("required", "a contained resource needs an id to be referenced by "
                       "('#id')", f"{path}.id")
        if "contained" in res:
            self.issue("invariant", "dom-2: a contained resource must not contain resources",
                       f"{path}.contained")
        meta = res.get("meta")
        if type(meta) is dict:
            for key in ("versionId", "lastUpdated"):
                if key in meta:
                    self.issue("invariant", f"dom-4: a contained resource must not have "
                               f"meta.{key}", f"{path}.meta.{key}")
            if "security" in meta:
                self.issue("invariant", "dom-5: a contained resource must not have "
                           "meta.security", f"{path}.meta.security")

    # ----------------------------------------------------------------- objects

    def object(self, obj: dict[str, Any], node: _Node, path: str,
               only: dict[str, Any] | None = None) -> None:
        """``only``: check just these elements of ``obj`` (``validate_change``); its
        required elements are still looked for in the whole of ``obj``."""
        props = node.props
        chosen: dict[str, str] | None = None
        for key, value in (obj if only is None else only).items():
            prop = props.get(key)
            if prop is None:
                if not (key == "resourceType" and node.is_resource):
                    self.unknown(key, node, path)
                continue
            if prop.choice is not None:
                if chosen is None:
                    chosen = {}
                other = chosen.setdefault(prop.choice, key)
                if other != key:
                    self.issue("structure", f"only one of {prop.choice}[x] is allowed, got "
                               f"'{other}' and '{key}'", f"{path}.{key}")
            if prop.array:
                if type(value) is not list:
                    self.issue("structure", f"expected an array for repeating element "
                               f"'{key}', got {describe(value)}", f"{path}.{prop.name}")
                    continue
                if not value:
                    self.issue("structure", f"expected a non-empty array for '{key}', got "
                               "an empty array (leave the element out instead)",
                               f"{path}.{prop.name}")
                    continue
                if prop.kind == _PRIMITIVE:
                    self.primitive_array(obj, value, prop, path)
                elif prop.kind == _PRIMITIVE_EXT:
                    self.extension_array(obj, value, prop, path)
                else:
                    where = f"{path}.{prop.name}"
                    child = prop.node
                    for i, item in enumerate(value):
                        if type(item) is dict and item and child is not None:
                            self.object(item, child, f"{where}[{i}]")
                            if prop.post is not None:
                                prop.post(self, item, prop, f"{where}[{i}]")
                        else:
                            self.complex(item, prop, f"{where}[{i}]")
            elif type(value) is list:
                self.issue("structure", f"expected a single value for '{key}' (max 1), got "
                           "an array", f"{path}.{prop.name}")
            elif prop.kind == _PRIMITIVE:
                if prop.check(value) is not None or prop.extra:
                    self.primitive(value, prop, f"{path}.{prop.name}")
            elif type(value) is dict and value and prop.node is not None:
                where = f"{path}.{prop.name}"
                self.object(value, prop.node, where)
                if prop.post is not None:
                    prop.post(self, value, prop, where)
            else:
                self.complex(value, prop, f"{path}.{prop.name}")
        for name, keys in node.required:
            for key in keys:
                if key in obj:
                    break
            else:
                self.issue("required", f"missing required element '{name}' "
                           f"({node.name}.{name} has min 1)", f"{path}.{name}")

    def unknown(self, key: Any, node: _Node, path: str) -> None:
        key = key if type(key) is str else repr(key)
        if key in node.forbidden:
            self.issue("structure", f"element '{key}' is not allowed in {node.name} (max 0)",
                       f"{path}.{key}")
            return
        bare = key.removeprefix("_")
        hint = ""
        for base, keys in node.choices.items():
            if bare == base or (bare.startswith(base) and bare[len(base):][:1].isupper()):
                hint = f": {base}[x] takes one of {', '.join(keys)}"
                break
        else:
            if key.startswith("_") and bare in node.props:
                hint = f": '{bare}' is not a primitive element, so it has no '_{bare}'"
            elif self.suggestions < _MAX_SUGGESTIONS and len(key) <= 64:
                self.suggestions += 1
                close = difflib.get_close_matches(key, list(node.props), n=1)
                if close:
                    hint = f" (did you mean '{close[0]}'?)"
        self.issue("structure", f"unknown element '{key}' in {node.name}{hint}",
                   f"{path}.{key}")

    def complex(self, value: Any, prop: _Prop, path: str) -> None:
        if type(value) is not dict:
            if prop.kind == _RESOURCE or prop.kind == _CONTAINED:
                what = "a resource (an object with a resourceType)"
            elif prop.kind == _PRIMITIVE_EXT:
                what = f"an object with the id or extensions of '{prop.value_key}'"
            else:
                what = f"an object ({prop.type})"
            self.issue("structure", f"expected {what}, got {describe(value)}", path)
            return
        if not value:
            self.issue("structure", "expected an object with content, got an empty object "
                       "(leave the element out instead)", path)
            return
        if prop.kind == _RESOURCE or prop.kind == _CONTAINED:
            self.resource(value, path, prop.kind == _CONTAINED)
            return
        assert prop.node is not None
        self.object(value, prop.node, path)
        if prop.post is not None:
            prop.post(self, value, prop, path)

    # ----------------------------------------------------------------- primitives

    def primitive(self, value: Any, prop: _Prop, path: str) -> None:
        message = prop.check(value)
        if message is not None:
            code = "value" if primitives.is_json_type(prop.type, value) else "structure"
            self.issue(code, message, path)
        elif prop.codes is not None and value not in prop.codes:
            self.issue("code-invalid", _not_in_valueset(value, prop.binding, prop.codes), path)
        elif prop.uri and value[0] == "#":
            self.local_reference(value, path, checked=False)

    def primitive_array(self, obj: dict[str, Any], values: list[Any], prop: _Prop,
                        path: str) -> None:
        extensions = obj.get("_" + prop.key)
        if type(extensions) is not list:
            extensions = None
        where = f"{path}.{prop.name}"
        for i, value in enumerate(values):
            if value is None:
                if extensions is None or i >= len(extensions) or extensions[i] is None:
                    self.issue("structure", f"null in '{prop.key}' is only allowed where "
                               f"'_{prop.key}' has an entry at the same index", f"{where}[{i}]")
                continue
            if prop.check(value) is not None or prop.extra:
                self.primitive(value, prop, f"{where}[{i}]")

    def extension_array(self, obj: dict[str, Any], items: list[Any], prop: _Prop,
                        path: str) -> None:
        values = obj.get(prop.value_key)
        if values is not None and type(values) is not list:
            return  # reported with the values; alignment cannot be judged
        if values is not None and len(values) != len(items):
            self.issue("structure", f"'_{prop.value_key}' has {len(items)} entries and "
                       f"'{prop.value_key}' has {len(values)}: they must align (use null to "
                       "fill)", f"{path}.{prop.name}")
        where = f"{path}.{prop.name}"
        for i, item in enumerate(items):
            if item is None:
                if values is None:  # with values, primitive_array reports unpaired nulls
                    self.issue("structure", f"null in '_{prop.value_key}' is only allowed "
                               f"where '{prop.value_key}' has a value at the same index",
                               f"{where}[{i}]")
                continue
            self.complex(item, prop, f"{where}[{i}]")

    # ----------------------------------------------------------------- datatype rules

    def reference(self, ref: dict[str, Any], prop: _Prop, path: str) -> None:
        target = ref.get("reference")
        if type(target) is str and target:
            self.reference_string(target, prop.targets, f"{path}.reference")
        kind = ref.get("type")
        if type(kind) is str and ":" not in kind:
            self.reference_type(kind, prop.targets, f"{path}.type")

    def reference_string(self, target: str, allowed: tuple[str, ...] | None, path: str) -> None:
        if target[0] == "#":
            resource_type = self.local_reference(target, path, checked=True)
            if resource_type is not None and allowed is not None and \
                    resource_type not in allowed:
                self.issue("invalid", f"reference '{target}' points to a contained "
                           f"{resource_type}, not allowed here: expected "
                           f"{' | '.join(allowed)}", path)
            return
        match = _RELATIVE.fullmatch(target)
        if match is not None:
            self.reference_type(match.group(1), allowed, path, target)
            return
        if target.startswith("urn:uuid:"):
            if primitives.UUID.fullmatch(target) is None:
                self.issue("invalid", f"expected urn:uuid: and a lower-case UUID, got "
                           f"'{target}'", path)
            return
        if target.startswith("urn:oid:"):
            if primitives.OID.fullmatch(target) is None:
                self.issue("invalid", f"expected urn:oid: and an OID, got '{target}'", path)
            return
        match = _CONDITIONAL.fullmatch(target)
        if match is not None and self.conditional:
            self.reference_type(match.group(1), allowed, path, target)
            return
        if _ABSOLUTE.fullmatch(target) is not None:
            match = _REST_TAIL.fullmatch(target)
            if match is not None and defs.is_resource_type(match.group(1)):
                self.reference_type(match.group(1), allowed, path, target)
            return
        self.issue("invalid", f"expected a reference as {_REFERENCE_FORMS}, got "
                   f"{describe(target)}", path)

    def reference_type(self, resource_type: str, allowed: tuple[str, ...] | None, path: str,
                       target: str | None = None) -> None:
        what = f"reference '{target}'" if target else f"reference type '{resource_type}'"
        if not defs.is_resource_type(resource_type):
            self.issue("invalid", f"{what} names unknown resource type '{resource_type}'", path)
        elif allowed is not None and resource_type not in allowed:
            self.issue("invalid", f"{what} points to {resource_type}, not allowed here: "
                       f"expected {' | '.join(allowed)}", path)

    def local_reference(self, target: str, path: str, checked: bool) -> str | None:
        """Record a ``#id`` reference; for a Reference (``checked``) report a missing target.
        Answers the contained resource's type."""
        scope = self.scope
        if target == "#":
            if scope.current is not None:
                scope.refers_back.add(scope.current)
            return None
        cid = target[1:]
        scope.referenced.add(cid)
        found = scope.contained.get(cid)
        if found is None:
            if checked:
                self.issue("invalid", f"reference '{target}' names no contained resource "
                           f"(contained ids: {', '.join(scope.contained) or 'none'})", path)
            return None
        return found[0]

    def extension(self, ext: dict[str, Any], prop: _Prop, path: str) -> None:
        has_value = any(k.startswith(("value", "_value")) for k in ext)
        if has_value == ("extension" in ext):
            got = "both" if has_value else "neither"
            self.issue("invariant", f"ext-1: an extension must have either a value[x] or nested "
                       f"extensions, not both; got {got}", path)

    def codeable_concept(self, concept: dict[str, Any], prop: _Prop, path: str) -> None:
        codings, systems = concept.get("coding"), prop.systems
        if type(codings) is not list or systems is None:
            return
        for i, coding in enumerate(codings):
            if type(coding) is not dict:
                continue
            system, code = coding.get("system"), coding.get("code")
            allowed = systems.get(system) if type(system) is str else None
            if allowed is not None and type(code) is str and code not in allowed:
                self.issue("code-invalid", _not_in_valueset(code, prop.binding, allowed),
                           f"{path}.coding[{i}].code")


def _not_in_valueset(code: Any, url: str | None, codes: frozenset[str]) -> str:
    listed = sorted(codes)
    shown = ", ".join(listed[:_MAX_LISTED_CODES]) + (", ..." if len(listed) > _MAX_LISTED_CODES
                                                      else "")
    return f"{describe(code)} is not in the required value set {url} (expected one of: {shown})"


def validate(resource: Any, *, expected_type: str | None = None) -> list[Issue]:
    """Validate a resource in its JSON form (as parsed: dict, list, str, numbers) against the
    R4 definitions; an empty list means valid. Never raises on bad input.

    ``expected_type``: the resource type the caller expects (e.g. from the URL of a PUT);
    a different ``resourceType`` is reported and nothing else is checked.
    """
    if type(resource) is not dict:
        return [Issue("structure", f"expected a JSON object with a resourceType, got "
                      f"{describe(resource)}")]
    resource_type = resource.get("resourceType")
    if expected_type is not None and resource_type != expected_type:
        return [Issue("invalid", f"expected resourceType '{expected_type}', got "
                      f"{describe(resource_type)}", "resourceType")]
    run = _Run()
    if resource_type is None:
        run.issue("required", "missing resourceType", "resourceType")
    elif type(resource_type) is not str or not defs.is_resource_type(resource_type):
        run.issue("invalid", f"unknown resourceType {describe(resource_type)}: expected an R4 "
                  f"resource type such as Patient or Observation", "resourceType")
    else:
        try:
            run.resource(resource, resource_type, contained=False)
        except RecursionError:
            run.issue("structure", "the resource is nested too deeply to validate", None)
    return run.issues


def validate_change(resource: dict[str, Any], previous: dict[str, Any],
                    changed: dict[str, Any]) -> list[Issue] | None:
    """The issues ``validate(resource)`` finds, checking only ``changed``: the top-level
    elements of ``resource`` that differ from ``previous``, a version of the same resource
    that ``validate`` passed (a stored version). Every rule this module checks is local to
    an element except required elements (still looked for in the whole resource), one key
    per choice element, contained resources (dom-3) and a Bundle's entries: None when the
    change touches one of those, and the caller validates the whole resource."""
    resource_type = resource.get("resourceType")
    if resource_type != previous.get("resourceType") or resource_type == "Bundle" or \
            "contained" in resource or "contained" in previous:
        return None
    node = _model().resources.get(resource_type) if type(resource_type) is str else None
    if node is None:
        return None
    for key in changed:
        prop = node.props.get(key)
        if prop is not None and prop.choice is not None:
            return None
    run = _Run()
    try:
        run.object(resource, node, resource_type, changed)
    except RecursionError:
        run.issue("structure", "the resource is nested too deeply to validate", None)
    return run.issues
