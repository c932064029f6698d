"""A check-up as the health worker enters it: item values → FHIR Observations, in one
transaction whose programme outputs come back with it.

The form sends values by item id (``{"sbp": 150, "dbp": 95, "glucose": {"value": 126,
"unit": "mg/dL"}}``); the programme definitions say each item's LOINC code, panel component
and unit, so the server writes correctly coded Observations (FHIR R4 vital-signs profile:
http://hl7.org/fhir/R4/observation-vitalsigns.html) — items sharing a panel code (systolic and
diastolic) become one panel Observation with components. The Store's derivation classifies
them before the commit; ``record`` returns the Observations as stored and the outputs the
engine wrote for the person.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from songkhoe.fhir.outcome import FhirError, Issue
from songkhoe.programs.definition import Item, Programme
from songkhoe.programs.engine import OUTPUT_TYPES, ProgrammeStatus, Unusable, convert
from songkhoe.store.ids import new_id

UCUM = "http://unitsofmeasure.org"
VITAL_SIGNS = {"system": "http://terminology.hl7.org/CodeSystem/observation-category",
               "code": "vital-signs", "display": "Vital Signs"}


def form_items(programmes: dict[str, Programme]) -> dict[str, Item]:
    """Every item once (definitions guarantee one meaning per id), in definition order."""
    items: dict[str, Item] = {}
    for p in programmes.values():
        for item in p.items:
            items.setdefault(item.id, item)
    return items


@dataclass
class Recorded:
    observations: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    status: dict[str, ProgrammeStatus]


def observations(programmes: dict[str, Programme], patient: str, day: date,
                 values: dict[str, Any], encounter: str | None = None,
                 performer: str | None = None) -> list[dict[str, Any]]:
    """The Observations for ``values``; 422 naming the item for an unknown item, a unit not
    accepted or an implausible value."""
    items = form_items(programmes)
    panels: dict[tuple[str, str], dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for key, raw in values.items():
        item = items.get(key)
        if item is None:
            raise FhirError(422, Issue("value", f"unknown item {key!r}; known: "
                                                f"{', '.join(sorted(items))}", f"values.{key}"))
        if raw is None or raw == "":
            continue
        value = _value(item, raw, f"values.{key}")
        if item.component is None:
            obs = _observation(item.system, item.code, item.label.vi, patient, day, encounter,
                               performer)
            obs.update(value)
            out.append(obs)
            continue
        panel = panels.get((item.system, item.code))
        if panel is None:
            panel = _observation(item.system, item.code, None, patient, day, encounter,
                                 performer)
            panel["component"] = []
            panels[(item.system, item.code)] = panel
            out.append(panel)
        panel["component"].append({"code": {"coding": [
            {"system": item.component[0], "code": item.component[1]}],
            "text": item.label.vi}, **value})
    return out


def _value(item: Item, raw: Any, path: str) -> dict[str, Any]:
    if item.kind == "boolean":
        if not isinstance(raw, bool):
            raise FhirError(422, Issue("value", f"{item.label.en}: expected true or false", path))
        return {"valueBoolean": raw}
    if item.kind == "coded":
        for coding, shown in item.values.items():
            if raw == shown:
                system, _, code = coding.partition("|")
                return {"valueCodeableConcept": {"coding": [{"system": system, "code": code}],
                                                 "text": shown}}
        raise FhirError(422, Issue("value", f"{item.label.en}: {raw!r} is not one of "
                                            f"{', '.join(item.values.values())}", path))
    number, unit = (raw.get("value"), raw.get("unit")) if isinstance(raw, dict) else \
        (raw, item.unit)
    if isinstance(number, bool) or not isinstance(number, int | float | str):
        raise FhirError(422, Issue("value", f"{item.label.en}: expected a number", path))
    try:
        amount = Decimal(str(number))
    except InvalidOperation:
        raise FhirError(422, Issue("value", f"{item.label.en}: {number!r} is not a number",
                                   path)) from None
    try:
        convert(item, amount, unit, path)
    except Unusable as exc:
        raise FhirError(422, Issue("value", str(exc), exc.path)) from None
    shown = int(amount) if amount == amount.to_integral_value() else float(amount)
    return {"valueQuantity": {"value": shown, "unit": unit, "system": UCUM, "code": unit}}


def _observation(system: str, code: str, text: str | None, patient: str, day: date,
                 encounter: str | None, performer: str | None) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation", "id": new_id(), "status": "final",
        "category": [{"coding": [VITAL_SIGNS]}],
        "code": {"coding": [{"system": system, "code": code}], **({"text": text} if text
                                                                   else {})},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": day.isoformat(),
    }
    if encounter:
        obs["encounter"] = {"reference": encounter}
    if performer:
        obs["performer"] = [{"reference": performer}]
    return obs


def record(store: Any, programmes: dict[str, Programme], patient: str, day: date,
           values: dict[str, Any], *, performer: str | None = None) -> Recorded:
    """Save one check-up (an Encounter and its Observations) in one transaction; the
    programmes' outputs are derived before it commits (``Store.derive``)."""
    encounter_id = new_id()
    with store.transaction() as tx:
        tx.read("Patient", patient)  # 404 for a person this caller cannot see
        encounter = {
            "resourceType": "Encounter", "id": encounter_id, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB", "display": "ambulatory"},
            "type": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "Z00.0",
                                  "display": "General adult medical examination"}],
                      "text": "Khám sức khỏe định kỳ"}],
            "subject": {"reference": f"Patient/{patient}"},
            "period": {"start": day.isoformat(), "end": day.isoformat()},
        }
        tx.create(encounter, id=encounter_id)
        made = observations(programmes, patient, day, values, f"Encounter/{encounter_id}",
                            performer)
        results = [tx.create(obs, id=obs["id"]) for obs in made]
    settled = tx.derived
    stored = [orjson.loads(tx.current(r).stored.content) for r in results]  # type: ignore[union-attr]
    outputs = [r for r in (settled.written if settled else [])
               if r["resourceType"] in OUTPUT_TYPES]
    return Recorded(stored, outputs, settled.status.get(patient, {}) if settled else {})
