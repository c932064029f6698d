"""Signed JWT access tokens (RFC 7519; JWT profile for OAuth 2.0 access tokens, RFC 9068).

Claims: ``iss``, ``aud``, ``sub``, ``iat``, ``nbf``, ``exp`` (short: ``ACCESS_TTL``), ``jti``,
``scope`` (SMART scopes, space separated), ``role``, ``org``, ``client_id`` and optionally
``patient`` (the SMART launch context: the Patient id a citizen's token speaks for),
``purpose`` (purpose of use), ``btg`` (break the glass) and ``fhirUser`` (``Practitioner/<id>``
or ``Patient/<id>``). Header: ``alg`` ES256 and the signing key's ``kid`` (``keys.KeyRing``).
The verified claims become an ``AccessContext``: ``patient`` as is, and the Practitioner of
``fhirUser`` as ``practitioner``.

Verification refuses: a token not signed by one of our valid keys (unknown or expired
``kid``, bad signature), any ``alg`` other than ES256 (``none`` included — RFC 8725 §3.1),
a wrong ``iss`` or ``aud``, an expired or not-yet-valid token, missing claims, and a revoked
``jti`` (revocation, RFC 7009: kept until the token would have expired anyway).

Verified tokens are remembered (``CACHE_SIZE``, least recently used first out) with their
access context and its rules (``policy.ContextAccess``), so a token seen before costs no
signature check, no scope parsing and no rule computation; every
use still checks its ``exp``/``nbf``, its key's validity and its revocation. The cache is keyed
by the whole token string: an altered token is another key, verified in full.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import jwt

from .context import AccessContext
from .db import Db
from .keys import ALG, KeyRing
from .passwords import Clock
from .policy import ContextAccess
from .scopes import ScopeError, ScopeSet

ACCESS_TTL = 300  # seconds: a stolen token is useful for five minutes at most
LEEWAY = 30  # clock skew allowed on exp/nbf/iat
CACHE_SIZE = 10_000  # verified tokens remembered (signature checks are the costly part)
#: Revoked token ids are re-read at most this often (seconds): a revocation made by another
#: server process takes effect within it, one made by this process at once.
REVOCATION_REREAD = 1.0


def fhir_user_id(claims: dict[str, Any], rtype: str) -> str | None:
    """The id in the ``fhirUser`` claim when it is a relative reference to ``rtype``."""
    value = claims.get("fhirUser")
    if isinstance(value, str) and value.startswith(f"{rtype}/"):
        return value[len(rtype) + 1:] or None
    return None


class InvalidToken(Exception):
    """Why a bearer token was refused (for ``WWW-Authenticate: error_description``)."""


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token whose signature and claims were checked: what every later use still checks,
    its access context (``address`` as first seen) and the rules of that context."""

    claims: dict[str, Any]
    kid: str
    exp: int
    nbf: int
    context: AccessContext
    rules: ContextAccess


