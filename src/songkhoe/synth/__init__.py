"""A synthetic Vietnamese population with realistic yearly check-up data (``songkhoe synth``).

Real patient data cannot be shared; demos, tests and benchmarks use this instead. The modules,
one concept each:

- ``admin``: the 34 provinces and 3,321 communes after the July 2025 reform;
- ``facilities``: Ministry, provincial departments, hospitals, regional centres, commune
  stations, their staff;
- ``demography``, ``names``, ``identifiers``: who people are;
- ``health``: risk factors and the hypertension and diabetes cascades, calibrated to surveys;
- ``codes``, ``records``: the FHIR R4 resources (LOINC, UCUM, SNOMED CT, ICD-10, ATC);
- ``faults``: data-quality faults on request;
- ``population``: people and their records, chunk by chunk;
- ``writer``: NDJSON output and items for the store's bulk load, over several processes.

Figures and sources: ``docs/synthetic-data.md``.
"""

from __future__ import annotations

from .config import SynthConfig
from .writer import Summary, chunks, items, write_ndjson

__all__ = ["Summary", "SynthConfig", "chunks", "items", "write_ndjson"]
