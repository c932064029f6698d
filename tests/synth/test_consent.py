"""Research Consents of the synthetic population: valid R4, deterministic, loaded cleanly into a
store on both backends, and decided as written by ``songkhoe.auth.consent``."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from songkhoe.auth.consent import decide, research_decisions
from songkhoe.fhir.validate import validate
from songkhoe.store.bulk import load
from songkhoe.synth import SynthConfig, items, write_ndjson
from songkhoe.synth.consent import ILLUSTRATIVE

PERMIT, DENY = ILLUSTRATIVE
CONFIG = SynthConfig(people=2200, seed=9, provinces=(1, 79), communes_per_province=4,
                     years=2, chunk=500, consent_permit=PERMIT, consent_deny=DENY)
SMALL = SynthConfig(people=150, seed=4, provinces=(56,), communes_per_province=2,
                    consent_permit=PERMIT, consent_deny=DENY)
AFTER = datetime(2026, 11, 1, tzinfo=UTC)  # the default as_of: every Consent given


def _read(directory: Path, rtype: str) -> list[dict[str, Any]]:
    path = directory / f"{rtype}.ndjson"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth-consent")
    write_ndjson(CONFIG, out, workers=1)
    return out


def test_consents_are_valid_r4_and_point_at_their_people(written: Path) -> None:
    consents = _read(written, "Consent")
    patients = {p["id"]: p for p in _read(written, "Patient")}
    orgs = {o["id"] for o in _read(written, "Organization")}
    assert consents
    for c in consents:
        assert not validate(c), (c, [str(i) for i in validate(c)])
        assert c["status"] == "active"
        assert c["scope"]["coding"][0]["code"] == "research"
        assert c["category"][0]["coding"][0] == {"system": "http://loinc.org", "code": "57016-8"}
        assert c.get("policy") or c.get("policyRule")  # R4 invariant ppc-1
        pid = c["patient"]["reference"].removeprefix("Patient/")  # ppc-3: research needs one
        patient = patients[pid]
        assert c["id"] == pid.replace("-p", "-consent", 1)
        assert c["performer"] == [c["patient"]]
        assert c["organization"][0]["reference"] == patient["managingOrganization"]["reference"]
        assert c["organization"][0]["reference"].removeprefix("Organization/") in orgs
        assert c["provision"]["type"] in ("permit", "deny")
        assert c["provision"]["period"]["start"] == c["dateTime"][:10]
        assert date.fromisoformat(c["dateTime"][:10]).weekday() < 5
        assert "2024-11-01" <= c["dateTime"][:10] < "2026-11-01"  # the two check-up years
        age = 2024 - int(patient["birthDate"][:4])
        assert age >= 17  # adults only (18 on the first day of the check-up years, at least)


def test_shares_are_as_configured_for_adults_only(written: Path) -> None:
    consents = _read(written, "Consent")
    kinds = [c["provision"]["type"] for c in consents]
    patients = _read(written, "Patient")
    with_consent = {c["patient"]["reference"] for c in consents}
    # adults are the people with Conditions or checked-up Encounters, or over 18 at the start
    start = date(2024, 11, 1)
    adults = [p for p in patients
              if (start - date.fromisoformat(p["birthDate"])).days >= 18 * 365 + 5]
    children = [p for p in patients
                if (start - date.fromisoformat(p["birthDate"])).days < 17 * 365]
    assert children and not any(f"Patient/{p['id']}" in with_consent for p in children)
    assert abs(kinds.count("permit") / len(adults) - PERMIT) < 0.04
    assert abs(kinds.count("deny") / len(adults) - DENY) < 0.02
    assert len(consents) < len(adults) + 50


def test_consents_are_deterministic_and_change_nothing_else(tmp_path: Path, written: Path) -> None:
    again = tmp_path / "again"
    write_ndjson(CONFIG, again, workers=2)
    plain = tmp_path / "plain"
    write_ndjson(replace(CONFIG, consent_permit=0.0, consent_deny=0.0), plain, workers=1)
    assert sorted(p.name for p in written.iterdir()) == sorted(p.name for p in again.iterdir())
    for path in written.iterdir():
        assert path.read_bytes() == (again / path.name).read_bytes(), path.name
    # without Consents there is no Consent file, and every other file is byte for byte the same
    assert not (plain / "Consent.ndjson").exists()
    for path in plain.iterdir():
        assert path.read_bytes() == (written / path.name).read_bytes(), path.name
    # a smaller share: fewer of the same people, with the same Consents (draws do not move)
    fewer = tmp_path / "fewer"
    write_ndjson(replace(CONFIG, consent_permit=0.5, consent_deny=0.0), fewer, workers=1)
    permits = {c["id"]: c for c in _read(written, "Consent") if c["provision"]["type"] == "permit"}
    some = _read(fewer, "Consent")
    assert some and len(some) < len(permits)
    assert all(permits[c["id"]] == c for c in some)


def test_shares_are_checked() -> None:
    with pytest.raises(ValueError, match="consent_permit and consent_deny"):
        SynthConfig(people=1, consent_permit=-0.1)
    with pytest.raises(ValueError, match="add up to at most 1"):
        SynthConfig(people=1, consent_permit=0.8, consent_deny=0.3)
    SynthConfig(people=1, consent_permit=0.7, consent_deny=0.3)


def test_synthetic_consents_load_cleanly_and_decide_as_written(store: Any) -> None:
    summary = load(store, items(SMALL, workers=1))
    assert not summary.rejected, summary.rejected[:3]
    written: dict[str, list[dict[str, Any]]] = {}
    for source, raw in items(SMALL, workers=1):
        if ":Consent:" in source:
            c = orjson.loads(raw) if isinstance(raw, bytes) else raw
            written.setdefault(c["patient"]["reference"].removeprefix("Patient/"), []).append(c)
    assert written
    stored = store.search("Consent", [("_count", "1000"), ("_total", "accurate")])
    assert stored.total == sum(len(v) for v in written.values())
    people = [p.id for p in store.search("Patient", [("_count", "1000")]).matches]
    assert len(people) == SMALL.people
    decisions = research_decisions(store, people, at=AFTER)
    for pid in people:
        expected = written.get(pid, [])
        assert decisions[pid] == decide(expected, at=AFTER), pid
        kind = expected[0]["provision"]["type"] if expected else None
        assert decisions[pid].permitted is (kind == "permit"), pid
    # before anyone was asked, nobody may be exported under opt-in
    before = datetime(2024, 10, 1, tzinfo=UTC)
    assert not any(d.permitted for d in research_decisions(store, people, at=before).values())
