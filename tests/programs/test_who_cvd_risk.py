"""WHO 2019 CVD risk models, Southeast Asia: published chart cells, HEARTS bands, monotonicity
and input validation.

Expected chart values come from three places, none computed here:
* the six laboratory-chart cells in ``shared/reference/CLINICAL.md``;
* the Southeast Asia laboratory chart as transcribed in ``DylanRJCollins/whoishRisk``,
  ``inst/extdata/WHO_2019_Scores.csv`` (column ``SE_ASI``);
* the Southeast Asia non-laboratory chart as transcribed in ``mhajihos/WHOCVRisk``,
  ``data/CVDRisk.csv`` (rows ``Southeast Asia``).
Grids below list ages 70-74 down to 40-44 (rows, ``;``-separated) and SBP >= 180 down to
< 120 (columns), as the printed charts do.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from songkhoe.programs.who_cvd_risk import (
    BANDS_BY_CODE,
    RISK_BANDS,
    chart_band,
    chart_cell,
    chart_percent,
    regions,
    ten_year_risk,
)

AGE_ROWS = (70, 65, 60, 55, 50, 45, 40)  # lower bound of each age band, top row first
SBP_COLUMNS = (185, 165, 145, 125, 105)  # a value inside each SBP band, >= 180 first


def printed(
    model: str,
    sex: str,
    age: float,
    sbp: float,
    smoker: bool,
    *,
    total_cholesterol_mmol: float | None = None,
    diabetes: bool | None = None,
    bmi: float | None = None,
) -> int:
    """What the printed chart shows for these raw inputs: risk at the cell's midpoints."""
    cell = chart_cell(model, age, sbp, total_cholesterol_mmol=total_cholesterol_mmol, bmi=bmi)
    risk = ten_year_risk(
        model,
        sex,
        cell.age,
        cell.sbp,
        smoker,
        total_cholesterol_mmol=cell.total_cholesterol_mmol,
        diabetes=diabetes,
        bmi=cell.bmi,
    )
    return chart_percent(risk)


def grid_mismatches(table: str, first_age_row: int, value_at) -> list[tuple[int, int, int, int]]:
    """(age, sbp, published, computed) for every cell of ``table`` that differs."""
    out = []
    for row, line in enumerate(table.split(";"), start=first_age_row):
        for column, published in enumerate(line.split(",")):
            age, sbp = AGE_ROWS[row] + 2, SBP_COLUMNS[column]
            computed = value_at(age, sbp)
            if computed != int(published):
                out.append((age, sbp, int(published), computed))
    return out


# ------------------------------------------------------------------ published chart cells


@pytest.mark.parametrize(
    ("sex", "diabetes", "smoker", "age", "sbp", "cholesterol", "expected"),
    [
        # CLINICAL.md: (sex, diabetes, smoker, age band, SBP band, cholesterol band -> %)
        ("male", False, False, 42, 115, 3.8, 1),  # 40-44, < 120, < 4
        ("male", True, True, 73, 185, 7.2, 59),  # 70-74, >= 180, >= 7
        ("female", False, False, 61, 145, 5.4, 8),  # 60-64, 140-159, 5-5.9
        ("female", True, True, 53, 165, 6.1, 24),  # 50-54, 160-179, 6-6.9
        ("male", False, True, 58, 125, 4.2, 8),  # 55-59, 120-139, 4-4.9
        ("female", False, False, 74, 200, 3.1, 18),  # 70-74, >= 180, < 4
    ],
)
def test_clinical_reference_lab_cells(sex, diabetes, smoker, age, sbp, cholesterol, expected):
    got = printed(
        "lab", sex, age, sbp, smoker, total_cholesterol_mmol=cholesterol, diabetes=diabetes
    )
    assert got == expected


