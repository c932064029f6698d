"""Functions: N1 §5 (existence, filtering, subsetting, combining, conversion, strings, math,
tree navigation, utility), aggregate (§7), and the FHIRPath 2.0 additions SQL-on-FHIR uses."""

from __future__ import annotations

from decimal import Decimal

import pytest

from songkhoe.fhir.fhirpath import Date, DateTime, FHIRPathError, Quantity, Time, evaluate

P = {
    "resourceType": "Patient", "id": "p1", "active": True, "birthDate": "1980-04",
    "name": [{"use": "official", "family": "Đặng", "given": ["Thị", "Ngọc", "Ánh"]},
             {"use": "nickname", "given": ["Ánh"]}],
    "telecom": [{"system": "phone", "value": "0901"}, {"system": "email", "value": "a@b.vn"},
                {"system": "phone", "value": "0902"}],
}


def ev(text: str, resource: dict | None = None, **variables: object) -> list:
    return evaluate(P if resource is None else resource, text, variables or None)


def test_existence() -> None:
    assert ev("name.exists()") == [True] and ev("photo.exists()") == [False]
    assert ev("name.exists(use = 'nickname')") == [True]
    assert ev("name.exists(use = 'maiden')") == [False]
    assert ev("name.empty()") == [False]
    assert ev("telecom.all(value.exists())") == [True]
    assert ev("telecom.all(system = 'phone')") == [False]
    assert ev("{}.all(false)") == [True]
    assert ev("(true | false).allTrue()") == [False]
    assert ev("(true | false).anyTrue()") == [True]
    assert ev("(false).allFalse()") == [True] and ev("(true).anyFalse()") == [False]
    assert ev("(1 | 2).subsetOf(1 | 2 | 3)") == [True]
    assert ev("(1 | 2 | 3).supersetOf(3)") == [True]
    assert ev("name.given.count()") == [4]
    assert ev("name.given.distinct()") == ["Thị", "Ngọc", "Ánh"]
    assert ev("name.given.isDistinct()") == [False]


def test_filtering_and_projection() -> None:
    assert ev("telecom.where(system = 'phone').value") == ["0901", "0902"]
    assert ev("telecom.where(false)") == []
    assert ev("telecom.where(system = 'phone' and $index > 0).value") == ["0902"]
    assert ev("name.select(given.first())") == ["Thị", "Ánh"]
    assert ev("name.select($this.family)") == ["Đặng"]
    assert ev("name.where(family.exists()).given.where($this = 'Ngọc')") == ["Ngọc"]
    q = {"resourceType": "Questionnaire",
         "item": [{"linkId": "1", "item": [{"linkId": "1.1", "item": [{"linkId": "1.1.1"}]}]},
                  {"linkId": "2"}]}
    assert ev("repeat(item).linkId", q) == ["1", "2", "1.1", "1.1.1"]
    assert ev("Questionnaire.descendants().linkId", q) == ["1", "2", "1.1", "1.1.1"]
    assert ev("Questionnaire.children().linkId", q) == ["1", "2"]
    assert ev("telecom.where(system).count()") == [3]  # one non-boolean item counts as true


def test_where_criteria_with_several_results_is_an_error() -> None:
    with pytest.raises(FHIRPathError):
        ev("name.where(given)")  # the first name has three given names


def test_subsetting_and_combining() -> None:
    assert ev("name.given.first()") == ["Thị"] and ev("name.given.last()") == ["Ánh"]
    assert ev("name.given.tail()") == ["Ngọc", "Ánh", "Ánh"]
    assert ev("name.given.skip(2)") == ["Ánh", "Ánh"] and ev("name.given.take(2)") == \
        ["Thị", "Ngọc"]
    assert ev("name.given.take(0)") == [] and ev("name.given.skip(-1).count()") == [4]
    with pytest.raises(FHIRPathError, match="single"):
        ev("name.given.single()")
    assert ev("name[1].given.single()") == ["Ánh"]
    assert ev("(1 | 2 | 3).intersect(2 | 3 | 4)") == [2, 3]
    assert ev("(1 | 2 | 3).exclude(2)") == [1, 3]
    assert ev("(1 | 2).union(2 | 3)") == [1, 2, 3]
    assert ev("(1 | 2).combine(2 | 3)") == [1, 2, 2, 3]


