"""``songkhoe synth`` and ``songkhoe serve --demo`` (the demo loading step)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from songkhoe.cli import _load_demo, main
from songkhoe.store import open_store


def test_synth_writes_ndjson_and_loads_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                               ) -> None:
    db = f"sqlite:///{tmp_path / 'synth.db'}"
    assert main(["synth", "--people", "120", "--seed", "5", "--province", "56", "--communes", "3",
                 "--faults", "--out", str(tmp_path / "out"), "--to", db, "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "loaded" in out and "rejected 0" in out
    assert (tmp_path / "out" / "Patient.ndjson").exists()
    assert (tmp_path / "out" / "duplicates.csv").exists()
    store = open_store(db)
    try:
        patients = store.search("Patient", [("_count", "1000")]).matches
        lines = (tmp_path / "out" / "Patient.ndjson").read_bytes().count(b"\n")
        assert len(patients) == lines >= 120
        stations = store.search("Organization", [("identifier", "urn:vn:gso:province|56")])
        assert len(stations.matches) == 3 + 1 + 1 + 1  # stations, department, hospital, centre
    finally:
        store.close()
    # loading again is idempotent: every resource carries its id
    assert main(["synth", "--people", "120", "--seed", "5", "--province", "56", "--communes", "3",
                 "--faults", "--to", db, "--workers", "1"]) == 0
    assert "loaded 0," in capsys.readouterr().out


def test_synth_refuses_unknown_provinces_and_missing_destination(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--people", "10", "--province", "2", "--out", "/tmp/x"]) == 2
    assert "02" in capsys.readouterr().err
    assert main(["synth", "--people", "10"]) == 2


def test_demo_loads_only_into_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'demo.db'}")
    args = argparse.Namespace(demo_people=150, demo_province=1, demo_communes=2)
    try:
        _load_demo(store, args)
        out = capsys.readouterr().out
        assert "demo data loaded" in out
        patients = store.search("Patient", [("_count", "1000")]).matches
        assert len(patients) == 150
        assert store.search("Observation", [("_count", "1")]).matches
        assert "programmes run for 150 people" in out  # the demo has worklists at once
        assert store.search("CarePlan", [("_count", "1")]).matches
        _load_demo(store, args)
        assert "already holds data" in capsys.readouterr().out
    finally:
        store.close()


def test_synth_writes_research_consents_when_asked(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--people", "200", "--province", "56", "--communes", "2",
                 "--consent", "0.8,0.05", "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    consents = (tmp_path / "out" / "Consent.ndjson").read_bytes().count(b"\n")
    assert 80 <= consents <= 200  # adults only, 85% of them
    with pytest.raises(SystemExit):
        main(["synth", "--people", "10", "--consent", "0.8", "--out", str(tmp_path / "x")])
    assert main(["synth", "--people", "10", "--consent", "0.8,0.5",
                 "--out", str(tmp_path / "y")]) == 2