# whoishRisk SE_ASI column; key: (sex, diabetes, smoker, cholesterol in the band, first row)
LAB_CHART = {
    ("male", False, False, 3.8, 0): "24,19,16,13,10;19,15,11,9,7;14,11,8,6,5;11,8,6,5,3;"
    "9,6,4,3,2;7,5,3,2,2;5,4,2,2,1",
    ("male", False, False, 4.5, 0): "26,21,17,14,11;20,16,13,10,8;16,12,9,7,5;12,9,7,5,4;"
    "9,7,5,4,3;7,5,4,3,2;6,4,3,2,1",
    ("male", False, False, 5.5, 0): "29,23,19,15,12;22,18,14,11,9;17,13,10,8,6;13,10,8,6,4;"
    "10,8,6,4,3;8,6,4,3,2;6,4,3,2,1",
    ("male", False, False, 6.5, 0): "32,26,21,17,14;25,20,16,12,10;19,15,12,9,7;15,11,9,6,5;"
    "12,9,6,5,3;9,6,5,3,2;7,5,3,2,2",
    ("male", False, False, 7.5, 0): "35,29,23,19,15",
    ("male", True, True, 4.5, 0): "45,37,31,25,20;40,32,26,21,16;35,28,22,17,13;"
    "31,24,19,14,11;28,21,16,12,8;25,18,13,9,7;22,16,11,8,5",
    ("male", True, True, 5.5, 0): "49,41,34,28,23;44,36,29,23,19;40,32,25,19,15;"
    "35,28,21,16,12;32,24,18,13,10;28,21,15,11,8;25,18,13,9,6",
    ("male", True, True, 6.5, 0): "54,45,38,31,25;49,40,33,26,21;44,36,28,22,17;"
    "40,32,25,19,14;36,28,21,16,12;33,24,18,13,10;29,21,15,11,8",
    ("male", True, True, 7.5, 0): "59,50,42,35,29;54,45,37,30,24;50,41,33,26,20;"
    "46,37,29,22,17;42,33,25,19,14",
    ("female", True, True, 4.5, 1): "36,30,25,21,17;32,26,21,17,14;29,23,18,15,11;"
    "26,20,16,12,9;23,18,13,10,8;20,15,11,8,6",
    ("female", True, True, 5.5, 0): "42,36,31,26,22;38,32,27,22,18;34,28,23,19,15;"
    "31,25,20,16,13;28,22,17,13,10;25,20,15,11,9;23,17,13,10,7",
    ("female", True, True, 6.5, 0): "44,38,32,27,23;40,34,28,24,19;37,31,25,20,16;"
    "34,27,22,17,14;31,24,19,15,12;28,22,17,13,10;26,19,15,11,8",
    ("female", True, True, 7.5, 0): "46,40,34,29,24;43,36,30,25,21;40,33,27,22,18;"
    "37,30,24,19,15;34,27,21,17,13;32,25,19,15,11;29,22,17,13,9",
}


@pytest.mark.parametrize(("key", "table"), LAB_CHART.items(), ids=str)
def test_southeast_asia_lab_chart(key, table):
    """Published Southeast Asia laboratory chart (whoishRisk transcription)."""
    sex, diabetes, smoker, cholesterol, first_row = key

    def value_at(age: float, sbp: float) -> int:
        return printed(
            "lab", sex, age, sbp, smoker, total_cholesterol_mmol=cholesterol, diabetes=diabetes
        )

    assert grid_mismatches(table, first_row, value_at) == []


# WHOCVRisk "Southeast Asia" rows; key: (sex, smoker, BMI in the band, first row)
NONLAB_CHART = {
    ("male", False, 18.0, 0): "26,21,17,14,11;20,16,12,10,8;15,12,9,7,5;12,9,7,5,4;"
    "9,7,5,3,2;7,5,3,2,2;5,4,2,2,1",
    ("male", False, 22.0, 0): "28,23,19,15,12;22,17,14,11,8;17,13,10,8,6;13,10,7,5,4;"
    "10,7,5,4,3;8,6,4,3,2;6,4,3,2,1",
    ("male", False, 27.0, 0): "30,25,20,16,13;24,19,15,12,9;19,14,11,8,6;15,11,8,6,4;"
    "11,8,6,4,3;9,6,4,3,2;7,5,3,2,2",
    ("male", False, 33.0, 0): "32,26,21,17,14;26,21,16,13,10;21,16,12,9,7;16,12,9,7,5;"
    "13,9,7,5,4;10,7,5,4,2;8,6,4,3,2",
    ("male", False, 38.0, 0): "34,28,23,18,15;28,22,18,14,11;23,18,14,10,8;18,14,10,8,6;"
    "15,11,8,6,4;12,8,6,4,3;10,7,4,3,2",
    ("male", True, 19.0, 2): "23,18,14,10,8;19,14,11,8,6;15,11,8,6,4;13,9,6,4,3;10,7,5,3,2",
    ("female", False, 24.0, 0): "22,18,15,12,10;17,14,11,9,7;13,10,8,6,5;10,8,6,5,3;"
    "8,6,4,3,2;6,5,3,2,2;5,3,2,2,1",
    ("female", True, 16.0, 5): "13,9,7,5,4;11,8,5,4,3",
}


