import unicodedata
from collections import Counter

from songkhoe.synth import names
from songkhoe.synth.rng import Stream


def test_name_lists_are_nfc() -> None:
    for word in [*names.FAMILY_SHARES, *names.MIDDLE_MALE, *names.MIDDLE_FEMALE,
                 *names.GIVEN_MALE, *names.GIVEN_FEMALE]:
        assert unicodedata.is_normalized("NFC", word), word


def test_family_names_follow_their_published_shares() -> None:
    rng = Stream("names")
    counts = Counter(names.family_name(rng, southern=False) for _ in range(40_000))
    assert abs(counts["Nguyễn"] / 40_000 - 0.39) < 0.01
    assert abs(counts["Trần"] / 40_000 - 0.11) < 0.01
    assert abs(counts["Lý"] / 40_000 - 0.005) < 0.003
    south = Counter(names.family_name(rng, southern=True) for _ in range(40_000))
    assert south["Huỳnh"] > south["Hoàng"] and counts["Hoàng"] > counts["Huỳnh"]


def test_traditional_middle_names_are_commoner_in_older_people() -> None:
    rng = Stream("middle")
    old = sum(names.person_name(rng, False, 1950, False)[1][0] == "Thị" for _ in range(5000))
    young = sum(names.person_name(rng, False, 2010, False)[1][0] == "Thị" for _ in range(5000))
    assert old > 3000 and young < 2000
    family, given = names.person_name(rng, True, 1980, False)
    assert len(given) >= 2 and given[-1] in names.GIVEN_MALE


def test_strip_diacritics_as_typed_without_vietnamese_input() -> None:
    assert names.strip_diacritics("Đặng Thị Ngọc Ánh") == "Dang Thi Ngoc Anh"
    assert names.strip_diacritics("Nguyễn Văn Đức") == "Nguyen Van Duc"


def test_typo_changes_one_thing_and_keeps_nfc() -> None:
    rng = Stream("typo")
    for word in ["Nguyễn", "Hương", "Thị", "Anh", "Lý"]:
        for _ in range(50):
            slip = names.typo(rng, word)
            assert slip != word
            assert unicodedata.is_normalized("NFC", slip)
            assert abs(len(slip) - len(word)) <= 1
