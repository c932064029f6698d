"""UCUM units brought to one canonical form, so quantities in different units compare.

R4 Search, "quantity" (http://hl7.org/fhir/R4/search.html#quantity): "the server may
choose to perform a search … in canonical units … so that 1 m matches 100 cm". A quantity
whose system is UCUM (http://unitsofmeasure.org) and whose code parses as a UCUM expression is
indexed, and searched, as ``value × factor`` in the product of base units its code reduces to
(``mg/dL`` → ``g.m-3`` × 10, ``mmol/L`` → ``mol.m-3`` × 1, ``/min`` → ``s-1`` ÷ 60).

The grammar is UCUM's (https://ucum.org/ucum §2: terms joined by ``.`` and ``/``, integer
exponents, metric prefixes on metric atoms, ``{annotations}``, integer factors, parentheses);
the atoms are the SI base and derived units and the customary units clinical data uses (see
``_ATOMS``). Two deliberate departures from UCUM's own canonical form:

- ``mol`` is kept as a base dimension instead of being the number 6.0221367e23, so ``mmol/L``
  never compares with a dimensionless ``%``;
- arbitrary units (``[iU]``, ``[arb'U]`` …) are their own dimension: comparable only with
  themselves.

Mass and amount of substance are different dimensions, so ``mg/dL`` and ``mmol/L`` only
compare when the substance is known: ``ANALYTES`` lists the molar mass of common laboratory
analytes by LOINC code, and the indexer adds a second canonical row in the other dimension for
an Observation (or component) whose ``code`` names one of them ("where a conversion is
defined"). Celsius and Fahrenheit are special units (an offset, not a factor): they are
accepted only on their own, and canonicalised to kelvin.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"

# Dimensions, in the order they are written in a canonical unit.
_DIMS = ("m", "s", "g", "rad", "K", "C", "cd", "mol", "[iU]", "[arb'U]")
_N = len(_DIMS)

Dims = tuple[int, ...]


def _dims(**exps: int) -> Dims:
    return tuple(exps.get(d.strip("[]'").replace("'", ""), 0) for d in _DIMS)


_ONE: Dims = (0,) * _N


@dataclass(frozen=True, slots=True)
class Unit:
    """``factor`` × the product of base units raised to ``dims``."""

    factor: float
    dims: Dims

    def __mul__(self, other: Unit) -> Unit:
        return Unit(self.factor * other.factor, tuple(a + b for a, b in zip(self.dims, other.dims)))

    def __pow__(self, n: int) -> Unit:
        return Unit(self.factor ** n, tuple(a * n for a in self.dims))

    @property
    def code(self) -> str:
        """The canonical unit: base units with exponents joined by ``.`` (``g.m-3``), ``1`` for
        a dimensionless quantity."""
        parts = [name if e == 1 else f"{name}{e}" for name, e in zip(_DIMS, self.dims) if e]
        return ".".join(parts) or "1"


def _u(factor: float, **exps: int) -> Unit:
    return Unit(factor, _dims(**exps))


# (unit, metric: may take a prefix)
_BASE: dict[str, tuple[Unit, bool]] = {
    "m": (_u(1, m=1), True), "s": (_u(1, s=1), True), "g": (_u(1, g=1), True),
    "rad": (_u(1, rad=1), True), "K": (_u(1, K=1), True), "C": (_u(1, C=1), True),
    "cd": (_u(1, cd=1), True), "mol": (_u(1, mol=1), True),
}
# Derived and customary atoms, defined by a UCUM expression over earlier atoms (UCUM §4, tables
# 1–21 for what clinical data uses), with whether the atom is metric.
_DEFINED: list[tuple[str, float, str, bool]] = [
    ("10*", 10, "1", False), ("10^", 10, "1", False), ("[pi]", 3.141592653589793, "1", False),
    ("%", 1e-2, "1", False), ("[ppth]", 1e-3, "1", False), ("[ppm]", 1e-6, "1", False),
    ("[ppb]", 1e-9, "1", False), ("[pptr]", 1e-12, "1", False),
    ("sr", 1, "rad2", True), ("Hz", 1, "s-1", True), ("N", 1, "kg.m/s2", True),
    ("Pa", 1, "N/m2", True), ("J", 1, "N.m", True), ("W", 1, "J/s", True),
    ("A", 1, "C/s", True), ("V", 1, "J/C", True), ("F", 1, "C/V", True),
    ("Ohm", 1, "V/A", True), ("S", 1, "Ohm-1", True), ("Wb", 1, "V.s", True),
    ("T", 1, "Wb/m2", True), ("H", 1, "Wb/A", True), ("lm", 1, "cd.sr", True),
    ("lx", 1, "lm/m2", True), ("Bq", 1, "s-1", True), ("Gy", 1, "J/kg", True),
    ("Sv", 1, "J/kg", True), ("eq", 1, "mol", True), ("osm", 1, "mol", True),
    ("min", 60, "s", False), ("h", 60, "min", False), ("d", 24, "h", False),
    ("kat", 1, "mol/s", True), ("U", 1, "umol/min", True),
    ("wk", 7, "d", False), ("a", 365.25, "d", False), ("a_j", 365.25, "d", False),
    ("a_t", 365.24219, "d", False), ("a_g", 365.2425, "d", False),
    ("mo", 1 / 12, "a", False), ("mo_j", 1 / 12, "a_j", False), ("mo_g", 1 / 12, "a_g", False),
    ("l", 1, "dm3", True), ("L", 1, "l", True), ("ar", 100, "m2", True),
    ("t", 1e3, "kg", True), ("u", 1.6605402e-24, "g", True), ("bar", 1e5, "Pa", True),
    ("atm", 101325, "Pa", False), ("m[Hg]", 133.322, "kPa", True),
    ("m[H2O]", 9.80665, "kPa", True), ("cal", 4.184, "J", True), ("[Cal]", 1, "kcal", False),
    ("eV", 1.60217733e-19, "J", True), ("[in_i]", 2.54, "cm", False),
    ("[ft_i]", 12, "[in_i]", False), ("[yd_i]", 3, "[ft_i]", False),
    ("[mi_i]", 5280, "[ft_i]", False), ("[lb_av]", 453.59237, "g", False),
    ("[oz_av]", 1 / 16, "[lb_av]", False), ("[gr]", 64.79891, "mg", False),
    ("[stone_av]", 14, "[lb_av]", False), ("[gal_us]", 231, "[in_i]3", False),
    ("[qt_us]", 1 / 4, "[gal_us]", False), ("[pt_us]", 1 / 2, "[qt_us]", False),
    ("[foz_us]", 1 / 16, "[pt_us]", False), ("[tsp_us]", 1 / 6, "[foz_us]", False),
    ("[tbs_us]", 1 / 2, "[foz_us]", False), ("[drp]", 1 / 20, "ml", False),
    ("g%", 1, "g/dl", True), ("[iU]", 1, "1", True), ("[IU]", 1, "[iU]", True),
    ("[arb'U]", 1, "1", False), ("[USP'U]", 1, "[arb'U]", False),
]
_PREFIXES = {
    "Y": 1e24, "Z": 1e21, "E": 1e18, "P": 1e15, "T": 1e12, "G": 1e9, "M": 1e6, "k": 1e3,
    "h": 1e2, "da": 1e1, "d": 1e-1, "c": 1e-2, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12,
    "f": 1e-15, "a": 1e-18, "z": 1e-21, "y": 1e-24, "Ki": 1024.0, "Mi": 1024.0**2,
    "Gi": 1024.0**3, "Ti": 1024.0**4,
}
# Special units: canonical kelvin = value × scale + offset.
_SPECIAL = {"Cel": (1.0, 273.15), "[degF]": (5 / 9, 273.15 - 32 * 5 / 9)}
_KELVIN = Unit(1.0, _dims(K=1))


class UnitError(ValueError):
    """Not a UCUM unit expression this module can reduce."""


_ATOMS: dict[str, tuple[Unit, bool]] = dict(_BASE)


def _define() -> None:
    for code, factor, expression, metric in _DEFINED:
        if code in ("[iU]", "[arb'U]"):
            dim = code.strip("[]").replace("'", "")
            _ATOMS[code] = (_u(1, **{dim: 1}), metric)
            continue
        unit = _parse(expression) if expression != "1" else Unit(1.0, _ONE)
        _ATOMS[code] = (Unit(factor * unit.factor, unit.dims), metric)


def _atom(symbol: str) -> Unit:
    """A unit symbol, possibly with a metric prefix (``mg``, ``kPa``, ``mm[Hg]``, ``10*``)."""
    hit = _ATOMS.get(symbol)
    if hit is not None:
        return hit[0]
    for size in (2, 1):
        prefix, rest = symbol[:size], symbol[size:]
        if prefix in _PREFIXES and rest in _ATOMS and _ATOMS[rest][1]:
            unit = _ATOMS[rest][0]
            return Unit(_PREFIXES[prefix] * unit.factor, unit.dims)
    raise UnitError(f"unknown unit {symbol!r}")


class _Parser:
    """UCUM §2.1 grammar: mainTerm := '/' term | term; term := component (('.'|'/') component)*;
    component := annotatable annotation? | annotation | factor | '(' term ')'."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = self._tokens(text)
        self.pos = 0

    @staticmethod
    def _tokens(text: str) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(text):
            c = text[i]
            if c in "./()":
                out.append(c)
                i += 1
            elif c == "{":
                end = text.find("}", i)
                if end < 0:
                    raise UnitError(f"unclosed annotation in {text!r}")
                out.append(text[i:end + 1])
                i = end + 1
            else:  # a symbol, then optional exponent digits
                j = i
                while j < len(text) and text[j] not in "./(){":
                    if text[j] == "[":
                        close = text.find("]", j)
                        if close < 0:
                            raise UnitError(f"unclosed bracket in {text!r}")
                        j = close + 1
                    else:
                        j += 1
                out.append(text[i:j])
                i = j
        return out

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def main(self) -> Unit:
        if self.peek() == "/":
            self.take()
            unit = self.term() ** -1
        else:
            unit = self.term()
        if self.peek() is not None:
            raise UnitError(f"unexpected {self.peek()!r} in {self.text!r}")
        return unit

    def term(self) -> Unit:
        unit = self.component()
        while self.peek() in (".", "/"):
            op = self.take()
            other = self.component()
            unit = unit * (other if op == "." else other ** -1)
        return unit

    def component(self) -> Unit:
        token = self.peek()
        if token is None:
            raise UnitError(f"incomplete unit {self.text!r}")
        if token == "(":
            self.take()
            unit = self.term()
            if self.peek() != ")":
                raise UnitError(f"unbalanced parentheses in {self.text!r}")
            self.take()
            return unit
        token = self.take()
        if token.startswith("{"):
            return Unit(1.0, _ONE)
        if token.isdigit():  # a factor
            return Unit(float(token), _ONE)
        if self.peek() is not None and self.peek().startswith("{"):  # type: ignore[union-attr]
            self.take()  # annotation on an annotatable
        return _annotatable(token)


