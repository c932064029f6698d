"""Row-level access inside the store (``songkhoe.store.access``): ownership kept at write
time, and every kind of statement limited to what the rule allows."""

from __future__ import annotations

from typing import Any

import pytest

from songkhoe.fhir.outcome import FhirError
from songkhoe.store.access import DENY, Rule, acting_as, backfill_statements


class Fixed:
    """An Access giving ``rule`` for every type and action, except those in ``by_type``."""

    def __init__(self, rule: Rule, **by_type: Rule) -> None:
        self.default = rule
        self.by_type = by_type

    def rule(self, rtype: str, action: str) -> Rule:
        return self.by_type.get(rtype, self.default)


def _org(store: Any, id_: str, parent: str | None) -> None:
    body: dict[str, Any] = {"resourceType": "Organization", "id": id_, "name": id_}
    if parent:
        body["partOf"] = {"reference": f"Organization/{parent}"}
    store.update("Organization", id_, body)


def _patient(id_: str, org: str | None, family: str = "Nguyễn") -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "id": id_, "name": [{"family": family}]}
    if org:
        body["managingOrganization"] = {"reference": f"Organization/{org}"}
    return body


def _obs(pid: str, code: str = "8480-6", category: str = "vital-signs") -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                "observation-category", "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{pid}"}}


@pytest.fixture
def world(store: Any) -> Any:
    """moh → so-1 → {tyt-a, tyt-b}; moh → so-2 → tyt-c; patients pa, pb, pc of each station
    with two Observations each, and an Encounter of pa."""
    for id_, parent in [("moh", None), ("so-1", "moh"), ("tyt-a", "so-1"), ("tyt-b", "so-1"),
                        ("so-2", "moh"), ("tyt-c", "so-2")]:
        _org(store, id_, parent)
    for pid, org in [("pa", "tyt-a"), ("pb", "tyt-b"), ("pc", "tyt-c")]:
        store.update("Patient", pid, _patient(pid, org))
        store.create(_obs(pid))
        store.create(_obs(pid, "718-7", "laboratory"))
    store.create({"resourceType": "Encounter", "status": "finished",
                  "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                            "code": "AMB"}, "subject": {"reference": "Patient/pa"}})
    return store


def _ids(page: Any) -> list[str]:
    return sorted(s.id for s in page.matches)


def _subjects(store: Any, params: list[tuple[str, str]]) -> list[str]:
    return sorted(s.resource["subject"]["reference"] for s in
                  store.search("Observation", params).matches)


def _owners(store: Any) -> set[tuple[Any, ...]]:
    with store.transaction() as tx:
        return {tuple(r) for r in tx._sql("SELECT rid, type, patient, org FROM owners")}


# --- ownership ------------------------------------------------------------------------------


def test_owners_follow_the_compartment_and_the_managing_organization(world) -> None:
    rows = _owners(world)
    assert {(t, p, o) for _, t, p, o in rows} == {
        ("Patient", "pa", "tyt-a"), ("Observation", "pa", "tyt-a"), ("Encounter", "pa", "tyt-a"),
        ("Patient", "pb", "tyt-b"), ("Observation", "pb", "tyt-b"),
        ("Patient", "pc", "tyt-c"), ("Observation", "pc", "tyt-c")}
    assert len(rows) == 3 + 6 + 1  # directory types own nothing


def test_a_moved_patient_takes_its_compartment_along(world) -> None:
    world.update("Patient", "pa", _patient("pa", "tyt-c"))
    assert {o for _, _, p, o in _owners(world) if p == "pa"} == {"tyt-c"}
    with acting_as(Fixed(Rule(org="so-2"))):
        assert _subjects(world, []) == ["Patient/pa"] * 2 + ["Patient/pc"] * 2


def test_resources_written_before_their_patient_are_owned_once_it_exists(store) -> None:
    _org(store, "tyt-a", None)
    with store.transaction() as tx:
        tx.create(_obs("late"))
        tx.flush()  # the Observation's rows are written before the Patient exists
        tx.update("Patient", "late", _patient("late", "tyt-a"))
    assert {o for _, _, _, o in _owners(store)} == {"tyt-a"}


def test_incremental_ownership_equals_a_rebuild(world) -> None:
    world.update("Patient", "pb", _patient("pb", "tyt-c"))
    world.delete("Observation", world.search("Observation", [("subject", "Patient/pc")]).matches[0].id)
    world.update("Patient", "px", {**_patient("px", None), "link": [
        {"other": {"reference": "Patient/pa"}, "type": "seealso"}]})
    kept = _owners(world)
    with world.transaction() as tx:
        tree = {tuple(r) for r in tx._sql("SELECT ancestor, org FROM org_tree")}
        tx._sql("DELETE FROM owners")
        tx._sql("DELETE FROM org_tree")
        for sql in backfill_statements():
            tx._sql(sql)
    # a deleted resource keeps its owners incrementally (its history stays in scope); the
    # rebuild reads the index rows, which deleted resources no longer have
    deleted_rids = {rid for rid, t, p, _ in kept if t == "Observation" and p == "pc"} - \
        {rid for rid, *_ in _owners(world)}
    assert _owners(world) == {r for r in kept if r[0] not in deleted_rids}
    assert len(deleted_rids) == 1
    with world.transaction() as tx:
        assert {tuple(r) for r in tx._sql("SELECT ancestor, org FROM org_tree")} == tree


# --- reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize("org, patients", [("tyt-a", ["pa"]), ("so-1", ["pa", "pb"]),
                                           ("moh", ["pa", "pb", "pc"]), ("nowhere", [])])
