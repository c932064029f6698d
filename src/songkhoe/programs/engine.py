"""The programmes engine: from one person's records to every output the programmes define.

``evaluate(programmes, facts)`` is a pure function of the person's FHIR resources (no clock,
no database): the online path (a check-up saved through the API) and the batch run (``songkhoe
programmes run``) both call it, so they produce the same outputs, and running it again on its
own outputs changes nothing.

The person's history is replayed date by date, in order: each date that has a result of a
programme's items (a *visit*) or a diagnosis is an evaluation point. At each point, for each
programme that applies (age in completed years on that date, sex, eligibility; a care
programme from enrolment on):

- the variables are the built-ins (``%age``, ``%sex``, ``%conditions``, ``%medications``,
  ``%enrolled``) and each item's latest value within ``lookback_days``, in the item's unit;
- every result of a classified item gets its band as an ``Observation.interpretation``;
- on a visit, each score whose inputs are present gives a ``RiskAssessment``;
- each action whose condition holds: a referral (``ServiceRequest``) when none is open for
  it — one referral per run of consecutive evaluation points where the finding holds; a
  ``Flag`` that is active while the finding holds; enrolment (``EpisodeOfCare``) in a care
  programme, once.

After the last point, each programme the person has visited gets a ``CarePlan`` whose
activity is the next visit: the last visit plus the first matching interval.

Every output cites the programme, its version and the rule (``instantiatesUri``,
``Coding.version``, ``RiskAssessment.method``) and the records it used (``basis``,
``reasonReference``, ``evidence``). Ids are derived from (programme, rule, patient, date), so
the same finding always maps to the same resource.

Ages: completed years; a person born on 29 February completes a year on 1 March in common
years (the anniversary date does not exist, so the year is complete when 28 February ends).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

from songkhoe.programs import who_cvd_risk
from songkhoe.programs.definition import Action, Item, Programme, Score

#: raised whenever a change to this module changes what it derives from the same records: a
#: batch run re-evaluates everyone evaluated with another revision (``programs.batch``)
REVISION = 2
TAG = {"system": "urn:songkhoe:programmes", "code": "derived",
       "display": "Written by the programmes engine"}
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
#: Observation statuses whose values count (R4 observation-status)
RESULT_STATUSES = frozenset({"final", "amended", "corrected"})
#: Condition clinical statuses of a present condition (R4 condition-clinical)
ACTIVE_CONDITION = frozenset({"active", "recurrence", "relapse"})
#: resource types the engine reads for a person
INPUT_TYPES = ("Observation", "Condition", "MedicationStatement", "Task")
#: a worker's call to someone who missed a visit (``Task.code``), and its outcomes
#: (``Task.businessStatus``), as the overdue lists of DHIS2's hypertension package record them
CALL = ("urn:songkhoe:worklist", "call")
CALL_OUTCOMES = ("agreed-to-return", "call-later", "moved-away", "died", "wrong-number")
#: resource types the engine writes
OUTPUT_TYPES = ("RiskAssessment", "Flag", "ServiceRequest", "EpisodeOfCare", "CarePlan")
_PRIORITY = {"routine": "routine", "urgent": "urgent", "asap": "asap", "stat": "stat"}


def age_on(birth: date, day: date) -> int:
    """Completed years on ``day`` (see the module docstring for 29 February)."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def birthday(birth: date, years: int) -> date:
    """The day a person completes ``years`` (1 March for 29 February in a common year)."""
    try:
        return birth.replace(year=birth.year + years)
    except ValueError:
        return date(birth.year + years, 3, 1)


def output_id(prefix: str, *parts: str) -> str:
    """A stable FHIR id (≤ 64 characters) for one output."""
    return f"{prefix}-{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:32]}"


# ---- reading a person's records --------------------------------------------------------

def _day(text: str | None) -> date | None:
    """The calendar date a FHIR date/dateTime was written for (its local date)."""
    if not text or len(text) < 10:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def observation_day(obs: dict[str, Any]) -> date | None:
    period = obs.get("effectivePeriod") or {}
    return _day(obs.get("effectiveDateTime") or obs.get("effectiveInstant")
                or period.get("start") or obs.get("issued"))


