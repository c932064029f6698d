"""SMART App Launch 2.0 scope parsing (v2 permissions, v1 synonyms, query restrictions)."""

from __future__ import annotations

import pytest

from songkhoe.auth.scopes import Scope, ScopeError, ScopeSet, parse_scope


@pytest.mark.parametrize("text, context, type_, actions, params", [
    ("patient/*.rs", "patient", "*", "rs", ()),
    ("user/Observation.cruds", "user", "Observation", "cruds", ()),
    ("system/*.rs", "system", "*", "rs", ()),
    ("patient/Patient.r", "patient", "Patient", "r", ()),
    ("user/Encounter.cud", "user", "Encounter", "cud", ()),
    ("patient/Observation.read", "patient", "Observation", "rs", ()),  # v1
    ("user/*.write", "user", "*", "cud", ()),  # v1
    ("system/*.*", "system", "*", "cruds", ()),  # v1
    ("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/"
     "observation-category|laboratory", "patient", "Observation", "rs",
     (("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"),)),
])
def test_parse(text, context, type_, actions, params) -> None:
    s = parse_scope(text)
    assert (s.context, s.type, s.actions, s.params) == (context, type_, frozenset(actions), params)


@pytest.mark.parametrize("text", ["patient/*.sr", "patient/*.rr", "patient/*.x", "doctor/*.rs",
                                  "user/Observation", "user/*.", "user/*.readwrite",
                                  "patient/Obs-ervation.rs"])
def test_invalid(text) -> None:
    with pytest.raises(ScopeError, match="scope|permissions"):
        parse_scope(text)


def test_unknown_plain_scope_refused() -> None:
    with pytest.raises(ScopeError, match="unknown scope 'admin'"):
        ScopeSet.parse("openid admin")


def test_set_keeps_launch_scopes_and_checks_permissions() -> None:
    s = ScopeSet.parse("openid fhirUser launch/patient offline_access patient/Observation.rs "
                       "patient/Patient.r")
    assert s.other == {"openid", "fhirUser", "launch/patient", "offline_access"}
    assert s.permits("Observation", "s") and s.permits("Patient", "r")
    assert not s.permits("Patient", "s") and not s.permits("Observation", "c")
    assert not s.permits(None, "s")  # a system-wide search needs a * scope
    assert ScopeSet.parse("user/*.rs").permits(None, "s")
    grants = s.grants_for("Observation", "r")
    assert grants == [Scope("patient", "Observation", frozenset("rs"))]


@pytest.mark.parametrize("asked, ceiling, granted", [
    ("user/*.cruds", "user/*.rs", "user/*.rs"),
    ("user/Observation.cruds", "user/*.rs", "user/Observation.rs"),
    ("user/*.rus", "user/Observation.cu user/Patient.rs", "user/Observation.u user/Patient.rs"),
    ("system/*.rs", "user/*.cruds", ""),
    ("patient/*.rs", "user/*.cruds", "patient/*.rs"),
    ("user/*.rs", "patient/*.rs", ""),
    ("openid user/Patient.d", "user/*.rs", "openid"),
])
def test_within_ceiling(asked, ceiling, granted) -> None:
    assert str(ScopeSet.parse(asked).within(ScopeSet.parse(ceiling))) == granted


def test_round_trip() -> None:
    text = "user/Observation.rus patient/*.rs?category=vital-signs openid"
    assert ScopeSet.parse(str(ScopeSet.parse(text))) == ScopeSet.parse(text)
