"""Structural validation of R4 resources: valid examples pass, and every kind of error is
reported with its issue code, the FHIRPath of the element, and what was expected."""

from __future__ import annotations

import copy
import unicodedata
from typing import Any

import pytest

from songkhoe.fhir import definitions
from songkhoe.fhir.outcome import Issue
from songkhoe.fhir.validate import validate

Json = dict[str, Any]

UUID_PATIENT = "urn:uuid:6c9e6d1e-7b1c-4c4e-9a3b-2f8e1d2c3b4a"


def patient() -> Json:
    return {
        "resourceType": "Patient",
        "id": "vn-001",
        "meta": {"versionId": "3", "lastUpdated": "2024-05-06T08:30:00.123+07:00",
                 "tag": [{"system": "http://example.org/tags", "code": "kham-suc-khoe"}]},
        "text": {"status": "generated",
                 "div": '<div xmlns="http://www.w3.org/1999/xhtml">Nguyễn Thị Ánh</div>'},
        "identifier": [{"system": "urn:oid:2.16.704.1.1", "value": "001190012345"}],
        "active": True,
        "name": [{"use": "official", "family": "Nguyễn", "given": ["Thị", "Ánh"],
                  "_given": [None, {"extension": [{
                      "url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier",
                      "valueCode": "CL"}]}],
                  "text": "Nguyễn Thị Ánh"},
                 {"use": "nickname", "given": ["Đào"]}],
        "telecom": [{"system": "phone", "value": "+84 912 345 678", "use": "mobile"}],
        "gender": "female",
        "birthDate": "1990-02-28",
        "_birthDate": {"extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
            "valueDateTime": "1990-02-28T06:15:00+07:00"}]},
        "deceasedBoolean": False,
        "address": [{"use": "home", "line": ["12 Phố Huế"], "district": "Hai Bà Trưng",
                     "city": "Hà Nội", "country": "VN"}],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47",
                                                     "code": "vi"}]},
                           "preferred": True}],
        "managingOrganization": {"reference": "Organization/tram-y-te-01"},
    }


def blood_pressure() -> Json:
    def component(code: str, display: str, value: int) -> Json:
        return {"code": {"coding": [{"system": "http://loinc.org", "code": code,
                                     "display": display}]},
                "valueQuantity": {"value": value, "unit": "mmHg",
                                  "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
    return {
        "resourceType": "Observation",
        "id": "bp-1",
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9",
                             "display": "Blood pressure panel with all children optional"}]},
        "subject": {"reference": "Patient/vn-001"},
        "effectiveDateTime": "2024-05-06T08:25:00+07:00",
        "performer": [{"reference": "Practitioner/bs-01"}],
        "referenceRange": [{"low": {"value": 90, "unit": "mmHg"},
                            "high": {"value": 140, "unit": "mmHg"}}],
        "component": [component("8480-6", "Systolic blood pressure", 128),
                      component("8462-4", "Diastolic blood pressure", 82)],
    }


def encounter() -> Json:
    return {
        "resourceType": "Encounter",
        "id": "enc-1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [{"text": "Khám sức khỏe định kỳ"}],
        "subject": {"reference": "Patient/vn-001"},
        "participant": [{"individual": {"reference": "Practitioner/bs-01"}}],
        "period": {"start": "2024-05-06T08:00:00+07:00", "end": "2024-05-06T08:40:00+07:00"},
        "serviceProvider": {"reference": "Organization/tram-y-te-01"},
    }


def condition() -> Json:
    return {
        "resourceType": "Condition",
        "id": "htn-1",
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": "active"}]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
            "code": "confirmed"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10",
                             "display": "Tăng huyết áp vô căn"}]},
        "subject": {"reference": "Patient/vn-001"},
        "onsetDateTime": "2023",
        "recordedDate": "2024-05-06",
        "evidence": [{"detail": [{"reference": "Observation/bp-1"}]}],
    }


