"""The generated R4 tables as read through ``songkhoe.fhir.definitions``."""

from __future__ import annotations

import re

import pytest

from songkhoe.fhir import definitions as d

COMMON = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "_content",
          "_list", "_has", "_type", "_query")


def test_the_146_concrete_r4_resource_types() -> None:
    types = d.resource_types()
    assert len(types) == 146
    assert {"Patient", "Observation", "Encounter", "Condition", "Bundle", "Questionnaire",
            "QuestionnaireResponse", "Binary", "Parameters", "MedicinalProduct",
            "EffectEvidenceSynthesis", "CatalogEntry"} <= types
    # abstract, logical, and later-version types are not creatable R4 resources
    for name in ("Resource", "DomainResource", "MetadataResource", "SubscriptionStatus",
                 "Element", "HumanName", "string"):
        assert name not in types
        assert not d.is_resource_type(name)


def test_type_kinds_and_bases() -> None:
    assert d.type_kind("Patient") == "resource"
    assert d.type_kind("HumanName") == "complex-type"
    assert d.type_kind("date") == "primitive-type"
    assert d.type_kind("NoSuchType") is None
    assert d.is_abstract("DomainResource") and d.is_abstract("BackboneElement")
    assert not d.is_abstract("Patient")
    assert d.base_type("Patient") == "DomainResource"
    assert d.base_type("Bundle") == "Resource"
    assert d.base_type("Age") == "Quantity"
    assert d.json_type_name("SimpleQuantity") == "Quantity"
    assert d.json_type_name("HumanName") == "HumanName"
    assert len(d.primitive_types()) == 20


def test_elements_of_a_resource_include_inherited_ones() -> None:
    assert list(d.children("Observation"))[:8] == [
        "id", "meta", "implicitRules", "language", "text", "contained", "extension",
        "modifierExtension"]
    patient_id = d.element("Patient.id")
    assert patient_id is not None and patient_id.types == ("id",) and patient_id.primitive
    assert list(d.children("Observation.component")) == [
        "id", "extension", "modifierExtension", "code", "value[x]", "dataAbsentReason",
        "interpretation", "referenceRange"]
    assert list(d.children("Quantity")) == ["id", "extension", "value", "comparator", "unit",
                                            "system", "code"]


def test_cardinality_types_and_choices() -> None:
    status = d.element("Observation.status")
    assert status is not None and (status.min, status.max) == (1, 1) and not status.repeats
    name = d.element("Patient.name")
    assert name is not None and name.max == d.UNBOUNDED and name.repeats
    assert name.types == ("HumanName",) and not name.primitive
    value = d.element("Observation.value[x]")
    assert value is not None and value.is_choice and value.name == "value[x]"
    assert value.types == ("Quantity", "CodeableConcept", "string", "boolean", "integer",
                           "Range", "Ratio", "SampledData", "time", "dateTime", "Period")
    assert d.element("Observation.valueQuantity") is None


def test_reference_targets() -> None:
    subject = d.element("Observation.subject")
    assert subject is not None
    assert subject.targets["Reference"] == ("Patient", "Group", "Device", "Location")
    # Reference(Any) has no restriction
    focus = d.element("Observation.focus")
    assert focus is not None and "Reference" not in focus.targets
    profile = d.element("Meta.profile")
    assert profile is not None and profile.targets["canonical"] == ("StructureDefinition",)


def test_content_references() -> None:
    nested = d.element("Questionnaire.item.item")
    assert nested is not None and nested.content_reference == "#Questionnaire.item"
    assert nested.types == ()
    part = d.element("Parameters.parameter.part")
    assert part is not None and part.content_reference == "#Parameters.parameter"


def test_required_bindings() -> None:
    status = d.element("Observation.status")
    assert status is not None
    assert status.binding == "http://hl7.org/fhir/ValueSet/observation-status"
    code = d.element("Observation.code")
    assert code is not None and code.binding is None  # example binding: not kept
    assert d.element("Quantity.comparator").binding == (  # type: ignore[union-attr]
        "http://hl7.org/fhir/ValueSet/quantity-comparator")


