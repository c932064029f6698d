"""Access tokens: what verification refuses (RFC 7519, RFC 8725), revocation and key rotation."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from songkhoe.auth import Auth, InvalidToken, ScopeSet


def _issue(auth: Auth, **extra):
    return auth.tokens.issue(subject="bacsi", kind="user", role="doctor", org="tyt-00004",
                             scope=ScopeSet.parse("user/*.rs"), client_id=None, extra=extra)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_good_token_gives_the_access_context(auth) -> None:
    token, claims = _issue(auth, purpose="TREAT")
    ctx = auth.verify(token, "10.0.0.7")
    assert (ctx.subject, ctx.role, ctx.org, ctx.purpose, ctx.address) == \
        ("bacsi", "doctor", "tyt-00004", "TREAT", "10.0.0.7")
    assert ctx.scopes.permits("Patient", "r") and not ctx.scopes.permits("Patient", "c")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == auth.keys.current().kid
    assert claims["exp"] - claims["iat"] == auth.tokens.ttl


def test_tampered_payload_refused(auth) -> None:
    token, claims = _issue(auth)
    head, _, sig = token.split(".")
    forged = f"{head}.{_b64({**claims, 'role': 'administrator'})}.{sig}"
    with pytest.raises(InvalidToken, match="Signature verification failed"):
        auth.verify(forged)


def test_tampered_signature_refused(auth) -> None:
    token, _ = _issue(auth)
    head, body, sig = token.split(".")
    sig = ("A" if sig[0] != "A" else "B") + sig[1:]
    with pytest.raises(InvalidToken):
        auth.verify(f"{head}.{body}.{sig}")


def test_alg_none_refused(auth) -> None:
    _, claims = _issue(auth)
    kid = auth.keys.current().kid
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_b64(claims)}."
    with pytest.raises(InvalidToken, match="ES256"):
        auth.verify(unsigned)


def test_hs256_with_public_key_refused(auth) -> None:
    _, claims = _issue(auth)
    key = auth.keys.current()
    import hashlib
    import hmac

    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid})}.{_b64(claims)}"
    mac = hmac.new(json.dumps(key.public_jwk).encode(), signing_input.encode(), hashlib.sha256)
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac.digest()).rstrip(b'=').decode()}"
    with pytest.raises(InvalidToken, match="ES256"):
        auth.verify(forged)


def test_expired_refused(auth, clock) -> None:
    token, _ = _issue(auth)
    clock.advance(auth.tokens.ttl + 29)
    auth.verify(token)  # within the leeway
    clock.advance(2)
    with pytest.raises(InvalidToken, match="expired"):
        auth.verify(token)


def test_not_yet_valid_refused(auth, clock) -> None:
    token, _ = _issue(auth)
    clock.advance(-120)
    with pytest.raises(InvalidToken, match="not yet valid"):
        auth.verify(token)


def test_wrong_audience_and_issuer_refused(store, auth, clock) -> None:
    token, _ = _issue(auth)
    other_aud = Auth(store, clock=clock, audience="another-server")
    with pytest.raises(InvalidToken, match="[Aa]udience"):
        other_aud.verify(token)
    other_iss = Auth(store, clock=clock, issuer="https://evil.example")
    with pytest.raises(InvalidToken, match="[Ii]ssuer"):
        other_iss.verify(token)


def test_foreign_key_refused(auth) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    _, claims = _issue(auth)
    forged = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                        headers={"kid": auth.keys.current().kid})
    with pytest.raises(InvalidToken, match="Signature"):
        auth.verify(forged)
    forged = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                        headers={"kid": "made-up"})
    with pytest.raises(InvalidToken, match="kid"):
        auth.verify(forged)


def test_missing_claim_refused(auth) -> None:
    key = auth.keys.current()
    _, claims = _issue(auth)
    del claims["jti"]
    token = jwt.encode(claims, key.private, algorithm="ES256", headers={"kid": key.kid})
    with pytest.raises(InvalidToken, match="jti"):
        auth.verify(token)


def test_revoked_jti_refused(auth) -> None:
    token, claims = _issue(auth)
    other, _ = _issue(auth)
    auth.verify(token)  # verified once (and remembered): revocation still wins
    auth.revoke(token)
    with pytest.raises(InvalidToken, match="revoked"):
        auth.verify(token)
    auth.verify(other)  # only that one
    assert auth.tokens.is_revoked(claims["jti"])


def test_rotated_key_verifies_until_its_tokens_expire(auth, clock) -> None:
    old_token, _ = _issue(auth)
    old_kid = auth.keys.current().kid
    new = auth.keys.rotate()
    assert new.kid != old_kid
    new_token, _ = _issue(auth)
    assert jwt.get_unverified_header(new_token)["kid"] == new.kid
    auth.verify(old_token)  # the previous key still verifies
    assert {k["kid"] for k in auth.keys.jwks()["keys"]} == {old_kid, new.kid}
    clock.advance(auth.keys.grace + 1)
    with pytest.raises(InvalidToken):
        auth.verify(old_token)
    assert {k["kid"] for k in auth.keys.jwks()["keys"]} == {new.kid}


def test_jwks_has_only_public_parts(auth) -> None:
    keys = auth.keys.jwks()["keys"]
    assert keys and all("d" not in k and k["kty"] == "EC" and k["alg"] == "ES256" for k in keys)


def _full_checks(auth: Auth, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the tokens ``auth`` verifies in full (signature, claims, scopes)."""
    seen: list[str] = []
    real = auth.tokens._verify_in_full

    def counted(token: str, address: str | None):
        seen.append(token)
        return real(token, address)

    monkeypatch.setattr(auth.tokens, "_verify_in_full", counted)
    return seen


