"""FHIRPath engine throughput: evaluations per second of compiled expressions on one core.

Prints one JSON line per figure: {"name": ..., "per_s": ..., "n": ...}. Not part of the tests.
Run: .venv/bin/python bench/bench_fhirpath.py
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from songkhoe.fhir.fhirpath import compile

PATIENT: dict[str, Any] = {
    "resourceType": "Patient", "id": "p1", "active": True, "gender": "female",
    "birthDate": "1980-04-12",
    "name": [{"use": "official", "family": "Nguyễn", "given": ["Thị", "Ngọc", "Ánh"]},
             {"use": "nickname", "given": ["Ánh"]}],
    "telecom": [{"system": "phone", "value": "0901234567", "use": "mobile"},
                {"system": "email", "value": "anh@example.vn"}],
    "address": [{"city": "Hà Nội", "district": "Đống Đa", "country": "VN"}],
    "deceasedBoolean": False,
}
OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2024-03-01T08:30:00+07:00",
    "valueQuantity": {"value": 128.0, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                      "code": "mm[Hg]"},
}

CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("fhirpath_simple_path", "Patient.name.given", PATIENT),
    ("fhirpath_where_resolve", "Observation.subject.where(resolve() is Patient)", OBSERVATION),
    ("fhirpath_where_equals", "Patient.telecom.where(system='phone')", PATIENT),
    ("fhirpath_as_quantity", "(Observation.value as Quantity)", OBSERVATION),
    ("fhirpath_choice_effective", "Observation.effective", OBSERVATION),
    ("fhirpath_deceased_logic", "Patient.deceased.exists() and Patient.deceased != false",
     PATIENT),
]


def rate(fn: Callable[[], Any], seconds: float = 0.2, rounds: int = 9) -> tuple[float, int]:
    """Calls per second: the best of ``rounds`` timed runs (other load only slows a run down)."""
    best, total = 0.0, 0
    for _ in range(rounds):
        n = 0
        start = time.perf_counter()
        while True:
            for _ in range(1000):
                fn()
            n += 1000
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        best = max(best, n / elapsed)
        total += n
    return best, total


def main() -> None:
    for name, text, resource in CASES:
        expr = compile(text)
        per_s, n = rate(lambda expr=expr, resource=resource: expr(resource))
        print(json.dumps({"name": name, "expression": text, "per_s": round(per_s), "n": n}))
    per_s, n = rate(lambda: compile("Patient.name.given").nodes(PATIENT))
    print(json.dumps({"name": "fhirpath_nodes_cached_compile", "per_s": round(per_s), "n": n}))
    counter = [0]

    def fresh_compile() -> None:
        counter[0] += 1
        compile(f"Patient.name.where(use = 'u{counter[0]}').given")
    per_s, n = rate(fresh_compile, 0.3, 1)
    print(json.dumps({"name": "fhirpath_compile_uncached", "per_s": round(per_s), "n": n}))


if __name__ == "__main__":
    main()