def test_simple_quantity_forbids_comparator() -> None:
    low = d.element("Observation.referenceRange.low")
    assert low is not None and low.types == ("SimpleQuantity",)
    comparator = d.element("SimpleQuantity.comparator")
    assert comparator is not None and comparator.max == 0


def test_later_fhir_versions_are_kept_out() -> None:
    """Medplum's package carries R4B/R5 additions; the tables hold R4 as published."""
    for path in ("Meta.project", "Meta.compartment", "Binary.url", "ResearchStudy.label",
                 "ResearchStudy.studyDesign", "DeviceDefinition.classification",
                 "EvidenceVariable.characteristic.definitionByTypeAndValue"):
        assert d.element(path) is None, path
    assert d.element("EvidenceVariable.characteristic.definition[x]") is not None
    outcome = d.element("Bundle.entry.response.outcome")
    assert outcome is not None and outcome.types == ("Resource",)
    detected = d.element("DetectedIssue.status")
    assert detected is not None
    assert detected.binding == "http://hl7.org/fhir/ValueSet/observation-status"
    research = d.element("ResearchStudy.status")
    assert research is not None
    assert research.binding == "http://hl7.org/fhir/ValueSet/research-study-status"
    observer = d.element("AuditEvent.source.observer")
    assert observer is not None and "Bot" not in observer.targets["Reference"]
    site = d.element("ResearchStudy.site")
    assert site is not None and site.targets["Reference"] == ("Location",)
    assert "classification" not in d.search_parameters("DeviceDefinition")


def test_summary_elements() -> None:
    summary = d.summary_elements("Patient")
    assert {"id", "meta", "identifier", "name", "gender", "birthDate", "_birthDate",
            "deceasedBoolean", "deceasedDateTime"} <= summary
    assert not {"text", "contained", "photo", "contact", "communication"} & summary
    observation = d.summary_elements("Observation")
    assert {"valueQuantity", "valueString", "_valueString"} <= observation
    assert "_valueQuantity" not in observation


def test_search_parameters_have_per_type_expressions() -> None:
    code = d.search_parameter("Observation", "code")
    assert code is not None
    assert (code.type, code.expression) == ("token", "Observation.code")
    assert code.url == "http://hl7.org/fhir/SearchParameter/clinical-code"
    assert d.search_parameter("Condition", "code").expression == "Condition.code"  # type: ignore[union-attr]
    assert d.search_parameter("MedicationRequest", "code").expression == (  # type: ignore[union-attr]
        "(MedicationRequest.medication as CodeableConcept)")
    name = d.search_parameter("Patient", "name")
    assert name is not None and (name.type, name.expression) == ("string", "Patient.name")
    assert d.search_parameter("Patient", "family").expression == "Patient.name.family"  # type: ignore[union-attr]
    quantity = d.search_parameter("Observation", "value-quantity")
    assert quantity is not None and quantity.type == "quantity"
    assert quantity.expression is not None
    assert "(Observation.value as Quantity)" in quantity.expression
    # relative expressions in the R4 text are anchored to their type
    assert d.search_parameter("InsurancePlan", "name").expression == (  # type: ignore[union-attr]
        "InsurancePlan.name | InsurancePlan.alias")


def test_reference_search_parameters_have_targets() -> None:
    patient = d.search_parameter("Observation", "patient")
    assert patient is not None and patient.type == "reference"
    assert patient.targets == ("Patient",)
    assert patient.expression == "Observation.subject.where(resolve() is Patient)"
    subject = d.search_parameter("Observation", "subject")
    assert subject is not None and set(subject.targets) >= {"Patient", "Group"}


def test_composite_search_parameters_name_their_components() -> None:
    composite = d.search_parameter("Observation", "component-code-value-quantity")
    assert composite is not None and composite.type == "composite"
    assert composite.expression == "Observation.component"
    assert [(c.code, c.expression) for c in composite.components] == [
        ("component-code", "code"), ("component-value-quantity", "value.as(Quantity)")]
    for component in composite.components:
        assert d.search_parameter("Observation", component.code) is not None


