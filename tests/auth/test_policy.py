"""Row policies (the interface of the store-side step) and the Organization subtree."""

from __future__ import annotations

from songkhoe.auth import AccessContext, ScopeSet
from songkhoe.auth.orgs import org_subtree
from songkhoe.auth.policy import DENY, row_policy


def _ctx(scopes: str, **kw) -> AccessContext:
    base = dict(subject="u", kind="user", role="doctor", org="so-04")
    base.update(kw)
    return AccessContext(scopes=ScopeSet.parse(scopes), **base)


def _tree(org: str) -> frozenset[str]:
    return frozenset({org, "tyt-00001", "tyt-00002"})


def test_user_scope_limits_to_the_org_subtree() -> None:
    p = row_policy(_ctx("user/*.rs"), "Observation", "s", _tree)
    assert p.allowed and p.orgs == {"so-04", "tyt-00001", "tyt-00002"} and p.patient is None
    assert p.alternatives == () and not p.unrestricted


def test_no_grant_denies() -> None:
    assert row_policy(_ctx("user/Patient.rs"), "Observation", "r", _tree) == DENY
    assert row_policy(_ctx("user/*.rs"), "Patient", "c", _tree) == DENY


def test_admin_without_org_and_break_glass_lift_the_org_limit() -> None:
    assert row_policy(_ctx("user/*.cruds", org=None, role="administrator"), "Patient", "d",
                      _tree).unrestricted
    p = row_policy(_ctx("user/*.rs", break_glass=True, purpose="ETREAT"), "Patient", "r", _tree)
    assert p.allowed and p.orgs is None


def test_patient_scopes_need_and_use_the_patient_context() -> None:
    assert row_policy(_ctx("patient/*.rs"), "Observation", "r", _tree) == DENY
    p = row_policy(_ctx("patient/*.rs", patient="p1", org=None), "Observation", "r", _tree)
    assert p.allowed and p.patient == "p1"


def test_scope_queries_become_alternatives() -> None:
    ctx = _ctx("user/Observation.rs?category=laboratory user/Observation.rs?category=vital-signs")
    p = row_policy(ctx, "Observation", "s", _tree)
    assert p.alternatives == ((("category", "laboratory"),), (("category", "vital-signs"),))
    widened = _ctx("user/Observation.rs?category=laboratory user/*.rs")
    assert row_policy(widened, "Observation", "s", _tree).alternatives == ()


def test_org_subtree_follows_part_of(store) -> None:
    def org(id_: str, parent: str | None) -> None:
        body = {"resourceType": "Organization", "id": id_, "name": id_}
        if parent:
            body["partOf"] = {"reference": f"Organization/{parent}"}
        store.update("Organization", id_, body)

    org("moh", None)
    org("so-04", "moh")
    org("so-08", "moh")
    org("tyt-00001", "so-04")
    org("tyt-00002", "so-04")
    org("tyt-09999", "so-08")
    org("ward-1", "tyt-00001")
    assert org_subtree(store, "so-04") == {"so-04", "tyt-00001", "tyt-00002", "ward-1"}
    assert org_subtree(store, "tyt-00002") == {"tyt-00002"}
    assert len(org_subtree(store, "moh")) == 7