def _codes(concept: dict[str, Any] | None, system: str | None = None) -> list[tuple[str, str]]:
    return [(c.get("system", ""), c.get("code", "")) for c in (concept or {}).get("coding", [])
            if system is None or c.get("system") == system]


class Unusable(ValueError):
    """A result that cannot be used: unit not accepted or value implausible. ``path`` is the
    element at fault, relative to the Observation."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(message)


def item_value(item: Item, obs: dict[str, Any]) -> Any:
    """The item's value in ``obs`` (converted to the item's unit), or None when ``obs`` does
    not carry it. Raises :class:`Unusable` for a unit not accepted or an implausible value."""
    if (item.system, item.code) not in _codes(obs.get("code")):
        return None
    return _carried(item, obs)


def _carried(item: Item, obs: dict[str, Any]) -> Any:
    """``item_value`` of an Observation known to have the item's code."""
    holder, at = obs, None
    if item.component is not None:
        system, component = item.component
        for n, comp in enumerate(obs.get("component", [])):
            if any(c.get("code", "") == component and c.get("system", "") == system
                   for c in (comp.get("code") or {}).get("coding", [])):
                holder, at = comp, n
                break
        else:
            return None
    if item.kind == "boolean":
        value = holder.get("valueBoolean")
        return value if isinstance(value, bool) else None
    if item.kind == "coded":
        for code in _codes(holder.get("valueCodeableConcept")):
            if f"{code[0]}|{code[1]}" in item.values:
                return item.values[f"{code[0]}|{code[1]}"]
        return None
    quantity = holder.get("valueQuantity")
    if not quantity or "value" not in quantity:
        return None
    raw, unit = quantity["value"], quantity.get("code") or quantity.get("unit")
    kind = type(raw)
    # a number converted before, by its JSON value (int or float: 120 and 120.0 are written
    # differently; zero left out, as -0.0 equals 0.0)
    key = (raw, kind, unit) if (kind is int or kind is float) and raw else None
    known = item.converted
    found = known.get(key) if key else None
    if found is None:
        path = "Observation" if at is None else f"Observation.component[{at}]"
        found = convert(item, Decimal(str(raw)), unit, f"{path}.valueQuantity")
        if key:
            if len(known) >= 20_000:
                known.clear()
            known[key] = found
    return found


def convert(item: Item, value: Decimal, unit: str | None, path: str) -> Decimal:
    """``value`` in ``unit`` → the item's unit, checked against the plausible range."""
    for accepted in item.units:
        if accepted.code == unit:
            converted = value * accepted.factor
            if accepted.factor != 1 and item.decimals is not None:
                # reported as the item's unit is reported: 126 mg/dL is 7.0 mmol/L (5481's
                # threshold), not 6.994
                converted = converted.quantize(Decimal(1).scaleb(-item.decimals),
                                               rounding=ROUND_HALF_UP)
            break
    else:
        raise Unusable(f"{path}.code", f"{item.label.en}: unit {unit!r} is not accepted; use "
                                       f"{' or '.join(u.code for u in item.units)}")
    low, high = item.range  # type: ignore[misc]
    if not low <= converted <= high:
        hint = ""
        for other in item.units:
            guess = value * other.factor
            if other.code != unit and low <= guess <= high:
                hint = f"; if it was measured in {other.code}, that is {guess:.3g} {item.unit}"
                break
        raise Unusable(f"{path}.value", f"{item.label.en}: {value} {unit} is outside the "
                                        f"plausible range {low}–{high} {item.unit}{hint}")
    return converted


@dataclass
class Facts:
    """One person's records, as FHIR JSON dicts."""

    patient: dict[str, Any]
    observations: list[dict[str, Any]] = field(default_factory=list)
    conditions: list[dict[str, Any]] = field(default_factory=list)
    medications: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)  # calls about missed visits
    #: outputs already stored (this engine's and those a person changed since)
    outputs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Result:
    """What the programmes want stored for one person."""

    #: Observation id → the interpretation CodeableConcepts the programmes give it
    interpretations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: output resources by (type, id)
    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: programme id → its status for worklists
    status: dict[str, ProgrammeStatus] = field(default_factory=dict)