@pytest.mark.parametrize(("key", "table"), NONLAB_CHART.items(), ids=str)
def test_southeast_asia_nonlab_chart(key, table):
    """Published Southeast Asia non-laboratory chart (WHOCVRisk transcription). These cells
    confirm the BMI band midpoints 17.5, 22.5, 27.5, 32.5, 37.5: moving any midpoint by
    0.5-1 kg/m2 changes some printed value (except 22.5 -> 23)."""
    sex, smoker, bmi, first_row = key

    def value_at(age: float, sbp: float) -> int:
        return printed("nonlab", sex, age, sbp, smoker, bmi=bmi)

    assert grid_mismatches(table, first_row, value_at) == []


# ------------------------------------------------------------------------- chart cells


@pytest.mark.parametrize(
    ("age", "sbp", "cholesterol", "expected"),
    [
        (40, 119.9, 3.99, (42.5, 110, 3.5, "40-44", "<120", "<4")),
        (44.99, 120, 4, (42.5, 130, 4.5, "40-44", "120-139", "4-4.9")),
        (45, 159.9, 5.99, (47.5, 150, 5.5, "45-49", "140-159", "5-5.9")),
        (69.99, 160, 6, (67.5, 170, 6.5, "65-69", "160-179", "6-6.9")),
        (74.99, 180, 7, (72.5, 190, 7.5, "70-74", ">=180", ">=7")),
    ],
)
def test_lab_chart_cell_bands(age, sbp, cholesterol, expected):
    cell = chart_cell("lab", age, sbp, total_cholesterol_mmol=cholesterol)
    got = (
        cell.age,
        cell.sbp,
        cell.total_cholesterol_mmol,
        cell.age_band,
        cell.sbp_band,
        cell.total_cholesterol_band,
    )
    assert got == expected
    assert cell.bmi is None and cell.bmi_band is None


@pytest.mark.parametrize(
    ("bmi", "midpoint", "band"),
    [
        (19.99, 17.5, "<20"),
        (20, 22.5, "20-24"),
        (24.99, 22.5, "20-24"),
        (25, 27.5, "25-29"),
        (30, 32.5, "30-35"),
        (34.99, 32.5, "30-35"),
        (35, 37.5, ">=35"),
    ],
)
def test_nonlab_chart_cell_bmi_bands(bmi, midpoint, band):
    cell = chart_cell("nonlab", 50, 130, bmi=bmi)
    assert (cell.bmi, cell.bmi_band) == (midpoint, band)
    assert cell.total_cholesterol_mmol is None and cell.total_cholesterol_band is None


def test_nonlab_exact_risk_between_neighbouring_chart_cells():
    """The exact risk of a BMI inside a band lies between the risks at the band's edges."""
    low, mid, high = (
        ten_year_risk("nonlab", "female", 58, 142, True, bmi=bmi) for bmi in (25, 27.3, 29.9)
    )
    assert low < mid < high


# ------------------------------------------------------------------------ HEARTS bands


@pytest.mark.parametrize(
    ("risk", "code"),
    [
        (0.0, "lt5"),
        (0.0499999, "lt5"),
        (0.05, "5to10"),
        (0.0500001, "5to10"),
        (0.0999999, "5to10"),
        (0.10, "10to20"),
        (0.1000001, "10to20"),
        (0.1999999, "10to20"),
        (0.20, "20to30"),
        (0.2000001, "20to30"),
        (0.2999999, "20to30"),
        (0.30, "ge30"),
        (0.3000001, "ge30"),
        (1.0, "ge30"),
    ],
)
def test_chart_band_boundaries(risk, code):
    assert chart_band(risk) == code


