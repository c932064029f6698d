"""The public health system a synthetic population is served by: Organizations, Practitioners
and PractitionerRoles.

- The Ministry of Health (Bộ Y tế), the top of the hierarchy.
- Per province: its Department of Health (Sở Y tế, ``partOf`` the Ministry), a provincial
  general hospital, and regional health centres (Trung tâm Y tế khu vực — the former district
  health centres, which the 2025 reform kept as regional units of the department), one for
  every ``COMMUNES_PER_CENTRE`` communes in code order, named after the first of them.
- Per commune: its commune health station (Trạm Y tế), ``partOf`` the Department of Health.

Every Organization carries identifiers with the administrative codes it belongs to, so access
control can scope by them: ``urn:vn:gso:province`` (2-digit province code) on everything in a
province, ``urn:vn:gso:commune`` (5-digit commune code) on a commune station, and the ISO 3166
country code on the Ministry. Staffing (a doctor and a nurse per station, four doctors and a
nurse per hospital or centre) is illustrative, not a staffing statistic.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import admin, codes, names

PROVINCE_SYSTEM = "urn:vn:gso:province"
COMMUNE_SYSTEM = "urn:vn:gso:commune"
COUNTRY_SYSTEM = "urn:iso:std:iso:3166"
COMMUNES_PER_CENTRE = 12
MOH_ID = "moh"


def station_id(commune: int) -> str:
    return f"tyt-{commune:05d}"


def _short(commune: admin.Commune) -> str:
    for prefix in ("Phường ", "Xã ", "Đặc khu "):
        if commune.name.startswith(prefix):
            return commune.name.removeprefix(prefix)
    return commune.name


@dataclass
class Site:
    """A facility where people are seen: its Organization and the roles that see them."""

    org: str  # Organization id
    doctor: str  # PractitionerRole id
    nurse: str
    province: int


@dataclass
class HealthSystem:
    resources: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    stations: dict[int, Site] = field(default_factory=dict)  # commune code -> station
    centres: dict[int, Site] = field(default_factory=dict)  # commune code -> its regional centre
    hospitals: dict[int, Site] = field(default_factory=dict)  # province code -> hospital

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rtype, _ in self.resources:
            out[rtype] = out.get(rtype, 0) + 1
        return out


def _address(commune: admin.Commune | None, province: admin.Province | None) -> dict[str, Any]:
    parts = [x for x in (commune.name if commune else None, province.name if province else None) if x]
    addr: dict[str, Any] = {"use": "work", "text": ", ".join([*parts, "Việt Nam"]), "country": "VN"}
    if commune:
        addr["city"] = commune.name
    if province:
        addr["state"] = province.name
    return addr


def _org(id: str, name: str, kind: str, identifiers: list[tuple[str, str]], part_of: str | None,
         address: dict[str, Any]) -> dict[str, Any]:
    org: dict[str, Any] = {
        "resourceType": "Organization", "id": id, "active": True,
        "identifier": [{"system": s, "value": v} for s, v in identifiers],
        "type": [{"coding": [{"system": codes.ORG_TYPE, "code": kind,
                              "display": "Healthcare Provider" if kind == "prov" else "Government"}]}],
        "name": name, "address": [address],
    }
    if part_of:
        org["partOf"] = {"reference": f"Organization/{part_of}"}
    return org


def build(communes: list[admin.Commune], seed: int) -> HealthSystem:
    """The health system serving the given communes (and their provinces), deterministic in
    ``seed`` (only the staff's names depend on it)."""
    rng = random.Random(f"facilities-{seed}")
    system = HealthSystem()
    out = system.resources
    out.append(("Organization", _org(MOH_ID, "Bộ Y tế", "govt", [(COUNTRY_SYSTEM, "VN")], None,
                                     {"use": "work", "text": "Hà Nội, Việt Nam", "country": "VN"})))

    def staff(org_id: str, province: admin.Province, doctors: int, nurses: int) -> list[str]:
        roles = []
        for k in range(doctors + nurses):
            male = rng.random() < (0.5 if k < doctors else 0.15)
            birth_year = rng.randrange(1965, 2000)
            family, given = names.person_name(rng, male, birth_year, province.code >= 46)
            pid, rid = f"pr-{org_id}-{k}", f"role-{org_id}-{k}"
            out.append(("Practitioner", {
                "resourceType": "Practitioner", "id": pid, "active": True,
                "name": [{"use": "official", "text": names.full_name(family, given),
                          "family": family, "given": given,
                          "prefix": ["BS."] if k < doctors else ["ĐD."]}],
                "gender": "male" if male else "female", "birthDate": f"{birth_year}",
            }))
            role = "doctor" if k < doctors else "nurse"
            out.append(("PractitionerRole", {
                "resourceType": "PractitionerRole", "id": rid, "active": True,
                "practitioner": {"reference": f"Practitioner/{pid}"},
                "organization": {"reference": f"Organization/{org_id}"},
                "code": [{"coding": [{"system": codes.PRACTITIONER_ROLE, "code": role,
                                      "display": "Doctor" if role == "doctor" else "Nurse"}],
                          "text": "Bác sĩ" if role == "doctor" else "Điều dưỡng"}],
            }))
            roles.append(rid)
        return roles

    by_province: dict[int, list[admin.Commune]] = {}
    for c in communes:
        by_province.setdefault(c.province, []).append(c)
    for pcode, pcommunes in sorted(by_province.items()):
        p = admin.province(pcode)
        prov_id = [(PROVINCE_SYSTEM, p.code2)]
        dept = f"so-{p.code2}"
        out.append(("Organization", _org(dept, f"Sở Y tế {p.title}", "govt", prov_id, MOH_ID,
                                         _address(None, p))))
        hospital = f"bv-{p.code2}"
        out.append(("Organization", _org(hospital, f"Bệnh viện Đa khoa {p.title}", "prov",
                                         prov_id, dept, _address(None, p))))
        r = staff(hospital, p, 4, 1)
        system.hospitals[pcode] = Site(hospital, r[0], r[-1], pcode)
        for start in range(0, len(pcommunes), COMMUNES_PER_CENTRE):
            group = pcommunes[start:start + COMMUNES_PER_CENTRE]
            centre = f"ttyt-{p.code2}-{start // COMMUNES_PER_CENTRE + 1}"
            out.append(("Organization", _org(centre, f"Trung tâm Y tế khu vực {_short(group[0])}",
                                             "prov", prov_id, dept, _address(group[0], p))))
            r = staff(centre, p, 4, 1)
            site = Site(centre, r[0], r[-1], pcode)
            for c in group:
                system.centres[c.code] = site
        for c in pcommunes:
            sid = station_id(c.code)
            out.append(("Organization", _org(sid, f"Trạm Y tế {c.name}", "prov",
                                             [(COMMUNE_SYSTEM, c.code5), *prov_id], dept,
                                             _address(c, p))))
            r = staff(sid, p, 1, 1)
            system.stations[c.code] = Site(sid, r[0], r[1], pcode)
    return system


def iter_resources(system: HealthSystem) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from system.resources