def questionnaire() -> Json:
    return {
        "resourceType": "Questionnaire",
        "id": "phieu-kham",
        "url": "http://example.org/Questionnaire/phieu-kham",
        "status": "active",
        "item": [{
            "linkId": "1", "text": "Tiền sử", "type": "group",
            "item": [
                {"linkId": "1.1", "text": "Hút thuốc?", "type": "boolean", "required": True},
                {"linkId": "1.2", "text": "Số điếu mỗi ngày", "type": "integer",
                 "enableWhen": [{"question": "1.1", "operator": "=", "answerBoolean": True}],
                 "item": [{"linkId": "1.2.1", "type": "choice",
                           "answerOption": [{"valueCoding": {"system": "http://example.org",
                                                             "code": "lt10"}}]}]},
            ],
        }],
    }


def transaction() -> Json:
    new_patient = {"resourceType": "Patient", "name": [{"family": "Trần"}]}
    observation = blood_pressure()
    del observation["id"]
    observation["subject"] = {"reference": UUID_PATIENT}
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": UUID_PATIENT, "resource": new_patient,
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": observation, "request": {"method": "POST", "url": "Observation"}},
            {"request": {"method": "DELETE", "url": "Observation/old-1"}},
        ],
    }


def medication_request() -> Json:
    return {
        "resourceType": "MedicationRequest",
        "id": "rx-1",
        "contained": [{"resourceType": "Medication", "id": "amlo",
                       "code": {"text": "Amlodipine 5 mg"}}],
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": "#amlo"},
        "subject": {"reference": "Patient/vn-001"},
        "dosageInstruction": [{"text": "1 viên mỗi sáng",
                               "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "viên"}}],
                               "timing": {"repeat": {"frequency": 1, "period": 1,
                                                     "periodUnit": "d"}}}],
    }


def expressions(issues: list[Issue]) -> list[str | None]:
    return [i.expression for i in issues]


def only(issues: list[Issue]) -> Issue:
    assert len(issues) == 1, issues
    return issues[0]


# --------------------------------------------------------------------------- valid resources


@pytest.mark.parametrize("example", [patient, blood_pressure, encounter, condition,
                                     questionnaire, transaction, medication_request])
def test_valid_examples(example: Any) -> None:
    assert validate(example()) == []


def test_vietnamese_names_in_nfc_are_valid_strings() -> None:
    resource = patient()
    assert all(unicodedata.is_normalized("NFC", g) for g in resource["name"][0]["given"])
    assert validate(resource, expected_type="Patient") == []


def test_every_resource_type_validates_its_minimal_form() -> None:
    """A resource with only resourceType is structurally fine or misses required elements."""
    for resource_type in definitions.resource_types():
        for issue in validate({"resourceType": resource_type}):
            assert issue.code == "required", (resource_type, issue)


def test_searchset_bundle_with_resources_and_outcome() -> None:
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": 1,
              "link": [{"relation": "self", "url": "http://localhost/fhir/Patient?name=An"}],
              "entry": [{"fullUrl": "http://localhost/fhir/Patient/vn-001",
                         "resource": patient(), "search": {"mode": "match", "score": 1}},
                        {"resource": {"resourceType": "OperationOutcome", "issue": [
                            {"severity": "information", "code": "informational"}]},
                         "search": {"mode": "outcome"}}]}
    assert validate(bundle) == []


# --------------------------------------------------------------------------- not a resource


@pytest.mark.parametrize(("value", "found"), [
    ([{"resourceType": "Patient"}], "an array"), ("Patient", "'Patient'"), (None, "null"),
    (42, "a number (42)"), ({}, None)])
def test_non_resources_are_answered_not_raised(value: Any, found: str | None) -> None:
    issue = only(validate(value))
    if found is None:
        assert (issue.code, issue.diagnostics) == ("required", "missing resourceType")
    else:
        assert issue.code == "structure"
        assert issue.diagnostics == f"expected a JSON object with a resourceType, got {found}"


def test_unknown_resource_type() -> None:
    issue = only(validate({"resourceType": "Patients"}))
    assert (issue.code, issue.expression) == ("invalid", "resourceType")
    assert "unknown resourceType 'Patients'" in issue.diagnostics
    assert only(validate({"resourceType": "Resource"})).code == "invalid"
    assert only(validate({"resourceType": 7})).code == "invalid"


def test_expected_type_mismatch() -> None:
    issue = only(validate(patient(), expected_type="Observation"))
    assert issue.code == "invalid"
    assert issue.diagnostics == "expected resourceType 'Observation', got 'Patient'"


# --------------------------------------------------------------------------- unknown elements


