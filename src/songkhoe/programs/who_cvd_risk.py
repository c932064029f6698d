"""WHO 2019 cardiovascular risk models (laboratory and non-laboratory), recalibrated per GBD
region; Viet Nam is in Southeast Asia (``A05GBDR_014_SEA``).

Sources
    WHO CVD Risk Chart Working Group. World Health Organization cardiovascular disease risk
    charts: revised models to estimate risk in 21 global regions. Lancet Glob Health
    2019;7:e1332-45. Coefficients and baseline survival from the authors' Stata package
    ``whocvdrisk`` (repository ``skkceu/stata``, file ``whocvdrisk_erfc_score_v03.ado``); the
    regional recalibration from ``whocvdrisk_t10_calparms_gbd_sens0.dta`` (GBD 2017), as
    transcribed in ``shared/reference/CLINICAL.md``. The data live in
    ``data/who_cvd_2019.json``.

Formulas (separately by sex, for each endpoint e in {CHD/MI, stroke})
    a = age - 60, s = SBP - 120 (mmHg), t = total cholesterol - 6 (mmol/L), b = BMI - 25;
    smoking (current) and diabetes are 0/1.
    lab:     lp = b1 a + b2 t + b3 s + b4 diabetes + b5 smoking
                  + a (b6 t + b7 s + b8 diabetes + b9 smoking)
    non-lab: lp = b1 a + b2 b + b3 s + b4 smoking + a (b5 b + b6 s + b7 smoking)
    uncalibrated p_e = 1 - S0_e ** exp(lp_e)
    recalibrated r_e = 1 - exp(-exp(cons_e + slope_e * ln(-ln(1 - p_e))))
    10-year CVD risk = 1 - (1 - r_CHD) (1 - r_stroke)
The printed charts evaluate each cell at the band midpoints (age 42.5 ... 72.5; SBP 110, 130,
150, 170, 190; cholesterol 3.5 ... 7.5; BMI 17.5 ... 37.5) and print the whole percent.

Verification (what was checked, against what)
    * Coefficients and baseline survival, both models, both sexes, both endpoints: read term by
      term in ``skkceu/stata`` ``whocvdrisk_erfc_score_v03.ado`` (e.g. ``replace lp_m1_chd =
      0.0719227*cenages +0.2284944*centchol ...`` and ``replace erfc_chdr_m1 =
      1-0.9540108^exp(lp_m1_chd) if sex==1``); all match CLINICAL.md. The same file confirms the
      centring (``centchol = tchol - 6``, ``censbp = sbp - 120``, ``cenages = ages - 60``,
      ``cenbmi = bmi - 25``); ``whocvdrisk.ado`` confirms the recalibration
      (``loglogpre = ln(-ln(1-prerisk))``, ``calrisk = 1 - exp(-exp(b_cons +
      b_slope*loglogpre))``, GBD-region parameters ``cal2_*``) and the total
      ``1 - (1 - cal_erfc_chdr)*(1 - cal_erfc_strr)``.
    * Southeast Asia recalibration (cons, slope): not readable at source (the ``.dta`` is
      binary). Confirmed indirectly: the module reproduces, at the band midpoints and rounded
      to whole percent, 410 Southeast Asia laboratory-chart cells transcribed in
      ``DylanRJCollins/whoishRisk`` ``inst/extdata/WHO_2019_Scores.csv`` (column ``SE_ASI``;
      men with neither factor, men and women with diabetes who smoke) and 245 non-laboratory
      cells transcribed in ``mhajihos/WHOCVRisk`` ``data/CVDRisk.csv`` (men who do not smoke
      in every BMI band, plus some cells of male smokers and of women), besides the six cells
      of CLINICAL.md. Shifting any one of the parameters tried by 0.01 breaks some of those
      cells.
    * Non-laboratory BMI bands (< 20, 20-24, 25-29, 30-35, >= 35): as in the chart
      transcriptions of ``mhajihos/WHOCVRisk``, the Simple app (``org.simple.clinic``
      ``NonLabBasedCVDRiskCalculator``) and the ``CardiovascularRisk`` R package. Their
      midpoints (17.5, 22.5, 27.5, 32.5, 37.5) are stated by no source reached; they follow the
      rule of the other factors and reproduce all 245 transcribed cells, whereas moving any of
      them by 0.5-1 kg/m2 changes some printed value (22.5 -> 23.0 alone does not).
    * Not seen: the printed WHO/HEARTS chart itself and the Lancet paper's text on the chart
      construction; the transcriptions above are third-party.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal

Model = Literal["lab", "nonlab"]
Sex = Literal["male", "female"]

DEFAULT_REGION = "A05GBDR_014_SEA"
AGE_MIN, AGE_LIMIT = 40.0, 75.0
"""The models are defined for ages 40 to 74 years: ``AGE_MIN <= age < AGE_LIMIT``."""


@dataclass(frozen=True, slots=True)
class RiskBand:
    """A WHO HEARTS chart risk category: ``lower <= risk < upper`` (fractions of 1)."""

    code: str
    lower: float
    upper: float
    label_vi: str
    label_en: str


RISK_BANDS: tuple[RiskBand, ...] = (
    RiskBand("lt5", 0.0, 0.05, "Dưới 5%", "Less than 5%"),
    RiskBand("5to10", 0.05, 0.10, "Từ 5% đến dưới 10%", "5% to less than 10%"),
    RiskBand("10to20", 0.10, 0.20, "Từ 10% đến dưới 20%", "10% to less than 20%"),
    RiskBand("20to30", 0.20, 0.30, "Từ 20% đến dưới 30%", "20% to less than 30%"),
    RiskBand("ge30", 0.30, math.inf, "Từ 30% trở lên", "30% or more"),
)
"""WHO HEARTS categories (< 5%, 5 to < 10%, 10 to < 20%, 20 to < 30%, >= 30%), lowest first."""

BANDS_BY_CODE: Mapping[str, RiskBand] = MappingProxyType({band.code: band for band in RISK_BANDS})


@dataclass(frozen=True, slots=True)
class ChartCell:
    """The chart cell a person falls in: each factor's band label and the midpoint the chart
    evaluates it at. Cholesterol is set for the laboratory chart, BMI for the other."""

    age: float
    sbp: float
    total_cholesterol_mmol: float | None
    bmi: float | None
    age_band: str
    sbp_band: str
    total_cholesterol_band: str | None
    bmi_band: str | None


@cache
def _data() -> dict[str, Any]:
    path = resources.files("songkhoe.programs") / "data" / "who_cvd_2019.json"
    data: dict[str, Any] = json.loads(path.read_bytes())
    return data


def regions() -> tuple[str, ...]:
    """Region codes (GBD region identifiers as used by ``whocvdrisk``) with recalibration data."""
    return tuple(_data()["recalibration"])


def _positive(name: str, value: float | None, model: Model) -> float:
    if value is None:
        raise ValueError(f"{name} is required by the {model} model")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_age(age: float) -> None:
    if not (AGE_MIN <= age < AGE_LIMIT):
        raise ValueError(
            f"age must be between {AGE_MIN:g} and {AGE_LIMIT - 1:g} years "
            f"({AGE_MIN:g} <= age < {AGE_LIMIT:g}) for the WHO 2019 models, got {age!r}"
        )


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def ten_year_risk(
    model: Model,
    sex: Sex,
    age: float,
    sbp: float,
    smoker: bool,
    *,
    total_cholesterol_mmol: float | None = None,
    diabetes: bool | None = None,
    bmi: float | None = None,
    region: str = DEFAULT_REGION,
) -> float:
    """Recalibrated 10-year risk (0..1) of fatal or non-fatal MI or stroke.

    ``model="lab"`` needs ``total_cholesterol_mmol`` and ``diabetes``; ``model="nonlab"``
    needs ``bmi``; inputs the chosen model does not use are ignored. Raises ``ValueError``
    naming the argument for an age outside 40-74, a missing or non-positive input, or an
    unknown model, sex or region.
    """
    data = _data()
    _check_choice("model", model, ("lab", "nonlab"))
    _check_choice("sex", sex, ("male", "female"))
    _check_choice("region", region, regions())
    _check_age(age)
    centre = data["centring"]
    x = {
        "age": age - centre["age"],
        "sbp": _positive("sbp", sbp, model) - centre["sbp"],
        "smoking": 1.0 if smoker else 0.0,
    }
    if model == "lab":
        tc = _positive("total_cholesterol_mmol", total_cholesterol_mmol, model)
        if diabetes is None:
            raise ValueError("diabetes is required by the lab model")
        x["total_cholesterol"] = tc - centre["total_cholesterol"]
        x["diabetes"] = 1.0 if diabetes else 0.0
    else:
        x["bmi"] = _positive("bmi", bmi, model) - centre["bmi"]

    survival = 1.0
    for terms, log_log_baseline, cons, slope in _equations(model, sex, region):
        lp = sum(beta * math.prod(x[factor] for factor in factors) for factors, beta in terms)
        # ln(-ln(1 - p)) with p = 1 - S0 ** exp(lp), computed without forming p
        log_cumulative_hazard = lp + log_log_baseline
        calibrated = cons + slope * log_cumulative_hazard
        survival *= math.exp(-math.exp(calibrated))
    return 1.0 - survival


@cache
def _equations(model: Model, sex: Sex, region: str) -> tuple[Any, ...]:
    """Per endpoint: the terms (factors, coefficient), ln(-ln(S0)) and the recalibration,
    read once from the data (the same numbers, in the same order, as the data gives them)."""
    data = _data()
    out = []
    for endpoint in data["endpoints"]:
        fitted = data["models"][model][sex][endpoint]
        calibration = data["recalibration"][region][model][sex][endpoint]
        terms = tuple((tuple(term.split("*")), beta)
                      for term, beta in fitted["coefficients"].items())
        out.append((terms, math.log(-math.log(fitted["baseline_survival"])),
                    calibration["cons"], calibration["slope"]))
    return tuple(out)


def chart_band(risk: float) -> str:
    """Code of the WHO HEARTS category (see ``RISK_BANDS``) of a risk given as 0..1.

    To colour a printed chart cell, pass the printed value: ``chart_percent(risk) / 100``.
    """
    if not (0.0 <= risk <= 1.0):
        raise ValueError(f"risk must be a probability between 0 and 1, got {risk!r}")
    return next(band.code for band in reversed(RISK_BANDS) if risk >= band.lower)


def chart_percent(risk: float) -> int:
    """The risk as the charts print it: a whole percent, halves rounded up."""
    return math.floor(risk * 100 + 0.5)


def _band(factor: str, value: float) -> dict[str, Any]:
    bands = _data()["chart"][factor]
    return next(b for b in reversed(bands) if b["lower"] is None or value >= b["lower"])


def chart_cell(
    model: Model,
    age: float,
    sbp: float,
    *,
    total_cholesterol_mmol: float | None = None,
    bmi: float | None = None,
) -> ChartCell:
    """Map raw inputs to the chart's bands and their midpoints.

    ``ten_year_risk`` at the returned midpoints is the risk the printed chart shows for this
    person; validation is as in ``ten_year_risk``.
    """
    _check_choice("model", model, ("lab", "nonlab"))
    _check_age(age)
    age_band = _band("age", age)
    sbp_band = _band("sbp", _positive("sbp", sbp, model))
    tc_band: dict[str, Any] | None = None
    bmi_band: dict[str, Any] | None = None
    if model == "lab":
        tc_band = _band(
            "total_cholesterol", _positive("total_cholesterol_mmol", total_cholesterol_mmol, model)
        )
    else:
        bmi_band = _band("bmi", _positive("bmi", bmi, model))
    return ChartCell(
        age=age_band["midpoint"],
        sbp=sbp_band["midpoint"],
        total_cholesterol_mmol=tc_band["midpoint"] if tc_band else None,
        bmi=bmi_band["midpoint"] if bmi_band else None,
        age_band=age_band["label"],
        sbp_band=sbp_band["label"],
        total_cholesterol_band=tc_band["label"] if tc_band else None,
        bmi_band=bmi_band["label"] if bmi_band else None,
    )
