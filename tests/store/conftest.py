"""Resource factories for store tests."""

from __future__ import annotations

from typing import Any


def patient(family: str = "Nguyễn", given: tuple[str, ...] = ("Văn", "An"), *,
            birth: str = "1960-05-01", gender: str = "male", cccd: str = "001060012345",
            id: str | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:vn:cccd", "value": cccd}],
        "name": [{"family": family, "given": list(given)}],
        "gender": gender,
        "birthDate": birth,
    }
    if id:
        res["id"] = id
    return res


def bp(patient_id: str, systolic: float = 150, diastolic: float = 95,
       when: str = "2026-03-01T08:00:00+07:00") -> dict[str, Any]:
    """A vital-signs blood pressure panel (LOINC 85354-9) with its two components."""
    def comp(code: str, display: str, value: float) -> dict[str, Any]:
        return {"code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
                "valueQuantity": {"value": value, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                                  "code": "mm[Hg]"}}
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9",
                             "display": "Blood pressure panel"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when,
        "component": [comp("8480-6", "Systolic blood pressure", systolic),
                      comp("8462-4", "Diastolic blood pressure", diastolic)],
    }


def glucose(patient_id: str, value: float, when: str = "2026-03-01") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "1558-6",
                             "display": "Fasting glucose [Moles/volume] in Serum or Plasma"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                          "code": "mmol/L"},
    }
