"""Same seed, same bytes — whatever the number of worker processes; different seeds differ."""

from __future__ import annotations

import hashlib
from pathlib import Path

from songkhoe.synth import SynthConfig, write_ndjson


def _digest(directory: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_output_is_byte_identical_across_runs_and_worker_counts(tmp_path: Path) -> None:
    config = SynthConfig(people=2300, seed=42, provinces=(46,), faults=True, chunk=500)
    one = write_ndjson(config, tmp_path / "one", workers=1)
    two = write_ndjson(config, tmp_path / "two", workers=2)
    write_ndjson(config, tmp_path / "again", workers=1)
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two") == _digest(tmp_path / "again")
    assert one.counts == two.counts and one.counts["Patient"] == 2300 + one.duplicates
    assert one.bytes == sum(p.stat().st_size for p in (tmp_path / "one").glob("*.ndjson"))
    other = write_ndjson(SynthConfig(people=2300, seed=43, provinces=(46,), faults=True,
                                     chunk=500), tmp_path / "other", workers=1)
    assert _digest(tmp_path / "other") != _digest(tmp_path / "one")
    assert other.counts["Organization"] == one.counts["Organization"]


def test_ndjson_files_are_one_resource_per_line(tmp_path: Path) -> None:
    summary = write_ndjson(SynthConfig(people=50, seed=1, provinces=(12,)), tmp_path, workers=1)
    for rtype, n in summary.counts.items():
        lines = (tmp_path / f"{rtype}.ndjson").read_bytes().splitlines()
        assert len(lines) == n
        assert all(line.startswith(b'{"resourceType":"' + rtype.encode() + b'"') for line in lines)
    assert not (tmp_path / "duplicates.csv").exists()