def test_unknown_elements_at_every_level() -> None:
    obs = blood_pressure()
    obs["foo"] = 1
    obs["code"]["coding"][0]["bar"] = "x"
    obs["component"][1]["valueQuantity"]["baz"] = 2
    obs["component"][0]["qux"] = True
    issues = validate(obs)
    assert sorted(expressions(issues)) == sorted([  # type: ignore[type-var]
        "Observation.foo", "Observation.code.coding[0].bar", "Observation.component[0].qux",
        "Observation.component[1].valueQuantity.baz"])
    assert all(i.code == "structure" for i in issues)
    by_path = {i.expression: i.diagnostics for i in issues}
    assert by_path["Observation.foo"] == "unknown element 'foo' in Observation"
    assert by_path["Observation.component[0].qux"] == (
        "unknown element 'qux' in Observation.component")
    assert by_path["Observation.code.coding[0].bar"] == "unknown element 'bar' in Coding"


def test_unknown_element_suggests_the_close_name() -> None:
    resource = patient()
    resource["birthdate"] = resource.pop("birthDate")
    issue = only(validate(resource))
    assert issue.expression == "Patient.birthdate"
    assert issue.diagnostics == "unknown element 'birthdate' in Patient (did you mean 'birthDate'?)"


def test_unknown_elements_inside_content_references() -> None:
    q = questionnaire()
    q["item"][0]["item"][1]["item"][0]["foo"] = 1
    issue = only(validate(q))
    assert issue.expression == "Questionnaire.item[0].item[1].item[0].foo"
    assert issue.diagnostics == "unknown element 'foo' in Questionnaire.item"


def test_resource_type_is_unknown_inside_datatypes() -> None:
    resource = patient()
    resource["name"][0]["resourceType"] = "HumanName"
    assert expressions(validate(resource)) == ["Patient.name[0].resourceType"]


# --------------------------------------------------------------------------- JSON types


def test_wrong_json_types() -> None:
    obs = blood_pressure()
    obs["component"][1]["valueQuantity"]["value"] = "82"
    issue = only(validate(obs))
    assert (issue.code, issue.expression) == (
        "structure", "Observation.component[1].valueQuantity.value")
    assert issue.diagnostics == "expected a decimal (a JSON number), got '82'"

    resource = patient()
    resource["active"] = "true"
    issue = only(validate(resource))
    assert (issue.expression, issue.diagnostics) == (
        "Patient.active", "expected a boolean (JSON true or false), got 'true'")

    resource = patient()
    resource["birthDate"] = 1990
    issue = only(validate(resource))
    assert issue.expression == "Patient.birthDate" and "got a number (1990)" in issue.diagnostics

    resource = patient()
    resource["managingOrganization"] = "Organization/1"
    issue = only(validate(resource))
    assert issue.expression == "Patient.managingOrganization"
    assert issue.diagnostics == "expected an object (Reference), got 'Organization/1'"


def test_arrays_exactly_for_repeating_elements() -> None:
    resource = patient()
    resource["name"] = resource["name"][0]
    issue = only(validate(resource))
    assert (issue.code, issue.expression) == ("structure", "Patient.name")
    assert issue.diagnostics == "expected an array for repeating element 'name', got an object"

    resource = patient()
    resource["gender"] = ["female"]
    issue = only(validate(resource))
    assert issue.expression == "Patient.gender"
    assert issue.diagnostics == "expected a single value for 'gender' (max 1), got an array"

    obs = blood_pressure()
    obs["code"] = [obs["code"]]
    assert expressions(validate(obs)) == ["Observation.code"]

    resource = patient()
    resource["name"][0]["given"] = "Ánh"
    assert expressions(validate(resource)) == ["Patient.name[0].given"]


def test_empty_values_are_invalid() -> None:
    resource = patient()
    resource["telecom"] = []
    resource["address"][0] = {}
    resource["name"][1]["given"] = [""]
    resource["gender"] = None
    resource["photo"] = [None]
    issues = {i.expression: i for i in validate(resource)}
    assert set(issues) == {"Patient.telecom", "Patient.address[0]", "Patient.name[1].given[0]",
                           "Patient.gender", "Patient.photo[0]"}
    assert "got an empty array" in issues["Patient.telecom"].diagnostics
    assert "got an empty object" in issues["Patient.address[0]"].diagnostics
    assert issues["Patient.name[1].given[0]"].diagnostics == (
        "expected a string with non-whitespace content, got an empty string")
    assert issues["Patient.gender"].diagnostics.endswith("got null")
    assert issues["Patient.photo[0]"].diagnostics == "expected an object (Attachment), got null"


