"""Sorting, keyset paging, totals, summaries and includes on both backends (R4 Search,
"Sorting", "Paging", "Including other resources", "_total", "_summary",
http://hl7.org/fhir/R4/search.html#sort, #count, #include, #total, #summary)."""

from __future__ import annotations

import pytest

from songkhoe.fhir.outcome import FhirError

from .conftest import bp, glucose, patient


def page_ids(result):
    return [s.id for s in result.matches]


@pytest.fixture
def ten(store):
    births = ["1960-05-01", "1975", "1960-05-01", "1988-02-29", "1951-10-10", "1975-01-01",
              "2001-07-07", "1960-05-01", "1990", "1969-12-31"]
    families = ["Nguyễn", "Trần", "Lê", "Phạm", "Đặng", "Bùi", "Vũ", "Nguyễn", "Hồ", "Ngô"]
    for n, (birth, family) in enumerate(zip(births, families)):
        store.update("Patient", f"p{n}", patient(family, birth=birth, cccd=f"0010600000{n:02d}",
                                                 id=f"p{n}"))
    store.update("Patient", "nobirth", {"resourceType": "Patient", "id": "nobirth",
                                        "name": [{"family": "Zê"}]})
    return births


def walk(store, params, *, backwards_from=None):
    """Every page's ids following next links (or previous links from a cursor)."""
    pages, cursor = [], backwards_from
    while True:
        result = store.search("Patient", [*params, *([("_cursor", cursor)] if cursor else [])])
        pages.append(page_ids(result))
        cursor = result.prev_cursor if backwards_from else result.next_cursor
        if cursor is None:
            return pages, result


def test_sort_several_keys_and_stable_ties(store, ten):
    result = store.search("Patient", [("_sort", "birthdate,-family"), ("_count", "100")])
    order = page_ids(result)
    # 1951; then 1960-05-01 by family descending (ties in reverse rid order); then 1969
    assert order[:5] == ["p4", "p7", "p0", "p2", "p9"]
    assert order[-1] == "nobirth"  # missing values last
    desc = page_ids(store.search("Patient", [("_sort", "-birthdate"), ("_count", "100")]))
    assert desc[0] == "p6" and desc[-1] == "nobirth"
    assert page_ids(store.search("Patient", [("_sort", "_id"), ("_count", "3")])) == ["nobirth", "p0", "p1"]
    by_update = page_ids(store.search("Patient", [("_sort", "-_lastUpdated"), ("_count", "2")]))
    assert by_update == ["nobirth", "p9"]
    assert store.search("Patient", [("_sort", "-birthdate,family")]).params == \
        [("_sort", "-birthdate,family")]


@pytest.mark.parametrize("sort", [None, "birthdate", "-birthdate,family", "family,-_id", "-_lastUpdated"])
def test_pages_cover_everything_once_both_ways(store, ten, sort):
    params = [("_count", "3"), *([("_sort", sort)] if sort else [])]
    everything = page_ids(store.search("Patient", [("_count", "100"), *params[1:]]))
    pages, last = walk(store, params)
    assert [i for p in pages for i in p] == everything and all(len(p) == 3 for p in pages[:-1])
    # and back from the last page with previous links
    back, _ = walk(store, params, backwards_from=last.prev_cursor)
    assert [i for p in reversed(back) for i in p] == everything[:-len(pages[-1])]


def test_paging_stays_correct_while_data_change(store, ten):
    params = [("_sort", "family"), ("_count", "4")]
    first = store.search("Patient", params)
    seen = page_ids(first)
    store.delete("Patient", seen[-1])  # the row the cursor stands on
    store.update("Patient", "late", patient("Ân", cccd="001060009999", id="late"))  # sorts before
    store.update("Patient", "zz", patient("Zô", cccd="001060009998", id="zz"))  # sorts after
    cursor = first.next_cursor
    while cursor:
        result = store.search("Patient", [*params, ("_cursor", cursor)])
        seen += page_ids(result)
        cursor = result.next_cursor
    assert len(seen) == len(set(seen)) == 12  # 11 first seen + zz; "late" went before the cursor
    assert "zz" in seen and "late" not in seen


def test_cursor_must_belong_to_the_search(store, ten):
    first = store.search("Patient", [("_sort", "family"), ("_count", "2")])
    with pytest.raises(FhirError) as err:
        store.search("Patient", [("_sort", "birthdate"), ("_cursor", first.next_cursor)])
    assert err.value.status == 400 and err.value.issues[0].expression == "_cursor"
    for bad in ("nonsense", "e30", "WyJuIiwiIiwgW10sICJ4Il0"):
        with pytest.raises(FhirError):
            store.search("Patient", [("_cursor", bad)])


def test_total_and_summary_count(store, ten):
    assert store.search("Patient", [("birthdate", "1960")]).total is None
    assert store.search("Patient", [("birthdate", "1960"), ("_total", "accurate")]).total == 3
    estimate = store.search("Patient", [("_total", "estimate")]).total
    assert estimate is not None and estimate >= 1
    counted = store.search("Patient", [("family", "nguyen"), ("_summary", "count")])
    assert counted.total == 2 and counted.matches == []
    assert store.search("Patient", [("_summary", "count"), ("_id:not", "p1")]).total == 10
    with pytest.raises(FhirError):
        store.search("Patient", [("_total", "some")])
    with pytest.raises(FhirError):
        store.search("Patient", [("_summary", "most")])


