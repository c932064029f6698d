"""The shipped programme definitions: they load, every classification threshold is placed where
its source puts it (just below, at and just above), FINDRISC scores hand-computed people, unit
conversions are the molar-mass factors, the codes are those the synthetic records carry — and
broken definitions are refused with the file and the path (or TOML line) of the fault."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest

from songkhoe.programs import who_cvd_risk
from songkhoe.programs.definition import (
    DATA,
    Classification,
    DefinitionError,
    Programme,
    Score,
    load_dir,
    load_file,
)
from songkhoe.synth import codes as synth

PROGRAMMES = load_dir()
SHIPPED = {"hypertension-screening", "hypertension-care", "adult-checkup", "diabetes-screening",
           "diabetes-care", "cvd-risk", "cervical-screening"}
E1X = ["E11"]  # an active type 2 diabetes Condition
D = Decimal


def variables(p: Programme, **values: Any) -> dict[str, Any]:
    """The built-ins, every item/classification/score of ``p`` absent, then ``values``."""
    names: dict[str, Any] = {"age": 50, "sex": "male", "conditions": [], "medications": [],
                             "enrolled": []}
    for n in [i.id for i in p.items] + [c.id for c in p.classifications] + \
            [s.id for s in p.scores] + [f"{s.id}_band" for s in p.scores]:
        names[n] = []
    names.update(values)
    return names


def classification(programme: str, cid: str) -> Classification:
    return next(c for c in PROGRAMMES[programme].classifications if c.id == cid)


def score(programme: str, sid: str) -> Score:
    return next(s for s in PROGRAMMES[programme].scores if s.id == sid)


def band(programme: str, cid: str, **values: Any) -> str | None:
    found = classification(programme, cid).classify(variables(PROGRAMMES[programme], **values))
    return found.code if found else None


def rounded(value: Decimal, decimals: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN)


# ---- loading ------------------------------------------------------------------------------

def test_every_shipped_file_loads_and_cross_checks() -> None:
    assert set(PROGRAMMES) == SHIPPED
    assert {Path(p.file).name for p in PROGRAMMES.values()} == \
        {path.name for path in DATA.glob("*.toml")}
    assert {p.id for p in PROGRAMMES.values() if p.kind == "care"} == \
        {"hypertension-care", "diabetes-care"}
    enrolments = {(p.id, a.programme) for p in PROGRAMMES.values() for a in p.actions
                  if a.action == "enrol"}
    assert enrolments == {("hypertension-screening", "hypertension-care"),
                          ("diabetes-screening", "diabetes-care")}


def test_populations() -> None:
    cvd, cervix = PROGRAMMES["cvd-risk"], PROGRAMMES["cervical-screening"]
    assert (cvd.min_age, cvd.max_age) == (40, 74)  # the model is defined for 40 <= age < 75
    assert who_cvd_risk.AGE_MIN == 40 and who_cvd_risk.AGE_LIMIT == 75
    assert (cervix.min_age, cervix.max_age, cervix.sexes) == (30, 54, ("female",))
    for pid in ("adult-checkup", "diabetes-screening"):
        assert PROGRAMMES[pid].min_age == 18


@pytest.mark.parametrize("pid", sorted(SHIPPED))
def test_unverified_notes_are_well_formed(pid: str) -> None:
    """Every "[not verified: …]" note is closed, so the docs can list them."""
    for key, text in PROGRAMMES[pid].sources.items():
        opened = text.count("[not verified:")
        assert opened == len(re.findall(r"\[not verified:[^\[\]]*\]", text)), (pid, key)
        assert "[to verify" not in text, (pid, key)


def test_every_programme_is_in_the_docs_table() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "programmes.md").read_text(encoding="utf-8")
    for pid in SHIPPED:
        assert f"`{pid}`" in doc, pid


# ---- classification thresholds: just below, at, just above ----------------------------

# (programme, classification, variable, below, at, above, band below, band at and above,
#  other values)
EDGES: list[tuple[str, str, str, Any, Any, Any, str, str, dict[str, Any]]] = [
    # hypertension: the seven VSH 2018 / 3192 bands, systolic then diastolic edges
    ("hypertension-screening", "bp_grade", "sbp", 119, 120, 121, "optimal", "normal",
     {"dbp": D(70)}),
    ("hypertension-screening", "bp_grade", "sbp", 129, 130, 131, "normal", "high_normal",
     {"dbp": D(70)}),
    ("hypertension-screening", "bp_grade", "sbp", 139, 140, 141, "high_normal",
     "isolated_systolic", {"dbp": D(70)}),
    ("hypertension-screening", "bp_grade", "sbp", 159, 160, 161, "isolated_systolic",
     "grade2", {"dbp": D(70)}),
    ("hypertension-screening", "bp_grade", "sbp", 179, 180, 181, "grade2", "grade3",
     {"dbp": D(70)}),
    ("hypertension-screening", "bp_grade", "dbp", 79, 80, 81, "optimal", "normal",
     {"sbp": D(110)}),
    ("hypertension-screening", "bp_grade", "dbp", 84, 85, 86, "normal", "high_normal",
     {"sbp": D(110)}),
    ("hypertension-screening", "bp_grade", "dbp", 89, 90, 91, "high_normal", "grade1",
     {"sbp": D(110)}),
    ("hypertension-screening", "bp_grade", "dbp", 99, 100, 101, "grade1", "grade2",
     {"sbp": D(110)}),
    ("hypertension-screening", "bp_grade", "dbp", 109, 110, 111, "grade2", "grade3",
     {"sbp": D(110)}),
    # isolated systolic hypertension ends where the diastolic reaches 90
    ("hypertension-screening", "bp_grade", "dbp", 89, 90, 91, "isolated_systolic", "grade1",
     {"sbp": D(145)}),
    ("hypertension-care", "bp_control", "sbp", 139, 140, 141, "controlled", "uncontrolled",
     {"dbp": D(70)}),
    ("hypertension-care", "bp_control", "dbp", 89, 90, 91, "controlled", "uncontrolled",
     {"sbp": D(120)}),
    # BMI, Asian cut-offs (WPRO 2000)
    ("adult-checkup", "bmi_class", "bmi", "18.4", "18.5", "18.6", "underweight", "normal", {}),
    ("adult-checkup", "bmi_class", "bmi", "22.9", "23.0", "23.1", "normal", "overweight", {}),
    ("adult-checkup", "bmi_class", "bmi", "24.9", "25.0", "25.1", "overweight", "obese_1", {}),
    ("adult-checkup", "bmi_class", "bmi", "29.9", "30.0", "30.1", "obese_1", "obese_2", {}),
    # waist, Asian cut-offs (IDF 2005): men 90, women 80
    ("adult-checkup", "waist_class", "waist", "89.9", "90.0", "90.1", "normal",
     "central_obesity", {"sex": "male"}),
    ("adult-checkup", "waist_class", "waist", "79.9", "80.0", "80.1", "normal",
     "central_obesity", {"sex": "female"}),
    ("adult-checkup", "waist_class", "waist", "89.9", "90.0", "90.1", "central_obesity",
     "central_obesity", {"sex": "female"}),
    # physical activity (WHO 2020): 150 min a week
    ("adult-checkup", "activity_class", "activity", 149, 150, 151, "insufficient",
     "sufficient", {}),
    # fasting glucose: prediabetes 5.6 (3087), diabetes range 7.0 (5481)
    ("diabetes-screening", "glucose_class", "glucose", "5.5", "5.6", "5.7", "normal",
     "prediabetes", {}),
    ("diabetes-screening", "glucose_class", "glucose", "6.9", "7.0", "7.1", "prediabetes",
     "diabetes_range", {}),
    # HbA1c: prediabetes 5.7 (3087), diabetes range 6.5 (5481)
    ("diabetes-screening", "hba1c_class", "hba1c", "5.6", "5.7", "5.8", "normal",
     "prediabetes", {}),
    ("diabetes-screening", "hba1c_class", "hba1c", "6.4", "6.5", "6.6", "prediabetes",
     "diabetes_range", {}),
    # diabetes control (HEARTS / DHIS2): glucose < 7.0, HbA1c < 7
    ("diabetes-care", "glucose_control", "glucose", "6.9", "7.0", "7.1", "controlled",
     "uncontrolled", {}),
    ("diabetes-care", "hba1c_control", "hba1c", "6.9", "7.0", "7.1", "controlled",
     "uncontrolled", {}),
]


@pytest.mark.parametrize("programme, cid, var, below, at, above, low, high, other", EDGES,
                         ids=[f"{e[1]}-{e[2]}-{e[4]}-{e[8].get('sex', '')}" for e in EDGES])
def test_band_edges(programme: str, cid: str, var: str, below: Any, at: Any, above: Any,
                    low: str, high: str, other: dict[str, Any]) -> None:
    assert band(programme, cid, **other, **{var: D(str(below))}) == low
    assert band(programme, cid, **other, **{var: D(str(at))}) == high
    assert band(programme, cid, **other, **{var: D(str(above))}) == high


def test_every_threshold_of_every_numeric_classification_is_tested() -> None:
    """Each number a numeric band compares against appears as an ``at`` value above."""
    tested = {(e[0], e[1], D(str(e[4]))) for e in EDGES}
    for p in PROGRAMMES.values():
        for c in p.classifications:
            for b in c.bands:
                for number in re.findall(r"[<>]=?\s*(\d+(?:\.\d+)?)", b.when.text):
                    assert (p.id, c.id, D(number)) in tested, (p.id, c.id, b.code, number)


def test_no_band_without_its_inputs() -> None:
    assert band("diabetes-screening", "glucose_class") is None
    assert band("adult-checkup", "waist_class", waist=D(95), sex=[]) is None


@pytest.mark.parametrize("cid, var, value, code", [
    ("hpv_class", "hpv", "positive", "positive"), ("hpv_class", "hpv", "negative", "negative"),
    ("via_class", "via", "negative", "negative"), ("via_class", "via", "positive", "positive"),
    ("via_class", "via", "suspicious_cancer", "suspicious_cancer")])
def test_cervical_results(cid: str, var: str, value: str, code: str) -> None:
    assert band("cervical-screening", cid, sex="female", **{var: value}) == code


def test_interpretation_codes_of_the_bands() -> None:
    def interp(programme: str, cid: str, code: str) -> str:
        return next(b.interpretation for b in classification(programme, cid).bands
                    if b.code == code)
    assert interp("hypertension-screening", "bp_grade", "grade3") == "HH"
    assert interp("adult-checkup", "bmi_class", "underweight") == "L"
    assert interp("diabetes-screening", "glucose_class", "diabetes_range") == "H"
    assert interp("cervical-screening", "via_class", "suspicious_cancer") == "AA"
    assert interp("cervical-screening", "hpv_class", "negative") == "NEG"


def test_hypertension_grades_cite_vsh_2018_and_3192_not_vnha_2022() -> None:
    p = PROGRAMMES["hypertension-screening"]
    grades = classification("hypertension-screening", "bp_grade")
    assert {b.source for b in grades.bands} == {"bp_grades"}
    assert "3192/QĐ-BYT" in p.sources["bp_grades"] and "2018" in p.sources["bp_grades"]
    assert "phân độ" not in p.sources["vnha2022"]
    assert [b.code for b in grades.bands] == ["grade3", "grade2", "isolated_systolic",
                                              "grade1", "high_normal", "normal", "optimal"]
    assert {a.id for a in p.actions} == {"refer_crisis", "confirm_raised", "flag_raised",
                                         "enrol_diagnosed"}


# ---- derived values, collection rules, actions, intervals --------------------------------

def test_bmi_is_derived_from_weight_and_height() -> None:
    for pid in ("adult-checkup", "diabetes-screening", "cvd-risk"):
        bmi = PROGRAMMES[pid].item("bmi")
        assert bmi.derive is not None
        value = bmi.derive.value({"weight": D("70.0"), "height": D("175.0")})
        assert rounded(value, 1) == D("22.9")  # type: ignore[arg-type]
        assert bmi.derive.value({"weight": D("70.0"), "height": []}) is None


@pytest.mark.parametrize("age, bmi, tested", [(44, D("22.9"), False), (45, [], True),
                                               (30, D("23.0"), True), (30, [], False)])
def test_glucose_is_collected_at_45_or_when_overweight(age: int, bmi: Any, tested: bool) -> None:
    p = PROGRAMMES["diabetes-screening"]
    for item in ("glucose", "hba1c"):
        when = p.item(item).when
        assert when is not None and when.holds(variables(p, age=age, bmi=bmi)) is tested


def holding(programme: str, **values: Any) -> set[str]:
    p = PROGRAMMES[programme]
    return {a.id for a in p.actions if a.when.holds(variables(p, **values))}


def test_diabetes_screening_actions() -> None:
    assert holding("diabetes-screening", glucose=D("6.9"), glucose_class="prediabetes") == \
        {"flag_prediabetes"}
    assert holding("diabetes-screening", glucose=D("7.0"), glucose_class="diabetes_range") == \
        {"confirm_raised"}
    # a single raised result is not a diagnosis: no enrolment without a Condition
    assert "enrol_diagnosed" not in holding("diabetes-screening", hba1c=D("9.0"),
                                            hba1c_class="diabetes_range")
    assert holding("diabetes-screening", glucose=D("17.9"), glucose_class="diabetes_range") == \
        {"confirm_raised"}
    assert holding("diabetes-screening", glucose=D("18.0"), glucose_class="diabetes_range") == \
        {"confirm_raised", "refer_very_high"}
    # diagnosed: enrolled, not sent to confirm
    assert holding("diabetes-screening", conditions=["E11.9"], glucose=D("8.0"),
                   glucose_class="diabetes_range") == {"enrol_diagnosed"}
    assert holding("diabetes-screening", conditions=["E14"]) == {"enrol_diagnosed"}
    assert holding("diabetes-screening", conditions=["E15"]) == set()
    # already in care: the care programme refers very high glucose, not the screening
    assert holding("diabetes-screening", enrolled=["diabetes-care"], glucose=D("20.0"),
                   glucose_class="diabetes_range") == set()
    assert holding("diabetes-screening", findrisc=D(11)) == set()
    assert holding("diabetes-screening", findrisc=D(12)) == {"flag_high_risk"}


def test_diabetes_care_referral_and_visits() -> None:
    assert holding("diabetes-care", glucose=D("17.9")) == set()
    assert holding("diabetes-care", glucose=D("18.0")) == {"refer_very_high"}
    p = PROGRAMMES["diabetes-care"]

    def days(**values: Any) -> int:
        return next(i.days for i in p.intervals if i.when is None or
                    i.when.holds(variables(p, **values)))
    assert days(glucose_control="controlled") == 91
    assert days(hba1c_control="controlled") == 91
    assert days(glucose_control="controlled", hba1c_control="controlled") == 91
    assert days(glucose_control="controlled", hba1c_control="uncontrolled") == 28
    assert days(glucose_control="uncontrolled") == 28
    assert days() == 28


def test_diabetes_screening_intervals() -> None:
    p = PROGRAMMES["diabetes-screening"]

    def days(**values: Any) -> int:
        return next(i.days for i in p.intervals if i.when is None or
                    i.when.holds(variables(p, **values)))
    assert days(glucose_class="diabetes_range") == 28
    assert days(glucose_class="diabetes_range", conditions=E1X) == 1095
    assert days(glucose_class="prediabetes") == 365
    assert days(glucose_class="normal", bmi=D("23.0")) == 365
    assert days(glucose_class="normal", findrisc=D(12)) == 365
    assert days(glucose_class="normal", bmi=D("22.9"), findrisc=D(11)) == 1095


def test_cervical_actions_and_intervals() -> None:
    p = PROGRAMMES["cervical-screening"]

    def days(**values: Any) -> int:
        return next(i.days for i in p.intervals if i.when is None or
                    i.when.holds(variables(p, **values)))
    assert holding("cervical-screening", hpv="positive") == {"refer_positive"}
    assert holding("cervical-screening", via="positive") == {"refer_positive"}
    assert holding("cervical-screening", hpv="positive", via="suspicious_cancer") == \
        {"refer_suspected_cancer"}
    assert holding("cervical-screening", hpv="negative", via="negative") == set()
    assert days(hpv="positive") == 365
    assert days(hpv="negative") == 1825
    assert days(via="negative") == 1095


def test_adult_checkup_flags_obesity_only() -> None:
    assert holding("adult-checkup", bmi_class="overweight") == set()
    assert holding("adult-checkup", bmi_class="obese_1") == {"flag_obese"}
    assert holding("adult-checkup", bmi_class="obese_2") == {"flag_obese"}


# ---- scores -------------------------------------------------------------------------------

FINDRISC = score("diabetes-screening", "findrisc")


def findrisc(**values: Any) -> int:
    return FINDRISC.points(variables(PROGRAMMES["diabetes-screening"], **values))


# hand-computed people (points per question in the comment)
PEOPLE: list[tuple[dict[str, Any], int, str]] = [
    # 38, BMI 21, waist 80 (man), active 300 min/wk, vegetables daily, nothing else: 0
    ({"age": 38, "sex": "male", "bmi": D("21.0"), "waist": D("80.0"), "activity": D(300),
      "vegetables": "every_day"}, 0, "low"),
    # 50 (2), BMI 24 (1), waist 92 man (3), 100 min/wk (2), amlodipine (2), parent (5): 15
    ({"age": 50, "sex": "male", "bmi": D("24.0"), "waist": D("92.0"), "activity": D(100),
      "medications": ["C08CA01"], "family_diabetes": "first_degree"}, 15, "high"),
    # 66 (4), BMI 28 (3), waist 90 woman (4), says active daily though 0 min recorded (0),
    # vegetables not daily (1), no BP medicine (0), high glucose once (5), aunt (3): 20
    ({"age": 66, "sex": "female", "bmi": D("28.0"), "waist": D("90.0"), "activity": D(0),
      "daily_activity": "yes", "vegetables": "not_every_day", "bp_medication": "no",
      "high_glucose": "yes", "family_diabetes": "second_degree"}, 20, "high"),
    # everything: 4 + 3 + 4 + 2 + 1 + 2 + 5 + 5 = 26
    ({"age": 70, "sex": "female", "bmi": D("30.0"), "waist": D("100.0"),
      "daily_activity": "no", "vegetables": "not_every_day", "bp_medication": "yes",
      "conditions": ["R73.0"], "family_diabetes": "first_degree"}, 26, "very_high"),
    # 47 (2), BMI 23.5 (1), waist 85 man (0), losartan (2), gestational diabetes (5): 10
    ({"age": 47, "sex": "male", "bmi": D("23.5"), "waist": D("85.0"),
      "medications": ["C09CA01"], "conditions": ["O24.4"]}, 10, "slightly_elevated"),
    # 58 (3), BMI 26 (1), waist 99 man (4), 180 min/wk (2), vegetables not daily (1),
    # hydrochlorothiazide (2): 13
    ({"age": 58, "sex": "male", "bmi": D("26.0"), "waist": D("99.0"), "activity": D(180),
      "vegetables": "not_every_day", "medications": ["C03AA03"]}, 13, "moderate"),
]


@pytest.mark.parametrize("person, points, code", PEOPLE)
def test_findrisc_hand_computed(person: dict[str, Any], points: int, code: str) -> None:
    assert findrisc(**person) == points
    found = FINDRISC.band(D(points))
    assert found is not None and found.code == code


@pytest.mark.parametrize("values, points", [
    ({"age": 44}, 0), ({"age": 45}, 2), ({"age": 54}, 2), ({"age": 55}, 3), ({"age": 64}, 3),
    ({"age": 65}, 4),
    ({"bmi": D("22.9")}, 0), ({"bmi": D("23.0")}, 1), ({"bmi": D("27.4")}, 1),
    ({"bmi": D("27.5")}, 3),
    ({"waist": D("89.9")}, 0), ({"waist": D("90.0")}, 3), ({"waist": D("98.0")}, 3),
    ({"waist": D("98.1")}, 4),
    ({"sex": "female", "waist": D("79.9")}, 0), ({"sex": "female", "waist": D("80.0")}, 3),
    ({"sex": "female", "waist": D("88.0")}, 3), ({"sex": "female", "waist": D("88.1")}, 4),
    ({"activity": D(209)}, 2), ({"activity": D(210)}, 0),
    ({"activity": D(300), "daily_activity": "no"}, 2),
    ({"activity": D(0), "daily_activity": "yes"}, 0),
    ({"vegetables": "every_day"}, 0), ({"vegetables": "not_every_day"}, 1),
    ({"bp_medication": "yes"}, 2), ({"medications": ["C07AB02"]}, 2),
    ({"medications": ["A10BA02"]}, 0),
    ({"high_glucose": "yes"}, 5), ({"high_glucose": "no"}, 0), ({"conditions": ["R73.9"]}, 5),
    ({"family_diabetes": "none"}, 0), ({"family_diabetes": "second_degree"}, 3),
    ({"family_diabetes": "first_degree"}, 5),
])
def test_findrisc_question_edges(values: dict[str, Any], points: int) -> None:
    person = {"age": 30, "sex": "male", **values}
    assert findrisc(**person) == points


def test_findrisc_is_not_scored_for_diagnosed_diabetes() -> None:
    p = PROGRAMMES["diabetes-screening"]
    assert FINDRISC.when is not None
    assert FINDRISC.when.holds(variables(p))
    assert not FINDRISC.when.holds(variables(p, conditions=["E11.9"]))
    assert FINDRISC.when.holds(variables(p, conditions=["I10"]))


@pytest.mark.parametrize("points, code", [(0, "low"), (6, "low"), (7, "slightly_elevated"),
                                          (11, "slightly_elevated"), (12, "moderate"),
                                          (14, "moderate"), (15, "high"), (20, "high"),
                                          (21, "very_high"), (26, "very_high")])
def test_findrisc_bands(points: int, code: str) -> None:
    found = FINDRISC.band(D(points))
    assert found is not None and found.code == code


def test_findrisc_probabilities_are_the_forms() -> None:
    assert [(b.min, b.probability) for b in FINDRISC.bands] == [
        (0, D("0.01")), (7, D("0.04")), (12, D("0.17")), (15, D("0.33")), (21, D("0.5"))]


CVD = score("cvd-risk", "cvd_risk")


def test_cvd_bands_are_the_hearts_chart_categories() -> None:
    assert [(b.code, b.min) for b in CVD.bands] == \
        [(r.code, D(str(r.lower))) for r in who_cvd_risk.RISK_BANDS]
    for risk in (0.0499, 0.05, 0.0999, 0.10, 0.1999, 0.20, 0.2999, 0.30, 0.59):
        found = CVD.band(D(str(risk)))
        assert found is not None and found.code == who_cvd_risk.chart_band(risk)


def test_cvd_model_inputs() -> None:
    p = PROGRAMMES["cvd-risk"]
    assert CVD.model == "who_cvd_2019"
    names = variables(p, age=55, sex="female", sbp=D(150), smoking="current",
                      cholesterol=D("5.5"), bmi=D("24.0"))
    args = {arg: value.get(names) for arg, value in CVD.inputs.items()}
    assert args == {"age": 55, "sex": "female", "sbp": D(150), "smoker": True,
                    "total_cholesterol_mmol": D("5.5"), "diabetes": False, "bmi": D("24.0")}

    def get(arg: str, **values: Any) -> Any:
        return CVD.inputs[arg].get(variables(p, **values))
    assert get("smoker", smoking="former") is False
    assert get("smoker", smoking="never") is False
    assert get("smoker") is None  # not asked: no risk is computed
    assert get("diabetes", conditions=["E11.9"]) is True
    assert get("diabetes", glucose=D("6.9")) is False
    assert get("diabetes", glucose=D("7.0")) is True  # WHO PEN: fasting glucose ≥ 7
    # known CVD: the charts do not apply
    assert CVD.when is not None and not CVD.when.holds(variables(p, conditions=["I63.9"]))
    assert not CVD.when.holds(variables(p, conditions=["I21"]))
    assert CVD.when.holds(variables(p, conditions=["I10"]))


def test_cvd_referral_at_20_percent() -> None:
    assert holding("cvd-risk", cvd_risk=D("0.1999")) == set()
    assert holding("cvd-risk", cvd_risk=D("0.2")) == {"refer_high_risk"}


def test_a_chart_cell_through_the_definition() -> None:
    """CLINICAL.md: woman, no diabetes, non-smoker, 60–64, SBP 140–159, cholesterol 5–5.9 → 8 %."""
    p = PROGRAMMES["cvd-risk"]
    names = variables(p, age=D("62.5"), sex="female", sbp=D(150), smoking="never",
                      cholesterol=D("5.5"))
    args = {arg: value.get(names) for arg, value in CVD.inputs.items()}
    risk = who_cvd_risk.ten_year_risk(
        "lab", args["sex"], float(args["age"]), float(args["sbp"]), bool(args["smoker"]),
        total_cholesterol_mmol=float(args["total_cholesterol_mmol"]),
        diabetes=bool(args["diabetes"]))
    assert who_cvd_risk.chart_percent(risk) == 8
    found = CVD.band(D(str(round(risk, 4))))
    assert found is not None and found.code == "5to10"


# ---- units --------------------------------------------------------------------------------

GLUCOSE_PER_MG_DL = D(10) / D("180.156")  # C6H12O6 = 6 × 12.011 + 12 × 1.008 + 6 × 15.999
CHOLESTEROL_PER_MG_DL = D(10) / D("386.664")  # C27H46O = 27 × 12.011 + 46 × 1.008 + 15.999


def test_molar_masses() -> None:
    assert 6 * D("12.011") + 12 * D("1.008") + 6 * D("15.999") == D("180.156")
    assert 27 * D("12.011") + 46 * D("1.008") + D("15.999") == D("386.664")


def factor(programme: str, item: str, unit: str) -> Decimal:
    return next(u.factor for u in PROGRAMMES[programme].item(item).units if u.code == unit)


@pytest.mark.parametrize("programme", ["diabetes-screening", "diabetes-care", "cvd-risk"])
def test_glucose_mg_dl_factor(programme: str) -> None:
    got = factor(programme, "glucose", "mg/dL")
    assert abs(got - GLUCOSE_PER_MG_DL) < D("1e-8")
    assert abs(got - 1 / D("18.016")) < D("2e-6")  # the factor the brief quotes


def test_cholesterol_mg_dl_factor() -> None:
    assert abs(factor("cvd-risk", "cholesterol", "mg/dL") - CHOLESTEROL_PER_MG_DL) < D("1e-8")
    assert rounded(D(200) * factor("cvd-risk", "cholesterol", "mg/dL"), 1) == D("5.2")


def test_every_canonical_unit_comes_first_with_factor_one() -> None:
    for p in PROGRAMMES.values():
        for item in p.items:
            if item.kind == "quantity":
                assert item.units[0].code == item.unit and item.units[0].factor == 1
                assert all(u.factor > 0 for u in item.units)


@pytest.mark.parametrize("mg_dl, band_code", [(99, "normal"), (100, "prediabetes"),
                                              (125, "prediabetes"), (126, "diabetes_range")])
def test_glucose_in_mg_dl_meets_the_guidelines_paired_values_once_rounded(
        mg_dl: int, band_code: str) -> None:
    """5481 pairs 7.0 mmol/L with 126 mg/dL and 3087 pairs 5.6 with 100: the converted value
    agrees with the guideline only after rounding to the item's 0.1 mmol/L (126 mg/dL is
    6.994 mmol/L unrounded)."""
    item = PROGRAMMES["diabetes-screening"].item("glucose")
    assert item.decimals == 1
    value = rounded(D(mg_dl) * factor("diabetes-screening", "glucose", "mg/dL"), 1)
    assert band("diabetes-screening", "glucose_class", glucose=value) == band_code


@pytest.mark.parametrize("mg_dl, band_code", [(99, "normal"), (100, "prediabetes"),
                                              (125, "prediabetes"), (126, "diabetes_range")])
def test_the_engine_converts_as_the_guidelines_pair_the_units(mg_dl: int, band_code: str) -> None:
    from songkhoe.programs.engine import convert
    item = PROGRAMMES["diabetes-screening"].item("glucose")
    value = convert(item, D(mg_dl), "mg/dL", "Observation.valueQuantity")
    assert band("diabetes-screening", "glucose_class", glucose=value) == band_code


# ---- the codes are those the synthetic records carry ---------------------------------------

SYNTH_QUANTITIES = {loinc: unit for loinc, _, _, unit, _, _ in synth.QUANTITIES.values()}


@pytest.mark.parametrize("programme", ["adult-checkup", "diabetes-screening", "cvd-risk",
                                       "diabetes-care"])
def test_quantity_codes_and_units_match_the_synthetic_records(programme: str) -> None:
    for item in PROGRAMMES[programme].items:
        if item.kind == "quantity" and item.component is None:
            assert item.system == synth.LOINC
            assert SYNTH_QUANTITIES.get(item.code) == item.unit, item.id


def test_every_synthetic_measurement_has_a_programme() -> None:
    used = {(i.system, i.code) for p in PROGRAMMES.values() for i in p.items}
    for loinc in SYNTH_QUANTITIES:
        assert (synth.LOINC, loinc) in used, loinc
    assert (synth.LOINC, synth.SMOKING[0]) in used and (synth.LOINC, synth.ALCOHOL[0]) in used


def test_coded_answers_match_the_synthetic_records() -> None:
    smoking = {f"{synth.SNOMED}|{code}": key for key, (code, _) in synth.SMOKING_ANSWERS.items()}
    for pid in ("adult-checkup", "cvd-risk"):
        item = PROGRAMMES[pid].item("smoking")
        assert item.code == synth.SMOKING[0] and item.values == smoking
    alcohol = PROGRAMMES["adult-checkup"].item("alcohol")
    assert alcohol.code == synth.ALCOHOL[0]
    assert set(alcohol.values) == {f"{synth.SNOMED}|{code}"
                                   for code, _ in synth.ALCOHOL_ANSWERS.values()}
    assert alcohol.values[f"{synth.SNOMED}|{synth.ALCOHOL_ANSWERS[True][0]}"] == "drinker"


def test_conditions_and_medicines_of_the_synthetic_records_are_read() -> None:
    p = PROGRAMMES["diabetes-screening"]
    assert holding("diabetes-screening", conditions=[synth.DIABETES[0]]) == {"enrol_diagnosed"}
    for atc, *_ in synth.HTN_DRUGS:
        assert findrisc(age=30, medications=[atc]) == 2, atc
    for atc, *_ in synth.DM_DRUGS:
        assert findrisc(age=30, medications=[atc]) == 0, atc
    assert p.item("glucose").unit == synth.QUANTITIES["glucose"][3]


# ---- broken definitions --------------------------------------------------------------------

GOOD = """\
id = "demo"
version = "1"
kind = "screening"
title = { vi = "Thử", en = "Demo" }

