"""Every generated resource is valid R4 (the project's validator) and every reference resolves."""

from __future__ import annotations

import unicodedata
from typing import Any

from songkhoe.fhir.validate import validate
from songkhoe.synth import admin, facilities, identifiers


def _references(value: Any) -> list[str]:
    if isinstance(value, dict):
        out = [value["reference"]] if isinstance(value.get("reference"), str) else []
        for v in value.values():
            out += _references(v)
        return out
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_every_resource_is_valid_r4(small: dict[str, list[dict[str, Any]]]) -> None:
    assert set(small) == {"Organization", "Practitioner", "PractitionerRole", "Patient",
                          "Condition", "MedicationStatement", "Encounter", "Observation"}
    for rtype, resources in small.items():
        assert resources, rtype
        for resource in resources:
            assert resource["resourceType"] == rtype
            issues = validate(resource)
            assert not issues, (resource, [str(i) for i in issues])


def test_every_reference_resolves_and_ids_are_unique(small: dict[str, list[dict[str, Any]]]) -> None:
    known = set()
    for rtype, resources in small.items():
        ids = [f"{rtype}/{r['id']}" for r in resources]
        assert len(ids) == len(set(ids)), rtype
        known.update(ids)
    for resources in small.values():
        for resource in resources:
            for ref in _references(resource):
                assert ref in known, (resource["id"], ref)


def test_text_is_nfc(small: dict[str, list[dict[str, Any]]]) -> None:
    for rtype in ("Patient", "Organization", "Practitioner"):
        for resource in small[rtype]:
            for s in _strings(resource):
                assert unicodedata.is_normalized("NFC", s), s


def test_observations_follow_the_vital_signs_profile(small: dict[str, list[dict[str, Any]]]) -> None:
    bp = [o for o in small["Observation"] if o["code"]["coding"][0]["code"] == "85354-9"]
    assert bp
    for o in bp:
        assert o["category"][0]["coding"][0]["code"] == "vital-signs"
        assert [c["code"]["coding"][0]["code"] for c in o["component"]] == ["8480-6", "8462-4"]
        for c in o["component"]:
            q = c["valueQuantity"]
            assert q["system"] == "http://unitsofmeasure.org" and q["code"] == "mm[Hg]"
            assert isinstance(q["value"], int)
        assert o["component"][0]["valueQuantity"]["value"] > o["component"][1]["valueQuantity"]["value"]
    units = {o["code"]["coding"][0]["code"]: o["valueQuantity"]["code"]
             for o in small["Observation"] if "valueQuantity" in o}
    assert units == {"8302-2": "cm", "29463-7": "kg", "39156-5": "kg/m2", "8867-4": "/min",
                     "8280-0": "cm", "14771-0": "mmol/L", "4548-4": "%", "14647-2": "mmol/L",
                     "82290-8": "min/wk"}
    for o in small["Observation"]:
        if o["code"]["coding"][0]["code"] == "39156-5":  # BMI agrees with the same visit's
            assert 12 < o["valueQuantity"]["value"] < 50  # weight and height (checked below)


def test_bmi_is_weight_over_height_squared_of_the_same_visit(
        small: dict[str, list[dict[str, Any]]]) -> None:
    by_visit: dict[str, dict[str, float]] = {}
    for o in small["Observation"]:
        if "valueQuantity" in o:
            by_visit.setdefault(o["encounter"]["reference"], {})[o["code"]["coding"][0]["code"]] = \
                o["valueQuantity"]["value"]
    checked = 0
    for v in by_visit.values():
        if {"29463-7", "8302-2", "39156-5"} <= set(v):
            assert abs(v["29463-7"] / (v["8302-2"] / 100) ** 2 - v["39156-5"]) < 0.06
            checked += 1
    assert checked > 1000


def test_conditions_and_medicines_are_coded(small: dict[str, list[dict[str, Any]]]) -> None:
    assert {c["code"]["coding"][0]["code"] for c in small["Condition"]} == {"I10", "E11"}
    assert all(c["code"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10"
               for c in small["Condition"])
    atc = {m["medicationCodeableConcept"]["coding"][0]["code"] for m in small["MedicationStatement"]}
    assert atc <= {"C08CA01", "C09CA01", "C09AA02", "C03AA03", "A10BA02", "A10BB09"}
    assert {"C08CA01", "A10BA02"} <= atc


def test_patients_identifiers_and_home(small: dict[str, list[dict[str, Any]]]) -> None:
    communes = {(c.name, admin.province(c.province).name): c for c in admin.select([1, 79, 8])}
    consistent = 0
    patients = [p for p in small["Patient"] if not p["id"].endswith("-dup")]
    for p in patients:
        ids = {i["system"]: i["value"] for i in p["identifier"]}
        code, year, male = identifiers.parse_cccd(ids[identifiers.CCCD_SYSTEM])
        assert str(year) == p["birthDate"][:4]
        assert male == (p["gender"] == "male")
        assert code in admin.OLD_PROVINCES
        commune = communes[(p["address"][0]["city"], p["address"][0]["state"])]
        assert p["managingOrganization"]["reference"] == \
            f"Organization/{facilities.station_id(commune.code)}"
        consistent += code in admin.MERGED_FROM[commune.province]
        assert len(ids[identifiers.BHXH_SYSTEM]) == 10
    assert consistent / len(patients) > 0.85  # most were registered at birth where they live
    cccds = [i["value"] for p in patients for i in p["identifier"]
             if i["system"] == identifiers.CCCD_SYSTEM]
    assert len(cccds) == len(set(cccds))


def test_health_system_hierarchy(small: dict[str, list[dict[str, Any]]]) -> None:
    orgs = {o["id"]: o for o in small["Organization"]}
    assert orgs["moh"]["name"] == "Bộ Y tế" and "partOf" not in orgs["moh"]
    stations = [o for o in orgs.values() if o["id"].startswith("tyt-")]
    assert len(stations) == len(admin.select([1, 79, 8]))
    for s in stations:
        dept = orgs[s["partOf"]["reference"].removeprefix("Organization/")]
        assert dept["id"].startswith("so-") and dept["partOf"]["reference"] == "Organization/moh"
        systems = {i["system"]: i["value"] for i in s["identifier"]}
        assert systems[facilities.COMMUNE_SYSTEM] == s["id"].removeprefix("tyt-")
        assert systems[facilities.PROVINCE_SYSTEM] == dept["id"].removeprefix("so-")
    roles = {r["organization"]["reference"] for r in small["PractitionerRole"]}
    assert {f"Organization/{s['id']}" for s in stations} <= roles
