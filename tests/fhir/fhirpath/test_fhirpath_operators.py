"""Operators: equality and equivalence (N1 §6.1), comparison (§6.2), types (§6.3),
collections (§6.4), three-valued boolean logic (§6.5), math (§6.6), date/time precision."""

from __future__ import annotations

from decimal import Decimal

import pytest

from songkhoe.fhir.fhirpath import Date, DateTime, FHIRPathError, Quantity, evaluate

P = {
    "resourceType": "Patient", "id": "p1", "active": True, "birthDate": "1980-04-12",
    "name": [{"use": "official", "family": "Nguyễn", "given": ["Văn", "An"]},
             {"use": "usual", "given": ["An"]}],
    "multipleBirthInteger": 2,
}


def ev(text: str, resource: dict | None = None, **variables: object) -> list:
    return evaluate(P if resource is None else resource, text, variables or None)


# -- empty propagation ---------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "{} = 1", "1 = {}", "{} != 1", "{} < 1", "1 > {}", "{} + 1", "1 * {}", "{} / 2",
    "{} div 2", "{} mod 2", "-{}", "{} in {}", "Patient.gender = 'male'",
    "Patient.gender.upper()", "{}.not()", "{} xor true",
])
def test_empty_propagates(text: str) -> None:
    assert ev(text) == []


def test_operators_where_empty_does_not_propagate() -> None:
    assert ev("{} ~ {}") == [True]
    assert ev("{} ~ 1") == [False]
    assert ev("{} !~ 1") == [True]
    assert ev("{} & 'a'") == ["a"]
    assert ev("1 | {}") == [1]
    assert ev("1 in {}") == [False]
    assert ev("{} contains 1") == [False]
    assert ev("{}.exists()") == [False] and ev("{}.empty()") == [True]


# -- three-valued logic (N1 §6.5 truth tables) ------------------------------------------------

T, F, N = "true", "false", "{}"
AND = {(T, T): [True], (T, F): [False], (T, N): [], (F, T): [False], (F, F): [False],
       (F, N): [False], (N, T): [], (N, F): [False], (N, N): []}
OR = {(T, T): [True], (T, F): [True], (T, N): [True], (F, T): [True], (F, F): [False],
      (F, N): [], (N, T): [True], (N, F): [], (N, N): []}
XOR = {(T, T): [False], (T, F): [True], (T, N): [], (F, T): [True], (F, F): [False],
       (F, N): [], (N, T): [], (N, F): [], (N, N): []}
IMPLIES = {(T, T): [True], (T, F): [False], (T, N): [], (F, T): [True], (F, F): [True],
           (F, N): [True], (N, T): [True], (N, F): [], (N, N): []}


@pytest.mark.parametrize("op,table", [("and", AND), ("or", OR), ("xor", XOR),
                                      ("implies", IMPLIES)])
def test_truth_tables(op: str, table: dict) -> None:
    for (a, b), want in table.items():
        assert ev(f"{a} {op} {b}") == want, f"{a} {op} {b}"


def test_not_and_singleton_boolean_evaluation() -> None:
    assert ev("true.not()") == [False] and ev("false.not()") == [True]
    assert ev("Patient.active and Patient.name.exists()") == [True]
    assert ev("Patient.id and true") == [True]  # a single non-boolean item counts as true
    with pytest.raises(FHIRPathError, match="single"):
        ev("Patient.name.given and true")


def test_search_deceased_expression() -> None:
    expr = "Patient.deceased.exists() and Patient.deceased != false"
    assert ev(expr, {"resourceType": "Patient"}) == [False]
    assert ev(expr, {"resourceType": "Patient", "deceasedBoolean": False}) == [False]
    assert ev(expr, {"resourceType": "Patient", "deceasedBoolean": True}) == [True]
    assert ev(expr, {"resourceType": "Patient", "deceasedDateTime": "2020-01-01"}) == [True]


# -- equality and equivalence -----------------------------------------------------------------