def test_count_is_exact_with_repeated_codes(store):
    """A resource with the same code twice is one match (a count on index rows alone would
    count it twice)."""
    store.update("Patient", "p", patient(id="p"))
    twice = glucose("p", 6.0)
    twice["code"]["coding"].append({"system": "urn:local", "code": "1558-6"})
    store.create(twice)
    store.create(glucose("p", 5.0))
    assert store.search("Observation", [("code", "1558-6"), ("_summary", "count")]).total == 2
    assert store.search("Observation", [("code", "http://loinc.org|1558-6"),
                                        ("_summary", "count")]).total == 2


def test_include_revinclude_iterate(store):
    store.update("Organization", "o1", {"resourceType": "Organization", "id": "o1", "name": "Trạm",
                                        "partOf": {"reference": "Organization/so"}})
    store.update("Organization", "so", {"resourceType": "Organization", "id": "so", "name": "Sở"})
    p = patient(id="a")
    p["managingOrganization"] = {"reference": "Organization/o1"}
    store.update("Patient", "a", p)
    store.update("Patient", "b", patient("Lê", cccd="001060000002", id="b"))
    o1 = store.create(bp("a")).stored.id
    o2 = store.create(glucose("a", 6.1)).stored.id
    store.create(glucose("b", 5.1))

    def included(*params, rtype="Patient"):
        result = store.search(rtype, list(params))
        return sorted(s.reference for s in result.included), sorted(s.id for s in result.matches)

    assert included(("_id", "a"), ("_revinclude", "Observation:subject")) == \
        (sorted([f"Observation/{o1}", f"Observation/{o2}"]), ["a"])
    assert included(("_id", "a"), ("_include", "Patient:organization")) == (["Organization/o1"], ["a"])
    assert included(("_id", "a"), ("_include", "Patient:organization"),
                    ("_include:iterate", "Organization:partof")) == \
        (["Organization/o1", "Organization/so"], ["a"])
    assert included(("_id", "a"), ("_include", "Patient:organization"),
                    ("_include", "Organization:partof")) == (["Organization/o1"], ["a"])
    assert included(("_id", o1), ("_include", "Observation:patient"),
                    ("_include:iterate", "Patient:organization"), rtype="Observation") == \
        (["Organization/o1", "Patient/a"], [o1])
    assert included(("_id", o1), ("_include", "Observation:subject:Group"), rtype="Observation") == \
        ([], [o1])
    # revinclude:iterate from the organisation down to patients and their observations
    inc, matches = included(("_id", "o1"), ("_revinclude", "Patient:organization"),
                            ("_revinclude:iterate", "Observation:subject"), rtype="Organization")
    assert inc == sorted(["Patient/a", f"Observation/{o1}", f"Observation/{o2}"]) and matches == ["o1"]
    # * follows every reference parameter; a match is never repeated as an include
    inc, _ = included(("_id", o1), ("_include", "*"), rtype="Observation")
    assert inc == ["Patient/a"]
    inc, matches = included(("_revinclude", "Observation:subject"), ("_include", "Patient:link"))
    assert matches == ["a", "b"] and len(inc) == 3
    # unknown include targets are ignored (lenient) or refused (strict)
    assert store.search("Patient", [("_include", "Patient:nonsense")]).params == []
    with pytest.raises(FhirError):
        store.search("Patient", [("_include", "Patient:nonsense")], strict=True)
    with pytest.raises(FhirError):
        store.search("Patient", [("_include", "nonsense")])


def test_include_cycles_end(store):
    store.update("Organization", "x", {"resourceType": "Organization", "id": "x", "name": "X",
                                       "partOf": {"reference": "Organization/y"}})
    store.update("Organization", "y", {"resourceType": "Organization", "id": "y", "name": "Y",
                                       "partOf": {"reference": "Organization/x"}})
    result = store.search("Organization", [("_id", "x"), ("_include:iterate", "Organization:partof")])
    assert [s.id for s in result.included] == ["y"]
    result = store.search("Organization", [("_id", "x"), ("_revinclude:iterate", "Organization:partof")])
    assert [s.id for s in result.included] == ["y"]


def test_system_search_and_type_filter(store, ten):
    store.create(glucose("p0", 6.0))
    assert store.search(None, [("_type", "Patient,Observation"), ("_summary", "count")]).total == 12
    assert store.search(None, [("_type", "Observation")]).matches[0].type == "Observation"
    assert store.search("Patient", [("_type", "Observation"), ("_summary", "count")]).total == 0
    assert store.search(None, [("_id", "p0"), ("_type", "Patient")]).matches[0].id == "p0"
    with pytest.raises(FhirError):
        store.search(None, [("_type", "Nonsense")])


def test_compartment_with_parameters(store, ten):
    mine = store.create(bp("p0", 150)).stored.id
    store.create(bp("p1", 150))
    result = store.search("Observation", [("component-code-value-quantity",
                                           "http://loinc.org|8480-6$gt140")],
                          compartment=("Patient", "p0"))
    assert page_ids(result) == [mine]
    assert page_ids(store.search("Patient", [], compartment=("Patient", "p0"))) == ["p0"]
    assert store.search(None, [("_summary", "count")], compartment=("Patient", "p0")).total == 2


def test_wide_terms_read_in_rid_order_give_the_same_pages(store, ten, monkeypatch):
    """A term that selects many rows is probed along the type's resources in rid order instead
    of driving (SQLite); the pages are the same."""
    from songkhoe.store import search_exec

    queries = [[("family", "ng")], [("gender", "male"), ("birthdate", "gt1960")],
               [("name", "nguyen"), ("gender", "male")], [("birthdate", "ge1960-05-01")]]

    def pages():
        return [walk(store, [*q, ("_count", "2")])[0] for q in queries]

    driven = pages()
    monkeypatch.setattr(search_exec, "WIDE", 1)
    assert pages() == driven and all(p for p in driven)
