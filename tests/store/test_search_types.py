"""Search parameter types, prefixes and modifiers on both backends (R4 Search, "Search
Parameter Types", http://hl7.org/fhir/R4/search.html#ptypes)."""

from __future__ import annotations

import pytest

from songkhoe.fhir.outcome import FhirError

from .conftest import bp, glucose, patient


def ids(result):
    return sorted(s.id for s in result.matches)


def obs_ids(store, *params):
    return sorted(s.id for s in store.search("Observation", list(params)).matches)


@pytest.fixture
def people(store):
    a = patient("Nguyễn", ("Văn", "An"), birth="1960-05-01", cccd="001060000001", id="a")
    a["address"] = [{"line": ["12 Lý Thường Kiệt"], "city": "Hà Nội", "country": "VN"}]
    a["telecom"] = [{"system": "phone", "value": "0912345678"}]
    b = patient("Đặng", ("Thị", "Bích"), birth="1975-12-31", gender="female", cccd="079175000002",
                id="b")
    b["identifier"].append({"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                 "code": "PPN"}], "text": "Hộ chiếu"},
                            "system": "urn:passport", "value": "C1234567"})
    b["text"] = {"status": "generated",
                 "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Bệnh nhân tăng huyết áp</div>"}
    c = patient("Trần", ("Minh",), birth="1960", cccd="001060000003", id="c")
    c["active"] = False
    for p in (a, b, c):
        store.update("Patient", p["id"], p)


# --- string ------------------------------------------------------------------------------------


def test_string_starts_with_folded_exact_contains(store, people):
    assert ids(store.search("Patient", [("family", "nguy")])) == ["a"]
    assert ids(store.search("Patient", [("family", "ĐẶ")])) == ["b"]
    assert ids(store.search("Patient", [("family", "ang")])) == []  # starts-with, not contains
    assert ids(store.search("Patient", [("family:contains", "ang")])) == ["b"]
    assert ids(store.search("Patient", [("family:exact", "Đặng")])) == ["b"]
    assert ids(store.search("Patient", [("family:exact", "đặng")])) == []
    assert ids(store.search("Patient", [("name", "minh tran")])) == ["c"]  # the whole name
    assert ids(store.search("Patient", [("phonetic", "tran")])) == ["c"]
    assert ids(store.search("Patient", [("address", "ha noi")])) == ["a"]
    assert ids(store.search("Patient", [("address-city", "HÀ")])) == ["a"]
    assert ids(store.search("Patient", [("address", "12 ly thuong")])) == ["a"]
    assert ids(store.search("Patient", [("address", "ly thuong")])) == []  # not at the start


def test_string_contains_escapes_like_wildcards(store, people):
    assert ids(store.search("Patient", [("family:contains", "%")])) == []
    assert ids(store.search("Patient", [("family:contains", "_")])) == []


# --- token -------------------------------------------------------------------------------------


def test_token_forms_and_modifiers(store, people):
    assert ids(store.search("Patient", [("identifier", "urn:passport|C1234567")])) == ["b"]
    assert ids(store.search("Patient", [("identifier", "C1234567")])) == ["b"]
    assert ids(store.search("Patient", [("identifier", "|C1234567")])) == []
    assert ids(store.search("Patient", [("identifier", "urn:passport|")])) == ["b"]
    assert ids(store.search("Patient", [("identifier:of-type",
                                         "http://terminology.hl7.org/CodeSystem/v2-0203|PPN|C1234567")])) == ["b"]
    assert ids(store.search("Patient", [("identifier:of-type",
                                         "http://terminology.hl7.org/CodeSystem/v2-0203|MR|C1234567")])) == []
    assert ids(store.search("Patient", [("identifier:text", "ho chieu")])) == ["b"]
    assert ids(store.search("Patient", [("gender:not", "male")])) == ["b"]
    assert ids(store.search("Patient", [("active", "false")])) == ["c"]
    assert ids(store.search("Patient", [("active:not", "false")])) == ["a", "b"]  # incl. absent
    assert ids(store.search("Patient", [("phone", "0912345678")])) == ["a"]
    assert ids(store.search("Patient", [("telecom", "phone|0912345678")])) == ["a"]
    # a ``code`` element: its value set's system is implied
    assert ids(store.search("Patient", [("gender", "http://hl7.org/fhir/administrative-gender|female")])) == ["b"]
    assert ids(store.search("Patient", [("gender:in", "http://hl7.org/fhir/ValueSet/administrative-gender")])) \
        == ["a", "b", "c"]
    assert ids(store.search("Patient", [("gender:not-in", "http://hl7.org/fhir/ValueSet/administrative-gender")])) == []