def test_iif() -> None:
    assert ev("iif(active, 'yes', 'no')") == ["yes"]
    assert ev("iif(deceased.exists(), 'dead')") == []
    assert ev("iif({}, 1, 2)") == [2]
    assert ev("name[0].iif(family = 'Đặng', given.first(), 'x')") == ["Thị"]


def test_conversions() -> None:
    assert ev("'1'.toInteger()") == [1] and ev("'1.5'.toInteger()") == []
    assert ev("'1.5'.toDecimal()") == [Decimal("1.5")] and ev("true.toDecimal()") == [Decimal(1)]
    assert ev("'yes'.toBoolean()") == [True] and ev("'maybe'.toBoolean()") == []
    assert ev("1.5.toString()") == ["1.5"] and ev("true.toString()") == ["true"]
    assert ev("@2020-01.toString()") == ["2020-01"]
    assert ev("5 'mg'.toString()") == ["5 'mg'"]
    assert ev("'2020-01-02'.toDate()") == [Date("2020-01-02")]
    assert ev("'2020-01-02T10:00:00Z'.toDateTime()") == [DateTime("2020-01-02T10:00:00Z")]
    assert ev("'10:00'.toTime()") == [Time("10:00")]
    assert ev("'4 days'.toQuantity()") == [Quantity(Decimal(4), "day")]
    assert ev("'4 \\'mg\\''.toQuantity()") == [Quantity(Decimal(4), "mg")]
    assert ev("1000 'mg'.toQuantity('g')") == [Quantity(Decimal(1), "g")]
    assert ev("'x'.convertsToInteger()") == [False] and ev("'7'.convertsToInteger()") == [True]
    assert ev("'2020-13'.convertsToDate()") == [False]
    assert ev("{}.toInteger()") == []
    with pytest.raises(FHIRPathError, match="single"):
        ev("name.given.toString()")


VIET = "Nguyễn Thị Ánh Đào"


def test_string_functions_on_vietnamese_text() -> None:
    v = {"s": VIET}
    assert ev("%s.length()", **v) == [18]
    assert ev("%s.upper()", **v) == ["NGUYỄN THỊ ÁNH ĐÀO"]
    assert ev("%s.lower()", **v) == ["nguyễn thị ánh đào"]
    assert ev("%s.indexOf('Ánh')", **v) == [11]
    assert ev("%s.indexOf('x')", **v) == [-1]
    assert ev("%s.substring(7, 3)", **v) == ["Thị"]
    assert ev("%s.substring(15)", **v) == ["Đào"]
    assert ev("%s.substring(50)", **v) == []
    assert ev("%s.startsWith('Nguyễn')", **v) == [True]
    assert ev("%s.startsWith('Nguyen')", **v) == [False]
    assert ev("%s.endsWith('Đào')", **v) == [True]
    assert ev("%s.contains('Thị Ánh')", **v) == [True]
    assert ev("%s.replace('Thị', 'Văn')", **v) == ["Nguyễn Văn Ánh Đào"]
    assert ev("%s.matches('^Nguyễn\\\\s+\\\\w+')", **v) == [True]
    assert ev("%s.matchesFull('Nguyễn.*Đào')", **v) == [True]
    assert ev("%s.replaceMatches('(\\\\w+) (\\\\w+)', '$2 $1')", **v) == ["Thị Nguyễn Đào Ánh"]
    assert ev("'Đào'.toChars()") == ["Đ", "à", "o"]
    assert ev("'  ấm  '.trim()") == ["ấm"]
    assert ev("'a,b,,c'.split(',')") == ["a", "b", "", "c"]
    assert ev("name[0].given.join(' ')") == ["Thị Ngọc Ánh"]
    assert ev("name.given.join()") == ["ThịNgọcÁnhÁnh"]
    assert ev("'Đặng'.encode('base64').decode('base64')") == ["Đặng"]
    assert ev("'Đặng'.encode('hex')") == ["c490e1bab76e67"]
    assert ev("'<a & b>'.escape('html')") == ["&lt;a &amp; b&gt;"]
    assert ev("'&lt;b&gt;'.unescape('html')") == ["<b>"]
    assert ev("'Ánh'.lastIndexOf('h')") == [2]
    assert ev("{}.upper()") == [] and ev("'abc'.substring({})") == []


