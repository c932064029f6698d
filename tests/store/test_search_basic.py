"""Basic search on both backends: token, string (folded), reference, date prefixes, _id,
_lastUpdated, _count paging."""

from __future__ import annotations

import pytest

from songkhoe.fhir.outcome import FhirError

from .conftest import bp, glucose, patient


def ids(result):
    return sorted(s.id for s in result.matches)


@pytest.fixture
def people(store):
    a = store.update("Patient", "a", patient("Nguyễn", ("Văn", "An"), birth="1960-05-01",
                                             cccd="001060000001", id="a")).stored
    b = store.update("Patient", "b", patient("Đặng", ("Thị", "Bích"), birth="1975-12-31",
                                             gender="female", cccd="079175000002", id="b")).stored
    c = store.update("Patient", "c", patient("Trần", ("Minh",), birth="1960", cccd="001060000003",
                                             id="c")).stored
    return a, b, c


def test_string_is_case_and_diacritic_insensitive(store, people):
    assert ids(store.search("Patient", [("name", "Nguyen")])) == ["a"]
    assert ids(store.search("Patient", [("name", "nguyễn")])) == ["a"]
    assert ids(store.search("Patient", [("name", "dang")])) == ["b"]
    assert ids(store.search("Patient", [("family", "ĐẶNG")])) == ["b"]
    assert ids(store.search("Patient", [("given", "bi")])) == ["b"]
    assert ids(store.search("Patient", [("name", "Nguyen Van")])) == ["a"]
    assert ids(store.search("Patient", [("name:exact", "Nguyen")])) == []
    assert ids(store.search("Patient", [("name:exact", "Nguyễn")])) == ["a"]
    assert ids(store.search("Patient", [("name:contains", "ich")])) == ["b"]


def test_token_forms(store, people):
    assert ids(store.search("Patient", [("identifier", "urn:vn:cccd|079175000002")])) == ["b"]
    assert ids(store.search("Patient", [("identifier", "079175000002")])) == ["b"]
    assert ids(store.search("Patient", [("identifier", "urn:other|079175000002")])) == []
    assert ids(store.search("Patient", [("identifier", "urn:vn:cccd|")])) == ["a", "b", "c"]
    assert ids(store.search("Patient", [("gender", "female")])) == ["b"]
    assert ids(store.search("Patient", [("gender:not", "female")])) == ["a", "c"]


def test_or_and_and(store, people):
    assert ids(store.search("Patient", [("name", "nguyen,dang")])) == ["a", "b"]
    assert ids(store.search("Patient", [("gender", "male"), ("birthdate", "1960")])) == ["a", "c"]
    assert ids(store.search("Patient", [("gender", "male"), ("name", "tran")])) == ["c"]


def test_date_prefixes_and_precision(store, people):
    assert ids(store.search("Patient", [("birthdate", "1960")])) == ["a", "c"]
    assert ids(store.search("Patient", [("birthdate", "1960-05")])) == ["a"]
    assert ids(store.search("Patient", [("birthdate", "1960-05-01")])) == ["a"]
    assert ids(store.search("Patient", [("birthdate", "gt1970")])) == ["b"]
    assert ids(store.search("Patient", [("birthdate", "lt1961")])) == ["a", "c"]
    assert ids(store.search("Patient", [("birthdate", "ge1975-12-31")])) == ["b"]
    assert ids(store.search("Patient", [("birthdate", "le1960-05-01")])) == ["a", "c"]
    assert ids(store.search("Patient", [("birthdate", "ne1960")])) == ["b"]
    assert ids(store.search("Patient", [("birthdate", "sa1961")])) == ["b"]
    assert ids(store.search("Patient", [("birthdate", "eb1961")])) == ["a", "c"]


def test_bad_date_is_400_naming_parameter(store):
    with pytest.raises(FhirError) as err:
        store.search("Patient", [("birthdate", "not-a-date")])
    assert err.value.status == 400
    assert err.value.issues[0].expression == "birthdate"


