"""FHIR R4 primitive datatypes: their JSON representation and lexical rules.

Implements http://hl7.org/fhir/R4/datatypes.html#primitive (regexes and value ranges) and
http://hl7.org/fhir/R4/json.html#primitive (boolean, integer and decimal types are JSON
booleans and numbers, all others JSON strings; ``""`` is never a value). The spec's regexes
are XML Schema regexes, where ``\\s`` is only space, tab, CR and LF; they are translated
accordingly. On top of the regexes, dates are checked against the calendar (2023-02-30 is
not a date) and integers against their 32-bit range.

``check(type_code, value)`` answers ``None`` when ``value`` is a valid JSON value of the
primitive type, or a message saying what was expected and what was found.
"""

from __future__ import annotations

import calendar
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from decimal import Decimal
from typing import Any

Checker = Callable[[Any], "str | None"]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MAX_STRING = 1024 * 1024  # "strings SHALL NOT exceed 1MB"
XML_WS = " \t\r\n"  # XML Schema's \s
XHTML_NS = "http://www.w3.org/1999/xhtml"

_YEAR = r"(?P<y>[0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH = r"(?P<m>0[1-9]|1[0-2])"
_DAY = r"(?P<d>0[1-9]|[1-2][0-9]|3[0-1])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"

DATE = re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY})?)?")
DATE_TIME = re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY}(T{_TIME}{_ZONE})?)?)?")
INSTANT = re.compile(rf"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}{_ZONE}")
TIME = re.compile(_TIME)
ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# "no leading or trailing whitespace, and no whitespace other than single spaces"
CODE = re.compile(r"[^ \t\r\n]+( [^ \t\r\n]+)*")
URI = re.compile(r"[^ \t\r\n]+")
OID = re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+")
UUID = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# The spec's (\s*([0-9a-zA-Z\+\=]){4}\s*)+ with '/', written without the ambiguity between
# one group's trailing and the next group's leading whitespace (exponential backtracking).
BASE64 = re.compile(r"[ \t\r\n]*([0-9a-zA-Z+/=]{4}[ \t\r\n]*)+")

# The Python types a JSON parser gives for each primitive's JSON representation.
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "boolean": (bool,), "integer": (int,), "unsignedInt": (int,), "positiveInt": (int,),
    "decimal": (int, float, Decimal),
}

# Narrative rule txt-1 (http://hl7.org/fhir/R4/narrative.html#xhtml): no active or
# document-level content.
_XHTML_FORBIDDEN = frozenset({
    "head", "body", "html", "script", "style", "link", "meta", "base", "form", "input",
    "button", "select", "textarea", "frame", "frameset", "iframe", "object", "applet", "embed",
})


