"""Risk factors, measurements and the hypertension and diabetes cascades of one adult.

Each adult (18 and over) gets a latent health state — behaviours, body size, blood pressure,
glucose, cholesterol and where they stand in the hypertension and diabetes cascades
(undiagnosed → diagnosed → treated → controlled) — from which every visit's measurements are
drawn with measurement noise. Every figure is cited in ``docs/synthetic-data.md``; the ones a
test checks against generated data are marked there.

Targets from Vietnamese surveys:

- Smoking, current (18–69): men 50.6%, women 1.5%; alcohol, drank in the past 30 days: men
  77.2%, women 11.1% (STEPS 2015: Bao TQ et al., "Risk factors for non-communicable diseases
  among adults in Vietnam: findings from the Vietnam STEPS survey 2015", J Glob Health Sci
  2020).
- Physical activity below 150 minutes a week: men 28.7%, women 38.4% (STEPS instrument, Huế
  city 2017: Phan ĐTD et al.; a city sample — no national figure was reachable).
- Overweight or obese (BMI ≥ 25), hypertension (≥ 140/90 mmHg or on treatment) and raised
  fasting glucose (≥ 7.0 mmol/L or on treatment) at ages 25–64: 20.57%, 28.3% and 6.96%
  (STEPS 2020: Vu LTH et al., Front Public Health 2022;10:1045202).
- Hypertension in men vs women (ages 25+): 28.3% vs 23.1% → odds ratio 1.31 (Son PT et al.,
  J Hum Hypertens 2012;26:268–80).
- Hypertension cascade, ages 30–79: 47% of people with hypertension diagnosed, 30% treated,
  13% controlled (WHO, Global report on hypertension 2023, Viet Nam country profile; partly
  verified, see CLINICAL.md).
- Diabetes: 63.6% of people with diabetes undiagnosed (national survey 2012, Ministry of
  Health / National Hospital of Endocrinology, reported by VNA/VietnamPlus); of treated
  patients 36.1% reach HbA1c < 7% (DiabCare Asia Vietnam, outpatients with type 2 diabetes).
- HbA1c from glucose: ADAG, estimated average glucose (mmol/L) = 1.59 × HbA1c − 2.59
  (Nathan DM et al., Diabetes Care 2008;31:1473–8), applied to the person's fasting level.

Modelling assumptions (no Vietnamese source reached; listed in the docs): the age gradients
(hypertension odds ×2 per decade, diabetes odds ×1.8 per decade), the BMI effects, the share
of diagnosed diabetes that is treated (75%), former smokers, the shapes of the BP, glucose,
cholesterol, waist and heart-rate distributions, and that cascade shares do not vary by age.

The intercepts of the BMI, hypertension and diabetes models are solved at first use so the
population (``demography``) reproduces the survey prevalences at ages 25–64: exact numerical
integration over the age–sex structure and the BMI distribution, no sampling.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from . import demography

# -- behaviours -------------------------------------------------------------------------------
SMOKING_CURRENT = {True: 0.506, False: 0.015}
SMOKING_FORMER = {True: 0.10, False: 0.005}  # assumption
DRINKER = {True: 0.772, False: 0.111}
INACTIVE = {True: 0.287, False: 0.384}  # < 150 min/week of moderate-to-vigorous activity

# -- targets the intercepts are solved for (ages 25–64) -----------------------------------------
TARGET_OVERWEIGHT_25_64 = 0.2057
TARGET_HTN_25_64 = 0.283
TARGET_DM_25_64 = 0.0696
HTN_SEX_OR = (0.283 / 0.717) / (0.231 / 0.769)

# -- cascades ---------------------------------------------------------------------------------
HTN_DIAGNOSED = 0.47
HTN_TREATED_GIVEN_DIAGNOSED = 0.30 / 0.47
HTN_CONTROLLED_GIVEN_TREATED = 0.13 / 0.30
DM_DIAGNOSED = 1 - 0.636
DM_TREATED_GIVEN_DIAGNOSED = 0.75  # assumption
DM_CONTROLLED_GIVEN_TREATED = 0.361

# -- model shapes (assumptions) ------------------------------------------------------------------
BMI_SIGMA = 0.13  # of ln BMI
BMI_INACTIVE_SHIFT = 0.02  # ln BMI
HTN_AGE_SLOPE = math.log(2.0) / 10
HTN_BMI_SLOPE = 0.08
DM_AGE_SLOPE = math.log(1.8) / 10
DM_BMI_SLOPE = 0.10

_Z = [-4.0 + 0.2 * i for i in range(41)]
_ZW = [math.exp(-z * z / 2) for z in _Z]
_ZW = [w / sum(_ZW) for w in _ZW]

STAGES = ("none", "undiagnosed", "diagnosed", "treated", "controlled")


def _bmi_age_effect(age: int) -> float:
    """ln BMI rises 0.03 a decade from 20 to 60 and falls 0.03 a decade after 70."""
    if age < 20:
        return 0.0
    if age <= 60:
        return 0.003 * (age - 20)
    if age <= 70:
        return 0.12
    return 0.12 - 0.003 * (age - 70)


def _expit(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _solve(f: Callable[[float], float], target: float, lo: float = -20.0, hi: float = 20.0
           ) -> float:
    """x with f(x) = target for an increasing f, by bisection."""
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _weights_25_64() -> list[tuple[int, bool, float]]:
    w = demography.weights_by_age_sex()
    cells = [(a, m, w[(a, m)]) for a in range(25, 65) for m in (True, False)]
    total = sum(x for _, _, x in cells)
    return [(a, m, x / total) for a, m, x in cells]


@dataclass(frozen=True)
class Calibration:
    bmi_mu: float  # ln BMI intercept
    htn_b0: float  # logit intercept at age 50, female, BMI 22
    dm_b0: float


@cache
def calibration() -> Calibration:
    cells = _weights_25_64()

    def overweight(mu: float) -> float:
        total = 0.0
        for age, male, w in cells:
            for inactive, p in ((True, INACTIVE[male]), (False, 1 - INACTIVE[male])):
                m = mu + _bmi_age_effect(age) + (BMI_INACTIVE_SHIFT if inactive else 0.0)
                total += w * p * 0.5 * math.erfc((math.log(25) - m) / BMI_SIGMA / math.sqrt(2))
        return total

    mu = _solve(overweight, TARGET_OVERWEIGHT_25_64, 2.0, 4.0)

    def prevalence(b0: float, age_slope: float, bmi_slope: float, sex_or: float) -> float:
        total = 0.0
        for age, male, w in cells:
            base = b0 + age_slope * (age - 50) + (math.log(sex_or) if male else 0.0)
            for inactive, p in ((True, INACTIVE[male]), (False, 1 - INACTIVE[male])):
                m = mu + _bmi_age_effect(age) + (BMI_INACTIVE_SHIFT if inactive else 0.0)
                total += w * p * sum(zw * _expit(base + bmi_slope * (math.exp(m + BMI_SIGMA * z) - 22))
                                     for z, zw in zip(_Z, _ZW))
        return total

    htn = _solve(lambda b: prevalence(b, HTN_AGE_SLOPE, HTN_BMI_SLOPE, HTN_SEX_OR), TARGET_HTN_25_64)
    dm = _solve(lambda b: prevalence(b, DM_AGE_SLOPE, DM_BMI_SLOPE, 1.0), TARGET_DM_25_64)
    return Calibration(mu, htn, dm)


@dataclass(slots=True)
class Health:
    """The latent state of one adult; visits draw measurements from it."""

    smoking: str  # "current", "former", "never"
    drinker: bool
    activity_min_week: int
    height_cm: float
    bmi: float
    waist_cm: float
    heart_rate: float
    sbp: float
    dbp: float
    htn: str  # one of STAGES
    fpg: float  # fasting plasma glucose, mmol/L
    dm: str  # one of STAGES
    cholesterol: float  # total, mmol/L
    htn_years: float  # years since diagnosis (diagnosed and beyond)
    dm_years: float
    htn_drugs: tuple[int, ...]  # indexes into codes.HTN_DRUGS
    dm_drugs: tuple[int, ...]

    @property
    def hba1c(self) -> float:
        """HbA1c (%) whose ADAG estimated average glucose is the fasting level."""
        return (self.fpg + 2.59) / 1.59


def _cascade(rng: random.Random, diagnosed: float, treated: float, controlled: float) -> str:
    if rng.random() >= diagnosed:
        return "undiagnosed"
    if rng.random() >= treated:
        return "diagnosed"
    return "controlled" if rng.random() < controlled else "treated"


def adult(rng: random.Random, age: int, male: bool) -> Health:
    """Draw the latent health state of an adult of that age and sex."""
    cal = calibration()
    u = rng.random()
    smoking = ("current" if u < SMOKING_CURRENT[male] else
               "former" if u < SMOKING_CURRENT[male] + SMOKING_FORMER[male] else "never")
    drinker = rng.random() < DRINKER[male]
    inactive = rng.random() < INACTIVE[male]
    if inactive:
        activity = 0 if rng.random() < 0.3 else rng.randrange(10, 150, 10)
    else:
        activity = 150 + 10 * int(rng.expovariate(1 / 20))

    height = rng.gauss(168.1 if male else 156.2, 6.0 if male else 5.5) - 0.1 * max(age - 18, 0)
    bmi = math.exp(cal.bmi_mu + _bmi_age_effect(age) + (BMI_INACTIVE_SHIFT if inactive else 0.0)
                   + BMI_SIGMA * rng.gauss(0, 1))
    waist = (2.6 * bmi + 21 if male else 2.4 * bmi + 24) + rng.gauss(0, 4)
    heart_rate = min(max(rng.gauss(76, 9), 50), 120)

    logit = HTN_AGE_SLOPE * (age - 50) + HTN_BMI_SLOPE * (bmi - 22)
    has_htn = rng.random() < _expit(cal.htn_b0 + logit + (math.log(HTN_SEX_OR) if male else 0.0))
    htn = "none"
    if has_htn:
        htn = _cascade(rng, HTN_DIAGNOSED, HTN_TREATED_GIVEN_DIAGNOSED, HTN_CONTROLLED_GIVEN_TREATED)
    if htn == "none":
        sbp = min(max(rng.gauss(110 + 0.35 * (age - 30) + (4 if male else 0), 9), 92), 136)
        dbp = min(max(0.5 * sbp + 12 + rng.gauss(0, 5), 56), 86)
    elif htn == "controlled":
        sbp, dbp = rng.uniform(116, 135), rng.uniform(68, 85)
    else:
        sbp = 143 + rng.expovariate(1 / 14)
        dbp = min(max(0.45 * sbp + 23 + rng.gauss(0, 7), 70), 130)

    has_dm = rng.random() < _expit(cal.dm_b0 + DM_AGE_SLOPE * (age - 50) + DM_BMI_SLOPE * (bmi - 22))
    dm = "none"
    if has_dm:
        dm = _cascade(rng, DM_DIAGNOSED, DM_TREATED_GIVEN_DIAGNOSED, DM_CONTROLLED_GIVEN_TREATED)
    if dm == "none":
        fpg = min(math.exp(math.log(5.0) + 0.09 * rng.gauss(0, 1)), 6.6)
    elif dm == "controlled":
        fpg = rng.uniform(5.4, 7.9)
    elif dm == "treated":
        fpg = 8.9 + rng.expovariate(1 / 3)
    else:
        fpg = 7.4 + rng.expovariate(1 / 3)

    cholesterol = min(max(rng.gauss(4.6 + 0.015 * (age - 30) + 0.03 * (bmi - 22), 0.9), 2.5), 10.0)

    def years_since(stage: str) -> float:
        return rng.uniform(0.5, min(10.0, max(age - 25, 1))) if stage in STAGES[2:] else 0.0

    htn_years, dm_years = years_since(htn), years_since(dm)
    htn_drugs: tuple[int, ...] = ()
    if htn in ("treated", "controlled"):
        v = rng.random()
        htn_drugs = (0,) if v < 0.5 else (1,) if v < 0.7 else (2,) if v < 0.9 else (0, 3)
    dm_drugs: tuple[int, ...] = ()
    if dm in ("treated", "controlled"):
        dm_drugs = (0, 1) if rng.random() < 0.3 else (0,)
    return Health(smoking, drinker, activity, height, bmi, waist, heart_rate, sbp, dbp, htn,
                  fpg, dm, cholesterol, htn_years, dm_years, htn_drugs, dm_drugs)


def under_care(h: Health) -> bool:
    """On treatment for hypertension or diabetes: followed up at the commune station."""
    return h.htn in ("treated", "controlled") or h.dm in ("treated", "controlled")