def test_equality() -> None:
    assert ev("1 = 1.0") == [True]
    assert ev("1 = 1") == [True] and ev("1 != 2") == [True]
    assert ev("'a' = 'A'") == [False]
    assert ev("true = 1") == [False]
    assert ev("Patient.name[0].given = 'Văn' | 'An'") == [True]  # collections, in order
    assert ev("Patient.name.given = 'Văn' | 'An'") == [False]  # 3 items vs 2
    assert ev("Patient.name[0].given = ('An' | 'Văn')") == [False]
    assert ev("Patient.name.given.count() = 3") == [True]
    assert ev("Patient.name[0] = Patient.name[0]") == [True]  # complex: deep equality
    assert ev("Patient.name[0] = Patient.name[1]") == [False]
    assert ev("(1 | 2) = (1 | 2 | 3)") == [False]


def test_equivalence() -> None:
    assert ev("'Nguyễn  Văn' ~ 'nguyễn văn'") == [True]
    assert ev("'a' !~ 'b'") == [True]
    assert ev("1.2 ~ 1.24") == [True]  # rounded to the lesser precision
    assert ev("1.2 = 1.24") == [False]
    assert ev("(1 | 2) ~ (2 | 1)") == [True]  # order does not matter
    assert ev("@2012-01 ~ @2012-01-01") == [False]  # different precision: not equivalent
    assert ev("@2012-01 = @2012-01-01") == []  # ... and unknown for =


def test_date_precision_aware_comparison() -> None:
    assert ev("@2012-01-01 < @2012-01-02") == [True]
    assert ev("@2012 < @2013-01") == [True]  # decided at the year
    assert ev("@2012-01 < @2012-01-15") == []  # undecided: different precision
    assert ev("@2012-01-01T10:00:00 = @2012-01-01T10:00:00.000") == [True]  # s and ms: one
    assert ev("@2012-01-01T10:00:00+07:00 = @2012-01-01T03:00:00Z") == [True]
    assert ev("@2012-01-01T10:00+07:00 > @2012-01-01T03:30Z") == [False]
    assert ev("@2012-01-01 = @2012-01-01T10:00") == []
    assert ev("@T10:00 < @T10:01") == [True]
    assert ev("Patient.birthDate > @1980-04-11") == [True]  # a FHIR date string
    assert ev("Patient.birthDate = @1980-04") == []
    assert ev("Patient.birthDate ~ @1980-04-12") == [True]
    with pytest.raises(FHIRPathError, match="cannot compare"):
        ev("@T10:00 < @2012-01-01")


def test_comparison_of_other_types() -> None:
    assert ev("'abc' < 'abd'") == [True]
    assert ev("2 >= 2.0") == [True]
    assert ev("5 'mg' < 1 'g'") == [True]
    assert ev("1000 'mg' = 1 'g'") == [True]
    assert ev("1 'mg' = 1 'mL'") == []  # incomparable units
    assert ev("7 days = 1 week") == [True]
    assert ev("1 year = 12 months") == [True]
    assert ev("1 year = 1 'a'") == []  # calendar year is not the UCUM year for equality
    with pytest.raises(FHIRPathError, match="cannot compare"):
        ev("1 < 'a'")


def test_quantity_from_fhir_quantity() -> None:
    obs = {"resourceType": "Observation",
           "valueQuantity": {"value": 120.5, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                             "code": "mm[Hg]"}}
    assert ev("Observation.value > 100 'mm[Hg]'", obs) == [True]
    assert ev("Observation.value = 120.5 'mm[Hg]'", obs) == [True]
    assert ev("Observation.value.value * 2", obs) == [Decimal("241.0")]


# -- types --------------------------------------------------------------------------------------

def test_is_and_as() -> None:
    obs = {"resourceType": "Observation", "valueQuantity": {"value": 1},
           "component": [{"valueQuantity": {"value": 2}}, {"valueString": "x"},
                         {"valueCodeableConcept": {"text": "y"}}]}
    assert ev("Observation.value is Quantity", obs) == [True]
    assert ev("Observation.value is FHIR.Quantity", obs) == [True]
    assert ev("Observation.value is string", obs) == [False]
    assert ev("(Observation.value as Quantity).value", obs) == [1]
    assert ev("(Observation.value as Period)", obs) == []
    # as over several items filters (the R4 search parameters rely on it)
    assert ev("(Observation.component.value as Quantity).value", obs) == [2]
    assert ev("Observation.component.value.as(CodeableConcept).text", obs) == ["y"]
    assert ev("Observation is Resource and Observation is DomainResource", obs) == [True]
    assert ev("1 is Integer and 1.0 is Decimal and 'a' is System.String", obs) == [True]
    assert ev("@2020 is Date and @2020T is DateTime and @T10 is Time", obs) == [True]
    assert ev("1 'mg' is Quantity", obs) == [True]
    with pytest.raises(FHIRPathError, match="single"):
        ev("Observation.component.value is Quantity", obs)