@pytest.mark.parametrize("risk", [-0.01, 1.01, math.nan])
def test_chart_band_rejects_non_probabilities(risk):
    with pytest.raises(ValueError, match="risk"):
        chart_band(risk)


def test_bands_cover_zero_to_one_without_gaps_and_are_labelled():
    assert RISK_BANDS[0].lower == 0.0 and RISK_BANDS[-1].upper == math.inf
    for below, above in itertools.pairwise(RISK_BANDS):
        assert below.upper == above.lower
    assert set(BANDS_BY_CODE) == {"lt5", "5to10", "10to20", "20to30", "ge30"}
    assert [b.label_en for b in RISK_BANDS] == [
        "Less than 5%",
        "5% to less than 10%",
        "10% to less than 20%",
        "20% to less than 30%",
        "30% or more",
    ]
    assert all(b.label_vi and b.label_vi != b.label_en for b in RISK_BANDS)


@pytest.mark.parametrize(("risk", "percent"), [(0.0449, 4), (0.0451, 5), (0.5849, 58)])
def test_chart_percent_rounds_to_whole_percent(risk, percent):
    assert chart_percent(risk) == percent


# ---------------------------------------------------------------------- monotonicity
# Within plausible ranges (SBP 90-200 mmHg, cholesterol 2.5-10 mmol/L, BMI 15-45) every
# factor raises the total risk, although the female stroke cholesterol term alone falls
# after about 72.


def lab_risk(sex: str, age: float, sbp: float, smoker: bool, tc: float, diabetes: bool) -> float:
    return ten_year_risk("lab", sex, age, sbp, smoker, total_cholesterol_mmol=tc, diabetes=diabetes)


sexes = st.sampled_from(["male", "female"])
ages = st.floats(40, 74.4)
sbps = st.floats(90, 199)
cholesterols = st.floats(2.5, 9.9)
bmis = st.floats(15, 44.5)


@given(sexes, ages, sbps, st.booleans(), cholesterols, st.booleans(), st.floats(1, 10))
def test_lab_risk_rises_with_sbp(sex, age, sbp, smoker, tc, diabetes, step):
    higher = lab_risk(sex, age, sbp + step, smoker, tc, diabetes)
    assert higher > lab_risk(sex, age, sbp, smoker, tc, diabetes)


@given(sexes, ages, sbps, st.booleans(), cholesterols, st.booleans(), st.floats(0.5, 5))
def test_lab_risk_rises_with_age(sex, age, sbp, smoker, tc, diabetes, step):
    older = lab_risk(sex, min(age + step, 74.99), sbp, smoker, tc, diabetes)
    assert older > lab_risk(sex, age, sbp, smoker, tc, diabetes)


@given(sexes, ages, sbps, st.booleans(), cholesterols, st.booleans(), st.floats(0.1, 2))
def test_lab_risk_rises_with_cholesterol(sex, age, sbp, smoker, tc, diabetes, step):
    higher = lab_risk(sex, age, sbp, smoker, tc + step, diabetes)
    assert higher > lab_risk(sex, age, sbp, smoker, tc, diabetes)


@given(sexes, ages, sbps, cholesterols, st.booleans())
def test_lab_risk_higher_for_smokers_and_for_diabetes(sex, age, sbp, tc, flag):
    assert lab_risk(sex, age, sbp, True, tc, flag) > lab_risk(sex, age, sbp, False, tc, flag)
    assert lab_risk(sex, age, sbp, flag, tc, True) > lab_risk(sex, age, sbp, flag, tc, False)