def test_search_count_and_paging_see_the_subtree_only(world, org, patients) -> None:
    with acting_as(Fixed(Rule(org=org))):
        page = world.search("Patient", [("name", "nguyen"), ("_total", "accurate")])
        assert _ids(page) == patients and page.total == len(patients)
        assert world.search("Observation", [("_summary", "count")]).total == 2 * len(patients)
        first = world.search("Observation", [("_count", "1")])
        seen = [s.id for s in first.matches]
        cursor = first.next_cursor
        while cursor:
            page = world.search("Observation", [("_count", "1"), ("_cursor", cursor)])
            seen += [s.id for s in page.matches]
            cursor = page.next_cursor
        assert len(seen) == 2 * len(patients)
        assert _ids(world.search("Organization", [])) == sorted(
            ["moh", "so-1", "so-2", "tyt-a", "tyt-b", "tyt-c"])  # directory data


def test_read_history_and_everything_hide_other_communes(world) -> None:
    with acting_as(Fixed(Rule(org="tyt-a"))):
        assert world.read("Patient", "pa").id == "pa"
        for call in (lambda: world.read("Patient", "pb"), lambda: world.vread("Patient", "pb", 1),
                     lambda: world.history("Patient", "pb"), lambda: world.everything("pb")):
            with pytest.raises(FhirError) as err:
                call()
            assert err.value.status == 404
        assert {s.type for s in world.everything("pa").matches} == {"Patient", "Observation",
                                                                   "Encounter"}
        refs = {f"{v.type}/{v.id}" for v in world.history(count=1000).versions}
        assert "Patient/pa" in refs and "Patient/pb" not in refs and "Organization/so-2" in refs
        assert {v.id for v in world.history("Patient").versions} == {"pa"}
        assert world.search("Observation", [("_total", "accurate")],
                            compartment=("Patient", "pb")).total == 0


def test_includes_chains_and_has_do_not_pass_through_hidden_rows(world) -> None:
    world.update("Patient", "pb", {**_patient("pb", "tyt-b"), "link": [
        {"other": {"reference": "Patient/pc"}, "type": "seealso"}]})
    with acting_as(Fixed(Rule(org="so-1"))):
        page = world.search("Patient", [("_id", "pb"), ("_include", "Patient:link")])
        assert _ids(page) == ["pb"] and page.included == []  # pc is in so-2
        assert world.search("Patient", [("link:Patient.name", "nguyen")]).matches == []
        assert _ids(world.search("Patient", [("_has:Observation:subject:code", "8480-6")])) == \
            ["pa", "pb"]
        revs = world.search("Patient", [("_revinclude", "Observation:subject")])
        assert {s.resource["subject"]["reference"] for s in revs.included} == {
            "Patient/pa", "Patient/pb"}
    with acting_as(Fixed(Rule(org="so-2"))):
        # pc sees the Patient pb links to it, through pb's compartment (link): it belongs to
        # both; the link lets pc's province see pb, as the compartment definition says
        assert "pb" in _ids(world.search("Patient", [("name", "nguyen")]))
        assert _subjects(world, [("subject.name", "nguyen")]) == ["Patient/pc"] * 2


def test_patient_context_and_scope_queries(world) -> None:
    with acting_as(Fixed(Rule(patient="pb"))):
        assert _ids(world.search("Patient", [])) == ["pb"]
        assert _subjects(world, []) == ["Patient/pb"] * 2
    lab = Rule(org="so-1", alternatives=((("category", "laboratory"),),))
    with acting_as(Fixed(Rule(org="so-1"), Observation=lab)):
        assert _subjects(world, []) == ["Patient/pa", "Patient/pb"]
        assert world.search("Observation", [("code", "8480-6"), ("_total", "accurate")]).total == 0
        assert _ids(world.search("Patient", [("_has:Observation:subject:code", "8480-6")])) == []


def test_consultations_widen_a_specialists_view(world) -> None:
    world.create({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                  "subject": {"reference": "Patient/pc"},
                  "performer": [{"reference": "Practitioner/pr-1"}]})
    with acting_as(Fixed(Rule(org="tyt-a", practitioner="pr-1"))):
        assert _ids(world.search("Patient", [])) == ["pa", "pc"]
    with acting_as(Fixed(Rule(org="tyt-a", practitioner="pr-2"))):
        assert _ids(world.search("Patient", [])) == ["pa"]