def test_token_text_and_coding(store, people):
    store.create(bp("a"))
    store.create(glucose("b", 6.1))
    assert len(obs_ids(store, ("code:text", "blood pres"))) == 1
    assert len(obs_ids(store, ("code:text", "fasting"))) == 1
    assert len(obs_ids(store, ("code", "http://loinc.org|1558-6"))) == 1
    assert len(obs_ids(store, ("code", "http://snomed.info/sct|1558-6"))) == 0
    assert len(obs_ids(store, ("category", "vital-signs"))) == 1
    assert len(obs_ids(store, ("combo-code", "8462-4"))) == 1  # a component's code
    assert len(obs_ids(store, ("component-code", "1558-6"))) == 0
    height = {"resourceType": "Observation", "status": "final",
              "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2",
                                   "display": "Body height"}], "text": "Chiều cao"}}
    h = store.create(height).stored.id
    assert obs_ids(store, ("code:text", "chieu")) == [h]  # the concept's text
    assert obs_ids(store, ("code:text", "BODY H")) == [h]  # the coding's display
    assert obs_ids(store, ("code:text", "cao")) == []  # starts with, not contains


# --- date --------------------------------------------------------------------------------------


def test_date_prefixes_against_precision_ranges(store, people):
    assert ids(store.search("Patient", [("birthdate", "1960")])) == ["a", "c"]
    assert ids(store.search("Patient", [("birthdate", "1960-05")])) == ["a"]
    # a target with year precision is not inside a day
    assert ids(store.search("Patient", [("birthdate", "1960-01-01")])) == []
    assert ids(store.search("Patient", [("birthdate", "gt1960-05-01")])) == ["b", "c"]
    assert ids(store.search("Patient", [("birthdate", "ge1960-05-01")])) == ["a", "b", "c"]
    assert ids(store.search("Patient", [("birthdate", "lt1960-05-01")])) == ["c"]
    assert ids(store.search("Patient", [("birthdate", "le1960-05-01")])) == ["a", "c"]
    assert ids(store.search("Patient", [("birthdate", "sa1960-04-30")])) == ["a", "b"]
    assert ids(store.search("Patient", [("birthdate", "eb1960-05-02")])) == ["a"]
    assert ids(store.search("Patient", [("birthdate", "ne1960-05-01")])) == ["b", "c"]
    assert ids(store.search("Patient", [("birthdate", "ap1975-12-30")])) == ["b"]
    assert ids(store.search("Patient", [("birthdate", "1975-12-31T10:00:00+07:00")])) == []
    assert ids(store.search("Patient", [("birthdate", "ge1975-12-31T10:00:00Z")])) == ["b"]


def test_date_periods_open_and_long(store, people):
    def enc(id, start=None, end=None):
        period = {k: v for k, v in (("start", start), ("end", end)) if v}
        store.update("Encounter", id, {"resourceType": "Encounter", "id": id, "status": "finished",
                                       "class": {"code": "AMB"}, "period": period})
    enc("e1", "2026-01-01", "2026-03-31")  # a quarter
    enc("e2", "2026-02-10T08:00:00Z", "2026-02-10T09:00:00Z")  # an hour
    enc("e3", "2025-12-01")  # still open
    found = lambda *p: ids(store.search("Encounter", list(p)))  # noqa: E731
    assert found(("date", "gt2026-03-01")) == ["e1", "e3"]
    assert found(("date", "ge2026-02-10")) == ["e1", "e2", "e3"]
    assert found(("date", "lt2026-01-01")) == ["e3"]
    assert found(("date", "2026-02")) == ["e2"]
    assert found(("date", "2026")) == ["e1", "e2"]
    assert found(("date", "sa2025-12-31")) == ["e1", "e2"]
    assert found(("date", "eb2026-02-10T08:30:00Z")) == []
    assert found(("date", "eb2026-04-01")) == ["e1", "e2"]
    assert found(("date", "gt2026-02-10T08:30:00Z")) == ["e1", "e2", "e3"]