def test_whitespace_only_strings_are_invalid() -> None:
    resource = patient()
    resource["name"][0]["family"] = "   "
    issue = only(validate(resource))
    assert (issue.code, issue.expression) == ("value", "Patient.name[0].family")


# --------------------------------------------------------------------------- cardinality


def test_required_elements() -> None:
    obs = blood_pressure()
    del obs["status"]
    del obs["component"][1]["code"]
    issues = validate(obs)
    assert sorted(expressions(issues)) == [  # type: ignore[type-var]
        "Observation.component[1].code", "Observation.status"]
    assert all(i.code == "required" for i in issues)
    status = next(i for i in issues if i.expression == "Observation.status")
    assert status.diagnostics == (
        "missing required element 'status' (Observation.status has min 1)")


def test_required_choice_element() -> None:
    task = {"resourceType": "Task", "status": "ready", "intent": "order",
            "input": [{"type": {"text": "x"}}]}
    issue = only(validate(task))
    assert (issue.code, issue.expression) == ("required", "Task.input[0].value[x]")


def test_required_element_satisfied_by_its_extension() -> None:
    obs = blood_pressure()
    del obs["status"]
    obs["_status"] = {"extension": [{
        "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
        "valueCode": "unknown"}]}
    assert validate(obs) == []


def test_max_zero_in_simple_quantity() -> None:
    obs = blood_pressure()
    obs["referenceRange"][0]["low"]["comparator"] = "<"
    issue = only(validate(obs))
    assert (issue.code, issue.expression) == (
        "structure", "Observation.referenceRange[0].low.comparator")
    assert issue.diagnostics == "element 'comparator' is not allowed in SimpleQuantity (max 0)"
    obs = blood_pressure()
    obs["component"][0]["valueQuantity"]["comparator"] = "<"  # plain Quantity: allowed
    assert validate(obs) == []


# --------------------------------------------------------------------------- choice types


def test_choice_type_must_be_one_of_the_allowed() -> None:
    resource = patient()
    del resource["deceasedBoolean"]
    resource["deceasedString"] = "yes"
    issue = only(validate(resource))
    assert (issue.code, issue.expression) == ("structure", "Patient.deceasedString")
    assert issue.diagnostics == ("unknown element 'deceasedString' in Patient: deceased[x] "
                                 "takes one of deceasedBoolean, deceasedDateTime")


def test_choice_without_type_suffix() -> None:
    obs = blood_pressure()
    obs["value"] = 5
    issue = only(validate(obs))
    assert issue.expression == "Observation.value"
    assert "value[x] takes one of valueQuantity, valueCodeableConcept" in issue.diagnostics


def test_at_most_one_of_a_choice() -> None:
    resource = patient()
    resource["deceasedDateTime"] = "2024-01-01"
    issue = only(validate(resource))
    assert (issue.code, issue.expression) == ("structure", "Patient.deceasedDateTime")
    assert issue.diagnostics == ("only one of deceased[x] is allowed, got 'deceasedBoolean' "
                                 "and 'deceasedDateTime'")


def test_choice_values_are_validated_as_their_type() -> None:
    obs = blood_pressure()
    obs["effectiveDateTime"] = "2024-05-06T08:25:00"
    issue = only(validate(obs))
    assert (issue.code, issue.expression) == ("value", "Observation.effectiveDateTime")
    assert "timezone" in issue.diagnostics


# --------------------------------------------------------------------------- primitives


def test_primitive_formats_with_paths() -> None:
    resource = patient()
    resource["birthDate"] = "2023-13-01"
    resource["id"] = "vn 001"
    resource["name"][0]["given"][1] = ""
    resource["meta"]["lastUpdated"] = "2024-05-06"
    issues = {i.expression: i for i in validate(resource)}
    assert set(issues) == {"Patient.birthDate", "Patient.id", "Patient.name[0].given[1]",
                           "Patient.meta.lastUpdated"}
    assert all(i.code == "value" for i in issues.values())
    assert issues["Patient.birthDate"].diagnostics == (
        "expected a date (YYYY, YYYY-MM or YYYY-MM-DD), got '2023-13-01'")
    assert issues["Patient.id"].diagnostics.startswith("expected an id")


