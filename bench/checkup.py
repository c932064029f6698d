"""Check-up transaction Bundles for benchmarks: Patient + Encounter + 15 Observations.

A compact stand-in until the synthetic population generator (``songkhoe synth``) exists; the
shapes follow the FHIR vital-signs profile (LOINC codes, UCUM units).
"""

from __future__ import annotations

import random
import uuid
from typing import Any

FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ"]
MIDDLE_M, MIDDLE_F = ["Văn", "Hữu", "Đức", "Minh"], ["Thị", "Ngọc", "Thu", "Thanh"]
GIVEN_M, GIVEN_F = ["An", "Bình", "Cường", "Dũng", "Hùng", "Long"], ["Hoa", "Lan", "Mai", "Hương", "Linh"]

# (LOINC, display, UCUM unit, mean, sd)
MEASURES = [
    ("29463-7", "Body weight", "kg", 58, 9), ("8302-2", "Body height", "cm", 160, 8),
    ("39156-5", "Body mass index", "kg/m2", 22.5, 3), ("8280-0", "Waist circumference", "cm", 78, 9),
    ("8867-4", "Heart rate", "/min", 76, 10), ("1558-6", "Fasting glucose", "mmol/L", 5.6, 1.2),
    ("4548-4", "Hemoglobin A1c", "%", 5.6, 0.8), ("2093-3", "Cholesterol total", "mmol/L", 4.9, 0.9),
    ("2085-9", "HDL cholesterol", "mmol/L", 1.3, 0.3), ("13457-7", "LDL cholesterol", "mmol/L", 2.9, 0.8),
    ("2571-8", "Triglyceride", "mmol/L", 1.8, 0.8), ("9279-1", "Respiratory rate", "/min", 17, 2),
    ("8310-5", "Body temperature", "Cel", 36.8, 0.3), ("59408-5", "Oxygen saturation", "%", 97, 1.5),
]


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": round(value, 1), "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}


def checkup_bundle(rng: random.Random, date: str = "2026-03-02") -> dict[str, Any]:
    """One person's check-up as a transaction: 17 resources linked by urn:uuid references."""
    male = rng.random() < 0.5
    patient_url, encounter_url = f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}", \
        f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}"
    year = rng.randint(1940, 2006)
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:vn:cccd", "value": f"{rng.randint(1, 96):03d}"
                        f"{0 if male else 1}{year % 100:02d}{rng.randint(0, 999999):06d}"}],
        "name": [{"family": rng.choice(FAMILY),
                  "given": [rng.choice(MIDDLE_M if male else MIDDLE_F),
                            rng.choice(GIVEN_M if male else GIVEN_F)]}],
        "gender": "male" if male else "female",
        "birthDate": f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "telecom": [{"system": "phone", "value": f"09{rng.randint(0, 99999999):08d}"}],
    }
    when = f"{date}T{rng.randint(7, 16):02d}:{rng.randint(0, 59):02d}:00+07:00"
    encounter = {
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "185349003",
                              "display": "Encounter for check up"}], "text": "Khám sức khỏe định kỳ"}],
        "subject": {"reference": patient_url}, "period": {"start": when, "end": when},
    }
    observations = []

    def observation(code: str, display: str, **value: Any) -> dict[str, Any]:
        return {"resourceType": "Observation", "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                    "observation-category", "code": "vital-signs"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
                "subject": {"reference": patient_url}, "encounter": {"reference": encounter_url},
                "effectiveDateTime": when, **value}

    for code, display, unit, mean, sd in MEASURES:
        observations.append(observation(code, display, valueQuantity=_quantity(rng.gauss(mean, sd), unit)))
    bp = observation("85354-9", "Blood pressure panel", component=[
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
         "valueQuantity": _quantity(rng.gauss(128, 18), "mm[Hg]")},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
         "valueQuantity": _quantity(rng.gauss(80, 11), "mm[Hg]")}])
    observations.append(bp)
    entries = [{"fullUrl": patient_url, "resource": patient, "request": {"method": "POST", "url": "Patient"}},
               {"fullUrl": encounter_url, "resource": encounter,
                "request": {"method": "POST", "url": "Encounter"}}]
    entries += [{"fullUrl": f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}", "resource": o,
                 "request": {"method": "POST", "url": "Observation"}} for o in observations]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