def test_a_denied_type_is_403_and_absent_from_system_searches(world) -> None:
    with acting_as(Fixed(Rule(org="tyt-a"), Observation=DENY)):
        for call in (lambda: world.search("Observation", []),
                     lambda: world.read("Observation", "x")):
            with pytest.raises(FhirError) as err:
                call()
            assert err.value.status == 403
        types = {s.type for s in world.search(None, [("_count", "100")]).matches}
        assert "Observation" not in types and "Patient" in types
        page = world.search("Patient", [("_revinclude", "Observation:subject")])
        assert page.included == []


# --- writing ---------------------------------------------------------------------------------


def test_writes_stay_inside_the_scope(world) -> None:
    with acting_as(Fixed(Rule(org="tyt-a"))):
        assert world.create(_obs("pa")).outcome == "created"
        for call in (lambda: world.create(_obs("pb")),
                     lambda: world.update("Patient", "pn", _patient("pn", "tyt-b")),
                     lambda: world.update("Patient", "pa", _patient("pa", "tyt-b")),  # taking it
                     lambda: world.update("Patient", "pb", _patient("pb", "tyt-a")),  # stealing
                     lambda: world.create(_patient("x", None))):
            with pytest.raises(FhirError) as err:
                call()
            assert err.value.status == 403
        hidden = world.search("Observation", [], compartment=("Patient", "pa")).matches[0]
    with acting_as(Fixed(Rule(org="tyt-b"))):
        assert world.delete("Observation", hidden.id).outcome == "unchanged"
    assert world.read("Observation", hidden.id).id == hidden.id  # still there
    assert world.read("Patient", "pa").resource["managingOrganization"]["reference"] == \
        "Organization/tyt-a"
    assert world.search("Observation", [("subject", "Patient/pb"), ("_total", "accurate")]).total == 2


def test_a_transaction_may_write_a_patient_after_its_observations(world) -> None:
    with acting_as(Fixed(Rule(org="tyt-a"))):
        with world.transaction() as tx:
            tx.create(_obs("new"))
            tx.update("Patient", "new", _patient("new", "tyt-a"))
        with pytest.raises(FhirError):
            with world.transaction() as tx:
                tx.create(_obs("other"))
                tx.update("Patient", "other", _patient("other", "tyt-c"))
    assert world.search("Observation", [("subject", "Patient/other")]).matches == []
    with pytest.raises(FhirError):
        world.read("Patient", "other")


def test_if_match_tells_nothing_of_a_hidden_version(world) -> None:
    with acting_as(Fixed(Rule(org="tyt-a"))):
        with pytest.raises(FhirError) as err:
            world.delete("Patient", "pb", if_match=7)
        assert err.value.status == 412 and "does not exist" in str(err.value.issues[0].diagnostics)
        with pytest.raises(FhirError) as err:
            world.update("Patient", "pb", _patient("pb", "tyt-a"), if_match=7)
        assert err.value.status == 403
    assert world.read("Patient", "pb").version == 1


def test_remembered_conditions_are_the_compiled_ones() -> None:
    from songkhoe.store import search_access
    from songkhoe.store.search_sql import Ctx

    rules = [Rule(True, org="so-1"), Rule(True, org="so-1", practitioner="pr-1"),
             Rule(True, patient="pa"), Rule(True)]
    for rule in rules:
        for rtype in ("Observation", "Organization"):
            for start in (0, 4):
                first, fresh, again = (Ctx("sqlite", start) for _ in range(3))
                compiled = search_access._compile_condition(rule, rtype, "r", fresh)
                assert search_access._rule_condition(rule, rtype, "r", first) == compiled
                assert search_access._rule_condition(rule, rtype, "r", again) == compiled
                assert first.counter == fresh.counter == again.counter  # aliases alike
            guard = search_access.Guard(Fixed(rule), None)
            compiled = search_access._compile_condition(rule, rtype, "r", Ctx("sqlite"))
            expected = (f" AND {compiled[0]}", compiled[1]) if compiled else ("", [])
            assert guard.limit(rtype, "r", "sqlite") == expected  # compiled, then remembered
            assert guard.limit(rtype, "r", "sqlite") == expected


def test_reads_under_a_remembered_condition_see_what_they_saw(world) -> None:
    from songkhoe.store import search_access

    subtree = Fixed(Rule(True, org="tyt-a"))
    search_access._CONDITIONS.clear()
    search_access._LIMITS.clear()
    for _ in range(2):  # compiled, then remembered
        with acting_as(subtree):
            assert world.read("Patient", "pa").id == "pa"
            with pytest.raises(FhirError) as err:
                world.read("Patient", "pb")
            assert err.value.status == 404
