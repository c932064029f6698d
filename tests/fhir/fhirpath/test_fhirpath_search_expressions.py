"""Every R4 SearchParameter expression parses and evaluates on a sample of each base type.

Expressions come from the generated table in ``songkhoe/fhir/data`` (via
``songkhoe.fhir.definitions``) when it is there, and always from the fixture
``data/r4_search_expressions.json`` (code/base/expression triples of the R4 search-parameters
Bundle, CC0). Samples are built from the R4 element table with every element populated; the
test also checks that the expressions find data in them, so a navigation bug cannot pass as
"no error, empty result".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from songkhoe.fhir.fhirpath import FHIRPathError, compile

from .samples import SampleBuilder, variant_count

FIXTURE = Path(__file__).parent / "data" / "r4_search_expressions.json"

try:
    from songkhoe.fhir import definitions as _defs

    _defs.element("Patient.birthDate")
    DEFS: Any = _defs
except (ImportError, OSError, ValueError, KeyError):  # tables absent: the fixture test runs
    DEFS = None

needs_defs = pytest.mark.skipif(DEFS is None, reason="songkhoe.fhir.definitions not available")


def fixture_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(FIXTURE.read_text())["parameters"]
    return rows


def table_rows() -> list[tuple[str, str, str]]:
    """(resource type, code, expression) from the generated search table."""
    out = []
    for rtype in sorted(DEFS.resource_types()):
        for code, sp in DEFS.search_parameters(rtype).items():
            if sp.expression:
                out.append((rtype, code, sp.expression))
    return out


def test_fixture_is_the_r4_set() -> None:
    rows = fixture_rows()
    assert len(rows) > 1300
    assert {"code": "given", "base": ["Patient", "Practitioner"],
            "expression": "Patient.name.given | Practitioner.name.given"} in rows


def test_every_fixture_expression_parses() -> None:
    failures = []
    for row in fixture_rows():
        try:
            compile(row["expression"])
        except FHIRPathError as exc:
            failures.append(f"{row['code']}: {exc}")
    assert failures == []


_samples: dict[str, list[dict[str, Any]]] = {}


def samples(rtype: str) -> list[dict[str, Any]]:
    if rtype not in _samples:
        n = variant_count(DEFS, rtype)
        _samples[rtype] = [SampleBuilder(DEFS, k).resource(rtype) for k in range(n)]
    return _samples[rtype]


# Parameters whose expression cannot find anything in a generic sample, and why.
EXPECTED_EMPTY: dict[tuple[str, str], str] = {
    ("DeviceDefinition", "classification"):
        "R4 DeviceDefinition has no classification element (an error in the R4 definitions)",
}


def _check(triples: list[tuple[str, str, str]]) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    empty: list[str] = []
    for rtype, code, expression in triples:
        found = False
        for sample in samples(rtype):
            try:
                result = compile(expression)(sample)
                nodes = compile(expression).nodes(sample)
            except FHIRPathError as exc:
                errors.append(f"{rtype}.{code} {expression!r}: {exc}")
                break
            assert len(nodes) == len(compile(expression).raw(sample))
            if result:
                found = True
                break
        if not found and (rtype, code) not in EXPECTED_EMPTY:
            empty.append(f"{rtype}.{code}: {expression}")
    return errors, empty


@needs_defs
def test_fixture_expressions_evaluate_on_each_base_type() -> None:
    triples = []
    for row in fixture_rows():
        for base in row["base"]:
            if base in ("Resource", "DomainResource"):
                for rtype in ("Patient", "Observation", "Bundle"):
                    triples.append((rtype, row["code"], row["expression"]))
            else:
                triples.append((base, row["code"], row["expression"]))
    errors, empty = _check(triples)
    assert errors == []
    assert empty == []


@needs_defs
def test_generated_table_expressions_evaluate() -> None:
    triples = table_rows()
    assert len(triples) > 2000
    errors, empty = _check(triples)
    assert errors == []
    assert empty == []


@needs_defs
def test_sample_typing_of_search_results() -> None:
    """nodes() gives the FHIR type the store needs to index a value."""
    obs = SampleBuilder(DEFS, 0).resource("Observation")
    assert [n.type for n in compile("Observation.value").nodes(obs)] == ["Quantity"]
    assert [n.type for n in compile("Observation.effective").nodes(obs)] == ["dateTime"]
    assert [n.type for n in compile("Observation.code").nodes(obs)] == ["CodeableConcept"]
    assert [n.type for n in compile("Observation.subject").nodes(obs)] == ["Reference"]
    obs4 = SampleBuilder(DEFS, 4).resource("Observation")
    assert [n.type for n in compile("Observation.effective").nodes(obs4)] == ["dateTime"]
    assert [(n.value, n.type) for n in compile("Observation.issued").nodes(obs)] == \
        [("2020-01-02T03:04:05.678+07:00", "instant")]
