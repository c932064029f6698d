"""FHIR R4 (4.0.1) definitions: resource types, elements, search parameters, value sets and
the Patient compartment, read from the tables that ``scripts/gen_r4_tables.py`` generates
into ``songkhoe/fhir/data/`` from the HL7 R4 definitions.

Spec: http://hl7.org/fhir/R4/structuredefinition.html and
http://hl7.org/fhir/R4/elementdefinition.html (types and elements),
http://hl7.org/fhir/R4/searchparameter.html and http://hl7.org/fhir/R4/search.html#all
(search parameters), http://hl7.org/fhir/R4/terminologies.html#required (value sets of
required bindings), http://hl7.org/fhir/R4/compartmentdefinition-patient.html.

Tables load lazily on first use and are cached; everything returned is immutable.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

UNBOUNDED = -1
"""``ElementDef.max`` of an element whose cardinality is ``*``."""


@dataclass(frozen=True, slots=True)
class ElementDef:
    """One element of a resource or datatype, e.g. ``Observation.component.value[x]``."""

    path: str
    min: int
    max: int  # UNBOUNDED for "*"
    types: tuple[str, ...]  # type codes; SimpleQuantity/MoneyQuantity for profiled Quantity
    targets: Mapping[str, tuple[str, ...]]  # "Reference"/"canonical" -> allowed resource types
    content_reference: str | None  # "#Questionnaire.item": the element has that one's content
    binding: str | None  # value set URL of a required binding
    primitive: bool  # every type of the element is a primitive type
    summary: bool  # ElementDefinition.isSummary: part of a _summary=true answer

    @property
    def name(self) -> str:
        """The last path segment: ``value[x]``, ``item``."""
        return self.path.rsplit(".", 1)[-1]

    @property
    def is_choice(self) -> bool:
        return self.path.endswith("[x]")

    @property
    def repeats(self) -> bool:
        """Whether the element is a JSON array (max is ``*`` or more than 1)."""
        return self.max == UNBOUNDED or self.max > 1


@dataclass(frozen=True, slots=True)
class SearchComponent:
    """One part of a composite search parameter, e.g. ``component-code`` with ``code``."""

    code: str
    expression: str


@dataclass(frozen=True, slots=True)
class SearchParam:
    """A search parameter as it applies to one resource type.

    ``expression`` holds only the ``|``-separated FHIRPath parts for that type (``Resource.``
    rewritten to the type's name); it is ``None`` for parameters the search framework
    implements itself (``_text``, ``_content``, ``_query``, ``_list``, ``_has``, ``_type``).
    """

    code: str
    type: str  # number | date | string | token | reference | composite | quantity | uri | special
    expression: str | None
    targets: tuple[str, ...]
    components: tuple[SearchComponent, ...]
    url: str | None


def _load(name: str) -> Any:
    data = resources.files("songkhoe.fhir") / "data"
    plain, packed = data / f"{name}.json", data / f"{name}.json.gz"
    if plain.is_file():
        return json.loads(plain.read_bytes())
    return json.loads(gzip.decompress(packed.read_bytes()))


# --------------------------------------------------------------------------- types, elements


@cache
def _element_table() -> dict[str, Any]:
    table: dict[str, Any] = _load("r4_elements")
    return table


@cache
def resource_types() -> frozenset[str]:
    """The 146 concrete R4 resource types (not the abstract Resource and DomainResource)."""
    return frozenset(_element_table()["resourceTypes"])


def is_resource_type(name: str) -> bool:
    """Whether ``name`` is a concrete R4 resource type, e.g. ``Patient``."""
    return name in resource_types()


def type_kind(name: str) -> str | None:
    """``resource``, ``complex-type`` or ``primitive-type`` for an R4 type, else ``None``."""
    entry = _element_table()["types"].get(name)
    return entry["kind"] if entry else None


def is_abstract(name: str) -> bool:
    """Whether the R4 type is abstract (Resource, DomainResource, Element, BackboneElement)."""
    return bool(_element_table()["types"][name]["abstract"])


def base_type(name: str) -> str | None:
    """The type ``name`` specialises or constrains (``Patient`` → ``DomainResource``)."""
    base: str | None = _element_table()["types"][name].get("base")
    return base


def json_type_name(name: str) -> str:
    """The type name used in JSON choice keys: ``SimpleQuantity`` → ``Quantity``."""
    json_name: str = _element_table()["types"][name].get("type", name)
    return json_name


@cache
def primitive_types() -> frozenset[str]:
    """The 20 R4 primitive types (``string``, ``date``, ``code``, …)."""
    return frozenset(n for n, t in _element_table()["types"].items()
                     if t["kind"] == "primitive-type")


@cache
def _elements() -> Mapping[str, ElementDef]:
    out: dict[str, ElementDef] = {}
    for path, el in _element_table()["elements"].items():
        out[path] = ElementDef(
            path=path, min=el["min"],
            max=UNBOUNDED if el["max"] == "*" else int(el["max"]),
            types=tuple(el.get("types", ())),
            targets=MappingProxyType({k: tuple(v) for k, v in el.get("targets", {}).items()}),
            content_reference=el.get("contentReference"), binding=el.get("binding"),
            primitive=bool(el.get("primitive")), summary=bool(el.get("summary")))
    return MappingProxyType(out)


def element(path: str) -> ElementDef | None:
    """The element at a definition path, e.g. ``Observation.component.code``; inherited
    elements are listed under each type (``Patient.meta``, ``Quantity.extension``)."""
    return _elements().get(path)


@cache
def _children() -> Mapping[str, Mapping[str, ElementDef]]:
    grouped: dict[str, dict[str, ElementDef]] = {}
    for path, el in _elements().items():
        parent, _, name = path.rpartition(".")
        grouped.setdefault(parent, {})[name] = el
    return MappingProxyType({p: MappingProxyType(c) for p, c in grouped.items()})


def children(path: str) -> Mapping[str, ElementDef]:
    """The elements directly under a type or backbone element, by name in definition order
    (``children("Observation")["value[x]"]``). Empty for a primitive or unknown path; for
    an element with a ``content_reference``, ask for the referenced path."""
    return _children().get(path, MappingProxyType({}))


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """The JSON keys of a resource type's top-level summary elements
    (http://hl7.org/fhir/R4/search.html#summary): choice elements under each of their
    type names (``valueQuantity``, …), primitives with their ``_name`` twin."""
    keys: set[str] = set()
    for name, el in children(resource_type).items():
        if not el.summary:
            continue
        for t in el.types or ("",):
            key = name
            if el.is_choice:
                key = name[:-3] + json_type_name(t)[:1].upper() + json_type_name(t)[1:]
            keys.add(key)
            if t in primitive_types():
                keys.add("_" + key)
    return frozenset(keys)


# --------------------------------------------------------------------------- search parameters


@cache
def _search_table() -> Mapping[str, Mapping[str, SearchParam]]:
    table = _load("r4_search_parameters")["searchParameters"]
    return MappingProxyType({rt: MappingProxyType({
        code: SearchParam(
            code=code, type=p["type"], expression=p.get("expression"),
            targets=tuple(p.get("target", ())),
            components=tuple(SearchComponent(c["code"], c["expression"])
                             for c in p.get("component", ())),
            url=p.get("url"))
        for code, p in params.items()}) for rt, params in table.items()})


def search_parameters(resource_type: str) -> Mapping[str, SearchParam]:
    """The search parameters of a resource type by code, the common ones (``_id``,
    ``_lastUpdated``, …) included. Empty for an unknown type."""
    return _search_table().get(resource_type, MappingProxyType({}))


def search_parameter(resource_type: str, code: str) -> SearchParam | None:
    """One search parameter, e.g. ``search_parameter("Observation", "code")``."""
    return search_parameters(resource_type).get(code)


# --------------------------------------------------------------------------- compartment


@cache
def patient_compartment() -> Mapping[str, tuple[str, ...]]:
    """For each resource type in the Patient compartment, the search parameters that link a
    resource to its patient (``{"Observation": ("subject", "performer"), …}``)."""
    table = _load("r4_compartment_patient")["compartment"]
    return MappingProxyType({rt: tuple(params) for rt, params in table.items()})


# --------------------------------------------------------------------------- value sets


@cache
def _valueset_table() -> dict[str, Any]:
    table: dict[str, Any] = _load("r4_valuesets")
    return table


@cache
def valueset_systems(url: str) -> Mapping[str, frozenset[str]] | None:
    """The codes of a required-binding value set by code system, or ``None`` when it is not
    known or cannot be enumerated (BCP-13 mime types, BCP-47 languages, UCUM, …). A version
    suffix (``|4.0.1``) is ignored."""
    systems = _valueset_table()["valueSets"].get(url.split("|", 1)[0])
    if systems is None:
        return None
    return MappingProxyType({s: frozenset(codes) for s, codes in systems.items()})


@cache
def valueset_codes(url: str) -> frozenset[str] | None:
    """All codes of a required-binding value set, or ``None`` (see ``valueset_systems``)."""
    systems = valueset_systems(url)
    if systems is None:
        return None
    return frozenset().union(*systems.values())


def unexpandable_valuesets() -> Mapping[str, str]:
    """Value sets of required bindings that cannot be enumerated here, with the reason."""
    return MappingProxyType(_valueset_table()["unexpandable"])