def test_age_is_a_quantity() -> None:
    cond = {"resourceType": "Condition", "onsetAge": {"value": 40, "unit": "a"}}
    assert ev("Condition.onset.as(Age).value", cond) == [40]
    assert ev("Condition.onset is Quantity", cond) == [True]
    assert ev("Condition.onset.as(Range)", cond) == []


# -- collections ---------------------------------------------------------------------------------

def test_union_in_contains() -> None:
    assert ev("Patient.name.given | Patient.name.family") == ["Văn", "An", "Nguyễn"]
    assert ev("(1 | 1 | 2.0 | 2)") == [1, Decimal("2.0")]
    assert ev("'An' in Patient.name.given") == [True]
    assert ev("Patient.name.given contains 'Bình'") == [False]
    with pytest.raises(FHIRPathError):
        ev("Patient.name.given in 'An'")


def test_indexer() -> None:
    assert ev("Patient.name[1].given") == ["An"]
    assert ev("Patient.name[5]") == []
    assert ev("Patient.name.given[%i]", i=2) == ["An"]
    with pytest.raises(FHIRPathError, match="Integer"):
        ev("Patient.name['a']")


# -- math --------------------------------------------------------------------------------------

def test_arithmetic() -> None:
    assert ev("7 div 2") == [3] and ev("-7 div 2") == [-3]
    assert ev("7 mod 2") == [1] and ev("7.5 mod 2") == [Decimal("1.5")]
    assert ev("7 / 2") == [Decimal("3.5")]
    assert ev("1 / 0") == [] and ev("1 div 0") == [] and ev("1 mod 0") == []
    assert ev("1.5 + 1") == [Decimal("2.5")]
    assert ev("'ab' + 'cd'") == ["abcd"]
    assert ev("'ab' & {} & 'cd'") == ["abcd"]
    assert ev("2 'mg' * 3") == [Quantity(Decimal(6), "mg")]
    assert ev("1 'g' + 500 'mg'") == [Quantity(Decimal("1.5"), "g")]
    with pytest.raises(FHIRPathError):
        ev("1 + 'a'")
    with pytest.raises(FHIRPathError):
        ev("true + 1")


def test_date_arithmetic() -> None:
    assert ev("@2020-01-31 + 1 month") == [Date("2020-02-29")]
    assert ev("@2020-02-29 - 1 year") == [Date("2019-02-28")]
    assert ev("@2020-01-01 + 10 days") == [Date("2020-01-11")]
    assert ev("@2020-01-01T10:00:00+07:00 + 90 minutes") == \
        [DateTime("2020-01-01T11:30:00+07:00")]
    assert ev("@2020 + 18 months") == [Date("2021")]  # truncated to the value's precision
    assert ev("Patient.birthDate + 18 years") == [Date("1998-04-12")]
    assert ev("@T23:00 + 2 hours") == [evaluate({}, "@T01:00")[0]]
    with pytest.raises(FHIRPathError, match="calendar"):
        ev("@2020-01-01 + 1 'a'")


def test_union_of_many_objects_is_linear_and_deduplicates_by_value() -> None:
    import time

    bundle = {"resourceType": "Bundle", "entry": [
        {"resource": {"resourceType": "Patient", "id": str(i)}} for i in range(5000)]}
    start = time.perf_counter()
    result = ev("Bundle.entry.resource | Bundle.entry.resource", bundle)
    assert len(result) == 5000
    assert time.perf_counter() - start < 2.0  # quadratic comparison would take minutes
    names = {"resourceType": "Patient", "name": [{"family": "a"}, {"family": "a"}]}
    assert ev("Patient.name | Patient.name", names) == [{"family": "a"}]
