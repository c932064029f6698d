"""A programme definition exported as FHIR R4 (4.0.1) knowledge artifacts.

``export(programme)`` gives a ``Bundle`` of type ``collection`` holding:

- one ``PlanDefinition`` (http://hl7.org/fhir/R4/plandefinition.html), type
  ``clinical-protocol``, whose single top-level action is the programme: its applicability
  conditions are the population (age, sex, eligibility, enrolment for a care programme), and
  its sub-actions follow the definition file in order — collect the items, classify results,
  compute scores, the file's own actions (refer, flag, enrol), and plan the next visit;
- one ``ActivityDefinition`` (http://hl7.org/fhir/R4/activitydefinition.html) of kind
  ``ServiceRequest`` per Observation to collect and per referral;
- one ``ObservationDefinition`` (http://hl7.org/fhir/R4/observationdefinition.html) per item:
  its code, unit, decimals, plausible range (``qualifiedInterval`` of category ``absolute``)
  and the classification bands that are plain ranges of the item alone;
- one ``Library`` (http://hl7.org/fhir/R4/library.html) declaring the ``%variables`` the
  conditions read (``parameter``), the data the engine reads (``dataRequirement``, with the
  look-back as a ``dateFilter`` duration) and the definition file itself as its ``content``,
  so that what R4 cannot say is carried unchanged.

Canonical URLs: the PlanDefinition's ``url`` is the programme's name, ``urn:songkhoe:programme:
<id>`` — the name every output of the engine already cites (``instantiatesUri`` is ``<url>|
<version>#<action id>``, and the referral and flag actions keep the file's action ids). The
other artifacts hang below it: ``<url>:Library``, ``<url>:ActivityDefinition:collect-<item>``
and ``<url>:ActivityDefinition:<action>``. R4's ObservationDefinition is not a canonical
resource, so it is referenced by its ``urn:uuid:`` ``fullUrl`` in the Bundle. Every id and
``fullUrl`` is derived from these names, so exporting twice gives the same Bundle.

Conditions are ``Expression``s of language ``text/fhirpath`` (http://hl7.org/fhir/R4/
metadatatypes.html#Expression) whose text is the file's, unchanged; the Vietnamese text is the
resource's language and English comes as the ``translation`` extension
(http://hl7.org/fhir/R4/extension-translation.html).
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
from pathlib import Path
from typing import Any

from .definition import Action, Classification, Item, Programme, Score, Text

FHIRPATH = "text/fhirpath"
UCUM = "http://unitsofmeasure.org"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"
PLAN_TYPE = "http://terminology.hl7.org/CodeSystem/plan-definition-type"
LIBRARY_TYPE = "http://terminology.hl7.org/CodeSystem/library-type"
USAGE_CONTEXT = "http://terminology.hl7.org/CodeSystem/usage-context-type"
GENDER = "http://hl7.org/fhir/administrative-gender"
FACILITY_LEVEL = "urn:songkhoe:facility-level"
#: what a coded item's answer is called in the conditions (a ValueSet designation's use)
VARIABLE_VALUE = {"system": "urn:songkhoe:programmes", "code": "variable-value",
                  "display": "The value the programme's conditions compare with"}
#: the built-in variables: (name, FHIR type, repeats, documentation)
BUILTIN_PARAMETERS = (
    ("age", "integer", False, Text("Tuổi tròn vào ngày khám",
                                   "Age in completed years on the day of the visit")),
    ("sex", "string", False, Text("'male' hoặc 'female' (Patient.gender)",
                                  "'male' or 'female' (Patient.gender)")),
    ("conditions", "string", True, Text("Mã ICD-10 của các bệnh đang có (Condition)",
                                        "ICD-10 codes of the active Conditions")),
    ("medications", "string", True, Text("Mã ATC (WHO) của các thuốc đang dùng",
                                         "WHO ATC codes of the medicines currently taken")),
    ("enrolled", "string", True, Text("Mã các chương trình quản lý bệnh mạn tính đang tham gia",
                                      "Ids of the care programmes the person is enrolled in")),
)
_DATA_TYPES = {"quantity": "decimal", "coded": "string", "boolean": "boolean"}
_PERMITTED = {"quantity": "Quantity", "coded": "CodeableConcept", "boolean": "boolean"}
_RAY = re.compile(r"\s*%(?P<name>[a-z][a-z0-9_]*)\s*(?P<op>>=|<=|>|<)\s*"
                  r"(?P<number>\d+(?:\.\d+)?)\s*")

_IN_ORDER = Text("Các mức được xét theo thứ tự: mức đầu tiên có điều kiện đúng được chọn.",
                 "Bands are tried in order: the first whose condition holds is chosen.")
_NEXT_VISIT = Text("Lần khám tiếp theo", "Next visit")
_FIRST_INTERVAL = Text("Khoảng đầu tiên có điều kiện đúng, tính từ lần khám gần nhất.",
                       "The first interval whose condition holds, counted from the last visit.")
_POINTS = Text("Tổng điểm của các quy tắc có điều kiện đúng.",
               "The sum of the points of every rule whose condition holds.")


def export(programme: Programme) -> dict[str, Any]:
    """The programme as a FHIR R4 ``collection`` Bundle (see the module docstring)."""
    return _Export(programme).bundle()


class _Export:
    def __init__(self, programme: Programme) -> None:
        self.p = programme
        self.url = programme.uri  # the PlanDefinition's canonical URL
        self.entries: list[dict[str, Any]] = []
        self.observation_definitions = {item.id: self._observation_definition(item)
                                        for item in programme.items}

    def bundle(self) -> dict[str, Any]:
        plan = self._plan()
        self._add(plan, self.url)
        self._add(self._library(), f"{self.url}:Library")
        return {"resourceType": "Bundle", "id": self.p.id, "type": "collection",
                "entry": self._sorted()}

    def _sorted(self) -> list[dict[str, Any]]:
        order = ("PlanDefinition", "Library", "ActivityDefinition", "ObservationDefinition")
        return sorted(self.entries, key=lambda e: order.index(e["resource"]["resourceType"]))

    # -- entries and names --

    def _add(self, resource: dict[str, Any], name: str) -> str:
        """Add ``resource`` to the Bundle under the ``urn:uuid:`` derived from ``name``."""
        full_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}"
        resource = {"resourceType": resource["resourceType"],
                    "id": resource.get("id", full_url.removeprefix("urn:uuid:")), **resource}
        self.entries.append({"fullUrl": full_url, "resource": resource})
        return full_url

    def _canonical(self, resource_type: str, url: str, name: str, title: Text) -> dict[str, Any]:
        return {"resourceType": resource_type, "language": "vi", "url": url,
                "version": self.p.version, "name": _computable(self.p.id, name),
                **_text("title", title), "status": "active"}

    def _activity(self, name: str, title: Text) -> dict[str, Any]:
        return self._canonical("ActivityDefinition", f"{self.url}:ActivityDefinition:{name}",
                               name, title)

    # -- the PlanDefinition --

    def _plan(self) -> dict[str, Any]:
        p = self.p
        plan: dict[str, Any] = {
            "resourceType": "PlanDefinition", "id": p.id, "language": "vi", "url": self.url,
            "version": p.version, "name": _computable(p.id), **_text("title", p.title),
            "type": {"coding": [{"system": PLAN_TYPE, "code": "clinical-protocol",
                                 "display": "Clinical Protocol"}]},
            "status": "active",
            "jurisdiction": [{"coding": [{"system": "urn:iso:std:iso:3166", "code": "VN"}]}],
            "relatedArtifact": [_citation(key, text) for key, text in p.sources.items()],
            "library": [f"{self.url}:Library|{p.version}"],
            "action": [self._programme_action()],
        }
        context = self._use_context()
        if context:
            plan["useContext"] = context
        return plan

    def _use_context(self) -> list[dict[str, Any]]:
        p = self.p
        out: list[dict[str, Any]] = []
        if p.min_age is not None or p.max_age is not None:
            ages = {bound: _quantity(Decimal(age), "a") for bound, age in
                    (("low", p.min_age), ("high", p.max_age)) if age is not None}
            out.append({"code": {"system": USAGE_CONTEXT, "code": "age"}, "valueRange": ages})
        if len(p.sexes) == 1:
            out.append({"code": {"system": USAGE_CONTEXT, "code": "gender"},
                        "valueCodeableConcept": {"coding": [{"system": GENDER,
                                                             "code": p.sexes[0]}]}})
        return out

    def _programme_action(self) -> dict[str, Any]:
        """The programme's one top-level action: the population as applicability conditions,
        then the steps of the definition file as sub-actions, in the file's order."""
        p = self.p
        conditions = []
        if p.kind == "care":
            conditions.append(f"%enrolled.where($this = '{p.id}').exists()")
        if p.min_age is not None:
            conditions.append(f"%age >= {p.min_age}")
        if p.max_age is not None:
            conditions.append(f"%age <= {p.max_age}")
        if len(p.sexes) == 1:
            conditions.append(f"%sex = '{p.sexes[0]}'")
        if p.eligible is not None:
            conditions.append(p.eligible.text)
        steps = [*self._collect_actions(), *map(self._classification_action, p.classifications),
                 *map(self._score_action, p.scores), *self._programme_actions(),
                 self._interval_action()]
        action: dict[str, Any] = {"id": f"programme:{p.id}", **_text("title", p.title)}
        if conditions:
            action["condition"] = [_condition(text) for text in conditions]
        action["groupingBehavior"] = "logical-group"
        action["action"] = steps
        return action

    def _collect_actions(self) -> list[dict[str, Any]]:
        """One action per Observation to collect: the items read from one Observation under
        the same condition (the components of a panel) share it."""
        groups: dict[tuple[str, str, str | None], list[Item]] = {}
        for item in self.p.items:
            groups.setdefault((item.system, item.code, item.when.text if item.when else None),
                              []).append(item)
        actions = []
        for (system, code, when), items in groups.items():
            label = Text(", ".join(i.label.vi for i in items), ", ".join(i.label.en for i in items))
            name = f"collect-{items[0].id}"
            definition = {
                **self._activity(name, label),
                "kind": "ServiceRequest",
                "code": {"coding": [{"system": system, "code": code}]},
                "intent": "order",
                "observationResultRequirement": [
                    {"reference": self.observation_definitions[i.id]} for i in items],
            }
            self._add(definition, definition["url"])
            action: dict[str, Any] = {"id": f"item:{items[0].id}", **_text("title", label),
                                      "code": [{"coding": [{"system": system, "code": code}]}]}
            if when is not None:
                action["condition"] = [_condition(when)]
            action["definitionCanonical"] = f"{definition['url']}|{self.p.version}"
            actions.append(action)
        return actions

    def _classification_action(self, c: Classification) -> dict[str, Any]:
        item = self.p.item(c.item)
        bands = []
        for n, band in enumerate(c.bands):
            bands.append({
                "id": f"classification:{c.id}:{n}", **_text("title", band.display),
                "code": [self._interpretation(c, n)],
                "documentation": [_source(band.source)],
                "condition": [_condition(band.when.text)],
            })
        return {"id": f"classification:{c.id}", **_text("title", c.label),
                **_text("description", _IN_ORDER),
                "output": [_observations(item)],
                "selectionBehavior": "at-most-one", "action": bands}

    def _interpretation(self, c: Classification, n: int) -> dict[str, Any]:
        """A band as the engine writes it in ``Observation.interpretation``."""
        band = c.bands[n]
        return {"coding": [{"system": f"{self.url}:{c.id}", "version": self.p.version,
                            "code": band.code, "display": band.display.vi},
                           {"system": V3, "code": band.interpretation}],
                "text": band.display.vi}

    def _score_action(self, score: Score) -> dict[str, Any]:
        method = {"system": f"{self.url}:score", "version": self.p.version, "code": score.id,
                  "display": score.label.vi}
        action: dict[str, Any] = {"id": f"score:{score.id}", **_text("title", score.label)}
        if score.kind == "points":
            action.update(_text("description", _POINTS))
        action["code"] = [{"coding": [method]}]
        action["documentation"] = [_source(score.source)]
        if score.when is not None:
            action["condition"] = [_condition(score.when.text)]
        action["output"] = [{"type": "RiskAssessment",
                             "codeFilter": [{"path": "method", "code": [method]}]}]
        rules = [{"id": f"score:{score.id}:rule:{n}",
                  **_text("title", Text(f"{rule.points:+d} điểm", f"{rule.points:+d} points")),
                  "condition": [_condition(rule.when.text)]}
                 for n, rule in enumerate(score.rules)]
        bands = []
        for n, band in enumerate(score.bands):
            text = f"%{score.id} >= {_fhirpath_number(band.min)}"
            if n + 1 < len(score.bands):
                text += f" and %{score.id} < {_fhirpath_number(score.bands[n + 1].min)}"
            bands.append({"id": f"score:{score.id}:band:{n}", **_text("title", band.display),
                          "code": [{"coding": [{"system": f"{self.url}:{score.id}",
                                                "version": self.p.version, "code": band.code,
                                                "display": band.display.vi}]}],
                          "condition": [_condition(text)]})
        action["action"] = rules + bands
        return action

    def _programme_actions(self) -> list[dict[str, Any]]:
        """The file's actions, with its ids (the ``#fragment`` of the outputs'
        ``instantiatesUri``)."""
        out = []
        for a in self.p.actions:
            coding = {"system": f"{self.url}:action", "version": self.p.version, "code": a.id,
                      "display": a.reason.vi}
            action: dict[str, Any] = {"id": a.id, **_text("title", a.reason),
                                      "code": [{"coding": [coding]}],
                                      "documentation": [_source(a.source)],
                                      "condition": [_condition(a.when.text)]}
            if a.evidence:
                action["input"] = [self._evidence(name) for name in a.evidence]
            if a.action == "refer":
                action["definitionCanonical"] = f"{self._referral(a)}|{self.p.version}"
            elif a.action == "flag":
                action["output"] = [{"type": "Flag",
                                     "codeFilter": [{"path": "code", "code": [coding]}]}]
            else:  # enrol: the care programme's own PlanDefinition
                care = f"urn:songkhoe:programme:{a.programme}"
                action["output"] = [{"type": "EpisodeOfCare", "codeFilter": [
                    {"path": "type", "code": [{"system": care, "code": a.programme}]}]}]
                action["definitionCanonical"] = care
            out.append(action)
        return out

    def _referral(self, a: Action) -> str:
        """The referral's ActivityDefinition (what the engine writes as a ServiceRequest)."""
        assert a.level is not None and a.urgency is not None and a.within_days is not None
        definition = {
            **self._activity(a.id, a.reason),
            "kind": "ServiceRequest",
            "code": {"coding": [{"system": f"{self.url}:action", "version": self.p.version,
                                 "code": a.id, "display": a.reason.vi}], "text": a.reason.vi},
            "intent": "order", "priority": a.urgency,
            "timingRange": {"low": _quantity(Decimal(0), "d"),
                            "high": _quantity(Decimal(a.within_days), "d")},
            "participant": [{"type": "practitioner", "role": {
                "coding": [{"system": FACILITY_LEVEL, "code": a.level}], "text": a.level}}],
        }
        self._add(definition, definition["url"])
        return definition["url"]

    def _evidence(self, name: str) -> dict[str, Any]:
        """The records an action cites: an item's Observations (a classification's: those of
        its item) or a score's RiskAssessments (also for ``<score>_band``)."""
        items = {i.id for i in self.p.items}
        classified = {c.id: c.item for c in self.p.classifications}
        if name in items or name in classified:
            return _observations(self.p.item(classified.get(name, name)))
        score = next(s for s in self.p.scores if name in (s.id, f"{s.id}_band"))
        return {"type": "RiskAssessment", "codeFilter": [{"path": "method", "code": [
            {"system": f"{self.url}:score", "code": score.id}]}]}

    def _interval_action(self) -> dict[str, Any]:
        intervals = []
        for n, interval in enumerate(self.p.intervals):
            action: dict[str, Any] = {"id": f"interval:{n}", **_text("title", interval.label)}
            if interval.when is not None:
                action["condition"] = [_condition(interval.when.text)]
            action["timingDuration"] = _quantity(Decimal(interval.days), "d")
            intervals.append(action)
        return {"id": "next-visit", **_text("title", _NEXT_VISIT),
                **_text("description", _FIRST_INTERVAL),
                "output": [{"type": "CarePlan"}],
                "selectionBehavior": "exactly-one", "action": intervals}

    # -- ObservationDefinitions --

    def _observation_definition(self, item: Item) -> str:
        system, code = item.component or (item.system, item.code)
        resource: dict[str, Any] = {
            "resourceType": "ObservationDefinition", "language": "vi",
            "code": {"coding": [{"system": system, "code": code}]},
            "identifier": [{"system": f"{self.url}:item", "value": item.id}],
            "permittedDataType": [_PERMITTED[item.kind]],
            **_text("preferredReportName", item.label),
        }
        if item.derive is not None:
            resource["method"] = {"text": item.derive.text}
        if item.kind == "quantity":
            assert item.unit is not None and item.range is not None
            details: dict[str, Any] = {"unit": _ucum(item.unit)}
            if len(item.units) == 2:  # one other unit: R4's customary unit and its factor
                other = item.units[1]
                details["customaryUnit"] = _ucum(other.code)
                details["conversionFactor"] = _json_number(_reciprocal(other.factor))
            if item.decimals is not None:
                details["decimalPrecision"] = item.decimals
            resource["quantitativeDetails"] = details
            intervals = [{"category": "absolute", "range": {
                "low": _quantity(item.range[0], item.unit),
                "high": _quantity(item.range[1], item.unit)}}]
            for c in self.p.classifications:
                if c.item == item.id and c.inputs == (item.id,):
                    intervals += self._band_intervals(c, item)
            resource["qualifiedInterval"] = intervals
        elif item.kind == "coded":
            resource["contained"] = [_answers(item)]
            resource["validCodedValueSet"] = {"reference": "#values"}
        return self._add(resource, f"{self.url}:ObservationDefinition:{item.id}")

    def _band_intervals(self, c: Classification, item: Item) -> list[dict[str, Any]]:
        """The bands as ranges of the item, when every band compares the item with one number
        (``%glucose >= 5.6``): the first band that holds wins, so each band's range is its own
        ray less the rays of the bands before it. An open bound becomes the nearest value inside
        it at the item's decimals (the engine rounds to them); without decimals it cannot be
        written."""
        rays = [ray for band in c.bands if (ray := _ray(band.when.text, item.id)) is not None]
        if len(rays) < len(c.bands):
            return []
        out = []
        for n, band in enumerate(c.bands):
            low, high = _intersect([rays[n], *(_complement(r) for r in rays[:n])])
            low_value = _closed(low, item.decimals, +1)
            high_value = _closed(high, item.decimals, -1)
            if (low is not None and low_value is None) or (high is not None and high_value is None):
                continue  # an open bound without decimals: not a Range
            if low_value is not None and high_value is not None and low_value > high_value:
                continue  # no value reaches this band
            assert item.unit is not None
            bounds = {key: _quantity(value, item.unit) for key, value in
                      (("low", low_value), ("high", high_value)) if value is not None}
            interval: dict[str, Any] = {"category": "reference"} \
                if band.interpretation == "N" else {}
            interval["range"] = bounds
            interval["context"] = self._interpretation(c, n)
            out.append(interval)
        return out

    # -- the Library --

    def _library(self) -> dict[str, Any]:
        p = self.p
        library = {**self._canonical("Library", f"{self.url}:Library", "library", p.title),
                   "type": {"coding": [{"system": LIBRARY_TYPE, "code": "logic-library",
                                        "display": "Logic Library"}]}}
        parameters = [_parameter(name, kind, many, doc, "in")
                      for name, kind, many, doc in BUILTIN_PARAMETERS]
        parameters += [_parameter(i.id, _DATA_TYPES[i.kind], False, i.label, "in")
                       for i in p.items]
        parameters += [_parameter(c.id, "string", False, c.label, "out")
                       for c in p.classifications]
        for s in p.scores:
            parameters.append(_parameter(s.id, "decimal", False, s.label, "out"))
            parameters.append(_parameter(f"{s.id}_band", "string", False, s.label, "out"))
        library["parameter"] = parameters
        lookback = [{"path": "effective",
                     "valueDuration": _quantity(Decimal(p.lookback_days), "d")}]
        requirements: list[dict[str, Any]] = [{"type": "Patient"}, {"type": "Condition"},
                                              {"type": "MedicationStatement"},
                                              {"type": "EpisodeOfCare"}]
        seen: set[tuple[str, str]] = set()
        for item in p.items:
            if (item.system, item.code) not in seen:
                seen.add((item.system, item.code))
                requirements.append({**_observations(item), "dateFilter": lookback})
        library["dataRequirement"] = requirements
        source = Path(p.file).read_bytes()
        library["content"] = [{
            "contentType": "application/toml", "data": base64.b64encode(source).decode(),
            "hash": base64.b64encode(hashlib.sha1(source).digest()).decode(),  # R4: SHA-1
            "title": Path(p.file).name}]
        return library


