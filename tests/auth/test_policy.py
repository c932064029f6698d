"""Access rules from an access context (``songkhoe.auth.policy``) and the Organization tree
the store keeps for them."""

from __future__ import annotations

from songkhoe.auth import AccessContext, ScopeSet
from songkhoe.auth.policy import ContextAccess, rule_for
from songkhoe.store.access import DENY


def _ctx(scopes: str, **kw) -> AccessContext:
    base = dict(subject="u", kind="user", role="doctor", org="so-04")
    base.update(kw)
    return AccessContext(scopes=ScopeSet.parse(scopes), **base)


def test_user_scope_limits_to_the_org_subtree() -> None:
    r = rule_for(_ctx("user/*.rs"), "Observation", "s")
    assert r.allowed and r.org == "so-04" and r.patient is None
    assert r.alternatives == () and not r.unrestricted


def test_no_grant_denies() -> None:
    assert rule_for(_ctx("user/Patient.rs"), "Observation", "r") == DENY
    assert rule_for(_ctx("user/*.rs"), "Patient", "c") == DENY


def test_admin_without_org_and_break_glass_lift_the_org_limit() -> None:
    assert rule_for(_ctx("user/*.cruds", org=None, role="administrator"), "Patient",
                    "d").unrestricted
    btg = _ctx("user/*.cruds", break_glass=True, purpose="ETREAT")
    assert rule_for(btg, "Patient", "r").org is None
    assert rule_for(btg, "Patient", "s").org is None
    assert rule_for(btg, "Patient", "u").org == "so-04"  # never for writes


def test_patient_scopes_need_and_use_the_patient_context() -> None:
    assert rule_for(_ctx("patient/*.rs"), "Observation", "r") == DENY
    r = rule_for(_ctx("patient/*.rs", patient="p1", org=None, role="citizen"), "Observation", "r")
    assert r.allowed and r.patient == "p1"


def test_researchers_never_read_identified_records() -> None:
    ctx = _ctx("user/*.rs", role="researcher")
    assert rule_for(ctx, "Patient", "r") == DENY
    assert rule_for(ctx, "Observation", "s") == DENY
    assert rule_for(ctx, "Organization", "s").allowed  # directory data


def test_specialists_also_see_their_consultations() -> None:
    assert rule_for(_ctx("user/*.rs", role="specialist", practitioner="pr1"), "Patient",
                    "r").practitioner == "pr1"
    assert rule_for(_ctx("user/*.rs", practitioner="pr1"), "Patient", "r").practitioner is None


def test_scope_queries_become_alternatives() -> None:
    ctx = _ctx("user/Observation.rs?category=laboratory user/Observation.rs?category=vital-signs")
    r = rule_for(ctx, "Observation", "s")
    assert r.alternatives == ((("category", "laboratory"),), (("category", "vital-signs"),))
    widened = _ctx("user/Observation.rs?category=laboratory user/*.rs")
    assert rule_for(widened, "Observation", "s").alternatives == ()


def test_rules_are_computed_once_per_context() -> None:
    access = ContextAccess(_ctx("user/*.rs"))
    assert access.rule("Patient", "r") is access.rule("Patient", "r")


def test_org_tree_follows_part_of(store) -> None:
    def org(id_: str, parent: str | None) -> None:
        body = {"resourceType": "Organization", "id": id_, "name": id_}
        if parent:
            body["partOf"] = {"reference": f"Organization/{parent}"}
        store.update("Organization", id_, body)

    def subtree(root: str) -> set[str]:
        with store.transaction() as tx:
            return {r[0] for r in tx._sql("SELECT org FROM org_tree WHERE ancestor = ?", [root])}

    org("moh", None)
    org("so-04", "moh")
    org("so-08", "moh")
    org("tyt-00001", "so-04")
    org("tyt-00002", "so-04")
    org("tyt-09999", "so-08")
    org("ward-1", "tyt-00001")
    assert subtree("so-04") == {"so-04", "tyt-00001", "tyt-00002", "ward-1"}
    assert subtree("tyt-00002") == {"tyt-00002"}
    assert len(subtree("moh")) == 7
    org("tyt-00002", "so-08")  # moved to another province
    assert subtree("so-08") == {"so-08", "tyt-09999", "tyt-00002"}
    org("a", "b")
    org("b", "a")  # a partOf cycle ends
    assert subtree("a") == {"a", "b"}


def test_only_administrators_and_systems_write_directory_data() -> None:
    assert rule_for(_ctx("user/*.cruds"), "Organization", "u") == DENY  # partOf moves scopes
    assert rule_for(_ctx("user/*.cruds"), "Organization", "r").allowed
    assert rule_for(_ctx("user/*.cruds"), "Patient", "u").allowed
    assert rule_for(_ctx("user/*.cruds", role="administrator", org=None), "Organization",
                    "c").unrestricted
