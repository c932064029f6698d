"""The programmes engine on hand-made people: thresholds of each action just below, at and just
above, age limits on birthdays (29 February included), runs of findings, enrolment and
follow-up intervals, and idempotence as a property."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from songkhoe.programs.cli import definitions
from songkhoe.programs.engine import (Facts, Unusable, age_on, birthday, convert, evaluate,
                                      item_value)
from tests.programs.stored import population

PROGRAMMES = definitions()
HTN = "urn:songkhoe:programme:hypertension-screening"


def patient(birth: str = "1970-05-10", gender: str = "male") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1", "birthDate": birth, "gender": gender,
            "managingOrganization": {"reference": "Organization/tyt-1"}}


def bp(sbp: float, dbp: float, day: str, id_: str | None = None) -> dict[str, Any]:
    def comp(code: str, value: float) -> dict[str, Any]:
        return {"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "valueQuantity": {"value": value, "unit": "mm[Hg]",
                                  "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
    return {"resourceType": "Observation", "id": id_ or f"bp-{day}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": day,
            "component": [comp("8480-6", sbp), comp("8462-4", dbp)]}


def quantity(code: str, value: float, unit: str, day: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"{code}-{day}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": day,
            "valueQuantity": {"value": value, "unit": unit,
                              "system": "http://unitsofmeasure.org", "code": unit}}

def hypertension(day: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": "c-htn",
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active"}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}]},
            "subject": {"reference": "Patient/p1"}, "onsetDateTime": day}


def outputs(result: Any, rtype: str) -> list[dict[str, Any]]:
    return [r for (t, _), r in result.resources.items() if t == rtype]


def actions(result: Any, rtype: str) -> set[str]:
    return {r["code"]["coding"][0]["code"] for r in outputs(result, rtype)}


def grade(result: Any, obs_id: str) -> str | None:
    for concept in result.interpretations.get(obs_id, []):
        if concept["coding"][0]["system"] == f"{HTN}:bp_grade":
            return concept["coding"][0]["code"]
    return None


# ---- ages ---------------------------------------------------------------------------------

def test_completed_years_on_and_around_birthdays() -> None:
    born = date(1970, 5, 10)
    assert age_on(born, date(2026, 5, 9)) == 55
    assert age_on(born, date(2026, 5, 10)) == 56
    leap = date(2008, 2, 29)
    assert age_on(leap, date(2026, 2, 28)) == 17
    assert age_on(leap, date(2026, 3, 1)) == 18
    assert age_on(leap, date(2028, 2, 29)) == 20
    assert birthday(leap, 18) == date(2026, 3, 1)
    assert birthday(leap, 20) == date(2028, 2, 29)


@pytest.mark.parametrize("day, eligible", [("2026-02-28", False), ("2026-03-01", True)])
def test_adult_programme_starts_on_the_18th_birthday_of_a_29_february_birth(
        day: str, eligible: bool) -> None:
    result = evaluate(PROGRAMMES, Facts(patient("2008-02-29"), [bp(150, 95, day)]))
    assert (grade(result, f"bp-{day}") is not None) is eligible
    assert result.status["hypertension-screening"].eligible_from == date(2026, 3, 1)


# ---- thresholds of the hypertension actions (VNHA 2022 / VSH 2018 / HEARTS) -----------------

@pytest.mark.parametrize("sbp, dbp, referred", [
    (139, 89, False), (140, 89, True), (141, 89, True),
    (139, 90, True), (139, 91, True), (120, 80, False)])
def test_raised_blood_pressure_is_referred_for_confirmation_from_140_90(
        sbp: int, dbp: int, referred: bool) -> None:
    result = evaluate(PROGRAMMES, Facts(patient(), [bp(sbp, dbp, "2026-06-01")]))
    assert ("confirm_raised" in actions(result, "ServiceRequest")) is referred
    assert ("flag_raised" in actions(result, "Flag")) is referred


@pytest.mark.parametrize("sbp, dbp, crisis", [
    (179, 119, False), (180, 100, True), (181, 100, True), (170, 120, True), (170, 121, True)])
def test_a_crisis_is_referred_at_once(sbp: int, dbp: int, crisis: bool) -> None:
    result = evaluate(PROGRAMMES, Facts(patient(), [bp(sbp, dbp, "2026-06-01")]))
    stat = [r for r in outputs(result, "ServiceRequest") if r["priority"] == "stat"]
    assert bool(stat) is crisis
    if crisis:
        assert stat[0]["occurrencePeriod"] == {"start": "2026-06-01", "end": "2026-06-01"}
        assert stat[0]["reasonReference"] == [{"reference": "Observation/bp-2026-06-01"}]
        assert stat[0]["instantiatesUri"][0].endswith("#refer_crisis")


def test_grades_follow_the_higher_of_systolic_and_diastolic() -> None:
    cases = {(119, 79): "optimal", (120, 79): "normal", (130, 84): "high_normal",
             (140, 90): "grade1", (150, 85): "isolated_systolic", (160, 100): "grade2",
             (150, 100): "grade2", (180, 110): "grade3", (170, 110): "grade3"}
    observations = [bp(s, d, f"2026-06-{n + 1:02d}") for n, (s, d) in enumerate(cases)]
    result = evaluate(PROGRAMMES, Facts(patient(), observations))
    for n, expected in enumerate(cases.values()):
        assert grade(result, f"bp-2026-06-{n + 1:02d}") == expected


def test_one_referral_per_run_of_raised_visits_and_the_flag_follows_the_finding() -> None:
    visits = [bp(150, 95, "2026-01-10"), bp(152, 96, "2026-02-10"), bp(125, 80, "2026-03-10"),
              bp(155, 92, "2026-04-10")]
    result = evaluate(PROGRAMMES, Facts(patient(), visits))
    referrals = [r for r in outputs(result, "ServiceRequest")
                 if r["code"]["coding"][0]["code"] == "confirm_raised"]
    assert sorted(r["authoredOn"] for r in referrals) == ["2026-01-10", "2026-04-10"]
    flags = sorted(outputs(result, "Flag"), key=lambda f: f["period"]["start"])
    assert [(f["status"], f["period"]) for f in flags] == [
        ("inactive", {"start": "2026-01-10", "end": "2026-03-10"}),
        ("active", {"start": "2026-04-10"})]


def test_diagnosis_enrols_in_care_with_28_day_visits_until_controlled_then_quarterly() -> None:
    facts = Facts(patient(), [bp(150, 95, "2026-01-10")], [hypertension("2026-01-12")])
    result = evaluate(PROGRAMMES, facts)
    [episode] = outputs(result, "EpisodeOfCare")
    assert episode["period"] == {"start": "2026-01-12"}
    assert episode["diagnosis"] == [{"condition": {"reference": "Condition/c-htn"}}]
    care = result.status["hypertension-care"]
    assert care.enrolled == date(2026, 1, 12) and care.last_visit is None
    facts.observations.append(bp(145, 85, "2026-02-09"))
    assert evaluate(PROGRAMMES, facts).status["hypertension-care"].next_due == \
        date(2026, 2, 9) + timedelta(days=28)
    facts.observations.append(bp(139, 89, "2026-03-09"))
    result = evaluate(PROGRAMMES, facts)
    assert result.status["hypertension-care"].next_due == date(2026, 3, 9) + timedelta(days=91)
    plan = next(p for p in outputs(result, "CarePlan")
                if p["instantiatesUri"][0].startswith("urn:songkhoe:programme:hypertension-care"))
    assert plan["activity"][0]["detail"]["scheduledPeriod"] == {"start": "2026-06-08"}
    # once enrolled, raised readings are not sent for confirmation again
    assert all(r["authoredOn"] == "2026-01-10" for r in outputs(result, "ServiceRequest")
               if r["code"]["coding"][0]["code"] == "confirm_raised")


def test_a_finished_episode_ends_the_care_programme() -> None:
    facts = Facts(patient(), [bp(150, 95, "2026-01-10")], [hypertension("2026-01-12")])
    [episode] = outputs(evaluate(PROGRAMMES, facts), "EpisodeOfCare")
    facts.outputs = [{**episode, "status": "finished",
                      "period": {"start": "2026-01-12", "end": "2026-02-01"}}]
    facts.observations.append(bp(150, 95, "2026-03-01"))
    result = evaluate(PROGRAMMES, facts)
    assert "hypertension-care" not in result.status or \
        result.status["hypertension-care"].last_visit is None
    assert outputs(result, "EpisodeOfCare")[0]["status"] == "finished"  # left as staff set it


def test_outputs_name_their_rule_version_and_inputs() -> None:
    result = evaluate(PROGRAMMES, Facts(patient(), [bp(165, 100, "2026-06-01")]))
    concept = result.interpretations["bp-2026-06-01"][0]
    assert concept["coding"][0]["version"] == PROGRAMMES["hypertension-screening"].version
    assert concept["coding"][1] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
        "code": "H"}
    referral = next(r for r in outputs(result, "ServiceRequest"))
    assert referral["instantiatesUri"][0].startswith(f"{HTN}|2026.1#")


# ---- results that cannot be used -----------------------------------------------------------

def test_implausible_values_and_units_are_refused_with_a_hint() -> None:
    sbp = PROGRAMMES["hypertension-screening"].item("sbp")
    with pytest.raises(Unusable, match="outside the plausible range"):
        item_value(sbp, bp(400, 90, "2026-06-01"))
    glucose = next(i for p in PROGRAMMES.values() for i in p.items if i.id == "glucose")
    with pytest.raises(Unusable, match="if it was measured in mg/dL"):
        convert(glucose, Decimal(126), glucose.unit, "x")
    assert convert(glucose, Decimal(126), "mg/dL", "x").quantize(Decimal("0.1")) == \
        Decimal("7.0")
    with pytest.raises(Unusable, match="not accepted"):
        convert(glucose, Decimal(7), "g/L", "x")


# ---- idempotence ---------------------------------------------------------------------------

readings = st.lists(st.tuples(st.integers(90, 220), st.integers(50, 130),
                              st.integers(0, 700)), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(readings, st.sampled_from([None, "on the first visit", "later"]),
       st.dates(date(1930, 1, 1), date(2000, 12, 31)))
def test_evaluating_again_with_its_own_outputs_changes_nothing(
        visits: list[tuple[int, int, int]], diagnosed: str | None, born: date) -> None:
    start = date(2025, 1, 1)
    observations = [bp(s, d, (start + timedelta(days=day)).isoformat(), f"o{n}")
                    for n, (s, d, day) in enumerate(visits)]
    onset = start + timedelta(days=visits[0][2] if diagnosed == "on the first visit" else 300)
    conditions = [hypertension(onset.isoformat())] if diagnosed else []
    facts = Facts(patient(born.isoformat()), observations, conditions)
    first = evaluate(PROGRAMMES, facts)
    facts.outputs = list(first.resources.values())
    second = evaluate(PROGRAMMES, facts)
    assert second.resources == first.resources
    assert second.interpretations == first.interpretations
    assert second.status == first.status


def test_the_next_visit_can_depend_on_the_last_visits_risk_score() -> None:
    obs = quantity
    cvd = PROGRAMMES["cvd-risk"]
    day = "2026-06-01"
    never = {"resourceType": "Observation", "id": "smoking", "status": "final",
             "code": {"coding": [{"system": "http://loinc.org", "code": "72166-2"}]},
             "subject": {"reference": "Patient/p1"}, "effectiveDateTime": day,
             "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct",
                                                  "code": "266919005"}]}}
    records = [bp(178, 100, day), obs("14647-2", 7.5, "mmol/L", day), never,
               obs("14771-0", 5.0, "mmol/L", day), obs("39156-5", 31, "kg/m2", day)]
    result = evaluate(PROGRAMMES, Facts(patient("1955-01-01"), records))
    [risk] = [r for r in outputs(result, "RiskAssessment")
              if r["method"]["coding"][0]["system"].startswith(cvd.uri)]
    assert risk["prediction"][0]["probabilityDecimal"] >= 0.2
    interval = next(i for i in cvd.intervals if i.when is not None)
    assert result.status["cvd-risk"].next_due == date(2026, 6, 1) + timedelta(days=interval.days)
    assert interval.days < cvd.intervals[-1].days



@pytest.mark.parametrize("glucose, unit, confirm", [
    (6.9, "mmol/L", False), (7.0, "mmol/L", True), (7.1, "mmol/L", True),
    (125, "mg/dL", False), (126, "mg/dL", True)])
def test_a_diabetes_range_glucose_is_referred_for_confirmation(
        glucose: float, unit: str, confirm: bool) -> None:
    facts = Facts(patient("1970-01-01"), [quantity("14771-0", glucose, unit, "2026-06-01")])
    result = evaluate(PROGRAMMES, facts)
    assert ("confirm_raised" in {r["code"]["coding"][0]["code"] for r in
                                 outputs(result, "ServiceRequest") if "diabetes-screening"
                                 in r["instantiatesUri"][0]}) is confirm


def test_what_to_measure_follows_the_items_conditions() -> None:
    from songkhoe.programs.engine import items_due
    young = Facts(patient("2000-01-01"), [quantity("39156-5", 21, "kg/m2", "2026-01-10")])
    older = Facts(patient("1975-01-01"), [quantity("39156-5", 21, "kg/m2", "2026-01-10")])
    day = date(2026, 6, 1)
    assert "glucose" not in items_due(PROGRAMMES, young, day)["diabetes-screening"]
    assert "glucose" in items_due(PROGRAMMES, older, day)["diabetes-screening"]
    assert "cervical-screening" not in items_due(PROGRAMMES, older, day)  # a man
    assert "cvd-risk" in items_due(PROGRAMMES, older, day)


def test_the_outputs_do_not_depend_on_the_order_the_records_come_in() -> None:
    """A store returns a person's records in no set order (PostgreSQL and SQLite differed):
    every output, interpretation and status is the same with each list of records reversed —
    over the synthetic population, and for a person diagnosed with hypertension and diabetes
    on one day, whose episodes of care listed the diagnoses in the order they came."""
    people: dict[str, Facts] = {}
    lists = {"Observation": "observations", "Condition": "conditions",
             "MedicationStatement": "medications"}
    resources = population()
    for r in resources:
        if r["resourceType"] == "Patient":
            people[r["id"]] = Facts(r)
    for r in resources:
        if r["resourceType"] in lists:
            getattr(people[r["subject"]["reference"][8:]], lists[r["resourceType"]]).append(r)
    diabetes = {**hypertension("2025-03-01"), "id": "c-dm", "code": {"coding": [
        {"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11"}]}}
    people["both"] = Facts(patient(), [bp(150, 95, "2025-03-01")],
                           [hypertension("2025-03-01"), diabetes])
    for facts in people.values():
        given = evaluate(PROGRAMMES, facts)
        reversed_ = evaluate(PROGRAMMES, Facts(facts.patient, facts.observations[::-1],
                                               facts.conditions[::-1],
                                               facts.medications[::-1]))
        assert reversed_.resources == given.resources
        assert reversed_.interpretations == given.interpretations
        assert reversed_.status == given.status
    episodes = outputs(evaluate(PROGRAMMES, people["both"]), "EpisodeOfCare")
    assert {len(e["diagnosis"]) for e in episodes} == {2}
