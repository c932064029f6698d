"""The age and sex structure of Viet Nam's population.

Age bands and their shares (CIA World Factbook, Vietnam, "Age structure", 2018 estimate for a
population of 97,040,334): 0–14 23.27%, 15–24 15.81%, 25–54 45.67%, 55–64 8.90%, 65 and over
6.35%.

Sex: 49.8% of the population is male (2019 Population and Housing Census, GSO: 47,881,061 of
96,208,984). Within bands (World Factbook 2017 estimate): 0–14 52.6% male (11,909,326 /
10,735,324), 65+ 38.8% male (2,281,923 / 3,601,075); the male share of 15–64 (49.9%) follows
from those three figures.

Within a band every single year of age is equally likely, except 65 and over, where the
weight falls by 9% a year of age up to 100 (a survival-shaped tail; modelling assumption).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from itertools import accumulate

BANDS: list[tuple[int, int, float]] = [  # (first age, last age, share of the population)
    (0, 14, 0.2327), (15, 24, 0.1581), (25, 54, 0.4567), (55, 64, 0.0890), (65, 100, 0.0635),
]
MALE_SHARE = 0.498
MALE_SHARE_0_14 = 11_909_326 / (11_909_326 + 10_735_324)
MALE_SHARE_65 = 2_281_923 / (2_281_923 + 3_601_075)
MALE_SHARE_15_64 = ((MALE_SHARE - 0.2327 * MALE_SHARE_0_14 - 0.0635 * MALE_SHARE_65)
                    / (0.1581 + 0.4567 + 0.0890))
_OLD_DECAY = 0.91


def _age_weights() -> list[float]:
    weights = [0.0] * 101
    for lo, hi, share in BANDS:
        if lo < 65:
            for age in range(lo, hi + 1):
                weights[age] = share / (hi - lo + 1)
        else:
            tail = [_OLD_DECAY ** (age - lo) for age in range(lo, hi + 1)]
            for age, w in zip(range(lo, hi + 1), tail):
                weights[age] = share * w / sum(tail)
    return weights


AGE_WEIGHTS = _age_weights()
_AGE_CUM = list(accumulate(AGE_WEIGHTS))


def male_share(age: int) -> float:
    if age <= 14:
        return MALE_SHARE_0_14
    if age >= 65:
        return MALE_SHARE_65
    return MALE_SHARE_15_64


def age_sex(rng: random.Random) -> tuple[int, bool]:
    """(age in whole years, male) of one person drawn from the population."""
    age = min(bisect_right(_AGE_CUM, rng.random() * _AGE_CUM[-1]), 100)
    return age, rng.random() < male_share(age)


def weights_by_age_sex() -> dict[tuple[int, bool], float]:
    """P(age, sex) for every age 0–100: the exact distribution ``age_sex`` draws from."""
    total = _AGE_CUM[-1]
    out: dict[tuple[int, bool], float] = {}
    for age, w in enumerate(AGE_WEIGHTS):
        m = male_share(age)
        out[(age, True)] = w / total * m
        out[(age, False)] = w / total * (1 - m)
    return out