[sources]
src = "A source"

[population]
min_age = 18

[[item]]
id = "sbp"
label = { vi = "Huyết áp tâm thu", en = "Systolic blood pressure" }
code = "http://loinc.org|8480-6"
unit = "mm[Hg]"
range = [50, 300]

[[classification]]
id = "sbp_class"
label = { vi = "Phân loại", en = "Class" }
item = "sbp"

  [[classification.band]]
  code = "high"
  display = { vi = "Cao", en = "High" }
  when = "%sbp >= 140"
  interpretation = "H"
  source = "src"

[[action]]
id = "flag_high"
action = "flag"
when = "%sbp_class = 'high'"
reason = { vi = "Cao", en = "High" }
source = "src"

[[interval]]
days = 365
label = { vi = "Mỗi năm", en = "Every year" }
"""


def write(folder: Path, text: str, name: str = "demo.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        load_file(path)
    error = caught.value
    assert error.file == str(path) and str(error).startswith(f"{path}: ")
    return error


def test_the_base_definition_loads(tmp_path: Path) -> None:
    p = load_file(write(tmp_path, GOOD))
    assert p.id == "demo" and p.file == str(tmp_path / "demo.toml")


def test_unknown_key(tmp_path: Path) -> None:
    text = GOOD.replace('range = [50, 300]\n', 'range = [50, 300]\ncolour = "red"\n')
    error = refused(write(tmp_path, text))
    assert error.where == "item[0].colour"
    assert "unknown key" in error.message and "derive" in error.message


def test_unknown_variable_in_a_condition(tmp_path: Path) -> None:
    error = refused(write(tmp_path, GOOD.replace('when = "%sbp >= 140"',
                                                 'when = "%sbpp >= 140"')))
    assert error.where == "classification[0].band[0].when"
    assert "unknown variable %sbpp" in error.message and "%sbp" in error.message


def test_a_variable_used_before_it_is_defined(tmp_path: Path) -> None:
    """An item's condition reads earlier items only: the classification comes later."""
    text = GOOD.replace('range = [50, 300]\n', 'range = [50, 300]\nwhen = "%sbp_class = \'high\'"\n')
    error = refused(write(tmp_path, text))
    assert error.where == "item[0].when" and "unknown variable %sbp_class" in error.message


