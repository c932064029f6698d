"""FHIR R4 resources of the check-up record, written straight to JSON bytes.

Millions of Observations differ only in ids, times and values, so each kind is compiled once
into a ``%``-format string of its compact JSON (orjson's output for the same resource, with
slots where the values go) and filled per resource — no dict per resource, no deep copies,
no per-resource JSON encoding. Text from outside (names) only enters through ``orjson``.

Shapes: Observation per the R4 vital-signs profile (``codes``), Encounter (class AMB, a check-up
or follow-up type, the station as ``serviceProvider``, the doctor's PractitionerRole as
participant), Condition (ICD-10, clinical status active, confirmed, problem-list item),
MedicationStatement (ATC, active, effective since treatment started).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from . import codes

_VALUE_SLOT = re.compile(r'"@\w+:([^@"s][^@"]*)@"')  # a whole JSON value: number or raw
_TEXT_SLOT = re.compile(r"@\w+:s@")  # text inside a JSON string


def _template(resource: dict[str, Any]) -> str:
    """A %-format string of ``resource``'s JSON. "@name:s@" inside a string is a slot for text
    that needs no escaping (ids, times); a string value "@name:d@" or "@name:.1f@" becomes a
    number, "@name:raw@" pre-encoded JSON. Slots are filled in document order."""
    text = orjson.dumps(resource).decode().replace("%", "%%")
    text = _VALUE_SLOT.sub(lambda m: "%s" if m.group(1) == "raw" else "%" + m.group(1), text)
    return _TEXT_SLOT.sub("%s", text)


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _category(code: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": codes.OBS_CATEGORY, "code": code}]}]


_OBS_HEAD: dict[str, Any] = {"resourceType": "Observation", "id": "@id:s@", "status": "final"}
_OBS_CONTEXT: dict[str, Any] = {
    "subject": {"reference": "Patient/@patient:s@"},
    "encounter": {"reference": "Encounter/@encounter:s@"},
    "effectiveDateTime": "@when:s@",
}


def _quantity_template(key: str) -> str:
    loinc, display, text, unit, category, decimals = codes.QUANTITIES[key]
    return _template({
        **_OBS_HEAD, "category": _category(category),
        "code": {"coding": [_coding(codes.LOINC, loinc, display)], "text": text},
        **_OBS_CONTEXT,
        "valueQuantity": {"value": f"@value:.{decimals}f@", "unit": unit, "system": codes.UCUM,
                          "code": unit},
    })


QUANTITY = {key: _quantity_template(key) for key in codes.QUANTITIES}

BLOOD_PRESSURE = _template({
    **_OBS_HEAD, "category": _category("vital-signs"),
    "code": {"coding": [_coding(codes.LOINC, *codes.BP_PANEL[:2])], "text": codes.BP_PANEL[2]},
    **_OBS_CONTEXT,
    "component": [
        {"code": {"coding": [_coding(codes.LOINC, *codes.BP_SYSTOLIC)]},
         "valueQuantity": {"value": "@sbp:d@", "unit": codes.MMHG, "system": codes.UCUM,
                           "code": codes.MMHG}},
        {"code": {"coding": [_coding(codes.LOINC, *codes.BP_DIASTOLIC)]},
         "valueQuantity": {"value": "@dbp:d@", "unit": codes.MMHG, "system": codes.UCUM,
                           "code": codes.MMHG}},
    ],
})


def _coded_template(code: tuple[str, str, str], answer: tuple[str, str]) -> str:
    return _template({
        **_OBS_HEAD, "category": _category("social-history"),
        "code": {"coding": [_coding(codes.LOINC, code[0], code[1])], "text": code[2]},
        **_OBS_CONTEXT,
        "valueCodeableConcept": {"coding": [_coding(codes.SNOMED, *answer)]},
    })


SMOKING = {k: _coded_template(codes.SMOKING, a) for k, a in codes.SMOKING_ANSWERS.items()}
ALCOHOL = {k: _coded_template(codes.ALCOHOL, a) for k, a in codes.ALCOHOL_ANSWERS.items()}


def _encounter_template(kind: tuple[str, str, str, str], reason: str) -> str:
    system, code, display, text = kind
    return _template({
        "resourceType": "Encounter", "id": "@id:s@", "status": "finished",
        "class": {"system": codes.ACT_CODE, "code": "AMB", "display": "ambulatory"},
        "type": [{"coding": [_coding(system, code, display)], "text": text}],
        "subject": {"reference": "Patient/@patient:s@"},
        "participant": [{"individual": {"reference": "PractitionerRole/@practitioner:s@"}}],
        "period": {"start": "@start:s@", "end": "@end:s@"},
        reason: "@reason:raw@",
        "serviceProvider": {"reference": "Organization/@org:s@"},
    })


CHECKUP = _encounter_template(codes.CHECKUP, "reasonCode")
FOLLOW_UP = _encounter_template(codes.FOLLOW_UP, "reasonReference")
CHECKUP_REASON = orjson.dumps([{"coding": [_coding(codes.ICD10, *codes.CHECKUP_REASON)],
                                "text": "Khám sức khỏe định kỳ"}]).decode()


def follow_up_reason(condition_ids: list[str]) -> str:
    return orjson.dumps([{"reference": f"Condition/{c}"} for c in condition_ids]).decode()


def condition(id: str, patient: str, code: tuple[str, str, str], onset: str, recorder: str
              ) -> bytes:
    return orjson.dumps({
        "resourceType": "Condition", "id": id,
        "clinicalStatus": {"coding": [{"system": codes.CONDITION_CLINICAL, "code": "active"}]},
        "verificationStatus": {"coding": [{"system": codes.CONDITION_VERIFICATION,
                                           "code": "confirmed"}]},
        "category": [{"coding": [{"system": codes.CONDITION_CATEGORY, "code": "problem-list-item",
                                  "display": "Problem List Item"}]}],
        "code": {"coding": [_coding(codes.ICD10, code[0], code[1])], "text": code[2]},
        "subject": {"reference": f"Patient/{patient}"},
        "onsetDateTime": onset, "recordedDate": onset,
        "recorder": {"reference": f"PractitionerRole/{recorder}"},
    })


def medication_statement(id: str, patient: str, drug: tuple[str, str, str, str], start: str,
                         asserted: str, condition_id: str) -> bytes:
    atc, display, label, dosage = drug
    return orjson.dumps({
        "resourceType": "MedicationStatement", "id": id, "status": "active",
        "medicationCodeableConcept": {"coding": [_coding(codes.ATC, atc, display)], "text": label},
        "subject": {"reference": f"Patient/{patient}"},
        "effectivePeriod": {"start": start}, "dateAsserted": asserted,
        "reasonReference": [{"reference": f"Condition/{condition_id}"}],
        "dosage": [{"text": dosage}],
    })