@given(sexes, ages, sbps, st.booleans(), bmis, st.floats(1, 10), st.floats(0.5, 5))
def test_nonlab_risk_rises_with_sbp_age_and_bmi(sex, age, sbp, smoker, bmi, step, years):
    def risk(a: float = age, s: float = sbp, b: float = bmi, smk: bool = smoker) -> float:
        return ten_year_risk("nonlab", sex, a, s, smk, bmi=b)

    assert risk(s=sbp + step) > risk()
    assert risk(a=min(age + years, 74.99)) > risk()
    assert risk(b=bmi + step / 2) > risk()
    assert risk(smk=True) > risk(smk=False)


@given(sexes, st.sampled_from(["lab", "nonlab"]), ages, sbps, st.booleans(), bmis)
def test_risk_is_a_probability(sex, model, age, sbp, smoker, bmi):
    risk = ten_year_risk(
        model, sex, age, sbp, smoker, total_cholesterol_mmol=bmi / 5, diabetes=smoker, bmi=bmi
    )
    assert 0.0 < risk < 1.0


# ------------------------------------------------------------------------ validation


@pytest.mark.parametrize("age", [39.99, 75, 80, 18])
@pytest.mark.parametrize("model", ["lab", "nonlab"])
def test_age_outside_model_range_is_rejected(model, age):
    inputs = {"total_cholesterol_mmol": 5, "diabetes": False, "bmi": 22}
    with pytest.raises(ValueError, match=r"age must be between 40 and 74"):
        ten_year_risk(model, "male", age, 130, False, **inputs)
    with pytest.raises(ValueError, match=r"age must be between 40 and 74"):
        chart_cell(model, age, 130, total_cholesterol_mmol=5, bmi=22)


def test_age_range_edges_are_accepted():
    for age in (40, 74, 74.99):
        assert 0 < ten_year_risk("nonlab", "female", age, 130, False, bmi=22) < 1


@pytest.mark.parametrize(
    ("model", "kwargs", "argument"),
    [
        ("lab", {"diabetes": False}, "total_cholesterol_mmol"),
        ("lab", {"total_cholesterol_mmol": 5.0}, "diabetes"),
        ("lab", {"bmi": 22.0}, "total_cholesterol_mmol"),
        ("nonlab", {"total_cholesterol_mmol": 5.0, "diabetes": True}, "bmi"),
    ],
)
def test_model_inputs_are_required(model, kwargs, argument):
    with pytest.raises(ValueError, match=rf"{argument} is required by the {model} model"):
        ten_year_risk(model, "male", 55, 130, False, **kwargs)


@pytest.mark.parametrize(
    ("sbp", "tc", "bmi", "argument"),
    [
        (0, 5, 22, "sbp"),
        (math.nan, 5, 22, "sbp"),
        (130, -1, 22, "total_cholesterol_mmol"),
        (130, math.inf, 22, "total_cholesterol_mmol"),
        (130, 5, 0, "bmi"),
    ],
)
def test_non_positive_or_non_finite_measurements_are_rejected(sbp, tc, bmi, argument):
    model = "nonlab" if argument == "bmi" else "lab"
    inputs = {"total_cholesterol_mmol": tc, "diabetes": False, "bmi": bmi}
    with pytest.raises(ValueError, match=rf"^{argument} must be a positive finite number"):
        ten_year_risk(model, "female", 55, sbp, False, **inputs)


@pytest.mark.parametrize(
    ("model", "sex", "region", "argument"),
    [
        ("lab-based", "male", "A05GBDR_014_SEA", "model"),
        ("lab", "M", "A05GBDR_014_SEA", "sex"),
        ("lab", "male", "VNM", "region"),
    ],
)
def test_unknown_choices_are_rejected(model, sex, region, argument):
    with pytest.raises(ValueError, match=rf"^{argument} must be one of"):
        ten_year_risk(
            model, sex, 55, 130, False, total_cholesterol_mmol=5, diabetes=False, region=region
        )


def test_southeast_asia_is_the_default_region():
    assert "A05GBDR_014_SEA" in regions()
    kwargs = {"total_cholesterol_mmol": 5.2, "diabetes": False}
    assert ten_year_risk("lab", "female", 57, 138, True, **kwargs) == ten_year_risk(
        "lab", "female", 57, 138, True, region="A05GBDR_014_SEA", **kwargs
    )
