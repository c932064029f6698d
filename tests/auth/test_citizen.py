"""Citizen (patient-facing) accounts: a Patient per account, patient-context tokens
(SMART launch context ``patient``, ``fhirUser``), the role's read-and-search ceiling, the
administration commands, password reset and the demo citizen. Every test runs on both
backends."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from songkhoe.auth import ROLES, Auth
from songkhoe.auth.demo import demo_users
from songkhoe.auth.policy import rule_for
from songkhoe.cli import main

from .conftest import PASSWORD, password_token

PID = "bn-0001"


def _patient(store: Any, pid: str = PID, org: str = "tyt-00004") -> None:
    store.update("Patient", pid, {"resourceType": "Patient", "id": pid,
                                  "name": [{"family": "Nguyễn", "given": ["Thị", "Lan"]}],
                                  "managingOrganization": {"reference": f"Organization/{org}"}})


@pytest.fixture
def citizen(store: Any, auth: Auth) -> str:
    _patient(store)
    auth.identities.add_user("lan", PASSWORD, "citizen", patient=PID)
    return "lan"


def _claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


# --- the account ------------------------------------------------------------------------------


def test_citizen_role_reads_and_searches_only_in_patient_context() -> None:
    assert ROLES["citizen"] == "patient/*.rs"


def test_a_citizen_needs_a_patient_and_nobody_else_has_one(auth: Auth) -> None:
    with pytest.raises(ValueError, match="needs the id of the Patient"):
        auth.identities.add_user("lan", PASSWORD, "citizen")
    with pytest.raises(ValueError, match="not to an Organization"):
        auth.identities.add_user("lan", PASSWORD, "citizen", "tyt-00004", patient=PID)
    with pytest.raises(ValueError, match="not to an Organization or a Practitioner"):
        auth.identities.add_user("lan", PASSWORD, "citizen", patient=PID, practitioner="pr-1")
    with pytest.raises(ValueError, match="only citizen accounts speak for a Patient"):
        auth.identities.add_user("bacsi", PASSWORD, "doctor", "tyt-00004", patient=PID)
    with pytest.raises(ValueError, match="Patient id .bn 1. is not a valid id"):
        auth.identities.add_user("lan", PASSWORD, "citizen", patient="bn 1")
    with pytest.raises(ValueError, match="not for clients"):
        auth.identities.add_client("app", secret="s3cret-s3cret", role="citizen")
    assert auth.identities.users() == []
    user = auth.identities.add_user("lan", PASSWORD, "citizen", patient=f"Patient/{PID}")
    assert (user.role, user.patient, user.org, user.practitioner) == ("citizen", PID, None, None)
    assert auth.identities.user("lan") == user


def test_relinking_a_citizen(auth: Auth, citizen: str) -> None:
    auth.identities.set_patient(citizen, "bn-0002")
    assert auth.identities.user(citizen).patient == "bn-0002"  # type: ignore[union-attr]
    auth.identities.add_user("bacsi", PASSWORD, "doctor", "tyt-00004")
    with pytest.raises(ValueError, match="only citizen accounts"):
        auth.identities.set_patient("bacsi", PID)
    with pytest.raises(ValueError, match="no user"):
        auth.identities.set_patient("nobody", PID)


# --- tokens -----------------------------------------------------------------------------------


def test_citizen_token_carries_the_patient_launch_context(http, auth: Auth, citizen: str) -> None:
    answer = password_token(http, citizen)
    assert answer["patient"] == PID  # SMART: launch context next to the access token
    assert answer["scope"] == "patient/*.rs"
    claims = _claims(answer["access_token"])
    assert claims["patient"] == PID and claims["fhirUser"] == f"Patient/{PID}"
    assert claims["role"] == "citizen" and claims["org"] is None
    ctx = auth.verify(answer["access_token"])
    assert (ctx.patient, ctx.role, ctx.org) == (PID, "citizen", None)
    for type_ in ("Patient", "Observation", "Condition"):
        assert ctx.scopes.permits(type_, "r") and ctx.scopes.permits(type_, "s")
        for action in "cud":
            assert not ctx.scopes.permits(type_, action)
    # what the store is told to filter by: that Patient's compartment, no Organization
    rule = rule_for(ctx, "Observation", "s")
    assert rule.allowed and rule.patient == PID and rule.org is None
    assert not rule_for(ctx, "Observation", "c").allowed


def test_citizen_cannot_ask_for_more(http, citizen: str) -> None:
    r = http.post("/auth/token", data={"grant_type": "password", "username": citizen,
                                       "password": PASSWORD, "scope": "user/*.rs"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    narrowed = password_token(http, citizen, scope="patient/Observation.cruds launch/patient")
    assert narrowed["scope"] == "patient/Observation.rs launch/patient"
    assert narrowed["patient"] == PID
    r = http.post("/auth/token", data={"grant_type": "password", "username": citizen,
                                       "password": PASSWORD, "purpose_of_use": "ETREAT"})
    assert r.status_code == 400 and "may not break the glass" in r.json()["error_description"]


def test_citizen_reads_their_record_and_writes_nothing(http, citizen: str) -> None:
    token = password_token(http, citizen)["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    r = http.get(f"/fhir/Patient/{PID}", headers=bearer)
    assert r.status_code == 200 and r.json()["id"] == PID
    r = http.post("/fhir/Observation", headers=bearer, json={
        "resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": f"Patient/{PID}"}})
    assert r.status_code == 403
    r = http.put(f"/fhir/Patient/{PID}", headers=bearer,
                 json={"resourceType": "Patient", "id": PID})
    assert r.status_code == 403


def test_citizen_sees_only_their_own_compartment(http, store, citizen: str) -> None:
    _patient(store, "bn-0002")
    for n, pid in enumerate((PID, "bn-0002", PID)):
        store.update("Observation", f"obs-{n}", {
            "resourceType": "Observation", "id": f"obs-{n}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "valueQuantity": {"value": 120 + n, "unit": "mm[Hg]",
                              "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}})
    bearer = {"Authorization": f"Bearer {password_token(http, citizen)['access_token']}"}

    def ids(url: str) -> list[str]:
        r = http.get(url, headers=bearer)
        assert r.status_code == 200, r.text
        return sorted(e["resource"]["id"] for e in r.json().get("entry", []))

    assert ids("/fhir/Patient") == [PID]
    assert ids("/fhir/Observation") == ["obs-0", "obs-2"]
    assert ids("/fhir/Observation?subject=Patient/bn-0002") == []
    assert http.get("/fhir/Patient/bn-0002", headers=bearer).status_code == 404
    assert http.get("/fhir/Observation/obs-1", headers=bearer).status_code == 404


def test_refresh_keeps_and_follows_the_patient(http, auth: Auth, citizen: str) -> None:
    first = password_token(http, citizen)
    r = http.post("/auth/token", data={"grant_type": "refresh_token",
                                       "refresh_token": first["refresh_token"]})
    assert r.status_code == 200, r.text
    assert r.json()["patient"] == PID and _claims(r.json()["access_token"])["patient"] == PID
    auth.identities.set_patient(citizen, "bn-0002")  # e.g. duplicate records merged
    r = http.post("/auth/token", data={"grant_type": "refresh_token",
                                       "refresh_token": r.json()["refresh_token"]})
    assert r.status_code == 200, r.text
    claims = _claims(r.json()["access_token"])
    assert r.json()["patient"] == "bn-0002"
    assert (claims["patient"], claims["fhirUser"]) == ("bn-0002", "Patient/bn-0002")


def test_a_citizen_without_patient_gets_no_token(http, auth: Auth, citizen: str) -> None:
    auth.db.run("UPDATE auth_users SET patient = NULL WHERE username = ?", (citizen,))
    r = http.post("/auth/token", data={"grant_type": "password", "username": citizen,
                                       "password": PASSWORD})
    assert r.status_code == 400 and "not linked to a Patient" in r.json()["error_description"]


def test_staff_tokens_name_their_practitioner_and_no_patient(http, auth: Auth) -> None:
    auth.identities.add_user("bacsi", PASSWORD, "doctor", "tyt-00004", practitioner="pr-1")
    answer = password_token(http, "bacsi")
    assert "patient" not in answer
    claims = _claims(answer["access_token"])
    assert claims["fhirUser"] == "Practitioner/pr-1" and "patient" not in claims
    ctx = auth.verify(answer["access_token"])
    assert ctx.patient is None
    assert ctx.practitioner == "pr-1"
    r = http.post("/auth/token", data={"grant_type": "refresh_token",
                                       "refresh_token": answer["refresh_token"]})
    assert _claims(r.json()["access_token"])["fhirUser"] == "Practitioner/pr-1"


# --- administration ---------------------------------------------------------------------------


def test_user_add_citizen_command(store, db_url, capsys) -> None:
    base = ["user", "add", "--db", db_url, "--username", "lan", "--password", PASSWORD,
            "--role", "citizen"]
    assert main(base) == 2
    assert "needs the id of the Patient" in capsys.readouterr().err
    assert main([*base, "--patient", PID]) == 2  # no such Patient in the store
    assert f"Patient/{PID} is not in this database" in capsys.readouterr().err
    _patient(store)
    assert main([*base, "--patient", PID, "--org", "tyt-00004"]) == 2
    assert main([*base, "--patient", PID]) == 0
    assert f"user lan added (citizen, Patient/{PID})" in capsys.readouterr().out
    assert main(["user", "add", "--db", db_url, "--username", "bacsi", "--password", PASSWORD,
                 "--role", "doctor", "--org", "tyt-00004", "--patient", PID]) == 2
    assert main(["user", "list", "--db", db_url]) == 0
    assert f"lan\tcitizen\tPatient/{PID}\tactive" in capsys.readouterr().out
    store.delete("Patient", PID)
    assert main([*base[:5], "lan2", *base[6:], "--patient", PID]) == 2
    assert "was deleted" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a system client cannot be a citizen
        main(["client", "add", "--db", db_url, "--client-id", "c", "--generate-secret",
              "--role", "citizen"])


def test_password_reset_forces_a_change_at_the_next_sign_in(http, db_url, citizen,
                                                             capsys) -> None:
    assert main(["user", "passwd", "--db", db_url, "--username", citizen]) == 0
    out = capsys.readouterr().out
    one_time = out.split(f"one-time password for {citizen}: ")[1].split()[0]
    assert "must be changed at the next sign-in" in out
    r = http.post("/auth/token", data={"grant_type": "password", "username": citizen,
                                       "password": PASSWORD})
    assert r.status_code == 400  # the old password is gone
    r = http.post("/auth/token", data={"grant_type": "password", "username": citizen,
                                       "password": one_time})
    assert r.status_code == 400 and "password_change_required" in r.json()["error_description"]
    new = "a new password of mine"
    answer = password_token(http, citizen, one_time, new_password=new)
    assert answer["patient"] == PID
    r = http.post("/auth/token", data={"grant_type": "password", "username": citizen,
                                       "password": one_time})
    assert r.status_code == 400  # the one-time password worked once
    password_token(http, citizen, new)  # no change asked any more
    # an administrator-chosen password is used as is, unless --must-change
    assert main(["user", "passwd", "--db", db_url, "--username", citizen,
                 "--password", PASSWORD, "--must-change"]) == 0
    r = http.post("/auth/token", data={"grant_type": "password", "username": citizen,
                                       "password": PASSWORD})
    assert r.status_code == 400 and "password_change_required" in r.json()["error_description"]


# --- demo -------------------------------------------------------------------------------------


def _demo_population(store: Any) -> None:
    from datetime import date

    from songkhoe.store.bulk import load
    from songkhoe.synth import SynthConfig, items

    config = SynthConfig(people=30, seed=1, provinces=(4,), communes_per_province=1,
                         as_of=date(2026, 11, 1))
    assert not load(store, items(config, workers=1)).rejected


def test_demo_citizen_speaks_for_a_patient_of_the_demo_station(store, http, auth) -> None:
    _demo_population(store)
    users = demo_users(auth, 4)
    station = users[0][3]
    username, password, role, where = users[-1]
    assert (username, role) == ("congdan-demo", "citizen") and where.startswith("Patient/")
    pid = where.removeprefix("Patient/")
    patient = store.read("Patient", pid).resource
    assert patient["managingOrganization"]["reference"] == f"Organization/{station}"
    answer = password_token(http, username, password)
    assert answer["patient"] == pid
    again = demo_users(auth, 4)  # a new password, the same Patient
    assert again[-1][3] == where and again[-1][1] != password
    auth.identities.authenticate(username, again[-1][1])


def test_serve_demo_prints_the_citizen(tmp_path, monkeypatch, capsys) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["serve", "--db", db, "--demo", "--demo-people", "20", "--demo-communes", "1",
                 "--demo-province", "4"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "congdan-demo" in x)
    assert "citizen" in line and "Patient/" in line and "Organization/" not in line
