"""A small synthetic population and what the programmes stored for it, for the tests that
compare the online path, the batch run and a plain settle."""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson

from songkhoe.programs.engine import OUTPUT_TYPES
from songkhoe.synth import SynthConfig, items

CONFIG = SynthConfig(people=120, seed=5, provinces=(1,), communes_per_province=2, years=2,
                     as_of=date(2026, 11, 1))


def population(config: SynthConfig = CONFIG) -> list[dict[str, Any]]:
    return [orjson.loads(raw) if isinstance(raw, bytes) else raw
            for _, raw in items(config, workers=1)]


def derived(store: Any) -> dict[tuple[str, str], Any]:
    """Every output, every Observation's interpretation and every status row, without the
    meta the store sets."""
    out: dict[tuple[str, str], Any] = {}
    with store.reading() as tx:
        rows = tx.execute(
            "SELECT r.type, r.id, h.content FROM resources r JOIN history h ON h.rid = r.rid "
            "AND h.version = r.version WHERE NOT r.deleted AND r.type IN ("
            + ", ".join(f"'{t}'" for t in ("Observation", *OUTPUT_TYPES)) + ")").fetchall()
        status = tx.execute("SELECT * FROM programme_status").fetchall()
    for rtype, id_, content in rows:
        resource = orjson.loads(bytes(content))
        resource.pop("meta", None) if rtype == "Observation" else \
            resource["meta"].pop("versionId") and resource["meta"].pop("lastUpdated")
        out[(rtype, id_)] = resource.get("interpretation") if rtype == "Observation" \
            else resource
    out[("status", "")] = sorted(tuple(row) for row in status)
    return out