def describe(value: Any) -> str:
    """A short description of a JSON value for a message: ``a number (42)``, ``an array``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return "an empty string" if not value else f"'{shown}'"
    if isinstance(value, list):
        return "an empty array" if not value else "an array"
    if isinstance(value, dict):
        return "an empty object" if not value else "an object"
    return type(value).__name__


def _text(kind: str, pattern: re.Pattern[str] | None = None) -> Checker:
    """A checker for a string-based primitive, optionally with a regex."""
    def check(value: Any) -> str | None:
        if type(value) is not str:
            return f"expected {kind}, got {describe(value)}"
        if not value:
            return f"expected {kind}, got an empty string"
        if pattern is not None and pattern.fullmatch(value) is None:
            return f"expected {kind}, got {describe(value)}"
        return None
    return check


def check_string(value: Any) -> str | None:
    if type(value) is not str:
        return f"expected a string, got {describe(value)}"
    if not value.strip(XML_WS):
        return f"expected a string with non-whitespace content, got {describe(value)}"
    if len(value) > MAX_STRING:
        return f"expected a string of at most 1,048,576 characters, got {len(value):,}"
    return None


def check_markdown(value: Any) -> str | None:
    message = check_string(value)
    return message.replace("a string", "markdown", 1) if message else None


def check_boolean(value: Any) -> str | None:
    if type(value) is not bool:
        return f"expected a boolean (JSON true or false), got {describe(value)}"
    return None


def _integer(kind: str, low: int, high: int) -> Checker:
    def check(value: Any) -> str | None:
        if type(value) is not int:
            return f"expected {kind}, got {describe(value)}"
        if not low <= value <= high:
            return f"expected {kind}, got {value}: out of range {low}..{high}"
        return None
    return check


check_integer = _integer("an integer (a JSON number without fraction)", INT32_MIN, INT32_MAX)
check_unsigned_int = _integer("an unsignedInt (a JSON number 0 or more)", 0, INT32_MAX)
check_positive_int = _integer("a positiveInt (a JSON number 1 or more)", 1, INT32_MAX)


def check_decimal(value: Any) -> str | None:
    if type(value) is int:
        return None
    if type(value) is float or type(value) is Decimal:
        if math.isfinite(value):
            return None
        return f"expected a decimal (a finite JSON number), got {value}"
    return f"expected a decimal (a JSON number), got {describe(value)}"


def _calendar_error(match: re.Match[str]) -> str | None:
    """Why a regex-valid date is not on the calendar (day 30 of February), or None."""
    day = match.group("d")
    if day is None:
        return None
    year, month = int(match.group("y")), int(match.group("m"))
    days = calendar.monthrange(year, month)[1]
    if int(day) > days:
        return f" ({year:04d}-{month:02d} has {days} days)"
    return None


def _dated(kind: str, pattern: re.Pattern[str]) -> Checker:
    def check(value: Any) -> str | None:
        if type(value) is not str:
            return f"expected {kind}, got {describe(value)}"
        match = pattern.fullmatch(value)
        if match is None:
            return f"expected {kind}, got {describe(value)}"
        problem = _calendar_error(match)
        if problem:
            return f"expected {kind}, got {describe(value)}{problem}"
        return None
    return check


check_date = _dated("a date (YYYY, YYYY-MM or YYYY-MM-DD)", DATE)
check_date_time = _dated("a dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.fff] "
                         "with a timezone, Z or +hh:mm, when a time is given)", DATE_TIME)
check_instant = _dated("an instant (YYYY-MM-DDThh:mm:ss[.fff] with a timezone, "
                       "Z or +hh:mm)", INSTANT)
check_time = _text("a time (hh:mm:ss[.fff])", TIME)
check_id = _text("an id (1 to 64 of A-Z, a-z, 0-9, '-' and '.')", ID)
check_code = _text("a code (no leading, trailing or repeated whitespace)", CODE)
check_uri = _text("a uri (no whitespace)", URI)
check_url = _text("a url (no whitespace)", URI)
check_canonical = _text("a canonical URL (no whitespace)", URI)
check_oid = _text("an oid (urn:oid:1.2.3...)", OID)
check_uuid = _text("a uuid (urn:uuid: and 36 lower-case hex characters and dashes)", UUID)
check_base64 = _text("base64Binary (groups of four of A-Z, a-z, 0-9, +, / and =)", BASE64)


def check_xhtml(value: Any) -> str | None:
    """A narrative ``div``: well-formed XHTML, a ``<div>`` in the XHTML namespace, only the
    permitted elements (txt-1) and some content (txt-2)."""
    kind = "XHTML (a <div xmlns=\"http://www.w3.org/1999/xhtml\"> element)"
    if type(value) is not str or not value:
        return f"expected {kind}, got {describe(value)}"
    if "<!" in value.replace("<!--", ""):
        return f"expected {kind} without DOCTYPE or entity declarations"
    try:
        root = ET.fromstring(value)
    except ET.ParseError as e:
        return f"expected {kind}, got XML that is not well-formed: {e}"
    if root.tag != f"{{{XHTML_NS}}}div":
        return f"expected {kind}, got a <{root.tag}> root element"
    has_content = False
    for el in root.iter():
        local = el.tag.rsplit("}", 1)[-1] if isinstance(el.tag, str) else ""
        if local in _XHTML_FORBIDDEN:
            return f"expected {kind} without <{local}> elements (txt-1)"
        if any(name.lower().startswith("on") for name in el.attrib):
            return f"expected {kind} without event-handler attributes (txt-1)"
        if local == "img" or (el.text and el.text.strip()) or (el.tail and el.tail.strip()):
            has_content = True
    if not has_content:
        return f"expected {kind} with some non-whitespace content (txt-2)"
    return None


CHECKERS: dict[str, Checker] = {
    "base64Binary": check_base64, "boolean": check_boolean, "canonical": check_canonical,
    "code": check_code, "date": check_date, "dateTime": check_date_time,
    "decimal": check_decimal, "id": check_id, "instant": check_instant,
    "integer": check_integer, "markdown": check_markdown, "oid": check_oid,
    "positiveInt": check_positive_int, "string": check_string, "time": check_time,
    "unsignedInt": check_unsigned_int, "uri": check_uri, "url": check_url,
    "uuid": check_uuid, "xhtml": check_xhtml,
}
"""The checker of each of the 20 R4 primitive types."""


def check(type_code: str, value: Any) -> str | None:
    """``None`` if ``value`` is a valid JSON value of primitive ``type_code``, else why not.

    >>> check("date", "2023-02-30")
    "expected a date (YYYY, YYYY-MM or YYYY-MM-DD), got '2023-02-30' (2023-02 has 28 days)"
    """
    checker = CHECKERS.get(type_code)
    if checker is None:
        raise KeyError(f"{type_code!r} is not an R4 primitive type")
    return checker(value)


def is_valid(type_code: str, value: Any) -> bool:
    """Whether ``value`` is a valid JSON value of primitive ``type_code``."""
    return check(type_code, value) is None


def is_json_type(type_code: str, value: Any) -> bool:
    """Whether ``value`` has the JSON type of primitive ``type_code`` (number, boolean or
    string), whatever its content."""
    return type(value) in JSON_TYPES.get(type_code, (str,))
