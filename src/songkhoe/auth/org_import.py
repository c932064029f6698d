"""``songkhoe org import``: the public health system as FHIR Organizations in the store.

Every staff account and every Patient points to an Organization, and the subtree an account
may see (the store's ``org_tree``, ``songkhoe.store.access``) follows ``Organization.partOf``:

    Ministry of Health (``moh``)
      └ provincial Department of Health (``so-NN``), one per province after the 2025 reform
          ├ commune health station (``tyt-NNNNN``), one per commune, ward and special zone
          ├ provincial general hospital (``bv-NN``)            — modelled
          └ regional health centres (``ttyt-NN-K``)            — modelled

The Organizations are exactly those ``songkhoe.synth.facilities.build`` makes (same ids,
same content) for the administrative units of ``songkhoe.synth.admin`` (the
``vietnam-provinces`` package: 34 provinces, 3,321 communes), so a synthetic population and
an imported hierarchy agree. The Ministry, the departments and the stations are the real
units; the hospital and the regional centres (one for every 12 communes in code order) are
the generator's model of the levels between them, not a register of real facilities. The
generator's staff (Practitioners, PractitionerRoles) are synthetic and are not imported.

Loading goes through the store's bulk path (``songkhoe.store.bulk.load``: validated like a
REST write, batched transactions) and is idempotent: every Organization is written under
its id (update-as-create, R4 http.html#update); an identical one is left alone, a changed
one gets a new version, a deleted one is written again. Nothing is ever deleted.

Layering: this module joins ``synth`` (below ``store``, which it must not import) to the
store, as ``demo`` does; it imports ``synth`` only when called.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

ID_BATCH = 500  # ids per existence query (``_id=a,b,…``; the store caps ``_count`` at 1000)


@dataclass
class OrgImport:
    """What one import did."""

    provinces: int
    communes: int
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[Any] = field(default_factory=list)  # store.bulk.Rejection
    seconds: float = 0.0

    @property
    def organizations(self) -> int:
        return self.created + self.updated + self.unchanged + len(self.rejected)


def health_system(provinces: Sequence[int] | None = None) -> tuple[list[dict[str, Any]], int, int]:
    """The Organizations of the health system for ``provinces`` (codes after the 2025 reform;
    None or empty: all), parents before children, with the number of provinces and communes
    they cover. Unknown province codes raise ``ValueError`` listing the valid ones."""
    from songkhoe.synth import admin, facilities

    communes = admin.select(list(provinces) if provinces else None)
    system = facilities.build(communes, seed=1)  # the seed only names the (dropped) staff
    orgs = [res for rtype, res in facilities.iter_resources(system) if rtype == "Organization"]
    return orgs, len({c.province for c in communes}), len(communes)


def existing(store: Any, rtype: str, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` are live resources of ``rtype`` (through the store's search)."""
    wanted = list(dict.fromkeys(ids))
    found: set[str] = set()
    for start in range(0, len(wanted), ID_BATCH):
        chunk = wanted[start:start + ID_BATCH]
        page = store.search(rtype, [("_id", ",".join(chunk)), ("_count", str(len(chunk)))])
        found.update(stored.id for stored in page.matches)
    return found


def import_organizations(store: Any, provinces: Sequence[int] | None = None, *,
                         progress: Callable[[int], None] | None = None) -> OrgImport:
    """Load (create or update in place) the health system's Organizations for ``provinces``
    (None or empty: the whole country) into ``store``."""
    from songkhoe.store.bulk import load

    started = time.monotonic()
    orgs, n_provinces, n_communes = health_system(provinces)
    before = existing(store, "Organization", (org["id"] for org in orgs))
    summary = load(store, ((f"Organization/{org['id']}", org) for org in orgs),
                   progress=progress)
    rejected = {r.source for r in summary.rejected}
    created = sum(1 for org in orgs if org["id"] not in before
                  and f"Organization/{org['id']}" not in rejected)
    return OrgImport(n_provinces, n_communes, created=created,
                     updated=summary.loaded - created, unchanged=summary.unchanged,
                     rejected=summary.rejected, seconds=time.monotonic() - started)