def test_math() -> None:
    assert ev("(-5).abs()") == [5] and ev("(-5.5 'mg').abs()") == [Quantity(Decimal("5.5"), "mg")]
    assert ev("1.1.ceiling()") == [2] and ev("(-1.1).floor()") == [-2]
    assert ev("1.9.truncate()") == [1]
    assert ev("3.14159.round(2)") == [Decimal("3.14")] and ev("2.5.round()") == [Decimal(3)]
    assert ev("16.sqrt()") == [Decimal(4)] and ev("(-1).sqrt()") == []
    assert ev("2.power(10)") == [1024] and ev("(-1).power(0.5)") == []
    assert ev("100.log(10)") == [Decimal(2)]
    assert ev("1.exp().ln().round(8)") == [Decimal("1.00000000")]


def test_boundaries_and_precision() -> None:
    assert ev("1.587.lowBoundary()") == [Decimal("1.5865")]
    assert ev("1.587.highBoundary()") == [Decimal("1.5875")]
    assert ev("1.587.lowBoundary(2)") == [Decimal("1.58")]
    assert ev("1.587.highBoundary(2)") == [Decimal("1.59")]
    assert ev("(-1.587).lowBoundary()") == [Decimal("-1.5875")]
    assert ev("1.0.lowBoundary()") == [Decimal("0.95")]
    assert ev("birthDate.lowBoundary()") == [Date("1980-04-01")]
    assert ev("birthDate.highBoundary()") == [Date("1980-04-30")]
    assert ev("@2016-02.highBoundary()") == [Date("2016-02-29")]
    assert ev("@2010-10-10T10.lowBoundary()") == [DateTime("2010-10-10T10:00:00.000+14:00")]
    assert ev("@2010-10-10T10:30+07:00.highBoundary()") == \
        [DateTime("2010-10-10T10:30:59.999+07:00")]
    assert ev("@T12:34.highBoundary()") == [Time("12:34:59.999")]
    assert ev("@2014-01-05T10:30:00.000.precision()") == [17]
    assert ev("1.58700.precision()") == [5] and ev("@T10:30.precision()") == [4]


def test_aggregate_and_utility() -> None:
    assert ev("(1 | 2 | 3).aggregate($this + $total, 0)") == [6]
    assert ev("(1 | 2 | 3).aggregate(iif($total.empty(), $this, iif($this > $total, $this, "
              "$total)))") == [3]
    assert ev("name.trace('names').given.first()") == ["Thị"]
    assert ev("today() < now() + 1 day") == [True]
    assert ev("now() is DateTime and today() is Date and timeOfDay() is Time") == [True]


def test_type_reflection() -> None:
    assert ev("1.type()") == [{"namespace": "System", "name": "Integer"}]
    assert ev("'a'.type().name") == ["String"]
    assert ev("@2020-01.type().name") == ["Date"]
    assert ev("Patient.type()") == [{"namespace": "FHIR", "name": "Patient"}]
    assert ev("Patient.name[0].type().namespace") == ["FHIR"]
    obs = {"resourceType": "Observation", "valueQuantity": {"value": 1}}
    assert ev("Observation.value.type().name", obs) == ["Quantity"]
