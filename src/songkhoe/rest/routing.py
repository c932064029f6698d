"""Which FHIR interaction a method and a path relative to the service base name.

The URL patterns are those of FHIR R4 §3.1.0 RESTful API (http://hl7.org/fhir/R4/http.html,
summary table at the top of the page), plus compartment search (§3.1.0.9,
http://hl7.org/fhir/R4/search.html#2.21.1.2) and operations (§3.1.0.14,
http://hl7.org/fhir/R4/operations.html#executing). One table serves both HTTP requests and the
``request.url`` of Bundle entries, so the two can never disagree.

Unknown resource types answer 404 (§3.1.0.2 read: "404 Not Found - Unknown resource type"),
malformed ids 400, an interaction the path does not allow 405 — each with an OperationOutcome.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from songkhoe.fhir.outcome import FhirError

#: R4 ids: http://hl7.org/fhir/R4/datatypes.html#id
ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
VERSION_PATTERN = re.compile(r"[0-9]{1,18}")

#: Compartments that may prefix a search (http://hl7.org/fhir/R4/compartmentdefinition.html).
COMPARTMENTS = frozenset({"Patient", "Encounter", "RelatedPerson", "Practitioner", "Device"})

READ = ("GET", "HEAD")


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved path: the interaction and the parts of the URL it needs."""

    interaction: str
    type: str | None = None
    id: str | None = None
    version: int | None = None
    operation: str | None = None  # without the leading "$"
    compartment: tuple[str, str] | None = None  # ("Patient", id) for a compartment search


def _allow(method: str, allowed: Iterable[str], where: str) -> None:
    allowed = tuple(allowed)
    if method not in allowed:
        shown = ", ".join(m for m in allowed if m != "HEAD")
        raise FhirError(405, f"{method} is not allowed on {where}; allowed: {shown}",
                        code="not-supported")


def check_type(name: str, types: frozenset[str]) -> str:
    if name not in types:
        raise FhirError(404, f"Unknown resource type {name!r}: this server serves the FHIR R4 "
                             "resource types listed in its CapabilityStatement (GET metadata)",
                        code="not-supported")
    return name


def check_id(value: str, type_: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise FhirError(400, f"Invalid id {value!r}: a FHIR id is 1-64 characters from "
                             "A-Z, a-z, 0-9, '-' and '.'", code="invalid",
                        expression=f"{type_}.id")
    return value


def _operation(segment: str, method: str, level: str, where: str, type_: str) -> str:
    name = segment[1:]
    if name == "validate":
        _allow(method, ("POST",), where)
    elif name == "everything" and level == "instance" and type_ == "Patient":
        _allow(method, READ, where)
    else:
        raise FhirError(404, f"Operation ${name} is not supported at {level} level "
                             f"(on {where}); see the CapabilityStatement (GET metadata)",
                        code="not-supported")
    return name


def resolve(method: str, segments: list[str], types: frozenset[str]) -> Target:
    """The target of ``method`` on the path ``segments`` (relative to the service base)."""
    n = len(segments)
    where = "/" + "/".join(segments) if segments else "the service base"
    if n == 0:
        if method in READ:
            return Target("search-system")
        _allow(method, ("GET", "POST"), where)
        return Target("batch-transaction")
    head = segments[0]
    if n == 1:
        if head == "metadata":
            _allow(method, READ, where)
            return Target("capabilities")
        if head == "_history":
            _allow(method, READ, where)
            return Target("history-system")
        if head == "_search":
            _allow(method, ("POST",), where)
            return Target("search-system")
        if head.startswith("$"):
            raise FhirError(404, f"Operation {head} is not supported at system level",
                            code="not-supported")
        type_ = check_type(head, types)
        if method in READ:
            return Target("search-type", type_)
        if method == "POST":
            return Target("create", type_)
        if method == "PUT":
            return Target("conditional-update", type_)
        if method == "DELETE":
            return Target("conditional-delete", type_)
        if method == "PATCH":
            return Target("conditional-patch", type_)
        _allow(method, ("GET", "POST", "PUT", "DELETE", "PATCH"), where)
    type_ = check_type(head, types)
    second = segments[1]
    if n == 2:
        if second == "_search":
            _allow(method, ("POST", "GET", "HEAD"), where)
            return Target("search-type", type_)
        if second == "_history":
            _allow(method, READ, where)
            return Target("history-type", type_)
        if second.startswith("$"):
            return Target("operation", type_, operation=_operation(second, method, "type", where, type_))
        id_ = check_id(second, type_)
        if method in READ:
            return Target("read", type_, id_)
        if method == "PUT":
            return Target("update", type_, id_)
        if method == "PATCH":
            return Target("patch", type_, id_)
        if method == "DELETE":
            return Target("delete", type_, id_)
        _allow(method, ("GET", "PUT", "PATCH", "DELETE"), where)
    id_ = check_id(second, type_)
    third = segments[2]
    if n == 3:
        if third == "_history":
            _allow(method, READ, where)
            return Target("history-instance", type_, id_)
        if third.startswith("$"):
            return Target("operation", type_, id_,
                          operation=_operation(third, method, "instance", where, type_))
        if type_ in COMPARTMENTS and (third == "*" or third in types):
            _allow(method, READ, where)
            return Target("search-compartment", None if third == "*" else third,
                          compartment=(type_, id_))
        if type_ in COMPARTMENTS:
            check_type(third, types)
    if n == 4 and third == "_history":
        _allow(method, READ, where)
        if not VERSION_PATTERN.fullmatch(segments[3]):
            raise FhirError(404, f"{type_}/{id_} has no version {segments[3]!r}: versions "
                                 "are whole numbers", code="not-found")
        return Target("vread", type_, id_, version=int(segments[3]))
    raise FhirError(404, f"No FHIR interaction is defined for {where}", code="not-found")