@dataclass
class ProgrammeStatus:
    """Where a person stands in one programme: the row of ``programme_status``."""

    programme: str
    kind: str
    eligible_from: date | None
    eligible_until: date | None  # the last day of eligibility (inclusive)
    enrolled: date | None
    last_visit: date | None
    next_due: date | None
    referral_due: date | None  # the end of the earliest open referral's window
    call_outcome: str | None
    call_day: date | None
    call_again: date | None


# ---- evaluation --------------------------------------------------------------------------

def evaluate(programmes: dict[str, Programme], facts: Facts) -> Result:
    return _Person(programmes, facts).run()


def items_due(programmes: dict[str, Programme], facts: Facts, day: date) -> dict[str, list[str]]:
    """What to measure at a check-up on ``day``: per programme that applies, its items whose
    ``when`` holds on the person's current values (e.g. glucose from 45 or BMI ≥ 23)."""
    person = _Person(programmes, facts)
    person.run()
    due: dict[str, list[str]] = {}
    for p in programmes.values():
        if not person._applies(p, day):
            continue
        names, _ = person.variables(p, day)
        due[p.id] = [i.id for i in p.items if i.derive is None
                     and (i.when is None or i.when.holds(names))]
    return due


class _Person:
    def __init__(self, programmes: dict[str, Programme], facts: Facts) -> None:
        self.programmes = programmes
        self.facts = facts
        self.patient = facts.patient
        self.pid = facts.patient["id"]
        self.subject = f"Patient/{self.pid}"
        self.birth = _day(self.patient.get("birthDate"))
        self.sex = self.patient.get("gender")
        self.result = Result()
        self.existing = {(r["resourceType"], r["id"]): r for r in facts.outputs}
        # every usable result per item id: (day, value, observation), in (day, id) order
        self.values: dict[str, list[tuple[date, Any, dict[str, Any]]]] = {}
        self.days: dict[str, list[date]] = {}  # the days of ``values``, for bisection
        self.of_result: dict[int, dict[str, Any]] = {}  # id(Observation) → item id → value
        self.visit_days: dict[str, set[date]] = {}  # programme → days of its results
        # day → (age, active conditions, current medicines)
        self._records_on: dict[date, tuple[Any, list[str], list[str]]] = {}
        self.enrolled: dict[str, date] = {}  # care programme → enrolment day
        self.ended: dict[str, date] = {}  # care programme → end of a finished episode
        # programme → action → start of the run of points where it holds
        self.runs: dict[str, dict[str, date | None]] = {p: {} for p in programmes}
        self.visits: dict[str, list[date]] = {}
        self.last_visit_names: dict[str, dict[str, Any]] = {}

    def run(self) -> Result:
        by_code: dict[tuple[str, str], list[tuple[date, dict[str, Any]]]] = {}
        for obs in self.facts.observations:
            if obs.get("status") in RESULT_STATUSES and (day := observation_day(obs)):
                codes = _codes(obs.get("code"))
                for code in set(codes) if len(codes) > 1 else codes:
                    found = by_code.get(code)
                    if found is None:
                        by_code[code] = [(day, obs)]
                    else:
                        found.append((day, obs))
        values, days, of_result = self.values, self.days, self.of_result
        for p in self.programmes.values():  # an item id means the same in every programme
            for item in p.items:
                iid = item.id
                if iid in values:
                    continue
                found = by_code.get(item.coding)
                if found is None:
                    values[iid], days[iid] = [], []
                    continue
                rows = values[iid] = self._item_rows(item, found)
                days[iid] = [d for d, _, _ in rows]
                for _, value, obs in rows:
                    of_result.setdefault(id(obs), {})[iid] = value
            self.visit_days[p.id] = set().union(*[days[i.id] for i in p.items])
        condition_days = {d for c in self.facts.conditions if (d := _condition_day(c))}
        ordered = sorted(self.programmes.values(), key=lambda p: p.kind != "screening")
        # a programme is evaluated on the days of its own results and of diagnoses
        on_day: dict[date, list[Programme]] = {}
        for p in ordered:
            for day in self.visit_days[p.id] | condition_days:
                on_day.setdefault(day, []).append(p)
        self._episodes_on_record()
        for day in sorted(on_day):
            # enrolments first, so that a day's other actions see them as they would see an
            # episode already on record (no "confirm the diagnosis" for the diagnosed)
            due = on_day[day]
            points = {p.id: self._prepare(p, day) for p in due if self._applies(p, day)}
            for p in due:
                if p.enrolments and p.id in points:
                    self._actions(p, day, *points[p.id], p.enrolments)
            enrolled = self._enrolled_on(day)
            for p in due:
                point = points.get(p.id)
                if point is None and self._applies(p, day):
                    point = self._prepare(p, day)  # enrolled this day
                if point is not None:
                    point[0]["enrolled"] = enrolled
                    self._actions(p, day, *point, p.findings)
        windows: dict[str, date] = {}  # programme → end of its earliest open referral's window
        for (kind, _), r in self.result.resources.items():
            if kind == "ServiceRequest" and r.get("status") == "active":
                end = _day(r["occurrencePeriod"]["end"])
                for uri in {u.partition("|")[0] for u in r.get("instantiatesUri", [])
                            if "|" in u}:
                    if end is not None and (uri not in windows or end < windows[uri]):
                        windows[uri] = end
        for p in self.programmes.values():
            self._plan(p, windows.get(p.uri))
        return self.result

    @staticmethod
    def _item_rows(item: Item, found: list[tuple[date, dict[str, Any]]]
                   ) -> list[tuple[date, Any, dict[str, Any]]]:
        rows = []
        for day, obs in found:
            try:
                value = _carried(item, obs)
            except Unusable:
                continue  # refused on the way in; imported data is skipped here
            if value is not None:
                rows.append((day, value, obs))
        if len(rows) > 1:
            rows.sort(key=lambda r: (r[0], r[2].get("id", "")))
        return rows

    def _episodes_on_record(self) -> None:
        """Episodes of care already stored (by this engine or by a clinician) count: a
        finished one ends the programme on its end date."""
        for r in self.facts.outputs:
            if r["resourceType"] != "EpisodeOfCare":
                continue
            for system, code in _codes((r.get("type") or [{}])[0]):
                if system.startswith("urn:songkhoe:programme:") and \
                        code in self.programmes and r.get("status") != "entered-in-error":
                    self._put(r)  # kept as it is: enrolment is never undone by the engine
                    start = _day((r.get("period") or {}).get("start"))
                    if start and (code not in self.enrolled or start < self.enrolled[code]):
                        self.enrolled[code] = start
                    end = _day((r.get("period") or {}).get("end"))
                    if r.get("status") in ("finished", "cancelled") and end:
                        self.ended[code] = end

    # -- who is in which programme on a day --

    def _records(self, day: date) -> tuple[Any, list[str], list[str]]:
        """(age, active conditions, current medicines) on ``day``."""
        records = self._records_on.get(day)
        if records is None:
            records = self._records_on[day] = (
                age_on(self.birth, day) if self.birth else None,
                [code for c in self.facts.conditions if _condition_on(c, day)
                 for _, code in _codes(c.get("code"), ICD10)],
                [code for m in self.facts.medications if _medication_on(m, day)
                 for _, code in _codes(m.get("medicationCodeableConcept"), ATC)])
        return records

    def builtins(self, day: date) -> dict[str, Any]:
        age, conditions, medications = self._records(day)
        return {"age": age, "sex": self.sex or None, "conditions": conditions,
                "medications": medications, "enrolled": self._enrolled_on(day)}

    def _enrolled_on(self, day: date) -> list[str]:
        ended = self.ended
        return [p for p, start in self.enrolled.items()
                if start <= day and not (p in ended and ended[p] < day)]

    def _applies(self, p: Programme, day: date) -> bool:
        if p.kind == "care":
            start = self.enrolled.get(p.id)
            return start is not None and start <= day and \
                not (p.id in self.ended and self.ended[p.id] < day)
        if self.birth is None or self.sex not in p.sexes:
            return False
        age = self._records(day)[0]
        if (p.min_age is not None and age < p.min_age) or \
                (p.max_age is not None and age > p.max_age):
            return False
        return p.eligible is None or p.eligible.holds(self.builtins(day))

    def variables(self, p: Programme, day: date) -> tuple[dict[str, Any], dict[str, dict]]:
        """The variables on ``day`` and, per item, the Observation its value came from."""
        names = self.builtins(day)
        sources: dict[str, dict[str, Any]] = {}
        oldest = day - p.lookback
        values, days = self.values, self.days
        for item in p.items:
            iid = item.id
            when = days[iid]
            if when:
                at = bisect_right(when, day) - 1  # the latest result on or before ``day`` …
                if at >= 0 and when[at] >= oldest:  # … if it is recent enough
                    _, names[iid], sources[iid] = values[iid][at]
                    continue
            if item.derive is not None and (derived := item.derive.value(names)) is not None:
                names[iid] = _rounded(derived, item.decimals)
            else:
                names[iid] = None
        for c in p.classifications:
            band = c.classify(names) if names[c.item] is not None else None
            names[c.id] = band.code if band else None
        return names, sources

    # -- one evaluation point --

    def _prepare(self, p: Programme, day: date) -> tuple[dict[str, Any], dict[str, dict]]:
        """The variables of ``p`` on ``day``; on a visit, its results' classifications and
        its risk scores too."""
        names, sources = self.variables(p, day)
        if day in self.visit_days[p.id]:
            self.visits.setdefault(p.id, []).append(day)
            if p.classifications:
                self._classify(p, day, names)
            for score in p.scores:
                value = self._score(p, score, day, names, sources)
                names[score.id] = value
                band = score.band(value) if value is not None else None
                names[f"{score.id}_band"] = band.code if band else None
            self.last_visit_names[p.id] = names  # the next interval reads them
        else:
            for score in p.scores:
                names[score.id] = names[f"{score.id}_band"] = None
        return names, sources

    def _actions(self, p: Programme, day: date, names: dict[str, Any],
                 sources: dict[str, dict], actions: tuple[Action, ...]) -> None:
        runs = self.runs[p.id]
        for action in actions:
            holds = action.when.holds(names)
            started = runs.get(action.id)
            if holds:
                if started is None:
                    runs[action.id] = day
                    self._act(p, action, day, names, sources)
                elif action.action == "flag":
                    self._flag(p, action, started, None, sources)
            elif started is not None:
                runs[action.id] = None
                if action.action == "flag":
                    self._flag(p, action, started, day, sources)

    def _classify(self, p: Programme, day: date, names: dict[str, Any]) -> None:
        interpretations = self.result.interpretations
        for c in p.classifications:
            days = self.days[c.item]
            if not days:
                continue
            for _, value, obs in self.values[c.item][bisect_left(days, day):
                                                     bisect_right(days, day)]:
                mine = self.of_result[id(obs)]
                own = names  # copied only when this result is not the day's value
                if names.get(c.item) is not value or any(
                        names.get(other) is not mine[other] for other in c.inputs
                        if other in mine):
                    own = dict(names)
                    own[c.item] = value
                    for other in c.inputs:  # the same Observation's values come first
                        if other in mine:
                            own[other] = mine[other]
                band = c.classify(own)
                if band is None:
                    continue
                interpretations.setdefault(obs["id"], []).append({
                    "coding": [{"system": f"{p.uri}:{c.id}", "version": p.version,
                                "code": band.code, "display": band.display.vi},
                               {"system": V3, "code": band.interpretation}],
                    "text": band.display.vi})

    def _score(self, p: Programme, score: Score, day: date, names: dict[str, Any],
               sources: dict[str, dict]) -> Decimal | None:
        if score.when is not None and not score.when.holds(names):
            return None
        probability: Decimal | None = None
        if score.kind == "points":
            value = Decimal(score.points(names))
            detail = f"{score.label.vi}: {value} điểm"
        else:
            args = {arg: expr.get(names) for arg, expr in score.inputs.items()}
            model = "lab" if args.get("total_cholesterol_mmol") is not None and \
                args.get("diabetes") is not None else "nonlab"
            needed = ("age", "sex", "sbp", "smoker") + \
                (("total_cholesterol_mmol", "diabetes") if model == "lab" else ("bmi",))
            if any(args.get(a) is None for a in needed):
                return None
            try:
                risk = _ten_year_risk(
                    model, args["sex"], float(args["age"]), float(args["sbp"]),
                    bool(args["smoker"]),
                    float(args["total_cholesterol_mmol"]) if model == "lab" else None,
                    bool(args["diabetes"]) if model == "lab" else None,
                    float(args["bmi"]) if model == "nonlab" else None)
            except ValueError:
                return None  # outside the model's domain (age 40–74)
            value = probability = Decimal(str(round(risk, 4)))
            detail = f"{score.label.vi} ({'xét nghiệm' if model == 'lab' else 'không xét nghiệm'}" \
                     f"): {value * 100:.1f}%"
        band = score.band(value)
        rid = output_id("ra", p.id, score.id, self.pid, day.isoformat())
        prediction: dict[str, Any] = {"outcome": {"text": score.label.vi}}
        if probability is None and band is not None and band.probability is not None:
            probability = band.probability
        if probability is not None:
            prediction["probabilityDecimal"] = float(probability)
        if band is not None:
            prediction["qualitativeRisk"] = {"coding": [{
                "system": f"{p.uri}:{score.id}", "version": p.version, "code": band.code,
                "display": band.display.vi}], "text": band.display.vi}
        inputs = ", ".join([f"{k}={str(v.normalize()) if type(v) is Decimal else v}"
                            for k in sorted(names)  # the names sort faster than the items
                            if (v := names[k]) is not None and type(v) is not list])
        self._put({
            "resourceType": "RiskAssessment", "id": rid, "meta": {"tag": [TAG]},
            "status": "final", "subject": self._subject(),
            "occurrenceDateTime": day.isoformat(),
            "method": {"coding": [{"system": f"{p.uri}:score", "version": p.version,
                                   "code": score.id, "display": score.label.vi}],
                       "text": f"{p.sources[score.source]}"},
            "basis": self._basis(sources),
            "prediction": [prediction],
            "note": [{"text": f"{detail}. Dữ liệu: {inputs}"}],
        })
        return value

    # -- outputs of actions --

    def _act(self, p: Programme, action: Action, day: date, names: dict[str, Any],
             sources: dict[str, dict]) -> None:
        if action.action == "refer":
            self._refer(p, action, day, sources)
        elif action.action == "flag":
            self._flag(p, action, day, None, sources)
        else:
            target = action.programme
            assert target is not None
            if target in self.enrolled and not (target in self.ended and
                                                self.ended[target] < day):
                return
            self.enrolled[target] = day
            self.ended.pop(target, None)
            care = self.programmes[target]
            rid = output_id("eoc", target, self.pid, day.isoformat())
            if ("EpisodeOfCare", rid) in self.existing:  # a clinician may have changed it
                self._put(self.existing[("EpisodeOfCare", rid)])
                return
            episode: dict[str, Any] = {
                "resourceType": "EpisodeOfCare", "id": rid, "meta": {"tag": [TAG]},
                "status": "active",
                "type": [{"coding": [{"system": f"urn:songkhoe:programme:{care.id}",
                                      "version": care.version, "code": care.id,
                                      "display": care.title.vi}], "text": care.title.vi}],
                # in the order they were diagnosed (then by id), not the store's order
                "diagnosis": [{"condition": {"reference": f"Condition/{c['id']}"}}
                              for c in sorted(self.facts.conditions, key=_diagnosed)
                              if _condition_on(c, day)
                              and any(code in (names.get("conditions") or [])
                                      for _, code in _codes(c.get("code"), ICD10))],
                "patient": self._subject(),
                "period": {"start": day.isoformat()},
            }
            if not episode["diagnosis"]:
                del episode["diagnosis"]
            org = self.patient.get("managingOrganization")
            if org:
                episode["managingOrganization"] = org
            self._put(episode)

    def _refer(self, p: Programme, action: Action, day: date,
               sources: dict[str, dict]) -> None:
        rid = output_id("sr", p.id, action.id, self.pid, day.isoformat())
        if ("ServiceRequest", rid) in self.existing:  # staff act on referrals: never
            self._put(self.existing[("ServiceRequest", rid)])  # overwrite what they changed
            return
        request: dict[str, Any] = {
            "resourceType": "ServiceRequest", "id": rid, "meta": {"tag": [TAG]},
            "instantiatesUri": [f"{p.uri}|{p.version}#{action.id}"],
            "status": "active", "intent": "order",
            "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005",
                                      "display": "Patient referral"}]}],
            "priority": _PRIORITY[action.urgency or "routine"],
            "code": {"coding": [{"system": f"{p.uri}:action", "version": p.version,
                                 "code": action.id, "display": action.reason.vi}],
                     "text": action.reason.vi},
            "subject": self._subject(),
            "occurrencePeriod": {"start": day.isoformat(), "end": (
                day + timedelta(days=action.within_days or 0)).isoformat()},
            "authoredOn": day.isoformat(),
            "performerType": {"coding": [{"system": "urn:songkhoe:facility-level",
                                          "code": action.level}], "text": action.level},
            "reasonCode": [{"text": f"{action.reason.vi} — {p.sources[action.source]}"}],
        }
        evidence = self._evidence(action, sources)  # R4: reasonReference takes results only
        results = [r for r in evidence if r["reference"].startswith("Observation/")]
        if results:
            request["reasonReference"] = results
        if len(results) < len(evidence):
            request["supportingInfo"] = [r for r in evidence if r not in results]
        self._put(request)

    def _flag(self, p: Programme, action: Action, start: date, end: date | None,
              sources: dict[str, dict]) -> None:
        rid = output_id("flag", p.id, action.id, self.pid, start.isoformat())
        flag: dict[str, Any] = {
            "resourceType": "Flag", "id": rid, "meta": {"tag": [TAG]},
            "status": "inactive" if end else "active",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/flag-category",
                "code": "clinical", "display": "Clinical"}]}],
            "code": {"coding": [{"system": f"{p.uri}:action", "version": p.version,
                                 "code": action.id, "display": action.reason.vi}],
                     "text": action.reason.vi},
            "subject": self._subject(),
            "period": {"start": start.isoformat(), **({"end": end.isoformat()} if end else {})},
        }
        evidence = self._evidence(action, sources)
        if evidence and not end:
            flag["extension"] = [{"url": "http://hl7.org/fhir/StructureDefinition/flag-detail",
                                  "valueReference": evidence[0]}]
        elif ("Flag", rid) in self.result.resources and "extension" in \
                self.result.resources[("Flag", rid)]:
            flag["extension"] = self.result.resources[("Flag", rid)]["extension"]
        self._put(flag)

    def _plan(self, p: Programme, referral_due: date | None) -> None:
        visits = self.visits.get(p.id, [])
        enrolled = self.enrolled.get(p.id)
        if p.kind == "care" and enrolled is None:
            return
        eligible_from = eligible_until = None
        if p.kind == "screening":
            if self.birth is None or self.sex not in p.sexes:
                return
            eligible_from = birthday(self.birth, p.min_age) if p.min_age else self.birth
            if p.max_age is not None:
                eligible_until = birthday(self.birth, p.max_age + 1) - timedelta(days=1)
        last = visits[-1] if visits else None
        call = self._latest_call(p, last)
        status = ProgrammeStatus(
            p.id, p.kind, eligible_from, eligible_until, enrolled, last,
            eligible_from if p.kind == "screening" else enrolled, referral_due,
            *call)
        self.result.status[p.id] = status
        if last is None:
            return
        names = self.last_visit_names[p.id]  # with the scores of that visit
        interval = next(i for i in p.intervals if i.when is None or i.when.holds(names))
        status.next_due = due = last + timedelta(days=interval.days)
        self._put({
            "resourceType": "CarePlan", "id": output_id("cp", p.id, self.pid),
            "meta": {"tag": [TAG]},
            "instantiatesUri": [f"{p.uri}|{p.version}"],
            "status": "active", "intent": "plan",
            "title": p.title.vi,
            "subject": self._subject(),
            "period": {"start": (enrolled or visits[0]).isoformat()},
            "activity": [{"detail": {
                "kind": "Appointment",
                "code": {"text": interval.label.vi},
                "status": "scheduled",
                "scheduledPeriod": {"start": due.isoformat()},
                "description": f"{interval.label.vi} (lần khám gần nhất {last.isoformat()})",
            }}],
        })

    def _latest_call(self, p: Programme, after: date | None) -> tuple[Any, Any, Any]:
        """(outcome, day, day to call again) of the latest call about ``p`` after ``after``."""
        latest: tuple[date, str, date | None] | None = None
        for task in self.facts.tasks:
            if CALL not in _codes(task.get("code")) or \
                    not str(task.get("instantiatesUri", "")).startswith(f"{p.uri}|"):
                continue
            day = _day((task.get("executionPeriod") or {}).get("start") or
                       task.get("authoredOn"))
            outcome = next((c for _, c in _codes(task.get("businessStatus"))
                            if c in CALL_OUTCOMES), None)
            if day is None or outcome is None or (after is not None and day <= after):
                continue
            again = _day(((task.get("restriction") or {}).get("period") or {}).get("start"))
            if latest is None or day >= latest[0]:
                latest = (day, outcome, again)
        return (latest[1], latest[0], latest[2]) if latest else (None, None, None)

    # -- helpers --

    def _subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.pid}"}

    def _basis(self, sources: dict[str, dict]) -> list[dict[str, str]]:
        seen: list[str] = []
        for obs in sources.values():
            ref = f"Observation/{obs['id']}"
            if ref not in seen:
                seen.append(ref)
        return [{"reference": r} for r in seen]

    def _evidence(self, action: Action, sources: dict[str, dict]) -> list[dict[str, str]]:
        refs: list[str] = []
        for name in action.evidence:
            if name in sources:
                ref = f"Observation/{sources[name]['id']}"
            else:
                ref = next((f"RiskAssessment/{rid}" for (t, rid), r in
                            reversed(self.result.resources.items()) if t == "RiskAssessment"
                            and r["method"]["coding"][0]["code"] == name), "")
            if ref and ref not in refs:
                refs.append(ref)
        return [{"reference": r} for r in refs]

    def _put(self, resource: dict[str, Any]) -> None:
        self.result.resources[(resource["resourceType"], resource["id"])] = resource