def test_date_values_of_the_wrong_form_are_400(store):
    for value in ("1960-13", "gt-2020", "yesterday", "2020-02-30"):
        with pytest.raises(FhirError) as err:
            store.search("Patient", [("birthdate", value)])
        assert err.value.status == 400 and err.value.issues[0].expression == "birthdate"


# --- number and quantity -----------------------------------------------------------------------


def test_quantity_precision_prefixes_and_units(store, people):
    g1 = store.create(glucose("a", 5.1)).stored.id
    g2 = store.create(glucose("b", 5.14)).stored.id
    g3 = store.create(glucose("c", 7.0)).stored.id
    assert obs_ids(store, ("value-quantity", "5.1")) == sorted([g1, g2])  # [5.05, 5.15)
    assert obs_ids(store, ("value-quantity", "5.10")) == [g1]  # [5.095, 5.105)
    assert obs_ids(store, ("value-quantity", "gt7")) == []  # 7.0 is not above 7
    assert obs_ids(store, ("value-quantity", "ge7")) == [g3]
    assert obs_ids(store, ("value-quantity", "lt5.14")) == [g1]
    assert obs_ids(store, ("value-quantity", "le5.14")) == sorted([g1, g2])
    assert obs_ids(store, ("value-quantity", "ne5.1")) == [g3]
    assert obs_ids(store, ("value-quantity", "ap7.5")) == [g3]
    assert obs_ids(store, ("value-quantity", "5.1|http://unitsofmeasure.org|mmol/L")) == sorted([g1, g2])
    assert obs_ids(store, ("value-quantity", "5.1|http://unitsofmeasure.org|mg/dL")) == []
    assert obs_ids(store, ("value-quantity", "7||mmol/L")) == [g3]
    assert obs_ids(store, ("value-quantity", "7|urn:other|mmol/L")) == []
    # canonical units: 7 mmol/L of glucose is 126 mg/dL (molar mass 180.156 g/mol)
    assert obs_ids(store, ("value-quantity", "gt125|http://unitsofmeasure.org|mg/dL")) == [g3]
    assert obs_ids(store, ("value-quantity", "gt127|http://unitsofmeasure.org|mg/dL")) == []
    assert obs_ids(store, ("value-quantity", "lt0.006|http://unitsofmeasure.org|mol/L")) == sorted([g1, g2])


def test_quantity_mg_per_dl_compares_with_mmol_per_l(store, people):
    mg = glucose("a", 140)
    mg["valueQuantity"].update(unit="mg/dL", code="mg/dL")
    high = store.create(mg).stored.id
    low = store.create(glucose("b", 5.0)).stored.id
    assert obs_ids(store, ("value-quantity", "gt7|http://unitsofmeasure.org|mmol/L")) == [high]
    assert obs_ids(store, ("value-quantity", "lt100|http://unitsofmeasure.org|mg/dL")) == [low]
    assert obs_ids(store, ("code-value-quantity",
                           "http://loinc.org|1558-6$gt7|http://unitsofmeasure.org|mmol/L")) == [high]
    # weight: g and kg share a dimension without any analyte
    w = store.create({"resourceType": "Observation", "status": "final",
                      "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                      "valueQuantity": {"value": 58, "unit": "kg",
                                        "system": "http://unitsofmeasure.org", "code": "kg"}}).stored.id
    assert obs_ids(store, ("value-quantity", "58000|http://unitsofmeasure.org|g")) == [w]
    assert obs_ids(store, ("value-quantity", "gt57999|http://unitsofmeasure.org|g")) == [w]
    assert obs_ids(store, ("value-quantity", "gt58000|http://unitsofmeasure.org|g")) == []


