"""The FHIR R4 model as FHIRPath sees it: typed nodes, type names, subtyping, type tests.

FHIR R4 FHIRPath "FHIRPath types" (http://hl7.org/fhir/R4/fhirpath.html#types) and
FHIRPath N1 "Types and reflection" (http://hl7.org/fhirpath/N1/#types-and-reflection):
FHIR primitives map to System types (boolean→Boolean, string/code/id/uri/…→String,
integer/positiveInt/unsignedInt→Integer, decimal→Decimal, date→Date, dateTime/instant→DateTime,
time→Time), ``Quantity`` (and Age, Duration, …) → Quantity.

Items in a collection during evaluation are raw JSON values (dict, str, bool, int, float) as
parsed from FHIR JSON (http://hl7.org/fhir/R4/json.html), FHIRPath System values computed by
the engine (str, bool, int, Decimal, :mod:`.temporal` values, :class:`.quantity.Quantity`),
or a :class:`Node` when the JSON alone does not say enough: a choice element (``valueQuantity``
navigated as ``value`` has FHIR type ``Quantity``) or a primitive with a ``_name`` sibling
carrying ``id``/``extension`` (http://hl7.org/fhir/R4/json.html#primitive).

Where the FHIR type of a raw value is not evident (``Patient.birthDate`` is a JSON string), an
optional :class:`TypeModel` supplies element types at compile time (see
:func:`set_type_model`); without one, complex types in ``is``/``as``/``ofType`` are recognised by
their element names (:data:`DATATYPE_ELEMENTS`, from the R4 datatype definitions).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

from . import temporal
from .quantity import Quantity


class Node:
    """One item of a FHIRPath result with its FHIR facts.

    ``value``: the raw JSON value as written in the resource (a dict for complex types, a
    str/bool/int/float for primitives, ``None`` for a primitive that has only an extension), or
    the JSON form of a value the engine computed (e.g. the text of a Date, a Decimal).
    ``type``: the FHIR type name (``'Quantity'``, ``'dateTime'``, ``'Patient'``, a backbone path
    such as ``'Patient.contact'`` from a type model) or ``None`` when unknown.
    ``element``: the ``_name`` sibling (``{"id": …, "extension": […]}``) of a primitive, or None.
    """

    __slots__ = ("element", "type", "value")

    def __init__(self, value: Any, type: str | None = None, element: Any = None) -> None:
        self.value = value
        self.type = type
        self.element = element

    def __repr__(self) -> str:
        return f"Node({self.value!r}, type={self.type!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and other.value == self.value and \
            other.type == self.type and other.element == self.element

    __hash__ = None  # type: ignore[assignment]


# -- type names ---------------------------------------------------------------------------------

PRIMITIVE_TYPES = frozenset({
    "boolean", "integer", "string", "decimal", "uri", "url", "canonical", "base64Binary",
    "instant", "date", "dateTime", "time", "code", "oid", "id", "markdown", "unsignedInt",
    "positiveInt", "uuid", "xhtml",
})
COMPLEX_TYPES = frozenset({
    "Address", "Age", "Annotation", "Attachment", "BackboneElement", "CodeableConcept", "Coding",
    "ContactDetail", "ContactPoint", "Contributor", "Count", "DataRequirement", "Distance",
    "Dosage", "Duration", "Element", "ElementDefinition", "Expression", "Extension", "HumanName",
    "Identifier", "MarketingStatus", "Meta", "Money", "MoneyQuantity", "Narrative",
    "ParameterDefinition", "Period", "Population", "ProdCharacteristic", "ProductShelfLife",
    "Quantity", "Range", "Ratio", "Reference", "RelatedArtifact", "SampledData", "Signature",
    "SimpleQuantity", "SubstanceAmount", "Timing", "TriggerDefinition", "UsageContext",
})
# choice-element suffix (as in valueDateTime) → FHIR type name
CHOICE_SUFFIXES: dict[str, str] = {t[0].upper() + t[1:]: t for t in PRIMITIVE_TYPES | COMPLEX_TYPES}

# FHIR type → its base type (R4 StructureDefinition.baseDefinition)
_BASE: dict[str, str] = {
    "code": "string", "id": "string", "markdown": "string",
    "url": "uri", "canonical": "uri", "oid": "uri", "uuid": "uri",
    "unsignedInt": "integer", "positiveInt": "integer",
    "Age": "Quantity", "Count": "Quantity", "Distance": "Quantity", "Duration": "Quantity",
    "SimpleQuantity": "Quantity", "MoneyQuantity": "Quantity",
    "Dosage": "BackboneElement", "ElementDefinition": "BackboneElement",
    "MarketingStatus": "BackboneElement", "Population": "BackboneElement",
    "ProdCharacteristic": "BackboneElement", "ProductShelfLife": "BackboneElement",
    "SubstanceAmount": "BackboneElement", "Timing": "BackboneElement",
    "DomainResource": "Resource",
}
_NOT_DOMAIN_RESOURCES = frozenset({"Bundle", "Binary", "Parameters"})

# FHIR primitive → FHIRPath System type
SYSTEM_TYPE: dict[str, str] = {
    "boolean": "Boolean", "integer": "Integer", "unsignedInt": "Integer", "positiveInt": "Integer",
    "decimal": "Decimal", "date": "Date", "dateTime": "DateTime", "instant": "DateTime",
    "time": "Time", "Quantity": "Quantity", "Age": "Quantity", "Count": "Quantity",
    "Distance": "Quantity", "Duration": "Quantity", "SimpleQuantity": "Quantity",
    "MoneyQuantity": "Quantity",
    **{t: "String" for t in ("string", "code", "id", "markdown", "uri", "url", "canonical",
                             "oid", "uuid", "base64Binary", "xhtml")},
}
SYSTEM_TYPES = frozenset({"Boolean", "String", "Integer", "Decimal", "Date", "DateTime", "Time",
                          "Quantity", "Any"})
TEMPORAL_FHIR_TYPES = frozenset({"date", "dateTime", "instant", "time"})

# element names of R4 datatypes (R4 profiles-types.json), for type tests without a model
DATATYPE_ELEMENTS: dict[str, frozenset[str]] = {k: frozenset(v.split()) for k, v in {
    "Address": "use type text line city district state postalCode country period",
    "Annotation": "authorReference authorString time text",
    "Attachment": "contentType language data url size hash title creation",
    "CodeableConcept": "coding text",
    "Coding": "system version code display userSelected",
    "ContactDetail": "name telecom",
    "ContactPoint": "system value use rank period",
    "Expression": "description name language expression reference",
    "Extension": "url " + " ".join("value" + s for s in CHOICE_SUFFIXES),
    "HumanName": "use text family given prefix suffix period",
    "Identifier": "use type system value period assigner",
    "Meta": "versionId lastUpdated source profile security tag",
    "Money": "value currency",
    "Narrative": "status div",
    "Period": "start end",
    "Quantity": "value comparator unit system code",
    "Range": "low high",
    "Ratio": "numerator denominator",
    "Reference": "reference type identifier display",
    "RelatedArtifact": "type label display citation url document resource",
    "SampledData": "origin period factor lowerLimit upperLimit dimensions data",
    "Signature": "type when who onBehalfOf targetFormat sigFormat data",
    "Timing": "event repeat code",
    "UsageContext": "code valueCodeableConcept valueQuantity valueRange valueReference",
}.items()}
for _q in ("Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"):
    DATATYPE_ELEMENTS[_q] = DATATYPE_ELEMENTS["Quantity"]
_IGNORED_KEYS = frozenset({"id", "extension", "modifierExtension"})


# -- the optional model hook ------------------------------------------------------------------

class TypeModel(Protocol):
    """What the engine asks of a FHIR model, at compile time only.

    ``child_type(parent, name)``: the FHIR type of element ``name`` of ``parent`` — ``parent``
    is a type name (``'Patient'``, ``'HumanName'``) or a backbone-element path
    (``'Patient.contact'``); the answer is a type name (``'date'``, ``'HumanName'``), the path of
    a backbone element (``'Patient.contact'``), or None when unknown or a choice element.
    """

    def child_type(self, parent: str, name: str) -> str | None: ...


_model: TypeModel | None = None
_model_loaded = False
_listeners: list[Callable[[], None]] = []


def set_type_model(model: TypeModel | None) -> None:
    """Install (or remove, with None) the FHIR type model; clears compiled-expression caches."""
    global _model, _model_loaded
    _model = model
    _model_loaded = True
    for listener in _listeners:
        listener()


def type_model() -> TypeModel | None:
    """The installed model; on first use, the R4 model over ``songkhoe.fhir.definitions`` when
    that module and its generated tables are available (see :mod:`.r4model`)."""
    global _model, _model_loaded
    if not _model_loaded:
        _model_loaded = True
        from .r4model import load
        _model = load()
    return _model


def on_model_change(listener: Callable[[], None]) -> None:
    _listeners.append(listener)


# -- types of items -----------------------------------------------------------------------------

def is_resource_type(name: str) -> bool:
    return name[:1].isupper() and name not in COMPLEX_TYPES and name not in SYSTEM_TYPES and \
        "." not in name


def is_subtype(t: str, name: str) -> bool:
    """Is FHIR type ``t`` the type ``name`` or derived from it?"""
    while True:
        if t == name:
            return True
        if "." in t:  # backbone path from a model
            return name in ("BackboneElement", "Element")
        parent = _BASE.get(t)
        if parent is None:
            if t in PRIMITIVE_TYPES or t in COMPLEX_TYPES:
                return name == "Element" and t != "Element"
            if t == "Resource":
                return False
            # a resource type
            parent = "Resource" if t in _NOT_DOMAIN_RESOURCES else "DomainResource"
        t = parent


def fhir_type(item: Any, static: str | None = None) -> str | None:
    """The FHIR type name of an item (``static``: the compile-time type of its expression)."""
    tp = type(item)
    if tp is Node:
        return item.type or static or fhir_type(item.value)
    if tp is dict:
        rt = item.get("resourceType")
        if isinstance(rt, str):
            return rt
        return static
    if tp is str:
        return static or "string"
    if tp is bool:
        return "boolean"
    if tp is int:
        return static or "integer"
    if tp is float or tp is Decimal:
        return "decimal"
    if isinstance(item, temporal.Temporal):
        return item.kind
    if tp is Quantity:
        return "Quantity"
    return static


def system_type(item: Any, static: str | None = None) -> str | None:
    """The FHIRPath System type name of an item (None for complex FHIR types)."""
    t = fhir_type(item, static)
    if t is None:
        return None
    return SYSTEM_TYPE.get(t)


def looks_like(value: Any, type_name: str) -> bool:
    """Could the JSON object ``value`` be of datatype ``type_name``? (duck typing by element
    names, used only when no model says)."""
    names = DATATYPE_ELEMENTS.get(type_name)
    if names is None or not isinstance(value, dict):
        return False
    found = False
    for key in value:
        if key in _IGNORED_KEYS:
            continue
        if key[0] == "_":
            key = key[1:]
        if key not in names:
            return False
        found = True
    return found


def split_type(spec: str) -> tuple[str | None, str]:
    """``'FHIR.Patient'`` → ('FHIR', 'Patient'); ``'Patient'`` → (None, 'Patient')."""
    if "." in spec:
        ns, _, name = spec.partition(".")
        if ns in ("FHIR", "System"):
            return ns, name
    return None, spec


def make_type_test(spec: str) -> Callable[[Any, str | None], bool]:
    """A predicate ``test(item, static_type)`` for ``is spec`` (N1 §6.3, subtype-inclusive)."""
    ns, name = split_type(spec)
    if ns == "System" or (ns is None and name in SYSTEM_TYPES and name not in COMPLEX_TYPES):
        if name == "Any":
            return lambda item, static: True

        def system_test(item: Any, static: str | None) -> bool:
            if isinstance(item, Node) and item.value is None:
                return False
            return system_type(item, static) == name
        return system_test

    if name in ("Resource", "DomainResource") or (ns is None and is_resource_type(name)) or \
            (ns == "FHIR" and is_resource_type(name)):
        def resource_test(item: Any, static: str | None) -> bool:
            v = item.value if type(item) is Node else item
            if type(v) is dict:
                rt = v.get("resourceType")
                if isinstance(rt, str):
                    return is_subtype(rt, name)
            t = item.type if type(item) is Node else None
            t = t or static
            return t is not None and is_subtype(t, name)
        return resource_test

    def fhir_test(item: Any, static: str | None) -> bool:
        tp = type(item)
        if tp is Node:
            if item.type is not None:
                return is_subtype(item.type, name)
            item = item.value
            tp = type(item)
        if tp is dict:
            if "resourceType" in item:
                return is_subtype(item["resourceType"], name)
            if static is not None:
                return is_subtype(static, name)
            return looks_like(item, name)
        if tp is str:
            if static is not None:
                return is_subtype(static, name)
            return name == "string"
        if tp is bool:
            return name == "boolean"
        if tp is int:
            if static is not None:
                return is_subtype(static, name)
            return name == "integer"
        if tp is float or tp is Decimal:
            return name == "decimal"
        if tp is Quantity:
            return name == "Quantity"
        if isinstance(item, temporal.Temporal):
            return name == item.kind or (name == "instant" and item.kind == "dateTime"
                                         and item.precision == 7)
        return False
    return fhir_test


# -- values out -------------------------------------------------------------------------------

def to_decimal(value: float | Decimal) -> Decimal:
    if type(value) is float:
        return Decimal(repr(value))
    return Decimal(value)


def primitive_value(value: Any, t: str | None) -> Any:
    """The System value of a raw JSON primitive of FHIR type ``t`` (None if unknown):
    float → Decimal, date/dateTime/instant/time strings → temporal values; others unchanged."""
    tp = type(value)
    if tp is float:
        return Decimal(repr(value))
    if tp is str and t in TEMPORAL_FHIR_TYPES:
        parsed = temporal.from_fhir(value, t)  # type: ignore[arg-type]
        return parsed if parsed is not None else value
    if t == "decimal" and tp is int:
        return Decimal(value)
    return value


def json_value(item: Any) -> Any:
    """The JSON form of an item (raw values unchanged; computed values as FHIR JSON writes
    them: temporal → its text, Quantity → {value, unit/code, system})."""
    tp = type(item)
    if tp is Node:
        return item.value
    if isinstance(item, temporal.Temporal):
        return item.text
    if tp is Quantity:
        q: dict[str, Any] = {"value": item.value}
        if item.unit in ("year", "month", "week", "day", "hour", "minute", "second",
                         "millisecond"):
            q["unit"] = item.unit
        else:
            q.update(unit=item.unit, system="http://unitsofmeasure.org", code=item.unit)
        return q
    return item