def test_calendar_dates() -> None:
    resource = patient()
    resource["birthDate"] = "2023-02-30"
    issue = only(validate(resource))
    assert issue.diagnostics.endswith("got '2023-02-30' (2023-02 has 28 days)")


def test_narrative_must_be_an_xhtml_div() -> None:
    resource = patient()
    resource["text"]["div"] = "<p>Nguyễn Thị Ánh</p>"
    issue = only(validate(resource))
    assert (issue.code, issue.expression) == ("value", "Patient.text.div")


def test_integer_fields_reject_fractions() -> None:
    q = questionnaire()
    q["item"][0]["item"][1]["enableWhen"][0] = {"question": "1.1", "operator": ">",
                                                "answerInteger": 2.5}
    issue = only(validate(q))
    assert issue.expression == "Questionnaire.item[0].item[1].enableWhen[0].answerInteger"


# --------------------------------------------------------------------------- primitive extensions


def test_primitive_extension_alone_is_allowed() -> None:
    resource = patient()
    del resource["birthDate"]
    assert validate(resource) == []


def test_primitive_extension_content_is_validated() -> None:
    resource = patient()
    resource["_birthDate"]["foo"] = 1
    resource["_birthDate"]["extension"][0]["valueDateTime"] = "1990-02-28T06:15"
    issues = validate(resource)
    assert sorted(expressions(issues)) == [  # type: ignore[type-var]
        "Patient.birthDate.extension[0].valueDateTime", "Patient.birthDate.foo"]


def test_nulls_only_as_fillers_of_aligned_arrays() -> None:
    resource = patient()
    resource["name"][0]["given"] = ["Thị", None]
    resource["name"][0]["_given"] = [None, None]
    issue = only(validate(resource))
    assert (issue.code, issue.expression) == ("structure", "Patient.name[0].given[1]")

    resource = patient()
    resource["name"][0]["given"] = ["Thị", None]
    del resource["name"][0]["_given"]
    assert expressions(validate(resource)) == ["Patient.name[0].given[1]"]


def test_primitive_extension_arrays_must_align() -> None:
    resource = patient()
    resource["name"][0]["_given"] = [None, None, {"id": "x"}]
    issue = only(validate(resource))
    assert issue.expression == "Patient.name[0].given"
    assert issue.diagnostics.startswith("'_given' has 3 entries and 'given' has 2")


def test_primitive_extension_only_for_primitives() -> None:
    resource = patient()
    resource["_name"] = [{"id": "x"}]
    issue = only(validate(resource))
    assert issue.expression == "Patient._name"
    assert "'name' is not a primitive element" in issue.diagnostics


# --------------------------------------------------------------------------- bindings


def test_required_binding_on_code() -> None:
    resource = patient()
    resource["gender"] = "F"
    issue = only(validate(resource))
    assert (issue.code, issue.expression) == ("code-invalid", "Patient.gender")
    assert issue.diagnostics == (
        "'F' is not in the required value set http://hl7.org/fhir/ValueSet/administrative-gender"
        " (expected one of: female, male, other, unknown)")


def test_required_binding_inside_datatypes_and_backbones() -> None:
    q = questionnaire()
    q["item"][0]["item"][0]["type"] = "yes-no"
    resource = patient()
    resource["telecom"][0]["system"] = "zalo"
    assert expressions(validate(q)) == ["Questionnaire.item[0].item[0].type"]
    assert expressions(validate(resource)) == ["Patient.telecom[0].system"]


def test_required_binding_on_codeable_concept_checks_matching_systems() -> None:
    cond = condition()
    cond["clinicalStatus"]["coding"][0]["code"] = "cured"
    cond["clinicalStatus"]["coding"].append({"system": "http://example.org/local",
                                             "code": "anything"})
    issue = only(validate(cond))
    assert (issue.code, issue.expression) == (
        "code-invalid", "Condition.clinicalStatus.coding[0].code")
    assert "http://hl7.org/fhir/ValueSet/condition-clinical" in issue.diagnostics