def test_quantity_ranges_and_comparators(store):
    store.update("Condition", "x", {
        "resourceType": "Condition", "id": "x", "subject": {"reference": "Patient/a"},
        "onsetRange": {"low": {"value": 40, "system": "http://unitsofmeasure.org", "code": "a"},
                       "high": {"value": 50, "system": "http://unitsofmeasure.org", "code": "a"}}})
    store.update("Condition", "y", {
        "resourceType": "Condition", "id": "y", "subject": {"reference": "Patient/a"},
        "onsetAge": {"value": 30, "comparator": "<", "system": "http://unitsofmeasure.org",
                     "code": "a"}})
    found = lambda v: ids(store.search("Condition", [("onset-age", v)]))  # noqa: E731
    assert found("gt45") == ["x"]  # the range above 45 meets [40, 50]
    assert found("lt45") == ["x", "y"]
    assert found("gt30") == ["x"]
    assert found("45") == []  # [44.5, 45.5) does not contain [40, 50]
    assert found("gt540|http://unitsofmeasure.org|mo") == ["x"]  # 45 a = 540 mo


def test_number(store):
    store.update("RiskAssessment", "r1", {"resourceType": "RiskAssessment", "id": "r1",
                                          "status": "final", "subject": {"reference": "Patient/a"},
                                          "prediction": [{"probabilityDecimal": 0.25}]})
    found = lambda v: ids(store.search("RiskAssessment", [("probability", v)]))  # noqa: E731
    assert found("0.25") == ["r1"] and found("0.2") == [] and found("gt0.2") == ["r1"]
    assert found("lt0.25") == [] and found("le0.25") == ["r1"] and found("2.5e-1") == ["r1"]
    with pytest.raises(FhirError) as err:
        found("zero")
    assert err.value.issues[0].expression == "probability"


# --- reference ---------------------------------------------------------------------------------


def test_reference_forms(store, people):
    o = store.create(bp("a")).stored.id
    ext = bp("b")
    ext["subject"] = {"reference": "http://other.example/fhir/Patient/9"}
    ext["performer"] = [{"identifier": {"system": "urn:vn:cchn", "value": "CC-77"}}]
    e = store.create(ext).stored.id
    assert obs_ids(store, ("subject", "Patient/a")) == [o]
    assert obs_ids(store, ("subject", "a")) == [o]
    assert obs_ids(store, ("subject:Patient", "a")) == [o]
    assert obs_ids(store, ("subject:Group", "a")) == []
    assert obs_ids(store, ("patient", "Patient/a")) == [o]
    assert obs_ids(store, ("subject", "Patient/a/_history/1")) == [o]
    assert obs_ids(store, ("subject", "http://other.example/fhir/Patient/9")) == [e]
    assert obs_ids(store, ("patient", "9")) == []
    assert obs_ids(store, ("performer:identifier", "urn:vn:cchn|CC-77")) == [e]
    assert obs_ids(store, ("subject:missing", "false")) == sorted([o, e])
    assert obs_ids(store, ("encounter:missing", "true")) == sorted([o, e])
    with pytest.raises(FhirError):
        store.search("Observation", [("subject", "Patient/")])


def test_canonical_and_uri(store):
    store.update("Questionnaire", "q1", {"resourceType": "Questionnaire", "id": "q1",
                                         "status": "active",
                                         "url": "http://moh.gov.vn/fhir/Questionnaire/khám-sức-khỏe"})
    store.update("QuestionnaireResponse", "r1", {
        "resourceType": "QuestionnaireResponse", "id": "r1", "status": "completed",
        "questionnaire": "http://moh.gov.vn/fhir/Questionnaire/khám-sức-khỏe|2.0"})
    found = lambda t, *p: ids(store.search(t, list(p)))  # noqa: E731
    assert found("Questionnaire", ("url", "http://moh.gov.vn/fhir/Questionnaire/khám-sức-khỏe")) == ["q1"]
    assert found("Questionnaire", ("url", "http://moh.gov.vn/fhir/Questionnaire")) == []
    assert found("Questionnaire", ("url:below", "http://moh.gov.vn/fhir/")) == ["q1"]
    assert found("Questionnaire", ("url:above", "http://moh.gov.vn/fhir/Questionnaire/khám-sức-khỏe/_history/2")) == ["q1"]
    assert found("Questionnaire", ("url:above", "http://moh.gov.vn/other")) == []
    assert found("QuestionnaireResponse",
                 ("questionnaire", "http://moh.gov.vn/fhir/Questionnaire/khám-sức-khỏe")) == ["r1"]


# --- composite ---------------------------------------------------------------------------------