_EXPONENT = re.compile(r"^(.*?[^\d+-])([+-]?\d+)$")


def _annotatable(token: str) -> Unit:
    """simpleUnit exponent?  (``cm2``, ``s-1``, ``10*3``)."""
    if token in _ATOMS or token.endswith("]"):
        return _atom(token)
    match = _EXPONENT.match(token)
    if match and not token.startswith("10*") and not token.startswith("10^"):
        return _atom(match.group(1)) ** int(match.group(2))
    if token.startswith(("10*", "10^")):
        rest = token[3:]
        if rest and (rest.lstrip("+-").isdigit()):
            return Unit(10.0 ** int(rest), _ONE)
        return _atom(token)
    return _atom(token)


def _parse(text: str) -> Unit:
    return _Parser(text).main()


_define()


def _round(value: float) -> float:
    """12 significant digits: ``58 × 1000`` is 58000, not 58000.000000000004."""
    return float(f"{value:.12g}")


@lru_cache(maxsize=4096)
def unit(code: str) -> Unit | None:
    """The UCUM unit of ``code``, or None when it is not one (or is a special unit)."""
    if not code or code in _SPECIAL or len(code) > 200:
        return None
    try:
        return _parse(code)
    except (UnitError, IndexError, ValueError, OverflowError):
        return None


