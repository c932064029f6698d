"""FHIRPath Quantity: a Decimal value with a UCUM unit or a calendar duration keyword.

FHIRPath N1 "Literals: Quantity" (http://hl7.org/fhirpath/N1/#quantity) with calendar duration
keywords (http://hl7.org/fhirpath/N1/#time-valued-quantities), §6.1 equality/equivalence of quantities and §6.2 comparison. FHIR's ``Quantity`` datatype (and its
profiles Age, Distance, Duration, Count, SimpleQuantity, MoneyQuantity) maps to it
(R4 FHIRPath "FHIRPath types", http://hl7.org/fhir/R4/fhirpath.html#types), unit from
``code``, else ``unit``; the string ``%ucum`` names the UCUM system.

Unit conversion covers a practical subset of UCUM (:data:`_UCUM`): mass, length, volume, time
and a few clinical units, with metric prefixes on g, m, L, s, mol, eq. Quantities whose units
cannot be converted to each other compare as empty (not equal / not comparable), as N1 allows.
Calendar ``year``/``month`` equal only themselves (and each other at 12:1); ``week``…
``millisecond`` equal their UCUM counterparts (wk, d, h, min, s, ms).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

UCUM_SYSTEM = "http://unitsofmeasure.org"

# literal keyword → canonical calendar unit (N1 time-valued quantities)
CALENDAR_UNITS = {
    "year": "year", "years": "year", "month": "month", "months": "month",
    "week": "week", "weeks": "week", "day": "day", "days": "day",
    "hour": "hour", "hours": "hour", "minute": "minute", "minutes": "minute",
    "second": "second", "seconds": "second", "millisecond": "millisecond",
    "milliseconds": "millisecond",
}
# definite calendar durations as UCUM
_CALENDAR_TO_UCUM = {"week": "wk", "day": "d", "hour": "h", "minute": "min", "second": "s",
                     "millisecond": "ms"}
# UCUM time units that correspond to calendar units (for date arithmetic)
UCUM_TO_CALENDAR = {"a": "year", "mo": "month", "wk": "week", "d": "day", "h": "hour",
                    "min": "minute", "s": "second", "ms": "millisecond"}

_PREFIX = {"k": Decimal("1e3"), "h": Decimal("1e2"), "da": Decimal(10), "d": Decimal("1e-1"),
           "c": Decimal("1e-2"), "m": Decimal("1e-3"), "u": Decimal("1e-6"),
           "n": Decimal("1e-9"), "p": Decimal("1e-12"), "f": Decimal("1e-15")}
_PREFIXABLE = {"g": ("g", Decimal(1)), "m": ("m", Decimal(1)), "L": ("m3", Decimal("1e-3")),
               "l": ("m3", Decimal("1e-3")), "s": ("s", Decimal(1)),
               "mol": ("mol", Decimal(1)), "eq": ("eq", Decimal(1)),
               "U": ("U", Decimal(1)), "[iU]": ("[iU]", Decimal(1)),
               "[IU]": ("[iU]", Decimal(1))}
# unit → (dimension key, factor to the base unit of that dimension)
_UCUM: dict[str, tuple[str, Decimal]] = {
    "min": ("s", Decimal(60)), "h": ("s", Decimal(3600)), "d": ("s", Decimal(86400)),
    "wk": ("s", Decimal(604800)), "mo": ("mo", Decimal(1)), "a": ("mo", Decimal(12)),
    "[in_i]": ("m", Decimal("0.0254")), "[ft_i]": ("m", Decimal("0.3048")),
    "[lb_av]": ("g", Decimal("453.59237")), "[oz_av]": ("g", Decimal("28.349523125")),
    "mm[Hg]": ("mm[Hg]", Decimal(1)), "%": ("1", Decimal("0.01")), "1": ("1", Decimal(1)),
    "Cel": ("Cel", Decimal(1)), "[degF]": ("[degF]", Decimal(1)),
    "kg/m2": ("kg/m2", Decimal(1)), "/min": ("/s", Decimal(1) / 60),
    "mmol/L": ("mol/m3", Decimal(1)), "mg/dL": ("g/m3", Decimal(10)),
    "g/dL": ("g/m3", Decimal(10000)), "g/L": ("g/m3", Decimal(1)),
}


def _ucum(unit: str) -> tuple[str, Decimal] | None:
    if unit in _UCUM:
        return _UCUM[unit]
    if unit in _PREFIXABLE:
        return _PREFIXABLE[unit]
    for plen in (2, 1):
        prefix, rest = unit[:plen], unit[plen:]
        if prefix in _PREFIX and rest in _PREFIXABLE:
            dim, factor = _PREFIXABLE[rest]
            return dim, factor * _PREFIX[prefix]
    return None


class Quantity:
    """A FHIRPath Quantity. ``unit`` is a UCUM code (``'mg'``, ``'1'`` by default) or a
    calendar keyword (``'year'`` … ``'millisecond'``)."""

    __slots__ = ("unit", "value")

    def __init__(self, value: Decimal, unit: str = "1") -> None:
        self.value = value
        self.unit = unit or "1"

    def __repr__(self) -> str:
        return f"Quantity({self.value!s}, {self.unit!r})"

    def __str__(self) -> str:
        if self.unit in CALENDAR_UNITS.values():
            return f"{self.value} {self.unit}" + ("s" if self.value != 1 else "")
        return f"{self.value} '{self.unit}'"

    def __neg__(self) -> Quantity:
        return Quantity(-self.value, self.unit)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quantity) and other.value == self.value and \
            other.unit == self.unit

    def __hash__(self) -> int:
        return hash((self.value, self.unit))

    def canonical(self, for_equality: bool) -> tuple[str, Decimal] | None:
        """(dimension, value in the base unit) for comparison, or None if unknown."""
        unit = self.unit
        if unit in ("year", "month"):
            if for_equality:
                return ("cal-" + "mo", self.value * (12 if unit == "year" else 1))
            return ("mo", self.value * (12 if unit == "year" else 1))
        if unit in _CALENDAR_TO_UCUM:
            unit = _CALENDAR_TO_UCUM[unit]
        info = _ucum(unit)
        if info is None:
            return (unit, self.value)
        return info[0], self.value * info[1]


def compare(a: Quantity, b: Quantity, for_equality: bool = False) -> int | None:
    """-1/0/1, or None if the units are not comparable."""
    if a.unit == b.unit:
        x, y = a.value, b.value
    else:
        ca, cb = a.canonical(for_equality), b.canonical(for_equality)
        if ca is None or cb is None or ca[0] != cb[0]:
            return None
        x, y = ca[1], cb[1]
    return 0 if x == y else (-1 if x < y else 1)


def from_fhir(value: Any) -> Quantity | None:
    """A FHIR Quantity-like JSON object (value + code/unit) as a Quantity, or None.
    Only UCUM-coded (or system-less) quantities are mapped; ``comparator`` is ignored."""
    if not isinstance(value, dict) or "value" not in value:
        return None
    raw = value["value"]
    if isinstance(raw, bool) or not isinstance(raw, (int, float, Decimal, str)):
        return None
    try:
        number = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
    except InvalidOperation:
        return None
    system = value.get("system")
    unit = value.get("code") if system in (None, UCUM_SYSTEM) else None
    if unit is None:
        unit = value.get("unit") or "1"
    return Quantity(number, unit)


def parse_string(text: str) -> Quantity | None:
    """``toQuantity()`` on a string: ``"4 'mg'"``, ``"4 days"``, ``"4"``."""
    text = text.strip()
    parts = text.split(None, 1)
    try:
        number = Decimal(parts[0])
    except (InvalidOperation, IndexError):
        return None
    if len(parts) == 1:
        return Quantity(number, "1")
    unit = parts[1].strip()
    if len(unit) >= 2 and unit[0] == unit[-1] == "'":
        return Quantity(number, unit[1:-1])
    if unit in CALENDAR_UNITS:
        return Quantity(number, CALENDAR_UNITS[unit])
    return None
