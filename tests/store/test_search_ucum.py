"""UCUM canonical units for quantity search (https://ucum.org/ucum; R4 Search "quantity")."""

from __future__ import annotations

import pytest

from songkhoe.store import ucum


@pytest.mark.parametrize("value, code, unit, expected", [
    (58, "kg", "g", 58000), (160, "cm", "m", 1.6), (5.6, "mmol/L", "m-3.mol", 5.6),
    (100, "mg/dL", "m-3.g", 1000), (60, "/min", "s-1", 1), (36.85, "Cel", "K", 310),
    (98.6, "[degF]", "K", 310.15), (97, "%", "1", 0.97), (22.5, "kg/m2", "m-2.g", 22500),
    (3, "10*3/uL", "m-3", 3e12), (1, "[in_i]", "m", 0.0254), (1, "[lb_av]", "g", 453.59237),
    (1, "mL/min/{1.73_m2}", "m3.s-1", 1e-6 / 60), (2, "[IU]/L", "m-3.[iU]", 2000),
    (1, "10*-3", "1", 0.001), (1, "{beats}/min", "s-1", 1 / 60), (1, "g%", "m-3.g", 10000),
    (1, "mm[Hg]", "m-1.s-2.g", 133322), (1, "a", "s", 31557600), (1, "U/L", "m-3.s-1.mol", 1e-3 / 60),
])
def test_canonical(value, code, unit, expected):
    got = ucum.canonical(value, code)
    assert got is not None and got[0] == unit and got[1] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("code", ["mmHg", "xyz", "kg/", "(m", "{open", "", "10*x", "cm[", "mg/dL/"])
def test_not_ucum(code):
    assert ucum.canonical(1, code) is None


def test_rounding_keeps_boundaries_exact():
    assert ucum.canonical(58, "kg") == ("g", 58000.0)
    assert ucum.canonical(0.1, "g") == ("g", 0.1)


def test_substance_and_mass_of_an_analyte():
    glucose = ucum.ANALYTES[(ucum.LOINC, "1558-6")]
    unit, value = ucum.canonical(7, "mmol/L")  # type: ignore[misc]
    mass = ucum.swap_substance(unit, value, glucose)
    assert mass is not None and mass[0] == "m-3.g" and mass[1] == pytest.approx(1261.092)
    back = ucum.swap_substance(*mass, glucose)
    assert back is not None and back[1] == pytest.approx(7)
    assert ucum.swap_substance("m", 1.0, glucose) is None