def canonical(value: float, code: str) -> tuple[str, float] | None:
    """(canonical unit, value in it) of ``value`` ``code``, or None when ``code`` is not UCUM
    this module can reduce."""
    special = _SPECIAL.get(code)
    if special is not None:
        scale, offset = special
        return _KELVIN.code, _round(value * scale + offset)
    parsed = unit(code)
    if parsed is None:
        return None
    return parsed.code, _round(value * parsed.factor)


def canonical_bounds(lo: float, hi: float, code: str) -> tuple[str, float, float] | None:
    """A search interval [lo, hi) in ``code`` as (canonical unit, lo, hi)."""
    first = canonical(lo, code)
    second = canonical(hi, code)
    if first is None or second is None:
        return None
    return first[0], min(first[1], second[1]), max(first[1], second[1])


# --- analytes: mass ↔ amount of substance ---------------------------------------------------

# molar mass (g/mol) and the LOINC codes measuring the analyte by mass or by amount
ANALYTE_CODES: dict[str, tuple[float, tuple[str, ...]]] = {
    "glucose": (180.156, ("2339-0", "2345-7", "1558-6", "2340-8", "41653-7", "15074-8",
                          "14749-6", "14771-0", "2341-6", "14743-9", "1554-5", "1547-9")),
    "cholesterol": (386.654, ("2093-3", "14647-2")),
    "hdl-cholesterol": (386.654, ("2085-9", "14646-4")),
    "ldl-cholesterol": (386.654, ("13457-7", "18262-6", "2089-1", "22748-8", "39469-2")),
    "triglyceride": (885.7, ("2571-8", "14927-8", "3043-7", "3048-6")),
    "creatinine": (113.12, ("2160-0", "14682-9", "38483-4", "59826-8")),
    "uric-acid": (168.11, ("3084-1", "14933-6")),
}
ANALYTES: dict[tuple[str, str], float] = {
    (LOINC, code): mass for mass, codes in ANALYTE_CODES.values() for code in codes}
