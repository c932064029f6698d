"""Every R4 search parameter is known, stored or derived, and searchable (R4 SearchParameter
registry, http://hl7.org/fhir/R4/searchparameter-registry.html)."""

from __future__ import annotations

import orjson
import pytest

from songkhoe.fhir import definitions, fhirpath
from songkhoe.fhir.outcome import FhirError
from songkhoe.store import catalog
from songkhoe.store.indexer import index_rows
from songkhoe.store.paths import compile_walk

from .conftest import bp, glucose, patient

VALUES = {"string": "nguyen", "token": "http://loinc.org|1558-6", "date": "ge2020-01-01",
          "number": "gt1", "quantity": "lt5.4|http://unitsofmeasure.org|mmol/L",
          "uri": "http://example.org/x", "reference": "Patient/a"}


def _value(p: catalog.Param) -> str | None:
    if p.kind == "composite":
        if not p.components:
            return None
        return "$".join(VALUES[c.kind].split("|")[-1] if c.kind == "token" else VALUES[c.kind]
                        for c in p.components)
    return VALUES.get(p.kind)


def test_row_tags_are_unique():
    keys = set()
    for rtype in definitions.resource_types():
        for p in catalog.params(rtype).values():
            keys.add(f"Resource.{p.code}" if p.shared else p.name)
            keys.update(f"{p.name}#{i}" for i in range(len(p.components)))
    assert len({catalog.sp_id(k) for k in keys}) == len(keys)


def test_every_parameter_of_every_type_is_searchable(store):
    """Each R4 parameter of each type answers a search with a value of its type, and
    ``:missing``; only ``special`` ones (``near``, ``_query``…) are unknown."""
    unsupported = []
    for rtype in sorted(definitions.resource_types()):
        for code, p in catalog.params(rtype).items():
            value = _value(p)
            if code in ("_id", "_lastUpdated"):
                value = "x" if code == "_id" else "gt2020"
            if code == "_list":
                value = "l1"
            if value is None:
                unsupported.append(f"{rtype}.{code}")
                continue
            result = store.search(rtype, [(code, value)], strict=True)
            assert result.matches == [], (rtype, code)
            if p.table is not None:
                assert store.search(rtype, [(f"{code}:missing", "false")], strict=True).matches == []
    assert {u.split(".", 1)[1] for u in unsupported} <= {"_has", "_type", "_query", "near"}


def test_unions_and_restrictions_are_not_stored_twice():
    obs = catalog.params("Observation")
    assert not obs["combo-code"].stored and {s.sp for s in obs["combo-code"].sources} == \
        {obs["code"].sp, obs["component-code"].sp}
    assert obs["patient"].sources == (catalog.Source(obs["subject"].sp, "Patient"),)
    assert catalog.params("Patient")["phonetic"].sources == catalog.params("Patient")["name"].sources
    assert catalog.params("Encounter")["patient"].sources[0].target == "Patient"
    assert obs["code-value-quantity"].root is None  # searched as code AND value-quantity
    assert obs["component-code-value-quantity"].root == "Observation.component"
    assert obs["combo-code-value-quantity"].members == ("code-value-quantity",
                                                        "component-code-value-quantity")
    assert catalog.params("Patient")["_tag"].shared and catalog.params("Observation")["_tag"].sp \
        == catalog.params("Patient")["_tag"].sp


def test_derived_parameters_find_what_their_expressions_select(store):
    """An aliased parameter finds exactly the resources its own FHIRPath expression selects."""
    store.update("Patient", "a", patient(id="a"))
    made = [store.create(bp("a")).stored.id, store.create(glucose("a", 5.0)).stored.id]
    group = {"resourceType": "Observation", "status": "final",
             "code": {"coding": [{"system": "http://loinc.org", "code": "1558-6"}]},
             "subject": {"reference": "Group/g1"}}
    made.append(store.create(group).stored.id)
    for code, value in (("combo-code", "http://loinc.org|8480-6"),
                        ("combo-code", "http://loinc.org|1558-6"), ("patient", "a"),
                        ("combo-value-quantity", "gt100")):
        p = catalog.params("Observation")[code]
        expected = set()
        for oid in made:
            resource = store.read("Observation", oid).resource
            selected = fhirpath.compile(p.expression).nodes(resource)
            text = orjson.dumps([n.value for n in selected]).decode()
            if (code == "patient" and "Patient/a" in text) or \
                    (code == "combo-code" and value.split("|")[1] in text) or \
                    (code == "combo-value-quantity" and any(
                        isinstance(n.value, dict) and n.value.get("value", 0) > 100
                        for n in selected)):
                expected.add(oid)
        found = {s.id for s in store.search("Observation", [(code, value)]).matches}
        assert found == expected, code


def test_walks_agree_with_fhirpath():
    """The direct JSON walks give the same items as the FHIRPath engine."""
    resources = [patient(id="a"), bp("a"), glucose("a", 6.1),
                 {"resourceType": "Condition", "subject": {"reference": "Patient/a"},
                  "onsetAge": {"value": 3, "unit": "a"}, "abatementRange": {"low": {"value": 1}}},
                 {"resourceType": "Patient", "deceasedBoolean": False,
                  "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "x@y"}],
                  "link": [{"other": {"reference": "Patient/2"}, "type": "seealso"}],
                  "meta": {"tag": [{"code": "a"}]}}]
    for resource in resources:
        for code, sp in definitions.search_parameters(resource["resourceType"]).items():
            if not sp.expression or sp.type in ("composite", "special"):
                continue
            walk, _ = compile_walk(sp.expression, resource["resourceType"])
            mine = sorted(orjson.dumps(v) for v, _, _ in walk(resource))
            theirs = sorted(orjson.dumps(n.value) for n in fhirpath.compile(sp.expression).nodes(resource)
                            if n.value is not None)
            assert mine == theirs, (resource["resourceType"], code)


def test_index_rows_are_lean():
    """A check-up observation is indexed in 8 rows: category, code, status, subject, encounter
    (absent here), date and the value (plus its other-dimension twin for a known analyte)."""
    rows = index_rows(glucose("a", 6.1))
    counts = {table: len(r) for table, r in rows.items() if r}
    assert counts == {"idx_token": 2, "idx_reference": 1, "idx_date": 1, "idx_quantity": 2}


def test_strict_rejects_unknown_modifiers_lenient_ignores(store):
    store.update("Patient", "a", patient(id="a"))
    result = store.search("Patient", [("name:fancy", "x"), ("family", "nguyen")])
    assert [s.id for s in result.matches] == ["a"] and result.params == [("family", "nguyen")]
    for bad in ("name:fancy", "gender:above", "birthdate:exact", "near", "_query", "_filter",
                "_contained"):
        with pytest.raises(FhirError) as err:
            store.search("Patient", [(bad, "x")], strict=True)
        assert err.value.status == 400 and err.value.issues[0].expression == bad
