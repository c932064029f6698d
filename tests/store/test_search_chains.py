"""Chained parameters and _has on both backends (R4 Search, "Chained parameters" and "Reverse
Chaining", http://hl7.org/fhir/R4/search.html#chaining, #has)."""

from __future__ import annotations

import pytest

from songkhoe.fhir.outcome import FhirError

from .conftest import bp, glucose, patient


def ids(result):
    return sorted(s.id for s in result.matches)


@pytest.fixture
def town(store):
    for oid, name in (("o1", "Trạm Y tế xã Tân Phú"), ("o2", "Trạm Y tế phường Bến Nghé")):
        store.update("Organization", oid, {"resourceType": "Organization", "id": oid, "name": name,
                                           "partOf": {"reference": "Organization/so"}})
    store.update("Organization", "so", {"resourceType": "Organization", "id": "so",
                                        "name": "Sở Y tế Đồng Nai"})
    for pid, family, org in (("a", "Nguyễn", "o1"), ("b", "Lê", "o1"), ("c", "Phạm", "o2")):
        p = patient(family, id=pid)
        p["managingOrganization"] = {"reference": f"Organization/{org}"}
        store.update("Patient", pid, p)
    obs = {pid: [store.create(bp(pid, 150 if pid == "a" else 120)).stored.id,
                 store.create(glucose(pid, 7.5 if pid != "c" else 5.0)).stored.id]
           for pid in ("a", "b", "c")}
    return obs


def test_chain_one_and_two_levels(store, town):
    found = lambda *p: ids(store.search("Observation", list(p)))  # noqa: E731
    assert found(("subject:Patient.name", "nguyen")) == sorted(town["a"])
    assert found(("subject.name", "nguyen")) == sorted(town["a"])  # the only target with name
    assert found(("patient.family", "le")) == sorted(town["b"])
    assert found(("subject:Patient.organization.name", "tram y te xa")) == sorted(town["a"] + town["b"])
    assert found(("subject:Patient.organization.name", "tram y te phuong")) == sorted(town["c"])
    assert found(("subject:Patient.organization.partof.name", "so y te")) == \
        sorted(town["a"] + town["b"] + town["c"])
    assert found(("subject:Patient.organization", "Organization/o2")) == sorted(town["c"])
    assert found(("subject:Patient.organization._id", "o2")) == sorted(town["c"])
    assert found(("subject:Patient.name", "nguyen,pham")) == sorted(town["a"] + town["c"])
    # AND of a chain with plain parameters
    assert found(("subject:Patient.organization.name", "tram y te xa"),
                 ("code", "http://loinc.org|1558-6")) == sorted([town["a"][1], town["b"][1]])


def test_chain_errors_and_unknowns(store, town):
    with pytest.raises(FhirError):
        store.search("Observation", [("subject:Patient.birthdate", "yesterday")])
    result = store.search("Observation", [("subject:Patient.shoe-size", "42")])
    assert len(result.matches) == 6 and result.params == []  # ignored, and left out of self
    with pytest.raises(FhirError) as err:
        store.search("Observation", [("subject:Patient.shoe-size", "42")], strict=True)
    assert err.value.status == 400
    with pytest.raises(FhirError):
        store.search("Observation", [("code.name", "x")], strict=True)  # not a reference


def test_has_and_nested_has(store, town):
    found = lambda *p: ids(store.search("Patient", list(p)))  # noqa: E731
    assert found(("_has:Observation:patient:code", "http://loinc.org|1558-6")) == ["a", "b", "c"]
    assert found(("_has:Observation:patient:value-quantity", "gt7")) == ["a", "b"]
    assert found(("_has:Observation:subject:component-code-value-quantity",
                  "http://loinc.org|8480-6$gt140")) == ["a"]
    assert found(("_has:Observation:patient:value-quantity", "gt7"), ("family", "le")) == ["b"]
    orgs = ids(store.search("Organization", [("_has:Patient:organization:_has:Observation:patient:"
                                              "value-quantity", "gt7")]))
    assert orgs == ["o1"]
    assert ids(store.search("Organization", [("_has:Patient:organization:family", "pham")])) == ["o2"]
    with pytest.raises(FhirError):
        store.search("Patient", [("_has:Observation", "x")])
    with pytest.raises(FhirError):
        store.search("Patient", [("_has:Nonsense:patient:code", "x")])


def test_deleted_targets_do_not_match_chains(store, town):
    store.delete("Organization", "o2")
    assert ids(store.search("Observation", [("subject:Patient.organization.name", "tram y te phuong")])) == []
    store.delete("Observation", town["c"][0])
    store.delete("Observation", town["c"][1])
    assert ids(store.search("Patient", [("_has:Observation:patient:code", "1558-6")])) == ["a", "b"]
