"""Implicit ranges of dates and numbers, as FHIR R4 search defines them.

R4 Search §3.1.1.4 (http://hl7.org/fhir/R4/search.html#date): a date or time stands for the
whole interval its precision allows — ``1960`` is 1960-01-01T00:00 to 1960-12-31T23:59:59.999…,
and a value without a time zone is taken as UTC (the server's zone). Dates are held as
microseconds since the Unix epoch, both ends inclusive.

R4 Search §3.1.1.4.1 (number): ``5.1`` stands for [5.05, 5.15) — half a unit of the last
significant digit either side; exponent notation sets the precision the same way.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

MIN_US = -(2**62)  # an open lower end (Period without start)
MAX_US = 2**62  # an open upper end (Period without end)

_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$")
_EPOCH_DAYS = 719163  # date(1970, 1, 1).toordinal()
_DAY_US = 86_400_000_000


class RangeError(ValueError):
    """A value that is not a date, dateTime, instant or number of the expected form."""


def _micros(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0, us: int = 0) -> int:
    days = datetime(y, m, d).toordinal() - _EPOCH_DAYS
    return days * _DAY_US + ((hh * 60 + mm) * 60 + ss) * 1_000_000 + us


def date_range(text: str) -> tuple[int, int]:
    """The inclusive µs interval of an R4 date, dateTime or instant string."""
    match = _DATE.match(text)
    if not match:
        raise RangeError(f"expected a date or dateTime (YYYY, YYYY-MM, YYYY-MM-DD or "
                         f"YYYY-MM-DDThh:mm[:ss[.fff]][Z|±hh:mm]), got {text!r}")
    g = match.groupdict()
    try:
        y = int(g["y"])
        if g["m"] is None:
            return _micros(y, 1, 1), _micros(y + 1, 1, 1) - 1 if y < 9999 else MAX_US
        m = int(g["m"])
        if g["d"] is None:
            last = calendar.monthrange(y, m)[1]
            return _micros(y, m, 1), _micros(y, m, last) + _DAY_US - 1
        d = int(g["d"])
        if g["H"] is None:
            start = _micros(y, m, d)
            return start, start + _DAY_US - 1
        hh, mm = int(g["H"]), int(g["M"])
        if hh > 23 or mm > 59:
            raise ValueError("hour or minute out of range")
        offset = 0
        if g["tz"] and g["tz"] != "Z":
            sign = -1 if g["tz"][0] == "-" else 1
            offset = sign * (int(g["tz"][1:3]) * 60 + int(g["tz"][4:6])) * 60_000_000
        if g["S"] is None:
            start = _micros(y, m, d, hh, mm) - offset
            return start, start + 60_000_000 - 1
        ss = int(g["S"])
        if ss > 59:
            raise ValueError("second out of range")
        fraction = g["f"]
        if fraction is None:
            start = _micros(y, m, d, hh, mm, ss) - offset
            return start, start + 1_000_000 - 1
        digits = min(len(fraction), 6)
        us = int(fraction[:6].ljust(6, "0"))
        start = _micros(y, m, d, hh, mm, ss, us) - offset
        return start, start + 10 ** (6 - digits) - 1
    except ValueError as exc:
        raise RangeError(f"{text!r} is not a real calendar date or time ({exc})") from None


def instant_us(moment: datetime) -> int:
    """µs since the epoch of an aware datetime."""
    return int(calendar.timegm(moment.utctimetuple())) * 1_000_000 + moment.microsecond


def from_us(us: int) -> datetime:
    """The aware UTC datetime of µs since the epoch."""
    return datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc).replace(
        microsecond=us % 1_000_000)


def format_instant(us: int) -> str:
    """An R4 instant string (UTC, millisecond precision kept to µs when present)."""
    moment = from_us(us)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{moment.microsecond:06d}".rstrip("0")
    return f"{text}.{frac.ljust(3, '0')}Z" if frac else f"{text}.000Z"


def number_range(value: str | int | float | Decimal) -> tuple[float, float]:
    """The implicit range of a decimal given its significant digits."""
    if type(value) is int:
        return value - 0.5, value + 0.5
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise RangeError(f"expected a number, got {value!r}") from None
    if not number.is_finite():
        raise RangeError(f"expected a finite number, got {value!r}")
    half = Decimal(5).scaleb(number.as_tuple().exponent - 1)  # type: ignore[operator]
    return float(number - half), float(number + half)
