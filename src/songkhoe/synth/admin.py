"""Viet Nam's administrative units after the 1 July 2025 reform: 34 provinces and their communes.

Two levels since 1 July 2025 (Resolution 202/2025/QH15 on provinces; the National Assembly
Standing Committee's resolutions on communes): 6 centrally-run cities and 28 provinces, and
under them communes (``xã``), wards (``phường``) and special zones (``đặc khu``).

Names and codes come from the ``vietnam-provinces`` package, release 2025.10.1 (data retrieved
2025-10-18 from the General Statistics Office's list of administrative units; 34 provinces,
3,321 communes: 2,621 xã, 687 phường, 13 đặc khu). Its codes are the statistics office's
codes, which the new units inherit from one of the units they merged.

The package is licensed GPL-3.0-or-later (its source repository's ``pyproject.toml``); its
data — official names and codes — are facts published by the statistics office. songkhoe reads
only the data file the package ships; see ``docs/synthetic-data.md`` for the licence note.

The citizen ID still carries the 3-digit code of the *pre-2025* province of birth registration
(Circular 07/2016/TT-BCA, Appendix 1: 63 provinces, 001–096). ``OLD_PROVINCES`` lists those
63 codes and names, and ``MERGED_FROM`` which of them each new province took in (Resolution
202/2025/QH15; the mapping agrees with the conversion table in the ``vietnam-provinces``
source repository, ``vietnam_provinces/_province_conversion_2025.py``, where Tiền Giang (82)
also contributes a few wards to Tây Ninh).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import orjson

SOURCE = "vietnam-provinces 2025.10.1 (GSO data retrieved 2025-10-18)"


@dataclass(frozen=True, slots=True)
class Commune:
    code: int  # statistics office code, 5 digits when written out
    name: str  # "Phường Hoàn Kiếm", "Xã Thượng Lâm", "Đặc khu Phú Quốc"
    kind: str  # "xã", "phường" or "đặc khu"
    province: int

    @property
    def code5(self) -> str:
        return f"{self.code:05d}"


@dataclass(frozen=True, slots=True)
class Province:
    code: int  # statistics office code, 2 digits when written out
    name: str  # "Thành phố Hà Nội", "Cao Bằng"
    city: bool  # a centrally-run city (thành phố trực thuộc trung ương)
    phone_code: int
    communes: tuple[Commune, ...]

    @property
    def code2(self) -> str:
        return f"{self.code:02d}"

    @property
    def title(self) -> str:
        """The name as it follows a noun: "thành phố Hà Nội", "tỉnh Cao Bằng"."""
        if self.city:
            return "thành phố " + self.name.removeprefix("Thành phố ")
        return "tỉnh " + self.name

    @property
    def short_name(self) -> str:
        return self.name.removeprefix("Thành phố ")


# Circular 07/2016/TT-BCA, Appendix 1: province codes of birth registration in the citizen ID.
OLD_PROVINCES: dict[int, str] = {
    1: "Hà Nội", 2: "Hà Giang", 4: "Cao Bằng", 6: "Bắc Kạn", 8: "Tuyên Quang", 10: "Lào Cai",
    11: "Điện Biên", 12: "Lai Châu", 14: "Sơn La", 15: "Yên Bái", 17: "Hòa Bình",
    19: "Thái Nguyên", 20: "Lạng Sơn", 22: "Quảng Ninh", 24: "Bắc Giang", 25: "Phú Thọ",
    26: "Vĩnh Phúc", 27: "Bắc Ninh", 30: "Hải Dương", 31: "Hải Phòng", 33: "Hưng Yên",
    34: "Thái Bình", 35: "Hà Nam", 36: "Nam Định", 37: "Ninh Bình", 38: "Thanh Hóa",
    40: "Nghệ An", 42: "Hà Tĩnh", 44: "Quảng Bình", 45: "Quảng Trị", 46: "Thừa Thiên Huế",
    48: "Đà Nẵng", 49: "Quảng Nam", 51: "Quảng Ngãi", 52: "Bình Định", 54: "Phú Yên",
    56: "Khánh Hòa", 58: "Ninh Thuận", 60: "Bình Thuận", 62: "Kon Tum", 64: "Gia Lai",
    66: "Đắk Lắk", 67: "Đắk Nông", 68: "Lâm Đồng", 70: "Bình Phước", 72: "Tây Ninh",
    74: "Bình Dương", 75: "Đồng Nai", 77: "Bà Rịa - Vũng Tàu", 79: "Hồ Chí Minh",
    80: "Long An", 82: "Tiền Giang", 83: "Bến Tre", 84: "Trà Vinh", 86: "Vĩnh Long",
    87: "Đồng Tháp", 89: "An Giang", 91: "Kiên Giang", 92: "Cần Thơ", 93: "Hậu Giang",
    94: "Sóc Trăng", 95: "Bạc Liêu", 96: "Cà Mau",
}

# New province code -> the pre-2025 provinces it took in (Resolution 202/2025/QH15).
MERGED_FROM: dict[int, tuple[int, ...]] = {
    1: (1,), 4: (4,), 8: (2, 8), 11: (11,), 12: (12,), 14: (14,), 15: (10, 15), 19: (6, 19),
    20: (20,), 22: (22,), 24: (24, 27), 25: (17, 25, 26), 31: (30, 31), 33: (33, 34),
    37: (35, 36, 37), 38: (38,), 40: (40,), 42: (42,), 44: (44, 45), 46: (46,), 48: (48, 49),
    51: (51, 62), 52: (52, 64), 56: (56, 58), 66: (54, 66), 68: (60, 67, 68), 75: (70, 75),
    79: (74, 77, 79), 80: (72, 80), 82: (82, 87), 86: (83, 84, 86), 91: (89, 91),
    92: (92, 93, 94), 96: (95, 96),
}


@cache
def provinces() -> dict[int, Province]:
    """All 34 provinces by code, in code order, each with its communes in code order."""
    from vietnam_provinces import NESTED_DIVISIONS_JSON_PATH

    data = orjson.loads(NESTED_DIVISIONS_JSON_PATH.read_bytes())
    out: dict[int, Province] = {}
    for p in sorted(data, key=lambda p: p["code"]):
        communes = tuple(Commune(w["code"], w["name"], w["division_type"], p["code"])
                         for w in sorted(p["wards"], key=lambda w: w["code"]))
        out[p["code"]] = Province(p["code"], p["name"], p["division_type"] != "tỉnh",
                                  p["phone_code"], communes)
    return out


def province(code: int) -> Province:
    try:
        return provinces()[code]
    except KeyError:
        valid = ", ".join(f"{c:02d} {p.short_name}" for c, p in provinces().items())
        raise ValueError(f"no province with code {code:02d}; the 34 codes are: {valid}") from None


def select(codes: list[int] | None = None, communes_per_province: int | None = None
           ) -> list[Commune]:
    """The communes of the given provinces (all 34 when ``codes`` is empty or None), in code
    order; ``communes_per_province`` keeps only that many of each province's communes, spread
    evenly over its list (a demo with a few communes of one province)."""
    chosen = [province(c) for c in sorted(set(codes))] if codes else list(provinces().values())
    out: list[Commune] = []
    for p in chosen:
        cs = p.communes
        if communes_per_province is not None and communes_per_province < len(cs):
            step = len(cs) / communes_per_province
            cs = tuple(cs[int(i * step)] for i in range(communes_per_province))
        out.extend(cs)
    return out