def test_unexpandable_valuesets_are_not_checked() -> None:
    binary = {"resourceType": "Binary", "contentType": "application/x-songkhoe",
              "data": "SGVsbG8="}
    assert validate(binary) == []


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("target", [
    "Patient/vn-001", "Patient/vn-001/_history/2", "Group/g1",
    "http://other.example.org/fhir/Patient/123", "https://example.org/anything/else",
    "urn:uuid:c757873d-ec9a-4326-a141-556f43239520", "urn:oid:1.2.3.4"])
def test_reference_forms(target: str) -> None:
    obs = blood_pressure()
    obs["subject"]["reference"] = target
    assert validate(obs) == []


@pytest.mark.parametrize(("target", "message"), [
    ("Patient", "expected a reference as Type/id"),
    ("Patient/vn 001", "expected a reference as Type/id"),
    ("Patient/", "expected a reference as Type/id"),
    ("Foo/1", "reference 'Foo/1' names unknown resource type 'Foo'"),
    ("patient/1", "names unknown resource type 'patient'"),
    ("Medication/1", ("reference 'Medication/1' points to Medication, not allowed here: "
                      "expected Patient | Group | Device | Location")),
    ("http://other.org/fhir/Medication/1", "points to Medication"),
    ("urn:uuid:not-a-uuid", "expected urn:uuid: and a lower-case UUID"),
    ("urn:oid:abc", "expected urn:oid: and an OID"),
    ("#missing", "reference '#missing' names no contained resource (contained ids: none)"),
    ("Patient?identifier=x", "expected a reference as Type/id"),
])
def test_bad_references(target: str, message: str) -> None:
    obs = blood_pressure()
    obs["subject"]["reference"] = target
    issue = only(validate(obs))
    assert (issue.code, issue.expression) == ("invalid", "Observation.subject.reference")
    assert message in issue.diagnostics


def test_reference_any_allows_every_resource_type() -> None:
    obs = blood_pressure()
    obs["focus"] = [{"reference": "Medication/1"}, {"reference": "ImagingStudy/2"}]
    assert validate(obs) == []
    obs["focus"].append({"reference": "Unknown/3"})
    assert expressions(validate(obs)) == ["Observation.focus[2].reference"]


def test_reference_type_element() -> None:
    obs = blood_pressure()
    obs["subject"] = {"type": "Medication", "identifier": {"value": "x"}}
    issue = only(validate(obs))
    assert issue.expression == "Observation.subject.type"


def test_references_inside_datatypes_use_their_targets() -> None:
    cond = condition()
    cond["note"] = [{"authorReference": {"reference": "Observation/1"}, "text": "x"}]
    issue = only(validate(cond))
    assert issue.expression == "Condition.note[0].authorReference.reference"
    assert "expected Practitioner | Patient | RelatedPerson | Organization" in issue.diagnostics


def test_conditional_references_only_in_transactions() -> None:
    bundle = transaction()
    bundle["entry"][1]["resource"]["subject"]["reference"] = "Patient?identifier=001190012345"
    assert validate(bundle) == []
    bundle["type"] = "collection"
    del bundle["entry"][2]  # a collection's entries need resources
    for entry in bundle["entry"]:
        del entry["request"]
    assert expressions(validate(bundle)) == ["Bundle.entry[1].resource.subject.reference"]


def test_errors_inside_bundle_entries() -> None:
    bundle = transaction()
    bundle["entry"][1]["resource"]["status"] = "done"
    bundle["entry"][0]["resource"]["resourceType"] = "Patien"
    issues = validate(bundle)
    assert expressions(issues) == ["Bundle.entry[0].resource", "Bundle.entry[1].resource.status"]
    assert issues[0].diagnostics.startswith("unknown resourceType 'Patien'")


# --------------------------------------------------------------------------- contained


def test_contained_resources_are_validated() -> None:
    rx = medication_request()
    rx["contained"][0]["status"] = "active"
    rx["contained"][0]["foo"] = 1
    issues = validate(rx)
    assert expressions(issues) == ["MedicationRequest.contained[0].foo"]


def test_contained_reference_type_must_be_allowed() -> None:
    rx = medication_request()
    rx["contained"][0] = {"resourceType": "Substance", "id": "amlo", "code": {"text": "x"}}
    issue = only(validate(rx))
    assert issue.expression == "MedicationRequest.medicationReference.reference"
    assert "points to a contained Substance" in issue.diagnostics