def test_bad_interpretation_code(tmp_path: Path) -> None:
    error = refused(write(tmp_path, GOOD.replace('interpretation = "H"',
                                                 'interpretation = "HIGH"')))
    assert error.where == "classification[0].band[0].interpretation"
    assert "'HIGH' is not one of" in error.message and "HH" in error.message


def test_source_not_listed(tmp_path: Path) -> None:
    text = GOOD.replace('  source = "src"', '  source = "vnha2099"')
    error = refused(write(tmp_path, text))
    assert error.where == "classification[0].band[0].source"
    assert "'vnha2099' is not listed in [sources]" in error.message


def test_band_without_a_source(tmp_path: Path) -> None:
    error = refused(write(tmp_path, GOOD.replace('  source = "src"\n', "")))
    assert error.where == "classification[0].band[0].source"
    assert error.message == "is required"


def test_no_sources_table(tmp_path: Path) -> None:
    error = refused(write(tmp_path, GOOD.replace('[sources]\nsrc = "A source"\n', "")))
    assert error.where == "sources" and error.message == "is required"


def test_toml_syntax_error_names_its_line(tmp_path: Path) -> None:
    text = GOOD.replace('when = "%sbp >= 140"', 'when = "%sbp >= 140')
    line = text.splitlines().index('  when = "%sbp >= 140') + 1
    error = refused(write(tmp_path, text))
    assert error.where == "" and "not valid TOML" in error.message
    assert f"line {line}" in error.message