# ---- datatypes ----------------------------------------------------------------------------

def _text(key: str, text: Text) -> dict[str, Any]:
    """``key`` in Vietnamese, with the English as a translation extension on ``_key``."""
    return {key: text.vi, f"_{key}": {"extension": [{"url": TRANSLATION, "extension": [
        {"url": "lang", "valueCode": "en"}, {"url": "content", "valueString": text.en}]}]}}


def _condition(text: str) -> dict[str, Any]:
    return {"kind": "applicability", "expression": {"language": FHIRPATH, "expression": text}}


def _citation(key: str, text: str) -> dict[str, Any]:
    return {"type": "citation", "label": key, "citation": text}


def _source(key: str) -> dict[str, Any]:
    """A rule's source: its key, whose text is the PlanDefinition's ``relatedArtifact`` of
    that ``label``."""
    return {"type": "citation", "label": key}


def _observations(item: Item) -> dict[str, Any]:
    return {"type": "Observation", "codeFilter": [
        {"path": "code", "code": [{"system": item.system, "code": item.code}]}]}


def _ucum(code: str) -> dict[str, Any]:
    return {"coding": [{"system": UCUM, "code": code}]}


def _quantity(value: Decimal, unit: str) -> dict[str, Any]:
    return {"value": _json_number(value), "unit": unit, "system": UCUM, "code": unit}


