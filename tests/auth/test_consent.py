"""Research consent: the decision for one person, and the cohort filter research exports call.

Every case is decided twice: from the resources directly (``decide``) and through a store on
both backends (``research_decisions``: written, searched back in batches, decided).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from songkhoe.auth import consent as rc
from songkhoe.store.bulk import load

AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
V3 = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


Purpose = tuple[str | dict[str, str], ...]  # v3-ActReason codes, or whole codings


def rule(kind: str | None = "permit", *, purpose: Purpose | None = ("HRESCH",),
         period: tuple[str | None, str | None] | None = None,
         nested: tuple[dict[str, Any], ...] = (), **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if kind:
        out["type"] = kind
    if period:
        out["period"] = {k: v for k, v in zip(("start", "end"), period) if v}
    if purpose:
        out["purpose"] = [p if isinstance(p, dict) else {"system": V3, "code": p} for p in purpose]
    out.update(extra)
    if nested:
        out["provision"] = list(nested)
    return out


def consent(id: str, patient: str, provision: dict[str, Any] | None, *,
            recorded: str = "2025-01-10T09:00:00+07:00", status: str = "active",
            scope: str = "research", policy: str | None = "OPTIN") -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Consent", "id": id, "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": scope}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "57016-8"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "dateTime": recorded,
    }
    if policy:
        out["policyRule"] = {"coding": [{"system": ACT_CODE, "code": policy}]}
    if provision is not None:
        out["provision"] = provision
    return out


LOCAL = {"system": "urn:local:purpose", "code": "R"}  # a purpose we cannot place
OBSERVATIONS = {"class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]}

# name -> (the person's Consents as (provision, keyword arguments), opt-in result, opt-out result)
CASES: dict[str, tuple[list[tuple[dict[str, Any] | None, dict[str, Any]]], bool, bool]] = {
    "permit": ([(rule("permit"), {})], True, True),
    "deny": ([(rule("deny"), {"policy": "OPTOUT"})], False, False),
    "none": ([], False, True),
    "inactive permit": ([(rule("permit"), {"status": "inactive"})], False, True),
    "inactive deny": ([(rule("deny"), {"status": "inactive"})], False, True),
    "draft and rejected": ([(rule("permit"), {"status": "draft"}),
                            (rule("deny"), {"status": "rejected"})], False, True),
    "other scope": ([(rule("deny"), {"scope": "patient-privacy"})], False, True),
    "expired permit": ([(rule("permit", period=("2024-01-01", "2025-12-31")), {})], False, True),
    "expired deny": ([(rule("deny", period=("2024-01-01", "2025-12-31")), {})], False, True),
    "permit from later": ([(rule("permit", period=("2026-07-01", None)), {})], False, True),
    "permit until today": ([(rule("permit", period=("2025-01-10", "2026-06-01")), {})], True, True),
    "given after the instant": ([(rule("deny"), {"recorded": "2026-06-02T08:00:00+07:00"})],
                                False, True),
    "about treatment only": ([(rule("deny", purpose=("TREAT",)), {})], False, True),
    "no purpose": ([(rule("permit", purpose=None), {})], True, True),
    "biomedical research only": ([(rule("permit", purpose=("BIORCH",)), {})], False, False),
    "deny clinical trials only": ([(rule("deny", purpose=("CLINTRCH",)), {})], False, False),
    "permit for a purpose of a local system": ([(rule("permit", purpose=(LOCAL,)), {})],
                                               False, False),
    "deny for a purpose of a local system": ([(rule("permit", nested=(
        rule("deny", purpose=(LOCAL,)),)), {})], False, False),
    "nested deny": ([(rule("permit", nested=(rule("deny"),)), {})], False, False),
    "nested permit": ([(rule("deny", nested=(rule("permit"),)), {"policy": "OPTOUT"})], True, True),
    "nested deny of part": ([(rule("permit", nested=(rule("deny", **OBSERVATIONS),)), {})],
                            False, False),
    "nested permit of part": ([(rule("deny", nested=(rule("permit", **OBSERVATIONS),)),
                                {"policy": "OPTOUT"})], False, False),
    "nested deny expired": ([(rule("permit", nested=(rule("deny", period=("2020", "2021")),)), {})],
                            True, True),
    "nested deny for treatment": ([(rule("permit", nested=(
        rule("deny", purpose=("TREAT",)),)), {})], True, True),
    "exception to the exception": ([(rule("permit", nested=(
        rule("deny", nested=(rule("permit"),)),)), {})], True, True),
    "partial permit beside a full permit": ([(rule("deny", nested=(
        rule("permit"), rule("permit", **OBSERVATIONS))), {"policy": "OPTOUT"})], True, True),
    "deny beats permit among exceptions": ([(rule("deny", nested=(
        rule("permit"), rule("deny", period=("2026", None)))), {"policy": "OPTOUT"})],
        False, False),
    "restricted to some data": ([(rule("permit", **OBSERVATIONS), {})], False, False),
    "restricted to one recipient": ([(rule("permit", actor=[{
        "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                             "code": "IRCP"}]},
        "reference": {"reference": "Organization/vien-nghien-cuu"}}]), {})], False, False),
    "base rule from policyRule": ([(rule(None), {"policy": "OPTIN"})], True, True),
    "base rule from OPTOUT": ([(rule(None, nested=(rule("permit", purpose=("TREAT",)),)),
                                {"policy": "OPTOUT"})], False, False),
    "no base rule at all": ([(rule(None), {"policy": None})], False, False),
    "no provision": ([(None, {})], False, False),
    "latest wins: deny after permit": ([(rule("permit"), {"recorded": "2024-03-01"}),
                                        (rule("deny"), {"recorded": "2025-03-01"})], False, False),
    "latest wins: permit after deny": ([(rule("deny"), {"recorded": "2024-03-01"}),
                                        (rule("permit"), {"recorded": "2025-03-01"})], True, True),
    "latest wins over an inactive later one": ([(rule("permit"), {"recorded": "2024-03-01"}),
                                                (rule("deny"), {"recorded": "2025-03-01",
                                                                "status": "inactive"})],
                                               True, True),
    "latest expired, older applies": ([(rule("deny"), {"recorded": "2023-03-01"}),
                                       (rule("permit", period=("2024-01-01", "2025-01-01")),
                                        {"recorded": "2024-01-01"})], False, False),
}


def _person(name: str) -> str:
    return "p-" + "".join(c if c.isalnum() else "-" for c in name)[:60]


def _resources(name: str) -> list[dict[str, Any]]:
    pid = _person(name)
    out = []
    for n, (provision, kwargs) in enumerate(CASES[name][0]):
        out.append(consent(f"{pid[2:][:50]}-{n}", pid, provision, **kwargs))
    return out


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("default", ["opt-in", "opt-out"])
def test_decision(name: str, default: str) -> None:
    _, opt_in, opt_out = CASES[name]
    expected = opt_in if default == "opt-in" else opt_out
    decision = rc.decide(_resources(name), at=AT, default=default)
    assert decision.permitted is expected, (name, decision)
    assert decision.reason
    if decision.consent is None:
        assert default in decision.reason


def test_the_deciding_consent_is_named() -> None:
    resources = _resources("latest wins: deny after permit")
    decision = rc.decide(resources, at=AT)
    assert decision == rc.Decision(False, f"Consent/{resources[1]['id']}", decision.reason)
    assert rc.decide([], at=AT).consent is None
    # the same Consents at an instant before the deny was given: the permit decides
    earlier = rc.decide(resources, at=datetime(2024, 6, 1, tzinfo=UTC))
    assert earlier.permitted and earlier.consent == f"Consent/{resources[0]['id']}"


def test_a_narrower_export_purpose_is_matched_by_the_broader_consent() -> None:
    permit_all = [consent("a", "x", rule("permit"))]
    permit_trials = [consent("b", "x", rule("permit", purpose=("CLINTRCH",)))]
    deny_biomedical = [consent("c", "x", rule("deny", purpose=("BIORCH",)), policy="OPTOUT")]
    assert rc.decide(permit_all, at=AT, purpose="CLINTRCHPC").permitted
    assert rc.decide(permit_trials, at=AT, purpose="CLINTRCH").permitted
    assert rc.decide(permit_trials, at=AT, purpose="CLINTRCHNPC").permitted
    assert not rc.decide(permit_trials, at=AT, purpose="HRESCH").permitted
    assert not rc.decide(permit_trials, at=AT, purpose="BIORCH").permitted  # silent: default
    assert rc.decide(permit_trials, at=AT, purpose="BIORCH").consent is None
    assert rc.decide(deny_biomedical, at=AT, purpose="CLINTRCH", default="opt-out").permitted
    assert not rc.decide(deny_biomedical, at=AT, purpose="HRESCH", default="opt-out").permitted


def test_the_whole_record_named_as_data_is_no_restriction() -> None:
    data = [{"meaning": "related", "reference": {"reference": "Patient/x"}}]
    assert rc.decide([consent("a", "x", rule("permit", data=data))], at=AT).permitted
    other = [{"meaning": "instance", "reference": {"reference": "Observation/o1"}}]
    assert not rc.decide([consent("a", "x", rule("permit", data=other))], at=AT).permitted


def test_inputs_are_checked(store: Any) -> None:
    with pytest.raises(ValueError, match="default must be one of opt-in, opt-out"):
        rc.decide([], at=AT, default="opt-maybe")
    with pytest.raises(ValueError, match="default"):
        rc.research_cohort(store, ["a"], at=AT, default="optin")
    with pytest.raises(ValueError, match="timezone-aware"):
        rc.decide([], at=datetime(2026, 6, 1))
    with pytest.raises(TypeError, match="timezone-aware"):
        rc.research_cohort(store, ["a"], at="2026-06-01")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="research code"):
        rc.research_cohort(store, ["a"], at=AT, purpose="TREAT")
    with pytest.raises(ValueError, match="not a Patient id"):
        rc.research_cohort(store, ["a", "b,c"], at=AT)
    with pytest.raises(ValueError, match="not a Patient id"):
        rc.research_cohort(store, ["Patient/a"], at=AT)
    with pytest.raises(TypeError, match="not one string"):
        rc.research_cohort(store, "abc", at=AT)
    with pytest.raises(ValueError, match="batch"):
        rc.research_cohort(store, ["a"], at=AT, batch=0)
    with pytest.raises(ValueError, match="batch"):
        rc.research_cohort(store, ["a"], at=AT, batch=5000)
    with pytest.raises(TypeError, match="batch"):
        rc.research_cohort(store, ["a"], at=AT, batch=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a Patient id"):
        rc.research_cohort(store, ["a", 7], at=AT)  # type: ignore[list-item]
    assert rc.research_cohort(store, [], at=AT) == []


class Counting:
    """Operations that count the searches passed through."""

    def __init__(self, ops: Any) -> None:
        self.ops = ops
        self.searches: list[tuple[str | None, list[tuple[str, str]]]] = []

    def search(self, type: str | None, params: list[tuple[str, str]], **kwargs: Any) -> Any:
        self.searches.append((type, params))
        return self.ops.search(type, params, **kwargs)


def _patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "active": True}


def test_every_case_through_the_store(store: Any) -> None:
    resources: list[dict[str, Any]] = []
    for name in CASES:
        resources.append(_patient(_person(name)))
        resources += _resources(name)
    summary = load(store, [(f"test:{n}", r) for n, r in enumerate(resources)])
    assert not summary.rejected, summary.rejected
    people = [_person(name) for name in CASES]
    for default in ("opt-in", "opt-out"):
        counting = Counting(store)
        decisions = rc.research_decisions(counting, people, at=AT, default=default)
        assert len(counting.searches) == 1  # one batch
        for name in CASES:
            expected = rc.decide(_resources(name), at=AT, default=default)
            got = decisions[_person(name)]
            # the store returns only active research Consents; the decision is the same
            assert got.permitted is expected.permitted, name
            assert got.consent == expected.consent, name
        cohort = rc.research_cohort(store, people, at=AT, default=default)
        assert cohort == [p for p in people if decisions[p].permitted]


def test_a_cohort_of_1200_takes_three_searches(store: Any) -> None:
    people = [f"n{i:04d}" for i in range(1200)]
    items: list[tuple[str, dict[str, Any]]] = []
    for i, pid in enumerate(people):
        items.append((pid, _patient(pid)))
        if i % 3 == 0:
            items.append((pid, consent(f"c{i}", pid, rule("permit"))))
        elif i % 3 == 1:
            items.append((pid, consent(f"c{i}", pid, rule("deny"), policy="OPTOUT")))
    assert not load(store, items).rejected
    counting = Counting(store)
    cohort = rc.research_cohort(counting, people + people[:10], at=AT)  # repeats count once
    assert cohort == [p for i, p in enumerate(people) if i % 3 == 0]
    assert 1 <= len(counting.searches) <= 3
    for rtype, params in counting.searches:
        names = dict(params)
        assert rtype == "Consent"
        assert names["scope"] == "http://terminology.hl7.org/CodeSystem/consentscope|research"
        assert names["status"] == "active" and names["_count"] == "1000"
        assert len(names["patient"].split(",")) <= rc.BATCH
    everyone = rc.research_cohort(store, people, at=AT, default="opt-out")
    assert everyone == [p for i, p in enumerate(people) if i % 3 != 1]


def test_a_batch_with_more_consents_than_a_page_is_paged(store: Any) -> None:
    people = [f"m{i:03d}" for i in range(400)]
    items: list[tuple[str, dict[str, Any]]] = []
    for i, pid in enumerate(people):
        items.append((pid, _patient(pid)))
        # three Consents each (1,200 in the batch): an old permit, a newer deny for the odd
        # ones, and an inactive one
        items.append((pid, consent(f"{pid}-a", pid, rule("permit"), recorded="2024-01-01")))
        if i % 2:
            items.append((pid, consent(f"{pid}-b", pid, rule("deny"), recorded="2025-01-01")))
        else:
            items.append((pid, consent(f"{pid}-b", pid, rule("deny"), recorded="2025-01-01",
                                       status="inactive")))
        items.append((pid, consent(f"{pid}-c", pid, rule("permit"), recorded="2025-06-01",
                                   status="entered-in-error")))
    assert not load(store, items).rejected
    counting = Counting(store)
    cohort = rc.research_cohort(counting, people, at=AT)
    assert cohort == [p for i, p in enumerate(people) if i % 2 == 0]
    assert len(counting.searches) == 1  # 800 active Consents: one page
    counting = Counting(store)
    assert rc.research_cohort(counting, people, at=AT, batch=30) == cohort
    assert len(counting.searches) == 14  # ⌈400 / 30⌉ batches
    # more active Consents than a page in one batch: two older permits for everyone
    more = [(p, consent(f"{p}-d", p, rule("permit"), recorded="2023-01-01")) for p in people]
    more += [(p, consent(f"{p}-e", p, rule("permit"), recorded="2022-01-01")) for p in people]
    assert not load(store, more).rejected  # 1,400 active research Consents for 400 people
    counting = Counting(store)
    assert rc.research_cohort(counting, people, at=AT) == cohort
    assert len(counting.searches) == 2
    assert "_cursor" not in dict(counting.searches[0][1])
    assert "_cursor" in dict(counting.searches[1][1])
