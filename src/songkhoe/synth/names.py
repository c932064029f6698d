"""Vietnamese personal names: family name, middle name(s) and given name, in NFC.

A Vietnamese name is written family name first, then middle name(s), then the given name
("Nguyễn Thị Thu Hà"). In FHIR ``HumanName`` the family name goes in ``family`` and the middle
and given names, in order, in ``given``; ``text`` holds the name as written.

Family names and their shares: the 14 most common family names, which together cover about
90% of people (Wikipedia, "Vietnamese name", list of common family names: Nguyễn 39%, Trần 11%,
Lê 9.5%, Phạm 7.1%, Hoàng/Huỳnh 5.1%, Phan 4.5%, Vũ/Võ 3.9%, Đặng 2.1%, Bùi 2%, Đỗ 1.4%,
Hồ 1.3%, Ngô 1.3%, Dương 1%, Lý 0.5%); the remaining ~10% are spread evenly over the less
common family names listed on the same page. Hoàng and Huỳnh, Vũ and Võ are one name each,
written Huỳnh and Võ mostly in the centre and south (the page's note); the split used here
(south of and including Huế: 70% Huỳnh/Võ, further north 5%) is a modelling assumption.

Middle and given names have no published frequency table that we could cite: they are drawn
evenly from lists of common names by sex. The traditional middle names Văn (men) and Thị
(women) are drawn with a probability that falls with year of birth (80% for people born
before 1960 down to 25% for those born after 2005) — a modelling assumption, see
``docs/synthetic-data.md``.
"""

from __future__ import annotations

import random
import unicodedata
from bisect import bisect_right
from itertools import accumulate

_TOP_FAMILY: list[tuple[str, float]] = [
    ("Nguyễn", 39.0), ("Trần", 11.0), ("Lê", 9.5), ("Phạm", 7.1), ("Hoàng", 5.1),
    ("Phan", 4.5), ("Vũ", 3.9), ("Đặng", 2.1), ("Bùi", 2.0), ("Đỗ", 1.4), ("Hồ", 1.3),
    ("Ngô", 1.3), ("Dương", 1.0), ("Lý", 0.5),
]
_OTHER_FAMILY = [
    "Cao", "Châu", "Chu", "Đàm", "Đào", "Đinh", "Đoàn", "Giang", "Hà", "Kiều", "La", "Lâm",
    "Lương", "Lưu", "Mai", "Nghiêm", "Phùng", "Quách", "Tạ", "Thái", "Tô", "Tôn", "Triệu",
    "Trịnh", "Trương", "Văn", "Vương",
]
_OTHER_SHARE = 100.0 - sum(w for _, w in _TOP_FAMILY)
FAMILY_SHARES: dict[str, float] = {
    **{n: w / 100 for n, w in _TOP_FAMILY},
    **{n: _OTHER_SHARE / len(_OTHER_FAMILY) / 100 for n in _OTHER_FAMILY},
}
_SOUTHERN = {"Hoàng": "Huỳnh", "Vũ": "Võ"}

MIDDLE_MALE = ["Đức", "Hữu", "Minh", "Quang", "Công", "Thành", "Xuân", "Ngọc", "Anh", "Gia",
               "Hoàng", "Tuấn", "Quốc", "Trung", "Đình"]
MIDDLE_FEMALE = ["Ngọc", "Thu", "Thanh", "Minh", "Bảo", "Phương", "Kim", "Khánh", "Thùy",
                 "Hoài", "Mỹ", "Diệu", "Hải", "Lan", "Tuyết"]
GIVEN_MALE = [
    "An", "Anh", "Bảo", "Bình", "Cường", "Dũng", "Duy", "Đạt", "Đức", "Hải", "Hiếu", "Hoàng",
    "Hùng", "Huy", "Khang", "Khánh", "Khoa", "Kiên", "Lâm", "Long", "Lực", "Minh", "Nam",
    "Nghĩa", "Phong", "Phúc", "Quang", "Quân", "Sơn", "Tài", "Thắng", "Thành", "Thịnh",
    "Tiến", "Toàn", "Trung", "Tuấn", "Tùng", "Việt", "Vinh",
]
GIVEN_FEMALE = [
    "Anh", "Chi", "Dung", "Giang", "Hà", "Hạnh", "Hằng", "Hiền", "Hoa", "Hồng", "Huệ", "Hương",
    "Huyền", "Lan", "Liên", "Linh", "Loan", "Mai", "My", "Nga", "Ngân", "Ngọc", "Nhung",
    "Oanh", "Phương", "Quyên", "Tâm", "Thảo", "Thu", "Thủy", "Trang", "Trinh", "Tuyết",
    "Uyên", "Vân", "Xuân", "Yến", "Lụa", "Nhàn", "Hậu",
]

