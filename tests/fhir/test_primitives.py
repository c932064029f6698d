"""R4 primitive types (http://hl7.org/fhir/R4/datatypes.html#primitive) in their JSON form."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from songkhoe.fhir import primitives
from songkhoe.fhir.primitives import check, is_json_type, is_valid

VALID: list[tuple[str, Any]] = [
    ("boolean", True), ("boolean", False),
    ("integer", 0), ("integer", -2147483648), ("integer", 2147483647),
    ("unsignedInt", 0), ("positiveInt", 1),
    ("decimal", 0), ("decimal", -1.5), ("decimal", 1e-3), ("decimal", Decimal("3.1400")),
    ("string", "Nguyễn Thị Ánh"), ("string", " padded "), ("string", "a\nb"),
    ("markdown", "**Huyết áp** cao"),
    ("code", "final"), ("code", "mm[Hg]"), ("code", "two words"),
    ("id", "a"), ("id", "Patient-1.v2"), ("id", "x" * 64),
    ("uri", "http://loinc.org"), ("uri", "urn:oid:1.2.3"), ("uri", "#p1"),
    ("url", "https://example.org/fhir"), ("canonical", "http://hl7.org/fhir/ValueSet/x|4.0.1"),
    ("oid", "urn:oid:2.16.840.1.113883"),
    ("uuid", "urn:uuid:c757873d-ec9a-4326-a141-556f43239520"),
    ("base64Binary", "SGVsbG8="), ("base64Binary", "SGVs\nbG8="),
    ("date", "2024"), ("date", "2024-02"), ("date", "2024-02-29"), ("date", "2000-02-29"),
    ("dateTime", "2024"), ("dateTime", "2024-05"), ("dateTime", "2024-05-06"),
    ("dateTime", "2024-05-06T08:25:00+07:00"), ("dateTime", "2024-05-06T08:25:00.123Z"),
    ("dateTime", "2016-12-31T23:59:60Z"),
    ("instant", "2024-05-06T01:25:00Z"), ("instant", "2024-05-06T08:25:00.5+07:00"),
    ("instant", "2024-05-06T08:25:00+14:00"), ("instant", "2024-05-06T08:25:00-03:30"),
    ("time", "08:25:00"), ("time", "23:59:59.999"),
    ("xhtml", '<div xmlns="http://www.w3.org/1999/xhtml"><p>Xin chào <b>An</b></p></div>'),
    ("xhtml", '<div xmlns="http://www.w3.org/1999/xhtml"><img src="#a" alt=""/></div>'),
]

INVALID: list[tuple[str, Any, str]] = [
    ("boolean", "true", "expected a boolean (JSON true or false), got 'true'"),
    ("boolean", 1, "expected a boolean (JSON true or false), got a number (1)"),
    ("integer", 1.0, "expected an integer (a JSON number without fraction), got a number (1.0)"),
    ("integer", "1", "got '1'"),
    ("integer", True, "got true"),
    ("integer", 2147483648, "out of range -2147483648..2147483647"),
    ("unsignedInt", -1, "out of range 0..2147483647"),
    ("positiveInt", 0, "out of range 1..2147483647"),
    ("decimal", "1.5", "expected a decimal (a JSON number), got '1.5'"),
    ("decimal", float("nan"), "finite"),
    ("decimal", False, "got false"),
    ("string", "", "got an empty string"),
    ("string", "  \t\n", "expected a string with non-whitespace content"),
    ("string", 5, "expected a string, got a number (5)"),
    ("string", None, "expected a string, got null"),
    ("markdown", " ", "expected markdown with non-whitespace content"),
    ("code", " final", "expected a code"),
    ("code", "a  b", "expected a code"),
    ("code", "", "got an empty string"),
    ("id", "a b", "expected an id (1 to 64 of A-Z, a-z, 0-9, '-' and '.'), got 'a b'"),
    ("id", "x" * 65, "expected an id"),
    ("id", "a_b", "expected an id"),
    ("uri", "http://x y", "expected a uri (no whitespace)"),
    ("oid", "urn:oid:3.1", "expected an oid"),
    ("oid", "1.2.3", "expected an oid"),
    ("uuid", "urn:uuid:C757873D-EC9A-4326-A141-556F43239520", "expected a uuid"),
    ("uuid", "c757873d-ec9a-4326-a141-556f43239520", "expected a uuid"),
    ("base64Binary", "abc", "expected base64Binary"),
    ("date", "2023-13-01", "expected a date (YYYY, YYYY-MM or YYYY-MM-DD), got '2023-13-01'"),
    ("date", "2023-02-30",
     "expected a date (YYYY, YYYY-MM or YYYY-MM-DD), got '2023-02-30' (2023-02 has 28 days)"),
    ("date", "2023-02-29", "(2023-02 has 28 days)"),
    ("date", "1900-02-29", "(1900-02 has 28 days)"),
    ("date", "2023-04-31", "(2023-04 has 30 days)"),
    ("date", "0000", "expected a date"),
    ("date", "2024-05-06T08:00:00Z", "expected a date"),
    ("date", "24-05-06", "expected a date"),
    ("dateTime", "2024-05-06T08:25:00", "expected a dateTime"),  # time needs a timezone
    ("dateTime", "2024-05-06T08:25Z", "expected a dateTime"),
    ("dateTime", "2024-05-06T24:00:00Z", "expected a dateTime"),
    ("dateTime", "2024-05-06 08:25:00Z", "expected a dateTime"),
    ("dateTime", "2023-02-30T08:00:00Z", "(2023-02 has 28 days)"),
    ("dateTime", "2024-05-06T08:25:00+15:00", "expected a dateTime"),
    ("instant", "2024-05-06", "expected an instant"),
    ("instant", "2024-05-06T08:25:00", "expected an instant"),
    ("time", "8:25:00", "expected a time (hh:mm:ss[.fff]), got '8:25:00'"),
    ("time", "08:25", "expected a time"),
    ("time", "08:25:00Z", "expected a time"),
    ("xhtml", "<p>hi</p>", "got a <p> root element"),
    ("xhtml", "<div>hi</div>", "got a <div> root element"),  # no XHTML namespace
    ("xhtml", '<div xmlns="http://www.w3.org/1999/xhtml">a &nbsp; b</div>', "not well-formed"),
    ("xhtml", '<div xmlns="http://www.w3.org/1999/xhtml"><script>x()</script>ok</div>',
     "without <script> elements (txt-1)"),
    ("xhtml", '<div xmlns="http://www.w3.org/1999/xhtml"><p onclick="x()">a</p></div>',
     "event-handler"),
    ("xhtml", '<div xmlns="http://www.w3.org/1999/xhtml">  </div>', "non-whitespace content"),
    ("xhtml", '<!DOCTYPE div><div xmlns="http://www.w3.org/1999/xhtml">a</div>', "DOCTYPE"),
]


@pytest.mark.parametrize(("type_code", "value"), VALID)
def test_valid_values(type_code: str, value: Any) -> None:
    assert check(type_code, value) is None
    assert is_valid(type_code, value)


@pytest.mark.parametrize(("type_code", "value", "message"), INVALID)
def test_invalid_values_say_what_was_expected(type_code: str, value: Any, message: str) -> None:
    problem = check(type_code, value)
    assert problem is not None
    assert message in problem
    assert not is_valid(type_code, value)


def test_all_twenty_r4_primitive_types_have_a_checker() -> None:
    assert set(primitives.CHECKERS) == {
        "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id",
        "instant", "integer", "markdown", "oid", "positiveInt", "string", "time",
        "unsignedInt", "uri", "url", "uuid", "xhtml"}


def test_unknown_type_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        check("Quantity", {})


def test_json_types() -> None:
    assert is_json_type("boolean", True) and not is_json_type("boolean", "true")
    assert is_json_type("decimal", 1) and is_json_type("decimal", 1.5)
    assert not is_json_type("integer", True)
    assert is_json_type("date", "2023-13-01") and not is_json_type("date", 2023)


def test_long_strings_are_limited_to_one_megabyte() -> None:
    assert check("string", "a" * (1024 * 1024)) is None
    problem = check("string", "a" * (1024 * 1024 + 1))
    assert problem is not None and "at most 1,048,576 characters" in problem


def test_base64_check_is_linear_on_spaced_invalid_input() -> None:
    """The spec's regex backtracks exponentially on spaced groups with a bad tail."""
    value = " ".join(["QUJD"] * 5000) + " AB!"
    start = time.perf_counter()
    assert check("base64Binary", value) is not None
    assert check("base64Binary", " ".join(["QUJD"] * 5000)) is None
    assert time.perf_counter() - start < 1.0
