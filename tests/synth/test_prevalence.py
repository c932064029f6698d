"""Generated data reproduce the survey figures they are calibrated to (docs/synthetic-data.md).

Prevalences are computed from the FHIR resources the generator writes — measured blood pressure
and glucose, Conditions, MedicationStatements — the way a survey analyst would, not from the
generator's internal state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from songkhoe.synth import SynthConfig, chunks, health


@dataclass
class Person:
    male: bool
    birth: str
    age: int = -1
    sbp: int | None = None
    dbp: int | None = None
    glucose: float | None = None
    hba1c: float | None = None
    bmi: float | None = None
    smoking: str | None = None
    drinker: bool | None = None
    activity: int | None = None
    conditions: set[str] = field(default_factory=set)
    drugs: set[str] = field(default_factory=set)
    family: str = ""


def _population() -> dict[str, Person]:
    config = SynthConfig(people=24_000, seed=11, coverage=1.0)
    people: dict[str, Person] = {}
    checkups: set[str] = set()
    for chunk in chunks(config, workers=1):
        # Within a chunk, Encounters come before their Observations (population.TYPES order).
        for rtype, data in chunk.lines.items():
            for line in data.splitlines():
                r = orjson.loads(line)
                if rtype == "Patient":
                    people[r["id"]] = Person(r["gender"] == "male", r["birthDate"],
                                             family=r["name"][0]["family"])
                elif rtype == "Condition":
                    people[r["subject"]["reference"][8:]].conditions.add(r["code"]["coding"][0]["code"])
                elif rtype == "MedicationStatement":
                    people[r["subject"]["reference"][8:]].drugs.add(
                        r["medicationCodeableConcept"]["coding"][0]["code"])
                elif rtype == "Encounter" and r["type"][0]["coding"][0]["code"] == "185349003":
                    checkups.add(r["id"])
                elif rtype == "Observation" and r["encounter"]["reference"][10:] in checkups:
                    _measure(people[r["subject"]["reference"][8:]], r)
    return people


def _measure(p: Person, o: dict[str, Any]) -> None:
    when = o["effectiveDateTime"]
    p.age = int(when[:4]) - int(p.birth[:4]) - (when[5:10] < p.birth[5:10])
    code = o["code"]["coding"][0]["code"]
    if code == "85354-9":
        p.sbp, p.dbp = (c["valueQuantity"]["value"] for c in o["component"])
    elif code == "14771-0":
        p.glucose = o["valueQuantity"]["value"]
    elif code == "4548-4":
        p.hba1c = o["valueQuantity"]["value"]
    elif code == "39156-5":
        p.bmi = o["valueQuantity"]["value"]
    elif code == "72166-2":
        p.smoking = o["valueCodeableConcept"]["coding"][0]["code"]
    elif code == "11331-6":
        p.drinker = o["valueCodeableConcept"]["coding"][0]["code"] == "219006"
    elif code == "82290-8":
        p.activity = o["valueQuantity"]["value"]


@pytest.fixture(scope="module")
def population() -> dict[str, Person]:
    return _population()


def _htn(p: Person) -> bool:
    assert p.sbp is not None and p.dbp is not None
    return p.sbp >= 140 or p.dbp >= 90 or any(d[0] == "C" for d in p.drugs)


def _dm(p: Person) -> bool:
    assert p.glucose is not None
    return p.glucose >= 7.0 or any(d.startswith("A10") for d in p.drugs)


def _share(people: list[Person], test: Any) -> float:
    assert len(people) > 500
    return sum(map(test, people)) / len(people)


def _adults(pop: dict[str, Person], lo: int, hi: int, male: bool | None = None) -> list[Person]:
    return [p for p in pop.values() if lo <= p.age <= hi and (male is None or p.male == male)]


def test_hypertension_prevalence_steps_2020(population: dict[str, Person]) -> None:
    """28.3% at 25–64 (STEPS 2020); men above women (Son et al. 2012: 28.3% vs 23.1%, 25+)."""
    assert abs(_share(_adults(population, 25, 64), _htn) - 0.283) < 0.025
    men = _share(_adults(population, 25, 64, True), _htn)
    women = _share(_adults(population, 25, 64, False), _htn)
    odds_ratio = (men / (1 - men)) / (women / (1 - women))
    assert 1.1 < odds_ratio < 1.6  # the model's within-age odds ratio is 1.31


def test_hypertension_cascade_who_2023(population: dict[str, Person]) -> None:
    """Of people with hypertension at 30–79: 47% diagnosed, 30% treated, 13% controlled."""
    hyper = [p for p in _adults(population, 30, 79) if _htn(p)]
    treated = [p for p in hyper if any(d[0] == "C" for d in p.drugs)]
    assert abs(_share(hyper, lambda p: "I10" in p.conditions) - 0.47) < 0.04
    assert abs(len(treated) / len(hyper) - 0.30) < 0.04
    controlled = [p for p in treated if p.sbp < 140 and p.dbp < 90]  # type: ignore[operator]
    assert abs(len(controlled) / len(hyper) - 0.13) < 0.03


def test_diabetes_prevalence_and_cascade(population: dict[str, Person]) -> None:
    """6.96% at 25–64 (STEPS 2020); 63.6% of people with diabetes undiagnosed (2012 survey);
    36.1% of treated patients at HbA1c < 7% (DiabCare Asia Vietnam)."""
    assert abs(_share(_adults(population, 25, 64), _dm) - 0.0696) < 0.012
    diabetic = [p for p in _adults(population, 18, 100) if _dm(p)]
    assert abs(_share(diabetic, lambda p: "E11" in p.conditions) - (1 - 0.636)) < 0.05
    treated = [p for p in diabetic if any(d.startswith("A10") for d in p.drugs)]
    assert len(treated) > 100
    controlled = sum(p.hba1c is not None and p.hba1c < 7.0 for p in treated) / len(treated)
    assert abs(controlled - 0.361) < 0.072  # 3 standard errors at n ≈ 400 treated patients


def test_overweight_steps_2020(population: dict[str, Person]) -> None:
    """BMI ≥ 25 in 20.57% at 25–64 (STEPS 2020)."""
    assert abs(_share(_adults(population, 25, 64), lambda p: p.bmi >= 25) - 0.2057) < 0.025


def test_behaviours_steps_2015(population: dict[str, Person]) -> None:
    """Current smoking men 50.6% / women 1.5%, drinking men 77.2% / women 11.1% (STEPS 2015,
    18–69); under 150 min/week of activity men 28.7% / women 38.4% (Huế 2017)."""
    for male, smoke, drink, inactive in ((True, 0.506, 0.772, 0.287), (False, 0.015, 0.111, 0.384)):
        group = _adults(population, 18, 69, male)
        assert abs(_share(group, lambda p: p.smoking == "449868002") - smoke) < 0.025
        assert abs(_share(group, lambda p: p.drinker) - drink) < 0.025
        assert abs(_share(group, lambda p: p.activity < 150) - inactive) < 0.025


def test_diagnosis_follows_the_survey_definitions(population: dict[str, Person]) -> None:
    """Everyone with a hypertension Condition but no treatment still has raised BP, and no one
    without hypertension carries the diagnosis — the cascade is consistent with the data."""
    for p in _adults(population, 18, 100):
        if "I10" in p.conditions:
            assert _htn(p) or (p.sbp is not None and p.sbp >= 130)
        if "E11" in p.conditions and not p.drugs & {"A10BA02", "A10BB09"}:
            assert p.glucose is not None and p.glucose >= 6.5


def test_family_names(population: dict[str, Person]) -> None:
    names = [p.family for p in population.values()]
    assert abs(names.count("Nguyễn") / len(names) - 0.39) < 0.015


def test_calibration_solves_the_targets_exactly() -> None:
    cal = health.calibration()
    assert 2.9 < cal.bmi_mu < 3.2  # median BMI between 18 and 25 at the reference age
    assert -3 < cal.htn_b0 < 1 and -5 < cal.dm_b0 < -1
