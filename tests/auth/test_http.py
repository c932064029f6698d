"""The authorization server and the guard over HTTP: PKCE, client credentials (secret and
private_key_jwt), refresh rotation, forced password change, scope checks, the route table."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from starlette.routing import Route

from songkhoe.auth.refresh import RACE_WINDOW

from .conftest import PASSWORD, password_token, patient_of

REDIRECT = "https://app.example/callback"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


# --- the password grant and the guard -----------------------------------------------------


def test_password_grant_then_fhir_calls(http, doctor) -> None:
    answer = password_token(http, doctor)
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 300
    assert answer["scope"] == "user/*.cruds" and answer["refresh_token"]
    r = http.post("/fhir/Patient", json=patient_of("tyt-00004"),
                  headers={**_bearer(answer["access_token"]), "content-type": "application/fhir+json"})
    assert r.status_code == 201, r.text
    assert http.get(f"/fhir/Patient/{r.json()['id']}",
                    headers=_bearer(answer["access_token"])).status_code == 200


def test_wrong_password_is_an_oauth_error(http, doctor) -> None:
    r = http.post("/auth/token", data={"grant_type": "password", "username": doctor,
                                       "password": "not it at all"})
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_grant" and r.headers["cache-control"] == "no-store"


def test_no_token_is_401_with_challenge_and_outcome(http) -> None:
    r = http.get("/fhir/Patient")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith('Bearer realm="songkhoe"')
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["code"] == "login"
    r = http.get("/fhir/Patient", headers=_bearer("garbage"))
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


def test_scopes_decide_type_and_action(http, auth, doctor) -> None:
    auth.identities.add_user("quanly", PASSWORD, "programme_manager", "so-04")
    manager = password_token(http, "quanly")["access_token"]
    assert http.get("/fhir/Patient", headers=_bearer(manager)).status_code == 200
    r = http.post("/fhir/Patient", json=patient_of("tyt-00004"),
                  headers={**_bearer(manager), "content-type": "application/fhir+json"})
    assert r.status_code == 403 and r.json()["issue"][0]["code"] == "forbidden"
    narrow = password_token(http, doctor, scope="user/Observation.rs")["access_token"]
    assert http.get("/fhir/Observation", headers=_bearer(narrow)).status_code == 200
    assert http.get("/fhir/Patient", headers=_bearer(narrow)).status_code == 403
    assert http.get("/fhir/_history", headers=_bearer(narrow)).status_code == 403


def test_bundle_entries_are_checked_one_by_one(http, auth) -> None:
    auth.identities.add_user("quanly", PASSWORD, "programme_manager", "so-04")
    manager = password_token(http, "quanly")["access_token"]
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient"}},
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}]}
    r = http.post("/fhir", json=bundle, headers={**_bearer(manager),
                                                 "content-type": "application/fhir+json"})
    assert r.status_code == 200, r.text
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[0].startswith("200") and statuses[1].startswith("403")


def test_forced_password_change_on_first_sign_in(http, auth) -> None:
    one_time = auth.bootstrap_admin()
    assert one_time and auth.bootstrap_admin() is None  # only once
    r = http.post("/auth/token", data={"grant_type": "password", "username": "admin",
                                       "password": one_time})
    assert r.status_code == 400 and "password_change_required" in r.json()["error_description"]
    answer = password_token(http, "admin", one_time, new_password="a new long passphrase")
    assert "system/*.cruds" in answer["scope"]
    password_token(http, "admin", "a new long passphrase")
    r = http.post("/auth/token", data={"grant_type": "password", "username": "admin",
                                       "password": one_time})
    assert r.status_code == 400


def test_break_the_glass_is_marked(http, auth, doctor) -> None:
    token = password_token(http, doctor, purpose_of_use="ETREAT")["access_token"]
    ctx = auth.verify(token)
    assert ctx.break_glass and ctx.purpose == "ETREAT"
    auth.identities.add_user("nc", PASSWORD, "researcher", None)
    r = http.post("/auth/token", data={"grant_type": "password", "username": "nc",
                                       "password": PASSWORD, "purpose_of_use": "ETREAT"})
    assert r.status_code == 400


# --- refresh tokens -----------------------------------------------------------------------


def test_refresh_rotation_and_reuse_detection(http, doctor, clock) -> None:
    def refresh(token: str) -> Any:
        return http.post("/auth/token", data={"grant_type": "refresh_token",
                                              "refresh_token": token})

    first = password_token(http, doctor)
    r = refresh(first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert http.get("/fhir/Patient", headers=_bearer(second["access_token"])).status_code == 200
    # the spent token again at once: a browser's second server process refreshing the same
    # session — refused, but the family lives (RACE_WINDOW)
    r = refresh(first["refresh_token"])
    assert r.status_code == 400 and "a moment ago" in r.json()["error_description"]
    r = refresh(second["refresh_token"])
    assert r.status_code == 200, r.text
    third = r.json()
    # later, replaying a spent token revokes the family: the newest one dies too
    clock.advance(RACE_WINDOW)
    r = refresh(first["refresh_token"])
    assert r.status_code == 400 and "already used" in r.json()["error_description"]
    r = refresh(third["refresh_token"])
    assert r.status_code == 400 and "revoked" in r.json()["error_description"]


def test_revoke_endpoint(http, doctor) -> None:
    answer = password_token(http, doctor)
    assert http.post("/auth/revoke", data={"token": answer["access_token"]}).status_code == 200
    assert http.get("/fhir/Patient", headers=_bearer(answer["access_token"])).status_code == 401
    assert http.post("/auth/revoke", data={"token": answer["refresh_token"]}).status_code == 200
    r = http.post("/auth/token", data={"grant_type": "refresh_token",
                                       "refresh_token": answer["refresh_token"]})
    assert r.status_code == 400
    assert http.post("/auth/revoke", data={"token": "unknown"}).status_code == 200  # RFC 7009


# --- authorization code + PKCE ------------------------------------------------------------


def _authorize_params(challenge: str, **extra: str) -> dict[str, str]:
    return {"response_type": "code", "client_id": "smart-app", "redirect_uri": REDIRECT,
            "scope": "openid fhirUser user/Patient.rs", "state": "xyz",
            "code_challenge": challenge, "code_challenge_method": "S256", **extra}


def test_pkce_flow_end_to_end(http, auth, doctor) -> None:
    auth.identities.add_client("smart-app", redirect_uris=(REDIRECT,))
    verifier, challenge = _pkce()
    params = _authorize_params(challenge)
    page = http.get("/auth/authorize", params=params)
    assert page.status_code == 200 and "Đăng nhập" in page.text and 'lang="vi"' in page.text
    english = http.get("/auth/authorize", params={**params, "lang": "en"})
    assert "Sign in" in english.text and 'lang="en"' in english.text
    bad = http.post("/auth/authorize", data={**params, "username": doctor, "password": "nope"},
                    follow_redirects=False)
    assert bad.status_code == 401 and "không thành công" in bad.text
    r = http.post("/auth/authorize", data={**params, "username": doctor, "password": PASSWORD},
                  follow_redirects=False)
    assert r.status_code == 302
    location = urlparse(r.headers["location"])
    assert location.geturl().startswith(REDIRECT)
    query = parse_qs(location.query)
    assert query["state"] == ["xyz"]
    code = query["code"][0]
    wrong = http.post("/auth/token", data={"grant_type": "authorization_code", "code": code,
                                           "redirect_uri": REDIRECT, "client_id": "smart-app",
                                           "code_verifier": _pkce()[0]})
    assert wrong.status_code == 400 and "code_verifier" in wrong.json()["error_description"]
    # the failed attempt spent the code: a code works once
    r = http.post("/auth/authorize", data={**params, "username": doctor, "password": PASSWORD},
                  follow_redirects=False)
    code = parse_qs(urlparse(r.headers["location"]).query)["code"][0]
    token = http.post("/auth/token", data={"grant_type": "authorization_code", "code": code,
                                           "redirect_uri": REDIRECT, "client_id": "smart-app",
                                           "code_verifier": verifier})
    assert token.status_code == 200, token.text
    assert token.json()["scope"] == "user/Patient.rs fhirUser openid"
    access = token.json()["access_token"]
    assert http.get("/fhir/Patient", headers=_bearer(access)).status_code == 200
    assert http.get("/fhir/Observation", headers=_bearer(access)).status_code == 403
    again = http.post("/auth/token", data={"grant_type": "authorization_code", "code": code,
                                           "redirect_uri": REDIRECT, "client_id": "smart-app",
                                           "code_verifier": verifier})
    assert again.status_code == 400 and "already used" in again.json()["error_description"]


def test_authorize_refuses_unregistered_redirect_and_plain_pkce(http, auth) -> None:
    auth.identities.add_client("smart-app", redirect_uris=(REDIRECT,))
    _, challenge = _pkce()
    r = http.get("/auth/authorize", params=_authorize_params(
        challenge, redirect_uri="https://evil.example/cb"), follow_redirects=False)
    assert r.status_code == 400 and "location" not in r.headers
    r = http.get("/auth/authorize", params=_authorize_params(
        challenge, code_challenge_method="plain"), follow_redirects=False)
    assert r.status_code == 302 and "error=invalid_request" in r.headers["location"]


# --- client credentials -------------------------------------------------------------------


def test_client_credentials_with_secret(http, auth) -> None:
    auth.identities.add_client("so-04-report", secret="s3cret-s3cret", role="system",
                               org="so-04", scope="system/*.rs")
    r = http.post("/auth/token", data={"grant_type": "client_credentials",
                                       "scope": "system/Observation.rs"},
                  auth=("so-04-report", "s3cret-s3cret"))
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "system/Observation.rs" and "refresh_token" not in r.json()
    ctx = auth.verify(r.json()["access_token"])
    assert (ctx.kind, ctx.subject, ctx.org) == ("system", "so-04-report", "so-04")
    assert http.get("/fhir/Observation", headers=_bearer(r.json()["access_token"])).status_code == 200
    bad = http.post("/auth/token", data={"grant_type": "client_credentials"},
                    auth=("so-04-report", "wrong"))
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    post = http.post("/auth/token", data={"grant_type": "client_credentials",
                                          "client_id": "so-04-report",
                                          "client_secret": "s3cret-s3cret"})
    assert post.status_code == 200  # client_secret_post


def test_client_credentials_with_private_key_jwt(http, auth, clock) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="ES384")
    auth.identities.add_client("backend", jwks={"keys": [jwk]}, role="system", org="moh",
                               scope="system/*.rs")
    url = "http://testserver/auth/token"

    def assertion(**claims: object) -> str:
        now = int(clock())
        body = {"iss": "backend", "sub": "backend", "aud": url, "exp": now + 240,
                "jti": secrets.token_hex(8), **claims}
        return jwt.encode(body, key, algorithm="ES384", headers={"kid": "k1"})

    def ask(a: str) -> object:
        return http.post("/auth/token", data={
            "grant_type": "client_credentials", "scope": "system/*.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": a})

    good = assertion()
    r = ask(good)
    assert r.status_code == 200, r.text
    assert auth.verify(r.json()["access_token"]).subject == "backend"
    assert ask(good).status_code == 401  # replayed jti
    assert ask(assertion(aud="https://elsewhere/token")).status_code == 401
    assert ask(assertion(exp=int(clock()) + 3600)).status_code == 401
    other = ec.generate_private_key(ec.SECP384R1())
    forged = jwt.encode({"iss": "backend", "sub": "backend", "aud": url,
                         "exp": int(clock()) + 60, "jti": "x"}, other, algorithm="ES384",
                        headers={"kid": "k1"})
    assert ask(forged).status_code == 401


def test_public_client_cannot_use_client_credentials(http, auth) -> None:
    auth.identities.add_client("smart-app", redirect_uris=(REDIRECT,))
    r = http.post("/auth/token", data={"grant_type": "client_credentials",
                                       "client_id": "smart-app"})
    assert r.status_code == 401


# --- discovery and the route table --------------------------------------------------------


def test_smart_configuration_and_jwks(http) -> None:
    config = http.get("/fhir/.well-known/smart-configuration").json()
    assert config["token_endpoint"] == "http://testserver/auth/token"
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert "permission-v2" in config["capabilities"]
    keys = http.get(config["jwks_uri"].replace("http://testserver", "")).json()["keys"]
    assert keys and keys[0]["alg"] == "ES256"


PUBLIC = {"/health", "/fhir/metadata", "/fhir/.well-known/smart-configuration", "/auth/token",
          "/auth/authorize", "/auth/revoke", "/auth/jwks"}


def _probe_paths(path: str) -> list[str]:
    if "{path:path}" in path:  # the FHIR endpoint: one path per kind of interaction
        return [path.replace("{path:path}", p) for p in (
            "Patient", "Patient/1", "Patient/1/_history", "Patient/1/_history/1", "_history",
            "Patient/_search", "Patient/1/Observation", "Patient/1/$everything",
            "Patient/$validate", "metadata", "NoSuchType", "Patient/1/bad/deep/path")]
    return [path]


def test_route_table_walk_only_public_routes_answer_without_token(app, http) -> None:
    seen_public = set()
    for route in app.routes:
        assert isinstance(route, Route)
        for path in _probe_paths(route.path):
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"):
                r = http.request(method, path)
                public = path in PUBLIC
                if public:
                    seen_public.add(path)
                    assert r.status_code != 401, (method, path)
                else:
                    assert r.status_code == 401, (method, path, r.status_code, r.text)
    assert seen_public == PUBLIC  # the walk met every public route, and only those


def test_every_request_leaves_an_audit_event(http, auth, doctor) -> None:
    before = len(auth.audit.entries())
    token = password_token(http, doctor)["access_token"]
    pid = http.post("/fhir/Patient", json=patient_of("tyt-00004"),
                    headers={**_bearer(token), "content-type": "application/fhir+json"}).json()["id"]
    http.get(f"/fhir/Patient/{pid}", headers=_bearer(token))
    http.get("/fhir/Patient?name=Nguyễn", headers=_bearer(token))
    http.get("/fhir/Patient")
    http.get("/fhir/metadata")
    http.delete(f"/fhir/Patient/{pid}", headers=_bearer(token))
    events = auth.audit.entries()[before:]
    assert len(events) == 7
    token_e, create_e, read_e, search_e, refused_e, meta_e, delete_e = events
    assert all(e["resourceType"] == "AuditEvent" for e in events)
    assert token_e["type"]["code"] == "110114" and token_e["outcome"] == "0"
    assert token_e["agent"][0]["who"]["identifier"]["value"] == doctor
    assert create_e["action"] == "C" and create_e["entity"][0]["what"]["reference"] == f"Patient/{pid}"
    assert create_e["agent"][0]["role"] == [{"text": "doctor"}]
    assert create_e["agent"][0]["location"] == {"reference": "Organization/tyt-00004"}
    assert create_e["agent"][0]["network"]["address"] == "testclient"
    assert read_e["action"] == "R" and read_e["subtype"][0]["code"] == "read"
    assert search_e["entity"][0]["description"] == "name=Nguyễn"
    assert refused_e["outcome"] == "4" and "no bearer token" in refused_e["outcomeDesc"]
    assert meta_e["subtype"][0]["code"] == "capabilities"
    assert delete_e["action"] == "D"
    assert auth.audit.verify() is None


def test_failed_sign_in_is_audited(http, auth, doctor) -> None:
    http.post("/auth/token", data={"grant_type": "password", "username": doctor,
                                   "password": "bad password!"})
    event = auth.audit.entries()[-1]
    assert event["outcome"] == "4" and "invalid_grant" in event["outcomeDesc"]
    assert event["agent"][0]["who"]["identifier"]["value"] == doctor


def test_health(http) -> None:
    assert http.get("/health").json() == {"status": "ok"}


@pytest.fixture(autouse=True)
def _real_time_for_http(clock) -> None:
    clock.now = time.time()


def test_no_answer_leaves_without_its_audit_entry(http, auth, doctor, monkeypatch) -> None:
    token = password_token(http, doctor)["access_token"]

    def broken(batch):
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(auth.audit, "_append", broken)
    with pytest.raises(RuntimeError, match="audit log unavailable"):
        http.post("/fhir/Patient", json=patient_of("tyt-00004"),
                  headers={**_bearer(token), "content-type": "application/fhir+json"})