class TokenService:
    def __init__(self, db: Db, keys: KeyRing, clock: Clock, *, issuer: str, audience: str,
                 ttl: int = ACCESS_TTL) -> None:
        self.db = db
        self.keys = keys
        self.clock = clock
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self._verified: OrderedDict[str, _Verified] = OrderedDict()  # token -> checked
        self._revoked: tuple[float, frozenset[str]] | None = None  # (read at, jtis)
        self._lock = threading.Lock()

    def issue(self, *, subject: str, kind: str, role: str, org: str | None, scope: ScopeSet,
              client_id: str | None, extra: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """A signed access token and its claims."""
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": self.audience, "sub": subject, "iat": now, "nbf": now,
            "exp": now + self.ttl, "jti": secrets.token_urlsafe(16), "scope": str(scope),
            "kind": kind, "role": role, "org": org, "client_id": client_id,
        }
        claims.update({k: v for k, v in (extra or {}).items() if v is not None})
        key = self.keys.current()
        token = jwt.encode(claims, key.private, algorithm=ALG, headers={"kid": key.kid})
        return token, claims

    def decode(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``, or ``InvalidToken``."""
        return dict(self._verified_entry(token, None).claims)

    def verify(self, token: str, address: str | None = None) -> AccessContext:
        """The access context of ``token`` for a request from ``address``, or ``InvalidToken``."""
        return self.verify_with_rules(token, address)[0]

    def verify_with_rules(self, token: str, address: str | None = None
                          ) -> tuple[AccessContext, ContextAccess]:
        """``verify``, and the rows the context may touch (computed once per token)."""
        entry = self._verified_entry(token, address)
        context = entry.context
        if context.address != address:
            context = replace(context, address=address)
        return context, entry.rules

    def _verified_entry(self, token: str, address: str | None) -> _Verified:
        """``token`` verified: from the cache when its signature was checked before (its time
        limits, its key's validity and its revocation are still checked on every use), else
        in full and then remembered. A changed token is another string: verified in full."""
        with self._lock:
            entry = self._verified.get(token)
            if entry is not None:
                self._verified.move_to_end(token)
        if entry is not None:
            now = self.clock()
            if entry.exp + LEEWAY > now and entry.nbf - LEEWAY <= now and \
                    self.keys.find(entry.kid) is not None:
                if self.is_revoked(entry.context.token_id or ""):
                    raise InvalidToken("the token has been revoked")
                return entry
            with self._lock:
                self._verified.pop(token, None)
        entry = self._verify_in_full(token, address)
        with self._lock:
            self._verified[token] = entry
            if len(self._verified) > CACHE_SIZE:
                self._verified.popitem(last=False)
        return entry

    def _verify_in_full(self, token: str, address: str | None) -> _Verified:
        """Header, signature, claims, time limits and revocation checked; the access context
        of a request from ``address``."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        if header.get("alg") != ALG:
            raise InvalidToken(f"tokens must be signed with {ALG}, not {header.get('alg')!r}")
        key = self.keys.find(str(header.get("kid")))
        if key is None:
            raise InvalidToken("the token's signing key (kid) is unknown or retired")
        try:
            claims = self._decode_at(token, key)
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        if self.is_revoked(claims["jti"]):
            raise InvalidToken("the token has been revoked")
        try:
            scopes = ScopeSet.parse(claims.get("scope", ""))
        except ScopeError as exc:
            raise InvalidToken(str(exc)) from None
        context = AccessContext(
            subject=claims["sub"], kind=claims.get("kind", "user"), role=claims.get("role", ""),
            org=claims.get("org"), scopes=scopes, client_id=claims.get("client_id"),
            patient=claims.get("patient"), purpose=claims.get("purpose"),
            practitioner=fhir_user_id(claims, "Practitioner"),
            break_glass=bool(claims.get("btg")), address=address, token_id=claims["jti"])
        return _Verified(claims, key.kid, int(claims["exp"]), int(claims["nbf"]), context,
                         ContextAccess(context))

    def _decode_at(self, token: str, key: Any) -> dict[str, Any]:
        """Decode with signature, iss and aud checks, and time checks against ``self.clock``."""
        claims: dict[str, Any] = jwt.decode(
            token, key.private.public_key(), algorithms=[ALG], audience=self.audience,
            issuer=self.issuer, options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub",
                                                     "jti"],
                                         "verify_exp": False, "verify_nbf": False,
                                         "verify_iat": False})
        now = self.clock()
        if int(claims["exp"]) + LEEWAY <= now:
            raise jwt.ExpiredSignatureError("Signature has expired")
        if int(claims["nbf"]) - LEEWAY > now:
            raise jwt.ImmatureSignatureError("The token is not yet valid (nbf)")
        return claims

    # --- revocation (RFC 7009) ---------------------------------------------------------------

    def revoke(self, jti: str, expires: float) -> None:
        with self.db.write() as c:
            if c.one("SELECT 1 FROM auth_revoked WHERE jti = ?", (jti,)) is None:
                c.run("INSERT INTO auth_revoked (jti, expires) VALUES (?, ?)", (jti, int(expires)))
            c.run("DELETE FROM auth_revoked WHERE expires < ?", (int(self.clock()) - 2 * LEEWAY,))
        self._revoked = None

    def is_revoked(self, jti: str) -> bool:
        """Whether ``jti`` was revoked: the (small) table of unexpired revocations is kept in
        memory and re-read every ``REVOCATION_REREAD`` seconds (of ``clock``), not queried per
        request."""
        cached = self._revoked
        now = self.clock()
        if cached is None or not 0 <= now - cached[0] < REVOCATION_REREAD:
            rows = self.db.all("SELECT jti FROM auth_revoked")
            cached = self._revoked = (now, frozenset(r[0] for r in rows))
        return jti in cached[1]
