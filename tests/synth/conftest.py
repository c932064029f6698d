"""A small generated population shared by the synth tests (made once per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from songkhoe.synth import SynthConfig, write_ndjson

SMALL = SynthConfig(people=2500, seed=3, provinces=(1, 79, 8), years=2, faults=True)


def read_ndjson(directory: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(directory.glob("*.ndjson")):
        out[path.stem] = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return out


@pytest.fixture(scope="session")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("synth-small")
    write_ndjson(SMALL, out, workers=1)
    yield out


@pytest.fixture(scope="session")
def small(small_dir: Path) -> dict[str, list[dict[str, Any]]]:
    return read_ndjson(small_dir)
