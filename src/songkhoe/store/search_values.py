"""Search parameter values as R4 writes them, parsed and checked.

R4 Search (http://hl7.org/fhir/R4/search.html):

- #combining: ``,`` separates alternatives (OR), a repeated parameter is AND;
- "Escaping Search Parameters" (#escaping): ``\\,``, ``\\$``, ``\\|`` and ``\\\\`` stand
  for the character itself;
- "Prefixes" (#prefix): number, date and quantity values may start with eq, ne, gt, lt, ge, le,
  sa, eb or ap;
- date (#date), number (#number), quantity (#quantity: ``[number]|[system]|[code]``), token
  (#token: ``[system]|[code]``), reference (#reference: ``[type]/[id]``, ``[id]``, ``[url]``),
  composite (#composite: components separated by ``$``).

A value of the wrong form is a 400 whose OperationOutcome names the parameter
("Handling Errors", #errors).
"""

from __future__ import annotations

from dataclasses import dataclass

from songkhoe.fhir.outcome import FhirError, Issue

from .ranges import RangeError, date_range, number_range

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def bad(name: str, message: str, code: str = "invalid") -> FhirError:
    """A 400 naming the search parameter ``name`` (as the client wrote it)."""
    return FhirError(400, Issue(code, f"search parameter {name}: {message}", name))


def split_unescaped(text: str, separator: str) -> list[str]:
    """``text`` split at each ``separator`` not escaped by a backslash; escapes are kept."""
    parts, current, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current.append(text[i:i + 2])
            i += 2
            continue
        if c == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    """R4 Search "Escaping": ``\\,`` → ``,``, ``\\$`` → ``$``, ``\\|`` → ``|``, ``\\\\`` → ``\\``."""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in ",$|\\":
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def alternatives(value: str) -> list[str]:
    """The OR alternatives of one parameter value, still escaped for ``|`` and ``$``."""
    return split_unescaped(value, ",")


def prefixed(value: str) -> tuple[str, str]:
    """(prefix, rest) of a number, date or quantity value; ``eq`` when none is written."""
    if len(value) > 2 and value[:2] in PREFIXES and not value[2].isalpha():
        return value[:2], value[2:]
    return "eq", value


@dataclass(frozen=True)
class DateValue:
    prefix: str
    lo: int  # µs, inclusive
    hi: int  # µs, inclusive


def date_value(name: str, text: str) -> DateValue:
    prefix, rest = prefixed(unescape(text))
    rest = rest.replace(" ", "+")  # a '+' offset that was not percent-encoded arrives as a space
    try:
        lo, hi = date_range(rest)
    except RangeError as exc:
        raise bad(name, str(exc)) from None
    return DateValue(prefix, lo, hi)


@dataclass(frozen=True)
class NumberValue:
    prefix: str
    value: float  # as written
    lo: float  # implicit range from the significant digits: [lo, hi)
    hi: float


def number_value(name: str, text: str) -> NumberValue:
    prefix, rest = prefixed(text)
    try:
        lo, hi = number_range(rest)
        value = float(rest)
    except (RangeError, ValueError):
        raise bad(name, f"expected a number such as 5.4, gt100 or 1e2, got {text!r}") from None
    return NumberValue(prefix, value, lo, hi)


@dataclass(frozen=True)
class QuantityValue:
    number: NumberValue
    system: str | None  # None: not given
    code: str | None  # None: not given


def quantity_value(name: str, text: str) -> QuantityValue:
    parts = split_unescaped(text, "|")
    if len(parts) not in (1, 3):
        raise bad(name, f"expected [prefix]number or [prefix]number|system|code, got {text!r}")
    number = number_value(name, unescape(parts[0]))
    if len(parts) == 1:
        return QuantityValue(number, None, None)
    system, code = unescape(parts[1]), unescape(parts[2])
    return QuantityValue(number, system or None, code or None)


@dataclass(frozen=True)
class TokenValue:
    system: str | None  # None: any system; "": no system (``|code``)
    code: str | None  # None: any code (``system|``)


def token_value(name: str, text: str) -> TokenValue:
    parts = split_unescaped(text, "|")
    if len(parts) == 1:
        code = unescape(parts[0])
        if not code:
            raise bad(name, "expected a code, system|code, |code or system|")
        return TokenValue(None, code)
    if len(parts) != 2:
        raise bad(name, f"expected system|code, got {text!r} (escape a literal | as \\|)")
    system, code = unescape(parts[0]), unescape(parts[1])
    if not system and not code:
        raise bad(name, "expected a code, system|code, |code or system|")
    return TokenValue(system, code or None)


@dataclass(frozen=True)
class OfTypeValue:
    type_system: str
    type_code: str
    value: str


def of_type_value(name: str, text: str) -> OfTypeValue:
    """``:of-type``: ``[type system]|[type code]|[identifier value]``, all three present."""
    parts = [unescape(p) for p in split_unescaped(text, "|")]
    if len(parts) != 3 or not all(parts):
        raise bad(name, f"expected type-system|type-code|value, got {text!r}")
    return OfTypeValue(*parts)


@dataclass(frozen=True)
class ReferenceValue:
    type: str | None
    id: str | None
    url: str | None  # an absolute URL (or urn:) to match as written


def reference_value(name: str, text: str, is_type: object) -> ReferenceValue:
    """``Type/id``, ``Type/id/_history/n``, ``id`` or an absolute URL."""
    value = unescape(text)
    if "://" in value or value.startswith("urn:"):
        return ReferenceValue(None, None, value.split("|")[0])
    parts = value.split("/")
    if len(parts) in (2, 4) and parts[1] and callable(is_type) and is_type(parts[0]) and \
            (len(parts) == 2 or parts[2] == "_history"):
        return ReferenceValue(parts[0], parts[1], None)
    if len(parts) == 1 and value:
        return ReferenceValue(None, value, None)
    raise bad(name, f"expected Type/id, an id or an absolute URL, got {text!r}")


def composite_parts(name: str, text: str, count: int) -> list[str]:
    """The ``$``-separated component values of a composite value (still escaped for ``|``)."""
    parts = split_unescaped(text, "$")
    if len(parts) != count:
        raise bad(name, f"expected {count} values separated by $, got {text!r}")
    return parts