_FAMILY_NAMES = list(FAMILY_SHARES)
_FAMILY_CUM = list(accumulate(FAMILY_SHARES.values()))


def _traditional_middle_share(birth_year: int) -> float:
    """Share of people with Văn (men) or Thị (women) as middle name, by year of birth
    (assumption: 0.80 before 1960, falling linearly to 0.25 after 2005)."""
    if birth_year <= 1960:
        return 0.80
    if birth_year >= 2005:
        return 0.25
    return 0.80 - 0.55 * (birth_year - 1960) / 45


def family_name(rng: random.Random, southern: bool) -> str:
    name = _FAMILY_NAMES[min(bisect_right(_FAMILY_CUM, rng.random() * _FAMILY_CUM[-1]),
                             len(_FAMILY_NAMES) - 1)]
    if name in _SOUTHERN and rng.random() < (0.70 if southern else 0.05):
        return _SOUTHERN[name]
    return name


def person_name(rng: random.Random, male: bool, birth_year: int, southern: bool
                ) -> tuple[str, list[str]]:
    """(family, [middle…, given]) for one person."""
    family = family_name(rng, southern)
    middles: list[str] = []
    if rng.random() < _traditional_middle_share(birth_year):
        middles.append("Văn" if male else "Thị")
        if not male and rng.random() < 0.3:  # "Nguyễn Thị Thu Hà": a second middle name
            middles.append(rng.choice(MIDDLE_FEMALE))
    else:
        middles.append(rng.choice(MIDDLE_MALE if male else MIDDLE_FEMALE))
    given = rng.choice(GIVEN_MALE if male else GIVEN_FEMALE)
    while given in middles:
        given = rng.choice(GIVEN_MALE if male else GIVEN_FEMALE)
    return family, [*middles, given]


def full_name(family: str, given: list[str]) -> str:
    return " ".join([family, *given])


def strip_diacritics(text: str) -> str:
    """The name as typed on a keyboard without Vietnamese input: "Đặng Thị Ánh" → "Dang Thi Anh"."""
    text = text.replace("Đ", "D").replace("đ", "d")
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed
                                                if not unicodedata.combining(c)))


# Keys next to each other on a QWERTY keyboard, for one-letter slips.
_NEIGHBOURS = {
    "a": "sq", "b": "vn", "c": "xv", "d": "sf", "e": "wr", "g": "fh", "h": "gj", "i": "uo",
    "k": "jl", "l": "k", "m": "n", "n": "bm", "o": "ip", "p": "o", "q": "wa", "r": "et",
    "s": "ad", "t": "ry", "u": "yi", "v": "cb", "x": "zc", "y": "tu",
}
# Tone marks confused in data entry: the same vowel with another tone.
_TONES = ["aàáảãạ", "ăằắẳẵặ", "âầấẩẫậ", "eèéẻẽẹ", "êềếểễệ", "iìíỉĩị", "oòóỏõọ", "ôồốổỗộ",
          "ơờớởỡợ", "uùúủũụ", "ưừứửữự", "yỳýỷỹỵ"]
_TONE_OF = {c: row for row in _TONES for c in row}


def typo(rng: random.Random, text: str) -> str:
    """One realistic data-entry slip: a wrong tone mark, a neighbouring key, or two letters
    swapped. Always returns a different string."""
    for _ in range(20):
        chars = list(text)
        positions = [i for i, c in enumerate(chars) if c.isalpha()]
        i = rng.choice(positions)
        c = chars[i]
        kind = rng.random()
        if kind < 0.45 and c.lower() in _TONE_OF:
            row = _TONE_OF[c.lower()]
            new = rng.choice([x for x in row if x != c.lower()])
            chars[i] = new.upper() if c.isupper() else new
        elif kind < 0.8 and c.lower() in _NEIGHBOURS:
            new = rng.choice(_NEIGHBOURS[c.lower()])
            chars[i] = new.upper() if c.isupper() else new
        elif i + 1 < len(chars) and chars[i + 1].isalpha() and chars[i + 1] != c and i > 0:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        out = unicodedata.normalize("NFC", "".join(chars))
        if out != text:
            return out
    return text + "h"  # pathological input: a doubled-letter slip instead
