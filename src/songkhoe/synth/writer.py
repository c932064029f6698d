"""Writing a synthetic population: NDJSON files per resource type, or straight into a store.

Chunks of people are made in worker processes (``multiprocessing``, one per core by default)
and consumed in chunk order, at most ``2 × workers`` chunks in flight, so memory stays flat in
the population size and the bytes do not depend on the number of workers.

NDJSON: ``DIR/<ResourceType>.ndjson``, one resource per line (the FHIR Bulk Data format,
http://hl7.org/fhir/uv/bulkdata/, and what ``songkhoe import`` reads); with faults also
``DIR/duplicates.csv``, the identity-matching ground truth. ``items()`` feeds
``songkhoe.store.bulk.load`` (the command line does that: ``synth`` sits below ``store`` and
does not import it).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from . import facilities, faults
from .config import SynthConfig
from .population import Chunk, World, make_chunk, types

_world: World | None = None


def _init_worker(config: SynthConfig) -> None:
    global _world
    _world = World.make(config)


def _work(number: int) -> Chunk:
    assert _world is not None
    return make_chunk(_world, number)


def chunks(config: SynthConfig, workers: int | None = None, world: World | None = None
           ) -> Iterator[Chunk]:
    """Every chunk of the population, in order, made by ``workers`` processes (default: one
    per core; 1 makes them in this process)."""
    n = config.chunks
    workers = min(workers or os.cpu_count() or 1, max(n, 1))
    if workers <= 1:
        world = world or World.make(config)
        for number in range(n):
            yield make_chunk(world, number)
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(config,)) as pool:
        pending: deque[Any] = deque()
        submitted = 0
        while submitted < n and len(pending) < 2 * workers:
            pending.append(pool.apply_async(_work, (submitted,)))
            submitted += 1
        while pending:
            chunk = pending.popleft().get()
            if submitted < n:
                pending.append(pool.apply_async(_work, (submitted,)))
                submitted += 1
            yield chunk


@dataclass
class Summary:
    people: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def add(self, rtype: str, n: int) -> None:
        self.counts[rtype] = self.counts.get(rtype, 0) + n

    @property
    def resources(self) -> int:
        return sum(self.counts.values())


FACILITY_TYPES = ("Organization", "Practitioner", "PractitionerRole")


def write_ndjson(config: SynthConfig, out: Path, workers: int | None = None,
                 progress: Callable[[int], None] | None = None) -> Summary:
    """Write the population as NDJSON files in ``out`` (created if missing)."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    world = World.make(config)
    summary = Summary(people=config.people)
    files: dict[str, IO[bytes]] = {}
    truth: IO[bytes] | None = None
    try:
        for rtype in (*FACILITY_TYPES, *types(config)):
            files[rtype] = (out / f"{rtype}.ndjson").open("wb")
        for rtype, resource in facilities.iter_resources(world.system):
            data = orjson.dumps(resource) + b"\n"
            files[rtype].write(data)
            summary.add(rtype, 1)
            summary.bytes += len(data)
        if config.faults:
            truth = (out / "duplicates.csv").open("wb")
            truth.write(faults.TRUTH_HEADER)
        for chunk in chunks(config, workers, world):
            for rtype, data in chunk.lines.items():
                files[rtype].write(data)
                summary.bytes += len(data)
            for rtype, n in chunk.counts.items():
                summary.add(rtype, n)
            if truth is not None and chunk.truth:
                truth.write(chunk.truth)
                summary.duplicates += chunk.truth.count(b"\n")
            if progress:
                progress(sum(chunk.counts.values()))
    finally:
        for f in files.values():
            f.close()
        if truth is not None:
            truth.close()
    summary.seconds = time.perf_counter() - started
    return summary


def items(config: SynthConfig, workers: int | None = None
          ) -> Iterator[tuple[str, bytes | dict[str, Any]]]:
    """(source, resource) pairs for ``songkhoe.store.bulk.load``: facilities first, then each
    chunk's Patients, Conditions, MedicationStatements, Encounters and Observations (and
    Consents, when the config asks for them)."""
    world = World.make(config)
    for rtype, resource in facilities.iter_resources(world.system):
        yield f"synth:{rtype}/{resource['id']}", resource
    for chunk in chunks(config, workers, world):
        for rtype in types(config):
            data = chunk.lines.get(rtype)
            if data:
                for n, line in enumerate(data.splitlines()):
                    yield f"synth:chunk{chunk.number}:{rtype}:{n + 1}", line