_G = _DIMS.index("g")
_MOL = _DIMS.index("mol")


def swap_substance(canonical_unit: str, value: float, molar_mass: float) -> tuple[str, float] | None:
    """The same quantity in the other dimension (mass ↔ amount of substance) for an analyte of
    ``molar_mass`` g/mol: ``g.m-3`` 1000 → ``mol.m-3`` 5.55…; None when the unit involves
    neither (or both)."""
    dims = _canonical_dims(canonical_unit)
    if dims is None:
        return None
    if dims[_G] == 1 and dims[_MOL] == 0:
        swapped = list(dims)
        swapped[_G], swapped[_MOL] = 0, 1
        return Unit(1.0, tuple(swapped)).code, _round(value / molar_mass)
    if dims[_MOL] == 1 and dims[_G] == 0:
        swapped = list(dims)
        swapped[_G], swapped[_MOL] = 1, 0
        return Unit(1.0, tuple(swapped)).code, _round(value * molar_mass)
    return None


@lru_cache(maxsize=512)
def _canonical_dims(code: str) -> Dims | None:
    if code == "1":
        return _ONE
    dims = [0] * _N
    for part in code.split("."):
        match = re.fullmatch(r"(.+?)(-?\d+)?", part)
        if match is None or match.group(1) not in _DIMS:
            return None
        dims[_DIMS.index(match.group(1))] = int(match.group(2) or 1)
    return tuple(dims)
