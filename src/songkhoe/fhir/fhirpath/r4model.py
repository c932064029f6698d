"""The FHIR R4 type model for FHIRPath static typing, read from :mod:`songkhoe.fhir.definitions`.

Implements :class:`.model.TypeModel` (R4 FHIRPath "FHIRPath types": the FHIR model
types are in namespace FHIR, http://hl7.org/fhir/R4/fhirpath.html#types) over the generated R4
element table: ``child_type('Patient', 'birthDate')`` → ``'date'``, ``child_type('Patient',
'contact')`` → ``'Patient.contact'`` (backbone elements are named by their path, content
references such as ``Questionnaire.item.item`` by the referenced path). Choice elements
(``value[x]``) answer None: their type comes from the JSON key at run time.

The definitions module is optional for the engine: :func:`load` returns None when it (or its
data) is missing, and the engine then types values from the JSON alone.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


class DefinitionsTypeModel:
    """A :class:`.model.TypeModel` backed by ``songkhoe.fhir.definitions``."""

    def __init__(self, definitions: Any) -> None:
        self._defs = definitions

    @lru_cache(maxsize=8192)  # noqa: B019 - one long-lived instance
    def child_type(self, parent: str, name: str) -> str | None:
        el = self._defs.element(f"{parent}.{name}")
        if el is None:
            return None
        if el.content_reference:
            return str(el.content_reference).lstrip("#")
        if len(el.types) != 1:
            return None
        t = el.types[0]
        if t in ("BackboneElement", "Element"):
            return f"{parent}.{name}"
        if t.startswith("http://hl7.org/fhirpath/System."):
            return {"String": "string", "Boolean": "boolean", "Integer": "integer",
                    "Decimal": "decimal", "Date": "date", "DateTime": "dateTime",
                    "Time": "time"}.get(t.rsplit(".", 1)[1])
        return str(t)


    @lru_cache(maxsize=8192)  # noqa: B019 - one long-lived instance
    def is_choice(self, parent: str, name: str) -> bool | None:
        """Whether ``parent.name`` is a choice element (``value[x]``); None when unknown."""
        el = self._defs.element(f"{parent}.{name}")
        if el is None:
            return None if self._defs.element(f"{parent}.{name}[x]") is None else True
        return bool(el.is_choice)


    @lru_cache(maxsize=8192)  # noqa: B019 - one long-lived instance
    def choice_types(self, parent: str, name: str) -> tuple[str, ...] | None:
        """The type codes of choice element ``parent.name[x]``; None when it is no choice."""
        el = self._defs.element(f"{parent}.{name}[x]")
        return tuple(el.types) if el is not None else None


def load() -> DefinitionsTypeModel | None:
    """The model over ``songkhoe.fhir.definitions``, or None if that is not available."""
    try:
        from songkhoe.fhir import definitions
        if definitions.element("Patient.birthDate") is None:
            return None
    except (ImportError, OSError, ValueError, KeyError, AttributeError):
        # the module or its data is missing or broken: the engine works without a model
        return None
    return DefinitionsTypeModel(definitions)