def _json_number(value: Decimal) -> int | float:
    """A decimal for JSON: an integer when written without decimals, else the nearest float
    (the definitions' values have few digits, so the float prints back as written: 7.0)."""
    exponent = value.as_tuple().exponent
    return int(value) if isinstance(exponent, int) and exponent >= 0 else float(value)


def _reciprocal(factor: Decimal) -> Decimal:
    """1 / ``factor`` to as many significant digits as ``factor`` has (R4's conversion factor
    goes from the item's unit to the other one; the definition's, the other way)."""
    return Context(prec=len(factor.as_tuple().digits)).divide(1, factor).normalize()


def _fhirpath_number(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _computable(*parts: str) -> str:
    """An R4 computable name (``[A-Z][A-Za-z0-9_]*``) from ids: ``HypertensionScreening``."""
    return "".join(w.capitalize() for part in parts for w in re.split(r"[^A-Za-z0-9]+", part) if w)


def _parameter(name: str, kind: str, many: bool, doc: Text, use: str) -> dict[str, Any]:
    return {"name": name, "use": use, "min": 0, "max": "*" if many else "1",
            **_text("documentation", doc), "type": kind}


def _answers(item: Item) -> dict[str, Any]:
    """A coded item's answers as a contained ValueSet; each concept's designation of use
    ``variable-value`` is the word the conditions compare with."""
    includes: dict[str, list[dict[str, Any]]] = {}
    for key, word in item.values.items():
        system, code = key.split("|", 1)
        includes.setdefault(system, []).append(
            {"code": code, "designation": [{"use": VARIABLE_VALUE, "value": word}]})
    return {"resourceType": "ValueSet", "id": "values", "status": "active",
            "compose": {"include": [{"system": s, "concept": c} for s, c in includes.items()]}}


# ---- bands as ranges ----------------------------------------------------------------------

Bound = tuple[Decimal, bool]  # (value, closed)
Ray = tuple[Bound | None, Bound | None]  # (low, high); None is unbounded


def _ray(text: str, name: str) -> Ray | None:
    """``%name >= 5.6`` as a ray of values, or None when the condition is anything else."""
    match = _RAY.fullmatch(text)
    if match is None or match["name"] != name:
        return None
    value, op = Decimal(match["number"]), match["op"]
    return ((value, op == ">="), None) if op[0] == ">" else (None, (value, op == "<="))


def _complement(ray: Ray) -> Ray:
    low, high = ray
    if low is not None:
        return None, (low[0], not low[1])
    assert high is not None
    return (high[0], not high[1]), None


def _closed(bound: Bound | None, decimals: int | None, direction: int) -> Decimal | None:
    """An inclusive bound (FHIR Range bounds are inclusive): for an open one, the nearest
    value at the item's decimals inside it (``direction`` +1 for a low bound, -1 for a high
    one): ``> 5.6`` is ``≥ 5.7`` and ``< 5.5`` is ``≤ 5`` at one and no decimals."""
    if bound is None:
        return None
    value, closed = bound
    if closed:
        return value
    if decimals is None:
        return None
    step = Decimal(1).scaleb(-decimals)
    if direction > 0:
        return value.quantize(step, rounding=ROUND_FLOOR) + step
    return value.quantize(step, rounding=ROUND_CEILING) - step


def _intersect(rays: list[Ray]) -> Ray:
    low: Bound | None = None
    high: Bound | None = None
    for r_low, r_high in rays:
        if r_low is not None and (low is None or r_low[0] > low[0] or
                                  (r_low[0] == low[0] and not r_low[1])):
            low = r_low
        if r_high is not None and (high is None or r_high[0] < high[0] or
                                   (r_high[0] == high[0] and not r_high[1])):
            high = r_high
    return low, high