def test_enrol_into_a_missing_programme(tmp_path: Path) -> None:
    text = GOOD + """
[[action]]
id = "enrol"
action = "enrol"
when = "%conditions.exists()"
programme = "nowhere-care"
reason = { vi = "Quản lý", en = "Care" }
source = "src"
"""
    path = write(tmp_path, text)
    load_file(path)  # one file alone is fine: the target is checked across the folder
    with pytest.raises(DefinitionError) as caught:
        load_dir(tmp_path)
    error = caught.value
    assert error.file == str(path) and error.where == "action[1].programme"
    assert "'nowhere-care' is not a care programme defined here" in error.message


def test_enrol_into_a_screening_programme(tmp_path: Path) -> None:
    other = GOOD.replace('id = "demo"', 'id = "other-screening"')
    write(tmp_path, other, "other.toml")
    text = GOOD + """
[[action]]
id = "enrol"
action = "enrol"
when = "%conditions.exists()"
programme = "other-screening"
reason = { vi = "Quản lý", en = "Care" }
source = "src"
"""
    path = write(tmp_path, text)
    with pytest.raises(DefinitionError) as caught:
        load_dir(tmp_path)
    assert caught.value.file == str(path) and caught.value.where == "action[1].programme"


def test_last_interval_with_a_condition(tmp_path: Path) -> None:
    text = GOOD.replace("days = 365\n", "days = 365\nwhen = \"%sbp >= 140\"\n")
    error = refused(write(tmp_path, text))
    assert error.where == "interval[0].when"
    assert "the last interval is the default" in error.message


def test_the_same_id_in_two_files(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "a.toml")
    write(tmp_path, GOOD, "b.toml")
    with pytest.raises(DefinitionError) as caught:
        load_dir(tmp_path)
    assert caught.value.file == str(tmp_path / "b.toml") and caught.value.where == "id"
    assert str(tmp_path / "a.toml") in caught.value.message
