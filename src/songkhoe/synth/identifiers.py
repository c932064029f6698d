"""Identifiers a Vietnamese person carries: citizen ID (CCCD), social insurance number, mobile.

Citizen ID (số định danh cá nhân, printed on the CCCD card), 12 digits (Decree 137/2015/NĐ-CP
art. 13; Circular 07/2016/TT-BCA; Identity Law 2023 art. 12):

- 3 digits: code of the province where the birth was registered — the 63 pre-2025 codes of
  Circular 07/2016/TT-BCA Appendix 1 (``admin.OLD_PROVINCES``). The number is fixed at birth
  registration and did not change with the 2025 merger. For births registered after
  1 July 2025 we use the new province's code, which is always the code of one of the
  provinces it took in, so it is a valid code under either table [to verify: the Ministry of
  Public Security's table for births after the reform];
- 1 digit: century and sex — 1900s: male 0, female 1; 2000s: 2 / 3; 2100s: 4 / 5;
- 2 digits: the last two digits of the year of birth;
- 6 digits: a random serial. There is no check digit.

The serial is an affine permutation of the person's index (seeded), so IDs are unique within
one generated population of up to 1,000,000 people and look random.

Social insurance number (mã số BHXH): 10 digits, the health identifier of XML 130. Its inner
structure is not used here [to verify]: an affine permutation of the index over 10¹⁰ makes
ten unique, random-looking digits.

Mobile numbers: 10 digits starting 0 and a carrier prefix in use since the 2018 change from
11 to 10 digits (Ministry of Information and Communications, Decision 798/QĐ-BTTTT, 2018):
Viettel 032–039, 086, 096–098; VinaPhone 081–085, 088, 091, 094; MobiFone 070, 076–079, 089,
090, 093; Vietnamobile 052, 056, 058, 092; Gmobile 059, 099.
"""

from __future__ import annotations

import random

CCCD_SYSTEM = "urn:vn:cccd"
BHXH_SYSTEM = "urn:vn:bhxh"

MOBILE_PREFIXES = [
    "032", "033", "034", "035", "036", "037", "038", "039", "086", "096", "097", "098",
    "081", "082", "083", "084", "085", "088", "091", "094",
    "070", "076", "077", "078", "079", "089", "090", "093",
    "052", "056", "058", "092", "059", "099",
]


class Serials:
    """Unique random-looking serials: i ↦ (a·i + b) mod m, a bijection when gcd(a, m) = 1."""

    def __init__(self, seed: int, modulus: int) -> None:
        rng = random.Random(f"serials-{seed}-{modulus}")
        while True:
            a = rng.randrange(modulus // 3, modulus)
            if a % 2 and a % 5:  # coprime with any power of ten
                break
        self.a, self.b, self.m = a, rng.randrange(modulus), modulus

    def __call__(self, index: int) -> int:
        return (self.a * index + self.b) % self.m


def century_sex_digit(birth_year: int, male: bool) -> int:
    """0/1 for the 1900s, 2/3 for the 2000s, 4/5 for the 2100s (male/female)."""
    century = (birth_year // 100) - 19
    if not 0 <= century <= 4:
        raise ValueError(f"year of birth {birth_year} is outside 1900–2399")
    return 2 * century + (0 if male else 1)


def cccd(province_code: int, birth_year: int, male: bool, serial: int) -> str:
    """The 12-digit citizen ID."""
    return (f"{province_code:03d}{century_sex_digit(birth_year, male)}"
            f"{birth_year % 100:02d}{serial:06d}")


def parse_cccd(number: str) -> tuple[int, int, bool]:
    """(province code, year of birth, male) from a citizen ID."""
    if len(number) != 12 or not number.isdigit():
        raise ValueError(f"{number!r} is not a 12-digit citizen ID")
    digit = int(number[3])
    year = 1900 + 100 * (digit // 2) + int(number[4:6])
    return int(number[:3]), year, digit % 2 == 0


def mobile(rng: random.Random) -> str:
    return rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10_000_000):07d}"
