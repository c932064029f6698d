import pytest

from songkhoe.synth import identifiers
from songkhoe.synth.rng import Stream


def test_cccd_structure_decree_137_2015() -> None:
    assert identifiers.cccd(1, 1985, True, 123) == "001085000123"
    assert identifiers.cccd(79, 1985, False, 7) == "079185000007"
    assert identifiers.cccd(96, 2003, True, 999999) == "096203999999"
    assert identifiers.cccd(8, 2003, False, 1)[3] == "3"
    assert identifiers.parse_cccd("079185000007") == (79, 1985, False)
    assert identifiers.parse_cccd("096203999999") == (96, 2003, True)
    with pytest.raises(ValueError):
        identifiers.century_sex_digit(1899, True)


def test_serials_are_a_permutation() -> None:
    serials = identifiers.Serials(5, 1_000_000)
    values = {serials(i) for i in range(1_000_000)}
    assert len(values) == 1_000_000 and min(values) == 0 and max(values) == 999_999
    assert [serials(i) for i in range(3)] != [0, 1, 2]


def test_mobile_numbers_have_ten_digits_and_a_carrier_prefix() -> None:
    rng = Stream("phones")
    for _ in range(1000):
        number = identifiers.mobile(rng)
        assert len(number) == 10 and number.isdigit() and number[:3] in identifiers.MOBILE_PREFIXES
