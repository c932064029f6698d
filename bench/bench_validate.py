"""Benchmark: structural validations per second of a vital-signs blood-pressure Observation
(two components, LOINC codes, UCUM quantities) on one core. Prints one JSON line."""

from __future__ import annotations

import json
import time

from songkhoe.fhir.validate import validate

BLOOD_PRESSURE = {
    "resourceType": "Observation",
    "id": "bp-2024-0001",
    "meta": {"versionId": "1", "lastUpdated": "2024-05-06T08:30:00.000+07:00",
             "profile": ["http://hl7.org/fhir/StructureDefinition/bp"]},
    "status": "final",
    "category": [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
        "code": "vital-signs", "display": "Vital Signs"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9",
                         "display": "Blood pressure panel with all children optional"}],
             "text": "Huyết áp"},
    "subject": {"reference": "Patient/p-0001", "display": "Nguyễn Văn An"},
    "encounter": {"reference": "Encounter/e-0001"},
    "effectiveDateTime": "2024-05-06T08:25:00+07:00",
    "performer": [{"reference": "Practitioner/pr-01"}],
    "component": [
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6",
                              "display": "Systolic blood pressure"}]},
         "valueQuantity": {"value": 128, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                           "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4",
                              "display": "Diastolic blood pressure"}]},
         "valueQuantity": {"value": 82, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                           "code": "mm[Hg]"}},
    ],
}


def main() -> None:
    assert validate(BLOOD_PRESSURE) == [], validate(BLOOD_PRESSURE)
    for _ in range(2000):  # warm up
        validate(BLOOD_PRESSURE)
    n, best = 10_000, float("inf")
    for _ in range(5):  # best of five rounds: the figure least disturbed by other load
        start = time.perf_counter()
        for _ in range(n):
            validate(BLOOD_PRESSURE)
        best = min(best, time.perf_counter() - start)
    print(json.dumps({"name": "validate_observation", "per_s": round(n / best)}))


if __name__ == "__main__":
    main()
