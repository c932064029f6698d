"""Checking a citizen ID (CCCD, số định danh cá nhân) against the birth year and sex typed
beside it, when a health worker registers a person.

The number's structure (Decree 137/2015/NĐ-CP art. 13; Circular 07/2016/TT-BCA; the rules
``songkhoe.synth.identifiers`` generates by, and whose ``parse_cccd`` this module reuses):
12 digits = 3-digit province code of birth registration (the 63 pre-2025 codes,
``synth.admin.OLD_PROVINCES``) + 1 century/sex digit (1900s: male 0, female 1; 2000s: 2/3;
2100s: 4/5) + the last 2 digits of the year of birth + 6 serial digits. There is no check
digit, so a typo in the serial cannot be caught; everything else can.

``problems`` answers a list of ``(code, message_vi, message_en)``: the web app shows the
message in the user's language and the API returns the codes, so a test (or another client)
can tell which rule failed. The browser runs the same rules (``static/js/cccd.js``) for
feedback while typing; the server's verdict is the one that counts.
"""

from __future__ import annotations

from songkhoe.synth.admin import OLD_PROVINCES
from songkhoe.synth.identifiers import CCCD_SYSTEM, parse_cccd

__all__ = ["CCCD_SYSTEM", "problems"]

Problem = tuple[str, str, str]


def problems(number: str, birth_year: int | None, gender: str | None) -> list[Problem]:
    """What is wrong with ``number`` as the citizen ID of a person born in ``birth_year``
    of ``gender`` (FHIR ``male``/``female``; other values are not checked against the sex
    digit). Empty when it is consistent."""
    if len(number) != 12 or not number.isdigit():
        return [("format", "Số CCCD phải gồm đúng 12 chữ số",
                 "A citizen ID has exactly 12 digits")]
    out: list[Problem] = []
    province_code, year, male = parse_cccd(number)
    if province_code not in OLD_PROVINCES:
        out.append(("province", f"Mã tỉnh {number[:3]} không tồn tại",
                    f"No province has the code {number[:3]}"))
    if int(number[3]) > 5:
        out.append(("century", f"Chữ số thứ 4 ({number[3]}) phải từ 0 đến 5 (thế kỷ, giới tính)",
                    f"The 4th digit ({number[3]}) must be 0–5 (century and sex)"))
        return out
    if birth_year is not None and year != birth_year:
        out.append(("birth-year", f"Số CCCD ứng với năm sinh {year}, không phải {birth_year}",
                    f"The citizen ID says born in {year}, not {birth_year}"))
    if gender in ("male", "female") and male != (gender == "male"):
        said = "nam" if male else "nữ"
        out.append(("sex", f"Số CCCD ứng với giới tính {said}",
                    f"The citizen ID says {'male' if male else 'female'}"))
    return out
