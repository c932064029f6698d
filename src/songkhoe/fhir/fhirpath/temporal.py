"""FHIRPath Date, DateTime and Time values with precision.

FHIRPath N1 "Literals" Date, DateTime, Time (http://hl7.org/fhirpath/N1/#date, #datetime, #time),
§6.1 equality (date/time equality is precision-aware: comparing values of different precision
gives empty), §6.2 comparison (http://hl7.org/fhirpath/N1/#comparison) and date/time
arithmetic (http://hl7.org/fhirpath/N1/#datetime-arithmetic). FHIR's ``date``, ``dateTime``,
``instant`` and ``time`` primitives (http://hl7.org/fhir/R4/datatypes.html#primitive) map onto
these (R4 FHIRPath "FHIRPath types", http://hl7.org/fhir/R4/fhirpath.html#types).

Every value keeps ``text``, the string as written (FHIR JSON form, without the ``@`` of a
FHIRPath literal), and ``precision``: the number of components present
(Date: 1 year … 3 day; DateTime: 1 year … 7 millisecond; Time: 1 hour … 4 millisecond).
Seconds and milliseconds are one precision for comparison (N1 §6.2). A DateTime without a
timezone is compared as if it were in :data:`DEFAULT_TZ_MINUTES` (UTC unless configured).
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

DEFAULT_TZ_MINUTES = 0  # timezone offset assumed for DateTime values that carry none

_DATE_RE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?\Z")
_TIME_RE = re.compile(r"(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?\Z")
_DATETIME_RE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(?:(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?\Z")


def _check(y: int, mo: int | None, d: int | None) -> None:
    if mo is not None and not 1 <= mo <= 12:
        raise ValueError(f"month {mo} out of range")
    if d is not None and mo is not None and not 1 <= d <= calendar.monthrange(y, mo)[1]:
        raise ValueError(f"day {d} out of range")


def _check_time(h: int | None, mi: int | None, sec: int | None) -> None:
    if h is not None and not 0 <= h <= 23:
        raise ValueError(f"hour {h} out of range")
    if mi is not None and not 0 <= mi <= 59:
        raise ValueError(f"minute {mi} out of range")
    if sec is not None and not 0 <= sec <= 60:
        raise ValueError(f"second {sec} out of range")


def _frac_ms(frac: str | None) -> int | None:
    if frac is None:
        return None
    return int((frac + "000")[:3])


class _Temporal:
    """Shared behaviour: ordering keys, precision-aware comparison, text form."""

    __slots__ = ("parts", "precision", "text")
    kind = ""
    text: str
    precision: int
    parts: tuple[int, ...]

    def key(self) -> tuple[Any, ...]:  # pragma: no cover - overridden
        raise NotImplementedError

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text!r})"

    def __hash__(self) -> int:
        return hash((self.kind, self.text))

    def __eq__(self, other: object) -> bool:
        """Python identity of values (same kind, same text), not FHIRPath equality."""
        return isinstance(other, _Temporal) and other.kind == self.kind and \
            other.text == self.text


def _sec_key(sec: int | None, ms: int | None) -> Any:
    if sec is None:
        return None
    return Decimal(sec) + (Decimal(ms) / 1000 if ms is not None else 0)


class Date(_Temporal):
    """A FHIRPath Date (FHIR ``date``): year, year-month or year-month-day."""

    __slots__ = ()
    kind = "date"

    def __init__(self, text: str) -> None:
        m = _DATE_RE.match(text)
        if not m:
            raise ValueError(f"not a date: {text!r}")
        y, mo, d = (int(g) if g is not None else None for g in m.groups())
        assert y is not None
        _check(y, mo, d)
        self.text = text
        self.parts = tuple(p for p in (y, mo, d) if p is not None)
        self.precision = len(self.parts)

    def key(self) -> tuple[Any, ...]:
        return self.parts

    def to_datetime(self) -> DateTime:
        return DateTime(self.text)

    @property
    def year(self) -> int:
        return self.parts[0]


class DateTime(_Temporal):
    """A FHIRPath DateTime (FHIR ``dateTime`` / ``instant``), possibly partial, with an
    optional timezone offset ``tz`` in minutes."""

    __slots__ = ("tz",)
    kind = "dateTime"

    def __init__(self, text: str) -> None:
        m = _DATETIME_RE.match(text)
        if not m:
            raise ValueError(f"not a dateTime: {text!r}")
        g = m.groups()
        y, mo, d, h, mi, sec = (int(x) if x is not None else None for x in g[:6])
        assert y is not None
        _check(y, mo, d)
        _check_time(h, mi, sec)
        ms = _frac_ms(g[6])
        tz = g[7]
        self.text = text
        self.parts = tuple(p for p in (y, mo, d, h, mi, sec, ms) if p is not None)
        self.precision = len(self.parts)
        if tz is None:
            self.tz: int | None = None
        elif tz == "Z":
            self.tz = 0
        else:
            sign = -1 if tz[0] == "-" else 1
            self.tz = sign * (int(tz[1:3]) * 60 + int(tz[4:6]))

    def key(self) -> tuple[Any, ...]:
        p = self.parts
        if self.precision < 4:  # no time of day: timezone has no effect
            return p
        tz = self.tz if self.tz is not None else DEFAULT_TZ_MINUTES
        mi = p[4] if self.precision >= 5 else 0
        dt = datetime(p[0], p[1], p[2], p[3], mi) - timedelta(minutes=tz)
        head: tuple[Any, ...] = (dt.year, dt.month, dt.day, dt.hour)
        if self.precision >= 5:
            head += (dt.minute,)
        if self.precision >= 6:
            head += (_sec_key(p[5], p[6] if self.precision == 7 else None),)
        return head

    def to_python(self) -> datetime:
        """A Python datetime (missing components at their minimum; tz-aware when known)."""
        p = self.parts + (1, 1, 0, 0, 0, 0)[len(self.parts) - 1:]
        tzinfo = timezone(timedelta(minutes=self.tz)) if self.tz is not None else None
        return datetime(p[0], p[1], p[2], p[3], p[4], p[5], p[6] * 1000, tzinfo=tzinfo)

    @property
    def year(self) -> int:
        return self.parts[0]


class Time(_Temporal):
    """A FHIRPath Time (FHIR ``time``): hh, hh:mm, hh:mm:ss or hh:mm:ss.fff."""

    __slots__ = ()
    kind = "time"

    def __init__(self, text: str) -> None:
        m = _TIME_RE.match(text)
        if not m:
            raise ValueError(f"not a time: {text!r}")
        h, mi, sec = (int(x) if x is not None else None for x in m.groups()[:3])
        _check_time(h, mi, sec)
        ms = _frac_ms(m.group(4))
        self.text = text
        self.parts = tuple(p for p in (h, mi, sec, ms) if p is not None)
        self.precision = len(self.parts)

    def key(self) -> tuple[Any, ...]:
        p = self.parts
        if self.precision >= 3:
            return p[:2] + (_sec_key(p[2], p[3] if self.precision == 4 else None),)
        return p


Temporal = _Temporal


def parse_literal(text: str) -> Date | DateTime | Time:
    """A FHIRPath ``@`` literal (text after the ``@``): ``T``-prefixed → Time; containing ``T``
    → DateTime (``@2015T`` is a DateTime of year precision); otherwise Date."""
    if text.startswith("T"):
        return Time(text[1:])
    if "T" in text:
        return DateTime(text.removesuffix("T"))
    return Date(text)


def compare(a: _Temporal, b: _Temporal) -> int | None:
    """-1, 0 or 1; None when the values differ in precision and agree on every shared
    component (N1 §6.2: the result is empty), or when the kinds cannot be compared."""
    if a.kind != b.kind:
        if a.kind == "date" and b.kind == "dateTime":
            a = a.to_datetime()  # type: ignore[attr-defined]
        elif a.kind == "dateTime" and b.kind == "date":
            b = b.to_datetime()  # type: ignore[attr-defined]
        else:
            return None
    ka, kb = a.key(), b.key()
    for x, y in zip(ka, kb):
        if x != y:
            return -1 if x < y else 1
    if len(ka) != len(kb):
        return None
    return 0


# -- boundaries (FHIRPath 2.0 lowBoundary()/highBoundary(), required by SQL-on-FHIR v2) -------

def _pad_ms(ms: int) -> str:
    return f"{ms:03d}"


def boundary(value: _Temporal, high: bool, precision: int | None = None) -> _Temporal | None:
    """The least (``high=False``) or greatest possible value the partial value may stand for,
    at ``precision`` digits (default: the type's full precision). A DateTime without a
    timezone takes the widest offsets (+14:00 low, -12:00 high)."""
    if isinstance(value, Date):
        y = value.parts[0]
        mo = value.parts[1] if value.precision >= 2 else (12 if high else 1)
        if value.precision >= 3:
            d = value.parts[2]
        else:
            d = calendar.monthrange(y, mo)[1] if high else 1
        full = [f"{y:04d}", f"{mo:02d}", f"{d:02d}"]
        keep = 3 if precision is None else {4: 1, 6: 2, 8: 3}.get(precision)
        if keep is None:
            return None
        return Date("-".join(full[:keep]))
    if isinstance(value, DateTime):
        p = list(value.parts)
        y = p[0]
        mo = p[1] if len(p) >= 2 else (12 if high else 1)
        d = p[2] if len(p) >= 3 else (calendar.monthrange(y, mo)[1] if high else 1)
        h = p[3] if len(p) >= 4 else (23 if high else 0)
        mi = p[4] if len(p) >= 5 else (59 if high else 0)
        sec = p[5] if len(p) >= 6 else (59 if high else 0)
        ms = p[6] if len(p) >= 7 else (999 if high else 0)
        if value.tz is None:
            tz = "-12:00" if high else "+14:00"
        elif value.tz == 0 and value.text.endswith("Z"):
            tz = "Z"
        else:
            sign = "-" if value.tz < 0 else "+"
            tz = f"{sign}{abs(value.tz) // 60:02d}:{abs(value.tz) % 60:02d}"
        text = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{sec:02d}.{_pad_ms(ms)}{tz}"
        if precision is not None:
            cuts = {4: 4, 6: 7, 8: 10, 10: 13, 12: 16, 14: 19, 17: 23}
            if precision not in cuts:
                return None
            text = text[:cuts[precision]] + (tz if precision >= 10 else "")
        return DateTime(text)
    if isinstance(value, Time):
        p = list(value.parts)
        h = p[0]
        mi = p[1] if len(p) >= 2 else (59 if high else 0)
        sec = p[2] if len(p) >= 3 else (59 if high else 0)
        ms = p[3] if len(p) >= 4 else (999 if high else 0)
        text = f"{h:02d}:{mi:02d}:{sec:02d}.{_pad_ms(ms)}"
        if precision is not None:
            cuts = {2: 2, 4: 5, 6: 8, 9: 12}
            if precision not in cuts:
                return None
            text = text[:cuts[precision]]
        return Time(text)
    return None  # pragma: no cover


def digits_precision(value: _Temporal) -> int:
    """The ``precision()`` of a date/time value: the number of digits present
    (e.g. 2014 → 4, 2014-01-05T10:30:00.000 → 17, T10:30 → 4)."""
    if isinstance(value, Time):
        return (2, 4, 6, 9)[value.precision - 1]
    return (4, 6, 8, 10, 12, 14, 17)[value.precision - 1]


# -- arithmetic (N1 "Date/Time Arithmetic") ----------------------------------------------------

_COMPONENT = {"year": 0, "month": 1, "week": 2, "day": 2, "hour": 3, "minute": 4, "second": 5,
              "millisecond": 6}


def add_duration(value: _Temporal, amount: Decimal, unit: str) -> _Temporal:
    """``value + amount unit`` for a calendar duration unit (year … millisecond). Per N1, a
    duration finer than the value's precision is converted (truncated) to that precision."""
    if unit == "week":
        amount, unit = amount * 7, "day"
    if isinstance(value, Time):
        hp = list(value.parts) + [0, 0, 0, 0]
        base = datetime(2000, 1, 1, hp[0], hp[1], hp[2], hp[3] * 1000)
        delta = _timedelta(amount, unit)
        if delta is None:
            raise ValueError(f"cannot add {unit} to a Time")
        r = base + delta
        full = f"{r.hour:02d}:{r.minute:02d}:{r.second:02d}.{r.microsecond // 1000:03d}"
        return Time(full[:{1: 2, 2: 5, 3: 8, 4: 12}[value.precision]])
    parts = list(value.parts)
    prec = value.precision
    if unit in ("year", "month"):
        n = int(amount)
        if unit == "year" or prec == 1:
            months = n * 12 if unit == "year" else (n // 12) * 12
        else:
            months = n
        y = parts[0] + (parts[1] - 1 + months) // 12 if prec >= 2 else parts[0] + months // 12
        if prec >= 2:
            mo = (parts[1] - 1 + months) % 12 + 1
            parts[0], parts[1] = y, mo
            if prec >= 3:
                parts[2] = min(parts[2], calendar.monthrange(y, mo)[1])
        else:
            parts[0] = y
        if not 1 <= parts[0] <= 9999:
            raise ValueError("date out of range")
    else:
        component = _COMPONENT[unit]
        if component >= prec:  # finer than the value: convert to the value's precision
            seconds = _timedelta(amount, unit)
            assert seconds is not None
            unit_at = ["year", "month", "day", "hour", "minute", "second", "millisecond"][prec - 1]
            if unit_at in ("year", "month"):
                return value
            whole = int(seconds / _timedelta(Decimal(1), unit_at))  # type: ignore[operator]
            return add_duration(value, Decimal(whole), unit_at)
        comps = parts + [1, 1, 0, 0, 0, 0][len(parts) - 1:]
        dt = datetime(comps[0], comps[1], comps[2], comps[3], comps[4], comps[5],
                      comps[6] * 1000)
        delta = _timedelta(amount, unit)
        assert delta is not None
        dt = dt + delta
        parts = [dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second,
                 dt.microsecond // 1000][:prec]
    return _rebuild(value, parts)


def _timedelta(amount: Decimal, unit: str) -> timedelta | None:
    f = float(amount)
    return {"day": timedelta(days=f), "hour": timedelta(hours=f), "minute": timedelta(minutes=f),
            "second": timedelta(seconds=f), "millisecond": timedelta(milliseconds=f),
            "week": timedelta(weeks=f)}.get(unit)


def _rebuild(value: _Temporal, parts: list[int]) -> _Temporal:
    text = f"{parts[0]:04d}"
    if len(parts) >= 2:
        text += f"-{parts[1]:02d}"
    if len(parts) >= 3:
        text += f"-{parts[2]:02d}"
    if isinstance(value, Date):
        return Date(text)
    assert isinstance(value, DateTime)
    if len(parts) >= 4:
        text += f"T{parts[3]:02d}"
    if len(parts) >= 5:
        text += f":{parts[4]:02d}"
    if len(parts) >= 6:
        text += f":{parts[5]:02d}"
    if len(parts) >= 7:
        text += f".{parts[6]:03d}"
    if value.tz is not None and len(parts) >= 4:
        tzm = value.tz
        text += "Z" if value.text.endswith("Z") else \
            f"{'-' if tzm < 0 else '+'}{abs(tzm) // 60:02d}:{abs(tzm) % 60:02d}"
    return DateTime(text)


def now() -> DateTime:
    dt = datetime.now(UTC).astimezone()
    off = dt.utcoffset() or timedelta(0)
    mins = int(off.total_seconds() // 60)
    tz = f"{'-' if mins < 0 else '+'}{abs(mins) // 60:02d}:{abs(mins) % 60:02d}"
    return DateTime(dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}" + tz)


def today() -> Date:
    return Date(datetime.now().strftime("%Y-%m-%d"))


def time_of_day() -> Time:
    dt = datetime.now()
    return Time(dt.strftime("%H:%M:%S.") + f"{dt.microsecond // 1000:03d}")


_parsed: dict[tuple[str, str], _Temporal | None] = {}


def from_fhir(text: str, fhir_type: str) -> _Temporal | None:
    """The temporal value of a FHIR primitive string of type ``fhir_type`` (date, dateTime,
    instant, time), or None if it does not parse. Values are immutable, so parses are cached."""
    key = (text, fhir_type)
    hit = _parsed.get(key, False)
    if hit is not False:
        return hit  # type: ignore[return-value]
    value: _Temporal | None = None
    try:
        if fhir_type == "date":
            value = Date(text)
        elif fhir_type in ("dateTime", "instant"):
            value = DateTime(text)
        elif fhir_type == "time":
            value = Time(text)
    except ValueError:
        value = None
    if len(_parsed) >= 20000:
        _parsed.clear()
    _parsed[key] = value
    return value


def coerce_like(text: str, like: _Temporal) -> _Temporal | None:
    """Read a string as the same kind of temporal value as ``like`` (N1 implicit conversion of a
    FHIR string carrying a date/time), or None."""
    try:
        if like.kind == "time":
            return Time(text)
        if "T" in text or like.kind == "dateTime":
            return DateTime(text)
        return Date(text)
    except ValueError:
        return None