def test_composite_components_pair_within_one_component(store, people):
    high = store.create(bp("a", 150, 95)).stored.id
    normal = store.create(bp("b", 118, 76)).stored.id
    systolic, diastolic = "http://loinc.org|8480-6", "http://loinc.org|8462-4"
    found = lambda v, p="component-code-value-quantity": obs_ids(store, (p, v))  # noqa: E731
    assert found(f"{systolic}$gt140") == [high]
    assert found(f"{diastolic}$gt140") == []  # the 150 is systolic, in another component
    assert found(f"{diastolic}$gt90") == [high]
    assert found(f"{systolic}$lt120,{diastolic}$gt90") == sorted([high, normal])
    assert found(f"{systolic}$gt140|http://unitsofmeasure.org|mm[Hg]") == [high]
    assert found(f"{systolic}$gt140", "combo-code-value-quantity") == [high]
    assert obs_ids(store, ("component-code-value-quantity", f"{systolic}$gt100"),
                   ("component-code-value-quantity", f"{diastolic}$lt80")) == [normal]
    with pytest.raises(FhirError) as err:
        found("8480-6")
    assert err.value.status == 400


# --- common parameters -------------------------------------------------------------------------


def test_meta_parameters(store):
    tagged = patient(id="t")
    tagged["meta"] = {"tag": [{"system": "urn:songkhoe:programme", "code": "ncd"}],
                      "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                    "code": "R"}],
                      "profile": ["http://fhir.moh.gov.vn/StructureDefinition/vn-patient"],
                      "source": "urn:songkhoe:import"}
    store.update("Patient", "t", tagged)
    store.update("Patient", "u", patient(id="u"))
    store.update("Organization", "o", {"resourceType": "Organization", "id": "o", "name": "X",
                                       "meta": {"tag": [{"system": "urn:songkhoe:programme",
                                                         "code": "ncd"}]}})
    found = lambda *p: ids(store.search("Patient", list(p)))  # noqa: E731
    assert found(("_tag", "urn:songkhoe:programme|ncd")) == ["t"]
    assert found(("_tag:not", "ncd")) == ["u"]
    assert found(("_security", "R")) == ["t"]
    assert found(("_profile", "http://fhir.moh.gov.vn/StructureDefinition/vn-patient")) == ["t"]
    assert found(("_source", "urn:songkhoe:import")) == ["t"]
    assert ids(store.search(None, [("_tag", "ncd")])) == ["o", "t"]
    assert found(("_id", "t,u,zz")) == ["t", "u"]
    assert found(("_id:not", "t")) == ["u"]


def test_text_and_content(store, people):
    assert ids(store.search("Patient", [("_text", "huyet ap")])) == ["b"]
    assert ids(store.search("Patient", [("_text", "tăng")])) == ["b"]
    assert ids(store.search("Patient", [("_text", "ap,minh")])) == ["b"]
    assert ids(store.search("Patient", [("_text", "huyet dai")])) == []
    assert ids(store.search("Patient", [("_content", "nguyen")])) == ["a"]
    assert ids(store.search("Patient", [("_content", "huyet")])) == ["b"]


def test_list(store, people):
    store.update("List", "l1", {"resourceType": "List", "id": "l1", "status": "current",
                                "mode": "working", "entry": [{"item": {"reference": "Patient/a"}},
                                                             {"item": {"reference": "Patient/c"}}]})
    assert ids(store.search("Patient", [("_list", "l1")])) == ["a", "c"]
    assert ids(store.search("Patient", [("_list", "l1"), ("gender", "male"), ("birthdate", "1960-05")])) == ["a"]


def test_missing(store, people):
    assert ids(store.search("Patient", [("address:missing", "true")])) == ["b", "c"]
    assert ids(store.search("Patient", [("address:missing", "false")])) == ["a"]
    assert ids(store.search("Patient", [("birthdate:missing", "false")])) == ["a", "b", "c"]
    with pytest.raises(FhirError):
        store.search("Patient", [("address:missing", "maybe")])


def test_or_escaping(store):
    store.update("Patient", "x", patient("A,B", id="x"))
    store.update("Patient", "y", patient("A", id="y"))
    assert ids(store.search("Patient", [("family:exact", "A\\,B")])) == ["x"]
    assert ids(store.search("Patient", [("family:exact", "A,B")])) == ["y"]