@lru_cache(maxsize=65536)
def _ten_year_risk(model: Any, sex: Any, age: float, sbp: float, smoker: bool,
                   cholesterol: float | None, diabetes: bool | None, bmi: float | None) -> float:
    """``who_cvd_risk.ten_year_risk``, remembered: many people share the inputs."""
    return who_cvd_risk.ten_year_risk(model, sex, age, sbp, smoker,
                                      total_cholesterol_mmol=cholesterol, diabetes=diabetes,
                                      bmi=bmi)


def _rounded(value: Decimal, decimals: int | None) -> Decimal:
    if decimals is None:
        return value
    return value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN)


def _diagnosed(c: dict[str, Any]) -> tuple[date, str]:
    return _condition_day(c) or date.min, str(c.get("id", ""))


def _condition_day(c: dict[str, Any]) -> date | None:
    return _day(c.get("onsetDateTime") or (c.get("onsetPeriod") or {}).get("start")
                or c.get("recordedDate"))


def _condition_on(c: dict[str, Any], day: date) -> bool:
    clinical = [code for _, code in _codes(c.get("clinicalStatus"))]
    verification = [code for _, code in _codes(c.get("verificationStatus"))]
    if clinical and not ACTIVE_CONDITION.intersection(clinical):
        return False
    if {"refuted", "entered-in-error"}.intersection(verification):
        return False
    since = _condition_day(c)
    return since is None or since <= day


def _medication_on(m: dict[str, Any], day: date) -> bool:
    if m.get("status") not in ("active", "completed", "intended", None):
        return False
    since = _day(m.get("effectiveDateTime") or (m.get("effectivePeriod") or {}).get("start")
                 or m.get("dateAsserted"))
    end = _day((m.get("effectivePeriod") or {}).get("end"))
    return (since is None or since <= day) and (end is None or day <= end)