def test_contained_rules() -> None:
    rx = medication_request()
    rx["contained"].append({"resourceType": "Medication", "code": {"text": "no id"}})
    rx["contained"].append({"resourceType": "Medication", "id": "nested",
                            "meta": {"versionId": "1", "security": [{"code": "R"}]},
                            "contained": [{"resourceType": "Substance", "id": "s",
                                           "code": {"text": "x"}}]})
    rx["contained"].append({"resourceType": "Nope", "id": "x"})
    issues = {(i.expression, i.code): i for i in validate(rx)}
    assert ("MedicationRequest.contained[1].id", "required") in issues
    assert issues["MedicationRequest.contained[2].contained", "invariant"].diagnostics.startswith(
        "dom-2")
    assert issues["MedicationRequest.contained[2].meta.versionId",
                  "invariant"].diagnostics.startswith("dom-4")
    assert issues["MedicationRequest.contained[2].meta.security",
                  "invariant"].diagnostics.startswith("dom-5")
    assert issues["MedicationRequest.contained[3]", "invalid"].diagnostics.startswith(
        "unknown resourceType 'Nope'")
    # "nested" is referenced by nothing: dom-3
    assert issues["MedicationRequest.contained[2]", "invariant"].diagnostics.startswith(
        "dom-3: contained resource 'nested' is not referenced")


def test_contained_resource_may_refer_to_its_container() -> None:
    obs = blood_pressure()
    obs["contained"] = [{"resourceType": "Provenance", "id": "prov",
                         "target": [{"reference": "#"}],
                         "recorded": "2024-05-06T08:30:00+07:00",
                         "agent": [{"who": {"reference": "Practitioner/bs-01"}}]}]
    assert validate(obs) == []
    obs["contained"][0]["target"] = [{"reference": "Observation/other"}]
    assert expressions(validate(obs)) == ["Observation.contained[0]"]


def test_contained_referenced_from_a_canonical() -> None:
    q = questionnaire()
    q["contained"] = [{"resourceType": "ValueSet", "id": "vs", "status": "active"}]
    q["item"][0]["item"][1]["item"][0]["answerValueSet"] = "#vs"
    del q["item"][0]["item"][1]["item"][0]["answerOption"]
    assert validate(q) == []


def test_duplicate_contained_ids() -> None:
    rx = medication_request()
    rx["contained"].append(copy.deepcopy(rx["contained"][0]))
    issue = only(validate(rx))
    assert issue.expression == "MedicationRequest.contained[1].id"


# --------------------------------------------------------------------------- extensions


def test_extension_rules() -> None:
    resource = patient()
    resource["extension"] = [
        {"url": "http://example.org/a"},
        {"valueString": "no url"},
        {"url": "http://example.org/c", "valueString": "x",
         "extension": [{"url": "d", "valueInteger": 1}]},
        {"url": "http://example.org/e", "extension": [{"url": "f", "valueFoo": 1}]},
        {"url": "http://example.org/ethnic", "valueCodeableConcept": {"text": "Kinh"}},
    ]
    issues = validate(resource)
    assert expressions(issues) == [
        "Patient.extension[0]", "Patient.extension[1].url", "Patient.extension[2]",
        "Patient.extension[3].extension[0].valueFoo"]
    assert issues[0].diagnostics == ("ext-1: an extension must have either a value[x] or nested "
                                     "extensions, not both; got neither")
    assert issues[1].code == "required"
    assert issues[2].diagnostics.endswith("got both")


def test_modifier_extensions_in_backbone_elements() -> None:
    obs = blood_pressure()
    obs["component"][0]["modifierExtension"] = [{"url": "http://example.org/m"}]
    assert expressions(validate(obs)) == ["Observation.component[0].modifierExtension[0]"]


# --------------------------------------------------------------------------- robustness


def test_deep_nesting_is_answered_not_raised() -> None:
    q = questionnaire()
    item = q["item"][0]
    for i in range(3000):
        child = {"linkId": f"n{i}", "type": "group"}
        item["item"] = [child]
        item = child
    issues = validate(q)
    assert issues and issues[-1].diagnostics == "the resource is nested too deeply to validate"


def test_validation_does_not_modify_the_resource() -> None:
    resource = transaction()
    before = copy.deepcopy(resource)
    validate(resource)
    assert resource == before