def test_a_token_seen_before_is_not_verified_again_but_still_expires(auth, clock,
                                                                      monkeypatch) -> None:
    full = _full_checks(auth, monkeypatch)
    token, _ = _issue(auth)
    first = auth.verify(token, "10.0.0.7")
    assert auth.verify(token, "10.0.0.7") is first  # the remembered context itself
    assert auth.verify(token, "10.0.0.8").address == "10.0.0.8"
    assert full == [token]
    clock.advance(auth.tokens.ttl + 31)  # past exp and the leeway: the hit is refused
    with pytest.raises(InvalidToken, match="expired"):
        auth.verify(token)
    assert full == [token, token]  # and the expired token was checked in full, not served


def test_a_tampered_copy_of_a_remembered_token_is_verified_in_full(auth, monkeypatch) -> None:
    full = _full_checks(auth, monkeypatch)
    token, claims = _issue(auth)
    auth.verify(token)
    head, _, sig = token.split(".")
    forged = f"{head}.{_b64({**claims, 'role': 'administrator'})}.{sig}"
    with pytest.raises(InvalidToken, match="Signature verification failed"):
        auth.verify(forged)
    assert full == [token, forged]
    assert auth.verify(token).role == "doctor"


def test_a_revocation_by_another_process_reaches_a_remembered_token(store, auth, clock) -> None:
    from songkhoe.auth.tokens import REVOCATION_REREAD

    token, _ = _issue(auth)
    auth.verify(token)
    other = Auth(store, clock=clock)  # another server process on the same database
    other.revoke(token)
    auth.verify(token)  # this process re-reads revocations at most every REVOCATION_REREAD
    clock.advance(REVOCATION_REREAD)
    with pytest.raises(InvalidToken, match="revoked"):
        auth.verify(token)
    with pytest.raises(InvalidToken, match="revoked"):
        other.verify(token)


def test_the_cache_keeps_the_most_recently_used_tokens(auth, monkeypatch) -> None:
    from songkhoe.auth import tokens

    monkeypatch.setattr(tokens, "CACHE_SIZE", 2)
    full = _full_checks(auth, monkeypatch)
    a, b, c = (_issue(auth)[0] for _ in range(3))
    auth.verify(a)
    auth.verify(b)
    auth.verify(a)  # a is now the most recent: c pushes b out
    auth.verify(c)
    auth.verify(a)
    assert full == [a, b, c]
    auth.verify(b)
    assert full == [a, b, c, b]


def test_a_tokens_rules_are_computed_once_and_are_its_own(auth) -> None:
    token, _ = _issue(auth)
    citizen, _ = auth.tokens.issue(subject="lan", kind="user", role="citizen", org=None,
                                   scope=ScopeSet.parse("patient/*.rs"), client_id=None,
                                   extra={"patient": "p4"})
    _, rules = auth.verify_with_rules(token, "10.0.0.7")
    assert auth.verify_with_rules(token, "10.0.0.8")[1] is rules  # not per request
    assert rules.rule("Observation", "r").org == "tyt-00004"
    _, theirs = auth.verify_with_rules(citizen)
    assert theirs is not rules and theirs.rule("Observation", "r").patient == "p4"
    assert theirs.rule("Observation", "r").org is None
