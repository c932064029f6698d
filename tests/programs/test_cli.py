"""``songkhoe programmes check|run|worklist`` on a small synthetic population."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from songkhoe.cli import main
from songkhoe.store import open_store
from songkhoe.store.bulk import load
from songkhoe.synth import SynthConfig, items


def test_check_lists_the_programmes_and_refuses_a_broken_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["programmes", "check"]) == 0
    assert "hypertension-care" in capsys.readouterr().out
    (tmp_path / "bad.toml").write_text('id = "bad"\nversion = "1"\nkind = "screening"\n')
    assert main(["programmes", "check", str(tmp_path)]) == 2
    assert f"{tmp_path / 'bad.toml'}: sources: is required" in capsys.readouterr().err


def test_run_twice_then_a_worklist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    store = open_store(url)
    config = SynthConfig(people=80, seed=2, provinces=(1,), communes_per_province=1, years=2,
                         as_of=date(2026, 11, 1))
    load(store, items(config, workers=1))
    store.close()
    assert main(["programmes", "run", "--db", url, "--workers", "2", "--chunk", "20"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("80 people") and "CarePlan" in first
    assert main(["programmes", "run", "--db", url, "--workers", "1"]) == 0
    assert "written: nothing" in capsys.readouterr().out
    assert main(["programmes", "worklist", "overdue", "--programme", "hypertension-screening",
                 "--db", url, "--today", "2026-11-23"]) == 0
    out = capsys.readouterr().out
    assert "people on the overdue list of hypertension-screening" in out
    assert main(["programmes", "worklist", "due", "--programme", "nope", "--db", url]) == 2
