"""Programme definitions: the data format, its loader and its validation.

A programme is one TOML file (``programs/data/*.toml``, documented in ``docs/programmes.md``)
holding everything that changes when a guideline changes: who is eligible, how often, which
items to collect (LOINC codes, UCUM units, plausible ranges), how each result is classified
(threshold bands, each citing its source), which risk scores run, which findings lead to a
referral, a flag or enrolment in chronic care, and the follow-up intervals. Conditions and
derived values are FHIRPath expressions (http://hl7.org/fhirpath/N1/) over named variables
(``%age``, ``%sbp``, ``%bp_grade`` …), compiled once at load, so adding a programme or changing
a threshold needs no code change.

A definition with an error is refused at load: :class:`DefinitionError` names the file, the
path inside it (``classification[0].band[2].when``) or the TOML line, and what was expected.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from functools import cached_property
from itertools import repeat
from pathlib import Path
from typing import Any

from songkhoe.fhir.fhirpath import Expression, FHIRPathError, compile, syntax
from songkhoe.fhir.fhirpath.parser import parse
from songkhoe.fhir.fhirpath.scalar import NotScalar, Scalar, scalar

DATA = Path(__file__).parent / "data"
_ID = re.compile(r"[a-z][a-z0-9_]{0,39}")
_PROGRAMME_ID = re.compile(r"[a-z][a-z0-9-]{0,39}")
_CODE = re.compile(r"(?P<system>[^|\s]+)\|(?P<code>[^|\s]+)")
KINDS = ("screening", "care")
SEXES = ("male", "female")
#: v3 ObservationInterpretation codes a band may carry (http://hl7.org/fhir/R4/v3/ObservationInterpretation)
INTERPRETATIONS = ("N", "L", "LL", "H", "HH", "A", "AA", "POS", "NEG", "IND")
#: ServiceRequest.priority (http://hl7.org/fhir/R4/valueset-request-priority.html)
URGENCIES = ("routine", "urgent", "asap", "stat")
#: where a referral goes, lowest level first (the commune station refers upward)
LEVELS = ("commune", "district", "province", "central")
ACTIONS = ("refer", "flag", "enrol")
#: variables every programme's expressions may read, whatever it defines
BUILTINS = frozenset({"age", "sex", "conditions", "medications", "enrolled"})


class DefinitionError(ValueError):
    """A definition that cannot be loaded: ``where`` is the file and the path or line."""

    def __init__(self, file: str, where: str, message: str) -> None:
        self.file, self.where, self.message = file, where, message
        super().__init__(f"{file}: {where}: {message}" if where else f"{file}: {message}")


@dataclass(frozen=True)
class Text:
    """A label in Vietnamese and English (Vietnamese first)."""

    vi: str
    en: str

    def __call__(self, lang: str = "vi") -> str:
        return self.en if lang == "en" else self.vi


#: functions whose result depends on the moment of evaluation, not only on the variables
_CLOCK = frozenset({"now", "today", "timeOfDay"})
#: entries a memo keeps before it starts again (a table of rare inputs stays small)
MEMO_SIZE = 20_000


class Memo:
    """Results of a pure computation over some variables, by the values of those variables:
    the batch evaluates the same condition on the same few values (a band over ``%sbp``,
    ``%dbp``) for most of a million people.

    Two values with the same key give the same result. ``numeric``: a condition that runs on
    the native closures only (``fhirpath.scalar``), which compare numbers by value, so
    ``7.0`` and ``7.00`` share a key; the key holds each value and its type (``true`` and
    ``1`` differ). Otherwise (functions, lists, a computed number, whose digits follow its
    inputs') the key tells apart every two values FHIRPath can tell apart. A variable that is
    not given differs from one given as empty."""

    __slots__ = ("names", "numeric", "table")

    def __init__(self, names: frozenset[str] | set[str], numeric: bool) -> None:
        self.names = tuple(sorted(names))
        self.numeric = numeric
        self.table: dict[Any, Any] = {}

    def keep(self, key: Any, result: Any) -> None:
        if len(self.table) >= MEMO_SIZE:
            self.table.clear()
        self.table[key] = result


#: the result of a memo that has none yet; also the mark of an exact key
MISSING = object()
_NOT_GIVEN = object()
_ABSENT = repeat(_NOT_GIVEN)  # the value of each variable not given, for ``map``


def remembered(memo: Memo | None, compute: Callable[[dict[str, Any]], Any]
               ) -> Callable[[dict[str, Any]], Any]:
    """``compute`` with its results kept in ``memo``: a known result costs one call. Keys of
    one or two variables (most conditions and bands) are built without ``map`` and with the
    common ``str``/``int`` values kept as they are — the same keys, built in half the time."""
    if memo is None:
        return compute
    names, get, keep = memo.names, memo.table.get, memo.keep

    def exact(variables: dict[str, Any]) -> Any:
        key = (MISSING, *map(_exact, map(variables.get, names, _ABSENT)))
        found = get(key, MISSING)
        if found is MISSING:
            found = compute(variables)
            keep(key, found)
        return found

    if len(names) == 2:
        first, second = names
    if not memo.numeric:
        if len(names) == 1:
            name = names[0]

            def exact_one(variables: dict[str, Any]) -> Any:
                value = variables.get(name, _NOT_GIVEN)
                kind = type(value)
                key = (MISSING, value if kind is str or kind is int else _exact(value))
                found = get(key, MISSING)
                if found is MISSING:
                    found = compute(variables)
                    keep(key, found)
                return found
            return exact_one
        if len(names) == 2:
            def exact_two(variables: dict[str, Any]) -> Any:
                a = variables.get(first, _NOT_GIVEN)
                b = variables.get(second, _NOT_GIVEN)
                kind = type(a)
                if not (kind is str or kind is int):
                    a = _exact(a)
                kind = type(b)
                key = (MISSING, a, b if kind is str or kind is int else _exact(b))
                found = get(key, MISSING)
                if found is MISSING:
                    found = compute(variables)
                    keep(key, found)
                return found
            return exact_two
        return exact
    if len(names) == 1:
        name = names[0]

        def one(variables: dict[str, Any]) -> Any:
            value = variables.get(name, _NOT_GIVEN)
            key = (value, type(value))
            try:
                found = get(key, MISSING)
            except TypeError:  # a list
                return exact(variables)
            if found is MISSING:
                found = compute(variables)
                keep(key, found)
            return found
        return one
    if len(names) == 2:
        def two(variables: dict[str, Any]) -> Any:
            a = variables.get(first, _NOT_GIVEN)
            b = variables.get(second, _NOT_GIVEN)
            key = (a, b, type(a), type(b))
            try:
                found = get(key, MISSING)
            except TypeError:  # a list among the values
                return exact(variables)
            if found is MISSING:
                found = compute(variables)
                keep(key, found)
            return found
        return two

    def numeric(variables: dict[str, Any]) -> Any:
        values = tuple(map(variables.get, names, _ABSENT))
        key = (values, tuple(map(type, values)))
        try:
            found = get(key, MISSING)
        except TypeError:  # a list among the values
            return exact(variables)
        if found is MISSING:
            found = compute(variables)
            keep(key, found)
        return found
    return numeric


def _exact(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int:
        return value
    if kind is list:
        return tuple(map(_exact, value)) if value else ()
    return kind, str(value) if kind is Decimal else value


@dataclass(frozen=True)
class Compiled:
    """A FHIRPath expression over the programme's variables, compiled once: conditions and
    numbers over single values run as native closures (``fhirpath.scalar``), anything else
    (functions over lists such as ``%conditions.where(…)``) on the full engine. Results are
    remembered by the values of the variables read (:class:`Memo`), unless the expression
    reads the clock."""

    text: str
    expression: Expression = field(compare=False, repr=False)
    native: Scalar | None = field(compare=False, repr=False)
    memo: Memo | None = field(compare=False, repr=False)

    @classmethod
    def of(cls, text: str, expression: Expression) -> Any:
        nodes = list(syntax.walk(parse(text)))
        clock = any(isinstance(n, syntax.Function) and n.name in _CLOCK for n in nodes)
        # every %name, also those the engine would supply (%ucum): a variable may shadow one
        read = {n.name for n in nodes if isinstance(n, syntax.External)}
        native = scalar(text)
        # a number computed from 7.0 is written differently from one computed from 7.00, a
        # condition's answer is not: only conditions may share a key between them
        numeric = native is not None and cls is Condition
        return cls(text, expression, native, None if clock else Memo(read, numeric))

    def items(self, variables: dict[str, Any]) -> list[Any]:
        if self.native is not None:
            try:
                value = self.native(variables)
            except NotScalar:
                pass
            else:
                return [] if value is None else [value]
        return self.expression(None, variables=variables)

    def __post_init__(self) -> None:
        #: ``compute``, remembered
        object.__setattr__(self, "result", remembered(self.memo, self.compute))

    def result(self, variables: dict[str, Any]) -> Any:  # replaced by __post_init__
        raise NotImplementedError

    def compute(self, variables: dict[str, Any]) -> Any:
        raise NotImplementedError


class Condition(Compiled):
    """A condition: empty counts as false."""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "holds", self.result)

    def holds(self, variables: dict[str, Any]) -> bool:  # replaced by __post_init__
        raise NotImplementedError

    def compute(self, variables: dict[str, Any]) -> bool:
        result = self.items(variables)
        if not result:
            return False
        if len(result) != 1 or not isinstance(result[0], bool):
            raise ValueError(f"condition {self.text!r} gave {result!r}, not a boolean")
        return result[0]


class Formula(Compiled):
    """One number, or nothing when an input is missing."""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "value", self.result)

    def value(self, variables: dict[str, Any]) -> Decimal | None:  # replaced by __post_init__
        raise NotImplementedError

    def compute(self, variables: dict[str, Any]) -> Decimal | None:
        result = self.items(variables)
        if not result:
            return None
        if len(result) != 1 or isinstance(result[0], bool) or \
                not isinstance(result[0], int | Decimal):
            raise ValueError(f"formula {self.text!r} gave {result!r}, not a number")
        return Decimal(result[0])


class Value(Compiled):
    """One value of any type, or None when it gives nothing. A bare ``%name`` (most of a
    model's inputs) is the variable itself, as ``fhirpath.scalar`` reads it, without a memo."""

    def __post_init__(self) -> None:
        super().__post_init__()
        result = self.result
        node = parse(self.text)
        if not isinstance(node, syntax.External):
            object.__setattr__(self, "get", result)
            return
        name = node.name

        def variable(variables: dict[str, Any]) -> Any:
            value = variables.get(name)
            kind = type(value)
            # a list or a float: as the expression reads them
            return result(variables) if kind is list or kind is float else value
        object.__setattr__(self, "get", variable)

    def get(self, variables: dict[str, Any]) -> Any:  # replaced by __post_init__
        raise NotImplementedError

    def compute(self, variables: dict[str, Any]) -> Any:
        result = self.items(variables)
        if len(result) > 1:
            raise ValueError(f"expression {self.text!r} gave {len(result)} values, not one")
        return result[0] if result else None


@dataclass(frozen=True)
class Unit:
    """A unit a result may arrive in, with the factor that converts it to the item's unit."""

    code: str  # UCUM
    factor: Decimal


@dataclass(frozen=True)
class Item:
    """One thing to collect: an Observation code (or a component of a panel)."""

    id: str
    label: Text
    system: str
    code: str
    component: tuple[str, str] | None  # (system, code) of the component inside the panel
    kind: str  # "quantity" | "coded" | "boolean"
    unit: str | None  # UCUM code of the canonical unit (quantities)
    units: tuple[Unit, ...]  # accepted units, the canonical first (factor 1)
    range: tuple[Decimal, Decimal] | None  # plausible range in the canonical unit
    decimals: int | None
    values: dict[str, str]  # coded items: "system|code" → the value the expressions see
    when: Condition | None  # collected only when this holds (e.g. glucose at 40+)
    derive: Formula | None  # computed from other items when not measured (BMI)

    @cached_property
    def coding(self) -> tuple[str, str]:
        """(system, code) of the Observation."""
        return self.system, self.code

    @cached_property
    def converted(self) -> dict[Any, Decimal]:
        """Quantities already converted to the item's unit (``engine.convert``), by their
        JSON value and unit: most results repeat (120 mm[Hg])."""
        return {}


@dataclass(frozen=True)
class Band:
    code: str
    display: Text
    when: Condition
    interpretation: str
    source: str


@dataclass(frozen=True)
class Classification:
    """Ordered bands for one item's results: the first band whose condition holds wins."""

    id: str
    item: str  # the item whose Observations receive the interpretation
    inputs: tuple[str, ...]  # the items the bands read (their values in the same Observation)
    label: Text
    bands: tuple[Band, ...]
    #: the band found, by the values of every variable the bands read
    memo: Memo | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        memos = [b.when.memo for b in self.bands]
        if all(m is not None for m in memos):
            object.__setattr__(self, "memo", Memo(
                set().union(*(m.names for m in memos if m)), all(m and m.numeric for m in memos)))
        object.__setattr__(self, "classify", remembered(self.memo, self._first))

    def classify(self, variables: dict[str, Any]) -> Band | None:  # replaced by __post_init__
        raise NotImplementedError

    def _first(self, variables: dict[str, Any]) -> Band | None:
        for band in self.bands:
            if band.when.compute(variables):
                return band
        return None


@dataclass(frozen=True)
class PointsRule:
    when: Condition
    points: int


def _holding(rule: PointsRule) -> Callable[[dict[str, Any]], int]:
    """The points of ``rule`` when it holds, else 0."""
    holds, points = rule.when.holds, rule.points
    return lambda variables: points if holds(variables) else 0


def _summed(rules: tuple[PointsRule, ...]) -> Callable[[dict[str, Any]], int]:
    """The points of those of ``rules`` that hold (each computed, not looked up)."""
    return lambda variables: sum(r.points for r in rules if r.when.compute(variables))


@dataclass(frozen=True)
class ScoreBand:
    code: str
    display: Text
    min: Decimal  # inclusive lower bound of the score (points, or probability for models)
    probability: Decimal | None  # a points score's published risk for the band, if any


@dataclass(frozen=True)
class Score:
    """A risk score: a points table (data) or a named model implemented in code."""

    id: str
    label: Text
    kind: str  # "points" | "model"
    model: str | None  # "who_cvd_2019" for kind "model"
    inputs: dict[str, Value]  # model argument → its value
    rules: tuple[PointsRule, ...]
    bands: tuple[ScoreBand, ...]
    when: Condition | None
    source: str

    def __post_init__(self) -> None:
        # rules reading the same variables (FINDRISC: three on %age, two on %bmi, two on %sex
        # and %waist) are evaluated together: their points, remembered by those values
        groups: dict[tuple[str, ...] | int, list[PointsRule]] = {}
        for n, rule in enumerate(self.rules):
            memo = rule.when.memo
            groups.setdefault(n if memo is None else memo.names, []).append(rule)
        parts = []
        for rules in groups.values():
            memos = [r.when.memo for r in rules]
            if len(rules) == 1 or any(m is None for m in memos):
                parts.extend(_holding(r) for r in rules)
            else:
                parts.append(remembered(Memo(set(memos[0].names), all(m.numeric for m in memos)),
                                        _summed(tuple(rules))))
        object.__setattr__(self, "_parts", tuple(parts))

    def points(self, variables: dict[str, Any]) -> int:
        """A points score's total: the sum of the points of every rule that holds. (Not
        remembered as a whole: its inputs — age, BMI, waist … — rarely repeat together.)"""
        total = 0
        for part in self._parts:
            total += part(variables)
        return total

    def band(self, value: Decimal) -> ScoreBand | None:
        chosen = None
        for band in self.bands:
            if value >= band.min:
                chosen = band
        return chosen


@dataclass(frozen=True)
class Action:
    """A finding's consequence: a referral, a flag, or enrolment in a chronic-care programme."""

    id: str
    action: str  # "refer" | "flag" | "enrol"
    when: Condition
    reason: Text
    source: str
    evidence: tuple[str, ...]  # items and scores whose records are cited as the basis
    level: str | None = None  # refer
    urgency: str | None = None  # refer
    within_days: int | None = None  # refer: to be seen within
    programme: str | None = None  # enrol: the care programme's id


@dataclass(frozen=True)
class Interval:
    """Next visit: ``days`` after the last one, for the first interval whose condition holds."""

    days: int
    when: Condition | None
    label: Text


@dataclass(frozen=True)
class Programme:
    id: str
    version: str
    kind: str
    title: Text
    sources: dict[str, str]
    min_age: int | None
    max_age: int | None
    sexes: tuple[str, ...]
    eligible: Condition | None
    lookback_days: int  # results older than this are not the current ones
    lost_after_days: int  # no visit for this long: lost to follow-up
    items: tuple[Item, ...]
    classifications: tuple[Classification, ...]
    scores: tuple[Score, ...]
    actions: tuple[Action, ...]
    intervals: tuple[Interval, ...]
    file: str
    #: SHA-256 of the file's text: what a batch run records it evaluated with
    digest: str = field(default="", compare=False)

    @cached_property
    def lookback(self) -> timedelta:
        return timedelta(days=self.lookback_days)

    @cached_property
    def uri(self) -> str:
        """The canonical name outputs cite (``instantiatesUri``, ``Coding.system``)."""
        return f"urn:songkhoe:programme:{self.id}"

    def item(self, id_: str) -> Item:
        return next(i for i in self.items if i.id == id_)

    @cached_property
    def enrolments(self) -> tuple[Action, ...]:
        """The ``enrol`` actions (evaluated before the others of the same day)."""
        return tuple(a for a in self.actions if a.action == "enrol")

    @cached_property
    def findings(self) -> tuple[Action, ...]:
        """The other actions: referrals and flags."""
        return tuple(a for a in self.actions if a.action != "enrol")


# ---- loading ------------------------------------------------------------------------------

def load_file(path: Path) -> Programme:
    """Parse and validate one definition file."""
    name = str(path)
    text = unicodedata.normalize("NFC", path.read_text(encoding="utf-8"))
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message names the line and column
        raise DefinitionError(name, "", f"not valid TOML: {exc}") from None
    return replace(_Loader(name).programme(raw),
                   digest=hashlib.sha256(text.encode()).hexdigest())


def load_dir(folder: Path = DATA) -> dict[str, Programme]:
    """Every ``*.toml`` in ``folder``, checked together (ids unique, enrolment targets exist)."""
    programmes: dict[str, Programme] = {}
    for path in sorted(folder.glob("*.toml")):
        p = load_file(path)
        if p.id in programmes:
            raise DefinitionError(p.file, "id", f"{p.id!r} is also defined in "
                                                f"{programmes[p.id].file}")
        programmes[p.id] = p
    seen: dict[str, tuple[Programme, Item]] = {}
    for p in programmes.values():
        for n, item in enumerate(p.items):  # one item id, one meaning: the form shows it once
            if item.id in seen and _meaning(seen[item.id][1]) != _meaning(item):
                raise DefinitionError(p.file, f"item[{n}]", f"{item.id!r} differs from the item "
                                      f"of that id in {seen[item.id][0].file} (code, component, "
                                      "kind or unit)")
            seen.setdefault(item.id, (p, item))
        for n, a in enumerate(p.actions):
            if a.programme is not None and (a.programme not in programmes or
                                            programmes[a.programme].kind != "care"):
                raise DefinitionError(p.file, f"action[{n}].programme",
                                      f"{a.programme!r} is not a care programme defined here")
    return programmes


def _meaning(item: Item) -> tuple[Any, ...]:
    return item.system, item.code, item.component, item.kind, item.unit


class _Loader:
    """Reads one parsed TOML document; every error names its path."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.names: set[str] = set(BUILTINS)
        self.sources: dict[str, str] = {}

    def fail(self, where: str, message: str) -> DefinitionError:
        return DefinitionError(self.file, where, message)

    def take(self, raw: dict[str, Any], where: str, key: str, kind: type | tuple[type, ...],
             default: Any = ..., *, allowed: tuple[str, ...] | None = None) -> Any:
        path = f"{where}.{key}" if where else key
        if key not in raw:
            if default is ...:
                raise self.fail(path, "is required")
            return default
        value = raw[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise self.fail(path, f"expected a number, found {value!r}")
        if not isinstance(value, kind):
            want = kind.__name__ if isinstance(kind, type) else \
                " or ".join(k.__name__ for k in kind)
            raise self.fail(path, f"expected {want}, found {type(value).__name__} {value!r}")
        if allowed is not None and value not in allowed:
            raise self.fail(path, f"{value!r} is not one of {', '.join(allowed)}")
        return value

    def only(self, raw: dict[str, Any], where: str, keys: set[str]) -> None:
        for key in raw:
            if key not in keys:
                path = f"{where}.{key}" if where else key
                raise self.fail(path, f"unknown key; expected one of {', '.join(sorted(keys))}")

    def text(self, raw: dict[str, Any], where: str, key: str) -> Text:
        value = self.take(raw, where, key, dict)
        path = f"{where}.{key}" if where else key
        self.only(value, path, {"vi", "en"})
        return Text(self.take(value, path, "vi", str), self.take(value, path, "en", str))

    def ident(self, raw: dict[str, Any], where: str, *, new_name: bool) -> str:
        value = self.take(raw, where, "id", str)
        if not _ID.fullmatch(value):
            raise self.fail(f"{where}.id", f"{value!r} must be lower-case letters, digits and "
                                           "_ (a letter first, at most 40)")
        if new_name:
            if value in self.names:
                raise self.fail(f"{where}.id", f"{value!r} is already a variable name")
            self.names.add(value)
        return value

    def source(self, raw: dict[str, Any], where: str) -> str:
        value = self.take(raw, where, "source", str)
        if value not in self.sources:
            raise self.fail(f"{where}.source", f"{value!r} is not listed in [sources]")
        return value

    def expression(self, text: str, where: str) -> Expression:
        try:
            expr = compile(text)
        except FHIRPathError as exc:
            raise self.fail(where, f"not a valid FHIRPath expression: {exc}") from None
        unknown = sorted(expr.free_variables - self.names)
        if unknown:
            raise self.fail(where, f"unknown variable %{unknown[0]}; defined so far: "
                                   f"{', '.join('%' + n for n in sorted(self.names))}")
        return expr

    def condition(self, raw: dict[str, Any], where: str, key: str = "when",
                  required: bool = False) -> Condition | None:
        text = self.take(raw, where, key, str, ... if required else None)
        if text is None:
            return None
        path = f"{where}.{key}" if where else key
        return Condition.of(text, self.expression(text, path))

    def number(self, raw: dict[str, Any], where: str, key: str, default: Any = ...) -> Any:
        value = self.take(raw, where, key, (int, float), default)
        return value if value is None or value is default else Decimal(str(value))

    # --- the document ---

    def programme(self, raw: dict[str, Any]) -> Programme:
        self.only(raw, "", {"id", "version", "kind", "title", "sources", "population",
                            "item", "classification", "score", "action", "interval"})
        pid = self.take(raw, "", "id", str)
        if not _PROGRAMME_ID.fullmatch(pid):
            raise self.fail("id", f"{pid!r} must be lower-case letters, digits and -")
        sources = self.take(raw, "", "sources", dict)
        for key, value in sources.items():
            if not isinstance(value, str) or not value.strip():
                raise self.fail(f"sources.{key}", "expected the citation as text")
        self.sources = sources
        pop = self.take(raw, "", "population", dict)
        self.only(pop, "population", {"min_age", "max_age", "sex", "when", "lookback_days",
                                      "lost_after_days"})
        min_age = self.take(pop, "population", "min_age", int, None)
        max_age = self.take(pop, "population", "max_age", int, None)
        if min_age is not None and max_age is not None and min_age > max_age:
            raise self.fail("population.max_age", f"{max_age} is below min_age {min_age}")
        sexes = self.take(pop, "population", "sex", list, list(SEXES))
        for n, s in enumerate(sexes):
            if s not in SEXES:
                raise self.fail(f"population.sex[{n}]", f"{s!r} is not one of male, female")
        eligible = self.condition(pop, "population")
        items = tuple(self.item(r, f"item[{n}]")
                      for n, r in enumerate(self.tables(raw, "item")))
        classifications = tuple(self.classification(r, f"classification[{n}]", items)
                                for n, r in enumerate(self.tables(raw, "classification")))
        scores = tuple(self.score(r, f"score[{n}]")
                       for n, r in enumerate(self.tables(raw, "score")))
        actions = tuple(self.action(r, f"action[{n}]", pid)
                        for n, r in enumerate(self.tables(raw, "action")))
        intervals = tuple(self.interval(r, f"interval[{n}]")
                          for n, r in enumerate(self.tables(raw, "interval", required=True)))
        if intervals[-1].when is not None:
            raise self.fail(f"interval[{len(intervals) - 1}].when",
                            "the last interval is the default: it must have no condition")
        return Programme(
            id=pid, version=self.take(raw, "", "version", str),
            kind=self.take(raw, "", "kind", str, allowed=KINDS),
            title=self.text(raw, "", "title"), sources=sources, min_age=min_age,
            max_age=max_age, sexes=tuple(sexes), eligible=eligible,
            lookback_days=self.take(pop, "population", "lookback_days", int, 365),
            lost_after_days=self.take(pop, "population", "lost_after_days", int, 365),
            items=items, classifications=classifications, scores=scores, actions=actions,
            intervals=intervals, file=self.file)

    def tables(self, raw: dict[str, Any], key: str, required: bool = False) -> list[dict]:
        value = self.take(raw, "", key, list, ... if required else [])
        if required and not value:
            raise self.fail(key, "at least one is required")
        for n, entry in enumerate(value):
            if not isinstance(entry, dict):
                raise self.fail(f"{key}[{n}]", f"expected a table ([[{key}]])")
        return value

    def coding(self, raw: dict[str, Any], where: str, key: str) -> tuple[str, str]:
        value = self.take(raw, where, key, str)
        match = _CODE.fullmatch(value)
        if not match:
            raise self.fail(f"{where}.{key}", f"{value!r} must be 'system|code'")
        return match["system"], match["code"]

    def item(self, raw: dict[str, Any], where: str) -> Item:
        self.only(raw, where, {"id", "label", "code", "component", "kind", "unit", "units",
                               "range", "decimals", "values", "when", "derive"})
        when = self.condition(raw, where)  # before the id: it reads earlier items only
        derive_text = self.take(raw, where, "derive", str, None)
        derive = Formula.of(derive_text, self.expression(derive_text, f"{where}.derive")) \
            if derive_text else None
        id_ = self.ident(raw, where, new_name=True)
        system, code = self.coding(raw, where, "code")
        component = self.coding(raw, where, "component") if "component" in raw else None
        kind = self.take(raw, where, "kind", str, "quantity",
                         allowed=("quantity", "coded", "boolean"))
        unit, range_, values = None, None, {}
        units: tuple[Unit, ...] = ()
        if kind == "quantity":
            unit = self.take(raw, where, "unit", str)
            extra = self.take(raw, where, "units", dict, {})
            converted = []
            for ucum, factor in extra.items():
                if isinstance(factor, bool) or not isinstance(factor, int | float) or factor <= 0:
                    raise self.fail(f"{where}.units.{ucum}",
                                    "expected the positive factor to the item's unit")
                converted.append(Unit(ucum, Decimal(str(factor))))
            units = (Unit(unit, Decimal(1)), *converted)
            bounds = self.take(raw, where, "range", list)
            if len(bounds) != 2 or not all(isinstance(b, int | float) and
                                           not isinstance(b, bool) for b in bounds) \
                    or bounds[0] >= bounds[1]:
                raise self.fail(f"{where}.range", "expected [lowest, highest] plausible values")
            range_ = (Decimal(str(bounds[0])), Decimal(str(bounds[1])))
        elif kind == "coded":
            values = self.take(raw, where, "values", dict)
            for key, value in values.items():
                if not _CODE.fullmatch(key) or not isinstance(value, str):
                    raise self.fail(f"{where}.values.{key}",
                                    "expected \"system|code\" = \"value\"")
        return Item(id=id_, label=self.text(raw, where, "label"), system=system, code=code,
                    component=component, kind=kind, unit=unit, units=units, range=range_,
                    decimals=self.take(raw, where, "decimals", int, None), values=values,
                    when=when, derive=derive)

    def classification(self, raw: dict[str, Any], where: str,
                       items: tuple[Item, ...]) -> Classification:
        self.only(raw, where, {"id", "item", "inputs", "label", "band"})
        known = {i.id for i in items}
        item = self.take(raw, where, "item", str)
        if item not in known:
            raise self.fail(f"{where}.item", f"{item!r} is not an item of this programme")
        inputs = self.take(raw, where, "inputs", list, [item])
        for n, name in enumerate(inputs):
            if name not in known:
                raise self.fail(f"{where}.inputs[{n}]", f"{name!r} is not an item")
        bands = []
        for n, band in enumerate(self.take(raw, where, "band", list)):
            path = f"{where}.band[{n}]"
            self.only(band, path, {"code", "display", "when", "interpretation", "source"})
            bands.append(Band(
                code=self.take(band, path, "code", str), display=self.text(band, path, "display"),
                when=self.condition(band, path, required=True),  # type: ignore[arg-type]
                interpretation=self.take(band, path, "interpretation", str,
                                         allowed=INTERPRETATIONS),
                source=self.source(band, path)))
        if not bands:
            raise self.fail(f"{where}.band", "at least one band is required")
        id_ = self.ident(raw, where, new_name=True)  # after the bands: they read the items
        return Classification(id_, item, tuple(inputs), self.text(raw, where, "label"),
                              tuple(bands))

    def score(self, raw: dict[str, Any], where: str) -> Score:
        self.only(raw, where, {"id", "label", "kind", "model", "inputs", "rule", "band", "when",
                               "source"})
        kind = self.take(raw, where, "kind", str, allowed=("points", "model"))
        when = self.condition(raw, where)
        rules: list[PointsRule] = []
        inputs: dict[str, Value] = {}
        model = None
        if kind == "points":
            for n, rule in enumerate(self.take(raw, where, "rule", list)):
                path = f"{where}.rule[{n}]"
                self.only(rule, path, {"when", "points"})
                rules.append(PointsRule(self.condition(rule, path, required=True),  # type: ignore[arg-type]
                                        self.take(rule, path, "points", int)))
        else:
            model = self.take(raw, where, "model", str, allowed=("who_cvd_2019",))
            for arg, text in self.take(raw, where, "inputs", dict).items():
                if not isinstance(text, str):
                    raise self.fail(f"{where}.inputs.{arg}", "expected a FHIRPath expression")
                inputs[arg] = Value.of(text, self.expression(text, f"{where}.inputs.{arg}"))
        bands = []
        for n, band in enumerate(self.take(raw, where, "band", list)):
            path = f"{where}.band[{n}]"
            self.only(band, path, {"code", "display", "min", "probability"})
            bands.append(ScoreBand(self.take(band, path, "code", str),
                                   self.text(band, path, "display"),
                                   self.number(band, path, "min"),
                                   self.number(band, path, "probability", None)))
        if [b.min for b in bands] != sorted(b.min for b in bands) or not bands:
            raise self.fail(f"{where}.band", "expected bands in rising order of min")
        id_ = self.ident(raw, where, new_name=True)
        self.names.add(f"{id_}_band")
        return Score(id=id_, label=self.text(raw, where, "label"), kind=kind, model=model,
                     inputs=inputs, rules=tuple(rules), bands=tuple(bands), when=when,
                     source=self.source(raw, where))

    def action(self, raw: dict[str, Any], where: str, pid: str) -> Action:
        self.only(raw, where, {"id", "action", "when", "reason", "source", "evidence", "level",
                               "urgency", "within_days", "programme"})
        kind = self.take(raw, where, "action", str, allowed=ACTIONS)
        evidence = self.take(raw, where, "evidence", list, [])
        for n, name in enumerate(evidence):
            if name not in self.names - BUILTINS:
                raise self.fail(f"{where}.evidence[{n}]", f"{name!r} is not an item or score")
        action = Action(
            id=self.ident(raw, where, new_name=False), action=kind,
            when=self.condition(raw, where, required=True),  # type: ignore[arg-type]
            reason=self.text(raw, where, "reason"), source=self.source(raw, where),
            evidence=tuple(evidence),
            level=self.take(raw, where, "level", str, allowed=LEVELS)
            if kind == "refer" else None,
            urgency=self.take(raw, where, "urgency", str, allowed=URGENCIES)
            if kind == "refer" else None,
            within_days=self.take(raw, where, "within_days", int) if kind == "refer" else None,
            programme=self.take(raw, where, "programme", str) if kind == "enrol" else None)
        if action.programme == pid:
            raise self.fail(f"{where}.programme", "a programme cannot enrol into itself")
        return action

    def interval(self, raw: dict[str, Any], where: str) -> Interval:
        self.only(raw, where, {"days", "when", "label"})
        days = self.take(raw, where, "days", int)
        if days <= 0:
            raise self.fail(f"{where}.days", "expected a positive number of days")
        return Interval(days, self.condition(raw, where), self.text(raw, where, "label"))
