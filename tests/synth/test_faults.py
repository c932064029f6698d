"""Data-quality faults: missing values and duplicate registrations with a ground truth."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from songkhoe.synth import SynthConfig, chunks, faults, names
from songkhoe.synth.rng import Stream

from .conftest import SMALL


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_ground_truth_lists_every_duplicate(small_dir: Path, small: dict[str, list[dict[str, Any]]]
                                            ) -> None:
    patients = {p["id"]: p for p in small["Patient"]}
    with (small_dir / "duplicates.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    dups = [p for p in patients.values() if p["id"].endswith("-dup")]
    assert len(rows) == len(dups) > 5
    for row in rows:
        dup = patients[row["duplicate"].removeprefix("Patient/")]
        original = patients[row["original"].removeprefix("Patient/")]
        assert dup["managingOrganization"]["reference"] == row["facility"]
        assert dup["managingOrganization"] != original["managingOrganization"]
        assert dup["gender"] == original["gender"]
        a, b = dup["name"][0]["text"], original["name"][0]["text"]
        if row["fault"].startswith("no-diacritics"):
            assert a == names.strip_diacritics(b)
        else:
            assert row["fault"].startswith("typo") and a != b and _edit_distance(a, b) <= 2
        if "day-month-swapped" in row["fault"]:
            assert dup["birthDate"][5:7] == original["birthDate"][8:10]
        else:
            assert dup["birthDate"] == original["birthDate"]


def test_faults_are_added_on_top_of_the_same_population() -> None:
    base = SynthConfig(people=600, seed=SMALL.seed, provinces=(1,))
    with_faults = SynthConfig(people=600, seed=SMALL.seed, provinces=(1,), faults=True)
    clean = [c.lines for c in chunks(base, workers=1)]
    faulty = [c.lines for c in chunks(with_faults, workers=1)]
    clean_obs = sum(c["Observation"].count(b"\n") for c in clean)
    faulty_obs = sum(c["Observation"].count(b"\n") for c in faulty)
    assert 0.95 * clean_obs < faulty_obs < clean_obs  # ~2% of check-up values missing
    assert all(c["Encounter"] == f["Encounter"] for c, f in zip(clean, faulty))
    assert all(c["Condition"] == f["Condition"] for c, f in zip(clean, faulty))


def test_year_only_birth_dates_and_missing_phones() -> None:
    rng = Stream("faults")
    old = {"resourceType": "Patient", "id": "x", "birthDate": "1950-03-04",
           "telecom": [{"system": "phone", "value": "0912345678"}]}
    seen_year_only = seen_no_phone = 0
    for _ in range(2000):
        p = dict(old)
        faults.patient(rng, p)
        seen_year_only += p["birthDate"] == "1950"
        seen_no_phone += "telecom" not in p
    assert 20 < seen_year_only < 110 and 60 < seen_no_phone < 150
