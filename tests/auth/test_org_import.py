"""``songkhoe org import``: the health system's Organizations (Ministry → provincial
Departments of Health → commune stations, hospitals, regional centres) loaded and kept up to
date in place, on both backends; the whole country once, on SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from songkhoe.auth import Auth
from songkhoe.auth.org_import import health_system, import_organizations
from songkhoe.cli import main
from songkhoe.synth import admin
from songkhoe.synth.facilities import COMMUNE_SYSTEM, COMMUNES_PER_CENTRE, station_id

from .conftest import PASSWORD, password_token


def _children(store: Any, parent: str) -> set[str]:
    page = store.search("Organization", [("partof", f"Organization/{parent}"),
                                         ("_count", "1000")])
    assert page.next_cursor is None
    return {s.id for s in page.matches}


def test_a_province_is_loaded_as_a_hierarchy(store) -> None:
    province = admin.province(4)
    orgs, _, _ = health_system([4])
    result = import_organizations(store, [4])
    assert (result.provinces, result.communes) == (1, len(province.communes))
    assert (result.created, result.updated, result.unchanged, result.rejected) == \
        (len(orgs), 0, 0, [])
    assert "partOf" not in store.read("Organization", "moh").resource
    assert _children(store, "moh") == {"so-04"}
    under = _children(store, "so-04")
    stations = {station_id(c.code) for c in province.communes}
    assert stations <= under and "bv-04" in under and "ttyt-04-1" in under
    assert len(under) == len(orgs) - 2  # all but the Ministry and the Department
    commune = province.communes[0]
    found = store.search("Organization", [("identifier", f"{COMMUNE_SYSTEM}|{commune.code5}")])
    assert [s.id for s in found.matches] == [station_id(commune.code)]
    assert found.matches[0].resource["name"] == f"Trạm Y tế {commune.name}"


def test_reimport_is_idempotent_and_updates_in_place(store) -> None:
    orgs, _, _ = health_system([4])
    import_organizations(store, [4])
    again = import_organizations(store, [4])
    assert (again.created, again.updated, again.unchanged) == (0, 0, len(orgs))
    station = station_id(admin.province(4).communes[0].code)
    assert store.read("Organization", station).version == 1  # nothing rewritten

    edited = store.read("Organization", station).resource
    name = edited["name"]
    edited["name"] = "Trạm Y tế (sửa tay)"
    store.update("Organization", station, edited)
    store.delete("Organization", "bv-04")
    third = import_organizations(store, [4])
    assert (third.created, third.updated, third.unchanged) == (1, 1, len(orgs) - 2)
    current = store.read("Organization", station)
    assert current.resource["name"] == name and current.version == 3  # same id, new version
    assert store.read("Organization", "bv-04").version == 3  # written again after deletion

    more, _, _ = health_system([1])
    fourth = import_organizations(store, [1])  # another province: the Ministry is shared
    assert (fourth.created, fourth.updated, fourth.unchanged) == (len(more) - 1, 0, 1)
    assert _children(store, "moh") == {"so-01", "so-04"}


def test_synthetic_population_uses_the_same_organizations(store) -> None:
    from datetime import date

    from songkhoe.store.bulk import load
    from songkhoe.synth import SynthConfig, items

    import_organizations(store, [4])
    config = SynthConfig(people=10, provinces=(4,), communes_per_province=3,
                         as_of=date(2026, 11, 1))
    synth_orgs = sum(1 for source, _ in items(config, workers=1)
                     if source.startswith("synth:Organization/"))
    summary = load(store, items(config, workers=1))
    assert not summary.rejected
    assert summary.unchanged == synth_orgs  # identical ids and content: nothing rewritten


def test_org_import_command(store, db_url, capsys) -> None:
    orgs, _, _ = health_system([4])
    assert main(["org", "import", "--db", db_url, "--province", "4"]) == 0
    out = capsys.readouterr().out
    assert f"Organizations for 1 provinces and {len(admin.province(4).communes):,} communes: " \
           f"created {len(orgs):,}, updated 0, unchanged 0, rejected 0" in out
    assert main(["org", "import", "--db", db_url, "--province", "4"]) == 0
    assert f"created 0, updated 0, unchanged {len(orgs):,}" in capsys.readouterr().out
    assert main(["org", "import", "--db", db_url, "--province", "3"]) == 2
    assert "no province with code 03" in capsys.readouterr().err


def test_imported_hierarchy_scopes_staff(http, store, auth: Auth) -> None:
    """The imported partOf tree is what a province manager's subtree follows."""
    import_organizations(store, [1, 4])
    for pid, province in (("bn-a", 4), ("bn-b", 1)):
        station = station_id(admin.province(province).communes[0].code)
        store.update("Patient", pid, {"resourceType": "Patient", "id": pid,
                                      "managingOrganization":
                                          {"reference": f"Organization/{station}"}})
    auth.identities.add_user("quanly", PASSWORD, "programme_manager", "so-04")
    token = password_token(http, "quanly")["access_token"]
    r = http.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert [e["resource"]["id"] for e in r.json().get("entry", [])] == ["bn-a"]


def test_whole_country_on_sqlite(tmp_path: Path) -> None:
    from songkhoe.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'vn.db'}")
    try:
        result = import_organizations(store)
        assert (result.provinces, result.communes) == (34, 3321)
        assert result.created == result.organizations and not result.rejected
        assert _children(store, "moh") == {f"so-{code:02d}" for code in admin.provinces()}
        count = store.search("Organization", [("_summary", "count")]).total
        assert count == result.organizations == 1 + 34 * 2 + 3321 + \
            sum(-(-len(p.communes) // COMMUNES_PER_CENTRE) for p in admin.provinces().values())
        again = import_organizations(store)
        assert again.unchanged == result.organizations and again.created == again.updated == 0
    finally:
        store.close()