def test_reference_and_observation_search(store, people):
    store.create(bp("a", 150, 95))
    store.create(bp("b", 120, 80, when="2025-06-01T08:00:00+07:00"))
    store.create(glucose("a", 7.4))
    assert len(store.search("Observation", [("subject", "Patient/a")]).matches) == 2
    assert len(store.search("Observation", [("subject", "a")]).matches) == 2
    assert len(store.search("Observation", [("patient", "a")]).matches) == 2
    assert len(store.search("Observation", [("subject:Patient", "b")]).matches) == 1
    found = store.search("Observation", [("subject", "Patient/a"), ("code", "http://loinc.org|85354-9"),
                                         ("date", "ge2026-01-01")])
    assert len(found.matches) == 1
    assert len(store.search("Observation", [("code", "85354-9"), ("date", "lt2026")]).matches) == 1
    assert len(store.search("Observation", [("value-quantity", "gt7")]).matches) == 1
    assert len(store.search("Observation", [("value-quantity", "7.4|http://unitsofmeasure.org|mmol/L")]).matches) == 1
    assert len(store.search("Observation", [("component-value-quantity", "gt140")]).matches) == 1


def test_id_last_updated_and_count(store, people):
    assert ids(store.search("Patient", [("_id", "a,c")])) == ["a", "c"]
    assert ids(store.search("Patient", [("_lastUpdated", "gt2000-01-01")])) == ["a", "b", "c"]
    assert ids(store.search("Patient", [("_lastUpdated", "lt2000-01-01")])) == []
    assert store.search("Patient", [("_summary", "count")]).total == 3


def test_keyset_paging_with_next_cursor(store):
    for n in range(7):
        store.create(patient(cccd=f"00106000{n:04d}"))
    seen, cursor, pages = [], None, 0
    while True:
        params = [("gender", "male"), ("_count", "3")] + ([("_cursor", cursor)] if cursor else [])
        page = store.search("Patient", params)
        seen += [s.id for s in page.matches]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 7 == len(set(seen))
    assert ("_count", "3") in page.params and all(n != "_cursor" for n, _ in page.params)


def test_unknown_parameters_are_ignored_unless_strict(store, people):
    result = store.search("Patient", [("nonsense", "x"), ("gender", "female")])
    assert ids(result) == ["b"] and result.params == [("gender", "female")]
    with pytest.raises(FhirError) as err:
        store.search("Patient", [("nonsense", "x")], strict=True)
    assert err.value.status == 400


def test_index_follows_updates_and_deletes(store, people):
    store.update("Patient", "a", {**store.read("Patient", "a").resource,
                                  "name": [{"family": "Lê", "given": ["An"]}]})
    assert ids(store.search("Patient", [("name", "nguyen")])) == []
    assert ids(store.search("Patient", [("name", "le")])) == ["a"]
    store.delete("Patient", "a")
    assert ids(store.search("Patient", [("name", "le")])) == []


def test_compartment_and_everything(store, people):
    store.create(bp("a"))
    store.create(glucose("a", 5.0))
    store.create(glucose("b", 6.0))
    in_a = store.search("Observation", [], compartment=("Patient", "a"))
    assert len(in_a.matches) == 2
    everything = store.everything("a")
    assert sorted(s.type for s in everything.matches) == ["Observation", "Observation", "Patient"]
    only_obs = store.everything("a", types=["Observation"], count=1)
    assert len(only_obs.matches) == 1 and only_obs.next_cursor
    rest = store.everything("a", types=["Observation"], count=1, cursor=only_obs.next_cursor)
    assert len(rest.matches) == 1 and rest.matches[0].id != only_obs.matches[0].id


def test_system_search(store, people):
    store.create(glucose("a", 5.0))
    result = store.search(None, [("_id", "a")])
    assert [s.type for s in result.matches] == ["Patient"]
    assert store.search(None, [("_summary", "count")]).total == 4


def test_count_zero_returns_no_matches(store, people):
    result = store.search("Patient", [("_count", "0"), ("_total", "accurate")])
    assert result.matches == [] and result.total == 3 and result.next_cursor is None
    assert store.history(count=0).versions == []
