"""The FHIR R4 side: JSON navigation (choice elements, primitive extensions), the R4
functions (extension, hasValue, getValue, resolve), environment variables, result views
(values, nodes, raw), the type model hook, and the SQL-on-FHIR key functions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from songkhoe.fhir.fhirpath import (
    Date,
    DateTime,
    FHIRPathError,
    Node,
    compile,
    evaluate,
    set_type_model,
)
from songkhoe.fhir.fhirpath import model as fp_model

OBS: dict[str, Any] = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
    "subject": {"reference": "Patient/p1"},
    "performer": [{"reference": "http://example.org/fhir/Practitioner/dr1/_history/2"},
                  {"reference": "#org1"}, {"type": "RelatedPerson", "display": "mẹ"},
                  {"reference": "urn:uuid:53fefa32"}],
    "contained": [{"resourceType": "Organization", "id": "org1", "name": "Trạm Y tế"}],
    "effectiveDateTime": "2024-03-01T08:30:00+07:00",
    "valueQuantity": {"value": 128.0, "unit": "mmHg", "code": "mm[Hg]",
                      "system": "http://unitsofmeasure.org"},
    "component": [{"code": {"text": "a"}, "valueQuantity": {"value": 80}},
                  {"code": {"text": "b"}, "valueCodeableConcept": {"text": "x"}}],
}
PAT: dict[str, Any] = {
    "resourceType": "Patient", "id": "p1", "birthDate": "1980-04-12",
    "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/"
                                         "patient-birthTime",
                                  "valueDateTime": "1980-04-12T06:15:00+07:00"}]},
    "name": [{"given": ["An", "Bình"], "_given": [None, {"id": "g2", "extension": [
        {"url": "http://example.org/nickname", "valueString": "Bi"}]}]}],
    "gender": "female",
    "_active": {"extension": [{"url": "http://example.org/why", "valueString": "unknown"}]},
    "extension": [{"url": "http://example.org/ethnic", "valueCoding": {"code": "01"}},
                  {"url": "http://example.org/score", "valueDecimal": 0.1}],
    "link": [{"other": {"reference": "Patient/p2"}}, {"other": {"reference": "Patient/p1"}}],
}


def ev(resource: dict[str, Any], text: str, **kw: Any) -> list[Any]:
    return evaluate(resource, text, **kw)


def test_choice_elements_navigate_by_base_name() -> None:
    assert ev(OBS, "Observation.value.value") == [Decimal("128.0")]
    assert ev(OBS, "Observation.value.unit") == ["mmHg"]
    assert ev(OBS, "Observation.effective") == [DateTime("2024-03-01T08:30:00+07:00")]
    assert ev(OBS, "Observation.component.value.text") == ["x"]
    assert ev(OBS, "Observation.valueQuantity.value") == [Decimal("128.0")]  # the JSON name too
    assert ev(OBS, "Observation.value.ofType(Quantity).code") == ["mm[Hg]"]
    assert ev(OBS, "Observation.component.value.ofType(CodeableConcept).text") == ["x"]
    assert ev({"resourceType": "Observation", "valueSet": "x"}, "Observation.value") == []


def test_resource_type_prefix_filters() -> None:
    assert ev(OBS, "Patient.id") == []
    assert ev(OBS, "Observation.id") == ["o1"]
    assert ev(OBS, "Resource.id") == ["o1"]
    assert ev(OBS, "DomainResource.id") == ["o1"]
    assert ev({"resourceType": "Bundle", "id": "b"}, "DomainResource.id") == []
    bundle = {"resourceType": "Bundle", "entry": [{"resource": PAT}, {"resource": OBS}]}
    assert ev(bundle, "Bundle.entry[0].resource.id") == ["p1"]
    assert ev(bundle, "Bundle.entry.resource.ofType(Observation).id") == ["o1"]


def test_primitive_extensions() -> None:
    assert ev(PAT, "Patient.birthDate.extension('http://hl7.org/fhir/StructureDefinition/"
                   "patient-birthTime').value") == [DateTime("1980-04-12T06:15:00+07:00")]
    assert ev(PAT, "Patient.birthDate") == ["1980-04-12"] or \
        ev(PAT, "Patient.birthDate") == [Date("1980-04-12")]
    assert ev(PAT, "Patient.name.given") == ["An", "Bình"]
    assert ev(PAT, "Patient.name.given.extension('http://example.org/nickname').value") == \
        ["Bi"]
    assert ev(PAT, "Patient.name.given[1].id") == ["g2"]
    # a primitive with an extension and no value: the node exists, it has no value
    assert ev(PAT, "Patient.active.exists()") == [True]
    assert ev(PAT, "Patient.active.hasValue()") == [False]
    assert ev(PAT, "Patient.active") == []
    assert ev(PAT, "Patient.active.extension.value") == ["unknown"]
    assert ev(PAT, "Patient.gender.hasValue()") == [True]
    assert ev(PAT, "Patient.name.hasValue()") == [False]
    assert ev(PAT, "Patient.gender.getValue()") == ["female"]


def test_extension_function() -> None:
    assert ev(PAT, "Patient.extension('http://example.org/ethnic').value.code") == ["01"]
    assert ev(PAT, "extension('http://example.org/score').value") == [Decimal("0.1")]
    assert ev(PAT, "extension('http://example.org/none')") == []
    assert ev(PAT, "extension(%ext).value.ofType(Coding).code",
              variables={"ext": "http://example.org/ethnic"}) == ["01"]


def test_resolve() -> None:
    assert ev(OBS, "Observation.subject.where(resolve() is Patient).reference") == ["Patient/p1"]
    assert ev(OBS, "Observation.subject.where(resolve() is Group)") == []
    assert ev(OBS, "Observation.subject.resolve().ofType(Patient).id") == ["p1"]
    assert ev(OBS, "Observation.performer.resolve().ofType(Practitioner).id") == ["dr1"]
    assert ev(OBS, "Observation.performer.resolve().ofType(Organization).name") == ["Trạm Y tế"]
    assert ev(OBS, "Observation.performer.where(resolve() is RelatedPerson).display") == ["mẹ"]
    assert ev(OBS, "Observation.performer.resolve().count()") == [3]  # urn:uuid unresolvable
    person = {"resourceType": "Person", "link": [{"target": {"reference": "Patient/1"}},
                                                 {"target": {"reference": "RelatedPerson/2"}}]}
    assert ev(person, "Person.link.target.where(resolve() is Patient).reference") == \
        ["Patient/1"]
    # within a Bundle: fullUrl and Type/id resolve to the entry's resource
    bundle = {"resourceType": "Bundle", "entry": [
        {"fullUrl": "urn:uuid:53fefa32", "resource": {"resourceType": "Device", "id": "d"}},
        {"fullUrl": "http://x/Patient/p1", "resource": PAT}]}
    expr = compile("Observation.performer.resolve().ofType(Device).id | "
                   "Observation.subject.resolve().gender")
    assert expr(OBS, root=bundle) == ["d", "female"]
    # a caller's resolver is asked first
    found = compile("Observation.subject.resolve().gender")(
        OBS, resolver=lambda ref: PAT if ref == "Patient/p1" else None)
    assert found == ["female"]


def test_environment_variables() -> None:
    assert ev(OBS, "%resource.id") == ["o1"]
    assert ev(OBS, "%context.id") == ["o1"]
    assert ev(OBS, "%rootResource.id") == ["o1"]
    assert ev(OBS, "%ucum") == ["http://unitsofmeasure.org"]
    assert ev(OBS, "%loinc") == ["http://loinc.org"] and ev(OBS, "%sct") == ["http://snomed.info/sct"]
    assert ev(OBS, "%`vs-administrative-gender`") == \
        ["http://hl7.org/fhir/ValueSet/administrative-gender"]
    assert ev(OBS, "%'ext-patient-birthTime'") == \
        ["http://hl7.org/fhir/StructureDefinition/patient-birthTime"]
    assert ev(OBS, "code.coding.where(system = %loinc).code") == ["8480-6"]
    assert ev(OBS, "value.value > %limit", variables={"limit": 120}) == [True]
    assert ev(OBS, "%many.count()", variables={"many": [1, 2, 3]}) == [3]
    assert ev(OBS, "%nothing.exists()", variables={"nothing": None}) == [False]
    with pytest.raises(FHIRPathError, match="undefined environment variable %missing"):
        ev(OBS, "%missing")
    # %resource inside a where() is still the resource; $this is the item
    assert ev(OBS, "component.where(code.text = %resource.component[0].code.text).value.value") \
        == [80]


def test_focus_starts_elsewhere_with_the_same_resource() -> None:
    component = compile("Observation.component").raw(OBS)[1]
    assert compile("code.text")(OBS, focus=component) == ["b"]
    assert compile("%resource.id")(OBS, focus=component) == ["o1"]


def test_values_view_converts_primitives() -> None:
    values = ev(OBS, "Observation.value.value | Observation.effective | Observation.status")
    assert values == [Decimal("128.0"), DateTime("2024-03-01T08:30:00+07:00"), "final"]
    assert type(values[0]) is Decimal
    dt = values[1]
    assert dt.text == "2024-03-01T08:30:00+07:00" and dt.precision == 6
    assert ev({"resourceType": "Basic", "x": 0.1}, "x") == [Decimal("0.1")]


def test_nodes_view_for_indexing() -> None:
    nodes = compile("Observation.value | Observation.effective | Observation.status")\
        .nodes(OBS)
    assert [(n.value, n.type) for n in nodes] == [
        (OBS["valueQuantity"], "Quantity"),
        ("2024-03-01T08:30:00+07:00", "dateTime"),
        ("final", nodes[2].type),  # 'code' with the R4 model, None without
    ]
    assert nodes[2].type in ("code", None)
    period = {"resourceType": "Observation", "effectivePeriod": {"start": "2024"}}
    assert [(n.value, n.type) for n in compile("Observation.effective").nodes(period)] == \
        [({"start": "2024"}, "Period")]
    given = compile("Patient.name.given").nodes(PAT)
    assert [n.value for n in given] == ["An", "Bình"]
    assert given[1].element == {"id": "g2", "extension": [
        {"url": "http://example.org/nickname", "valueString": "Bi"}]}
    computed = compile("Patient.birthDate.toDate() | 1.5 | true").nodes(PAT)
    assert [(n.value, n.type) for n in computed] == [
        ("1980-04-12", "date"), (Decimal("1.5"), "decimal"), (True, "boolean")]
    assert compile("Observation").nodes(OBS)[0].type == "Observation"


class TinyModel:
    """A two-element model, to show the hook changes typing (and only typing)."""

    def child_type(self, parent: str, name: str) -> str | None:
        return {("Patient", "birthDate"): "date", ("Patient", "gender"): "code",
                ("Observation", "code"): "CodeableConcept"}.get((parent, name))


def test_type_model_hook() -> None:
    saved_model, saved_loaded = fp_model._model, fp_model._model_loaded
    try:
        set_type_model(TinyModel())
        assert ev(PAT, "Patient.birthDate") == [Date("1980-04-12")]
        assert ev(PAT, "Patient.gender is code") == [True]
        assert ev(PAT, "Patient.gender is string") == [True]  # code derives from string
        assert [n.type for n in compile("Patient.birthDate").nodes(PAT)] == ["date"]
        assert ev(OBS, "Observation.code is CodeableConcept") == [True]
        set_type_model(None)
        assert ev(PAT, "Patient.birthDate") == ["1980-04-12"]
        assert ev(PAT, "Patient.gender is code") == [False]
        assert ev(OBS, "Observation.code is CodeableConcept") == [True]  # by element names
        assert ev(OBS, "Observation.code is Period") == [False]
    finally:
        fp_model._model, fp_model._model_loaded = saved_model, saved_loaded
        set_type_model(saved_model)


def test_resource_and_reference_keys() -> None:
    assert ev(PAT, "getResourceKey()") == ["p1"]
    assert ev(PAT, "link.other.getReferenceKey()") == ["p2", "p1"]
    assert ev(PAT, "link.other.getReferenceKey(Patient)") == ["p2", "p1"]
    assert ev(PAT, "link.other.getReferenceKey(Observation)") == []
    assert ev(PAT, "getResourceKey() = link.other.getReferenceKey().last()") == [True]


def test_nodes_are_plain_objects() -> None:
    n = Node("x", "string")
    assert n == Node("x", "string") and n != Node("x", "code")
    assert repr(n) == "Node('x', type='string')"


def test_runtime_errors_name_the_expression() -> None:
    with pytest.raises(FHIRPathError) as info:
        evaluate(PAT, "Patient.name.given.upper()")
    assert info.value.expression == "Patient.name.given.upper()"
    assert "single item" in str(info.value)