def test_common_search_parameters_under_every_resource_type() -> None:
    for resource_type in d.resource_types():
        params = d.search_parameters(resource_type)
        for code in COMMON:
            assert code in params, (resource_type, code)
    last_updated = d.search_parameter("Patient", "_lastUpdated")
    assert last_updated is not None
    assert (last_updated.type, last_updated.expression) == ("date", "Patient.meta.lastUpdated")
    assert d.search_parameter("Bundle", "_id").expression == "Bundle.id"  # type: ignore[union-attr]
    assert d.search_parameter("Patient", "_text") is not None
    assert d.search_parameter("Bundle", "_text") is None  # _text is for DomainResources only
    has = d.search_parameter("Patient", "_has")
    assert has is not None and has.type == "special" and has.expression is None
    assert d.search_parameters("NoSuchType") == {}


_LEADING = re.compile(r"^\(*\s*([A-Za-z]+)")


def _top_level_parts(expression: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(expression):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    return [*parts, expression[start:].strip()]


@pytest.mark.parametrize("resource_type", sorted(d.resource_types()))
def test_every_expression_part_belongs_to_its_type(resource_type: str) -> None:
    for code, param in d.search_parameters(resource_type).items():
        if param.expression is None:
            continue
        for part in _top_level_parts(param.expression):
            match = _LEADING.match(part)
            assert match is not None and match.group(1) == resource_type, (code, part)


def test_valuesets_expand_to_codes() -> None:
    assert d.valueset_codes("http://hl7.org/fhir/ValueSet/observation-status") == frozenset({
        "registered", "preliminary", "final", "amended", "corrected", "cancelled",
        "entered-in-error", "unknown"})
    assert d.valueset_codes("http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1") == (
        frozenset({"male", "female", "other", "unknown"}))
    # explicit concept lists are honoured (not the whole code system)
    assert d.valueset_codes("http://hl7.org/fhir/ValueSet/immunization-status") == frozenset({
        "completed", "entered-in-error", "not-done"})
    systems = d.valueset_systems("http://hl7.org/fhir/ValueSet/quantity-comparator")
    assert systems is not None
    assert dict(systems) == {"http://hl7.org/fhir/quantity-comparator": {"<", "<=", ">=", ">"}}
    confidentiality = d.valueset_codes(
        "http://terminology.hl7.org/ValueSet/v3-ConfidentialityClassification")
    assert confidentiality == frozenset({"U", "L", "M", "N", "R", "V"})


def test_nested_concepts_and_included_valuesets_are_expanded() -> None:
    # resource-types lists every resource type as a concept of one code system
    resource_types = d.valueset_codes("http://hl7.org/fhir/ValueSet/resource-types")
    assert resource_types is not None and "Observation" in resource_types
    # FHIRAllTypes includes data-types and abstract-types via include.valueSet / systems
    all_types = d.valueset_codes("http://hl7.org/fhir/ValueSet/all-types")
    assert all_types is not None and {"Patient", "HumanName", "string", "Any"} <= all_types


def test_external_valuesets_are_marked_unexpandable() -> None:
    for url in ("http://hl7.org/fhir/ValueSet/mimetypes", "http://hl7.org/fhir/ValueSet/ucum-units"):
        assert d.valueset_codes(url) is None
        assert url in d.unexpandable_valuesets()
    assert "BCP-13" in d.unexpandable_valuesets()["http://hl7.org/fhir/ValueSet/mimetypes"]
    assert d.valueset_codes("http://example.org/no-such-valueset") is None


def test_patient_compartment() -> None:
    compartment = d.patient_compartment()
    assert compartment["Observation"] == ("subject", "performer")
    assert compartment["Patient"] == ("link",)
    assert compartment["Encounter"] == ("patient",)
    assert "Organization" not in compartment
    assert "Task" not in compartment  # R4 lists Task as never in the Patient compartment
    for resource_type, params in compartment.items():
        assert d.is_resource_type(resource_type)
        for code in params:
            assert code == "{def}" or d.search_parameter(resource_type, code) is not None, (
                resource_type, code)


def test_shapes_the_validator_relies_on() -> None:
    """R4 has no finite max above 1 and binds no Coding element with strength required."""
    for path, el in d._elements().items():
        assert el.max in (0, 1, d.UNBOUNDED), path
        if el.binding:
            assert set(el.types) <= {"code", "CodeableConcept"}, path
