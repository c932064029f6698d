"""The Organization subtree an identity may see: its own Organization and every Organization
whose ``partOf`` chain leads to it (station → province department → Ministry, see
``songkhoe.synth.facilities``). Read through the store's public search API
(``Organization?partof=``), breadth first; the store-side step may replace this with a
recursive SQL query inside its statements."""

from __future__ import annotations

from typing import Any

MAX_ORGS = 100_000


def org_subtree(ops: Any, root: str) -> frozenset[str]:
    """Ids of ``root`` and all Organizations below it (``ops``: a Store or a Tx)."""
    seen = {root}
    frontier = [root]
    while frontier:
        nxt: list[str] = []
        for parent in frontier:
            cursor: str | None = None
            while True:
                params = [("partof", f"Organization/{parent}"), ("_count", "1000")]
                if cursor:
                    params.append(("_cursor", cursor))
                page = ops.search("Organization", params)
                for stored in page.matches:
                    if stored.id not in seen:
                        seen.add(stored.id)
                        nxt.append(stored.id)
                cursor = page.next_cursor
                if not cursor:
                    break
        if len(seen) > MAX_ORGS:
            raise ValueError(f"the Organization tree under {root} has more than {MAX_ORGS} "
                             "members (a partOf cycle?)")
        frontier = nxt
    return frozenset(seen)
