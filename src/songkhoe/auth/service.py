"""The authorization server: the OAuth 2.0 token endpoint's grants, revocation, bearer-token
verification and the first-start administrator, over one store's database.

Grants (``POST /auth/token``, RFC 6749 §4-§6):

- ``password`` (RFC 6749 §4.3): for songkhoe's own clients (the web app, the CLI);
- ``authorization_code`` with PKCE S256 (RFC 7636; SMART App Launch 2.0 standalone launch);
- ``client_credentials`` (RFC 6749 §4.4) with a client secret or a ``private_key_jwt``
  assertion (RFC 7523; SMART Backend Services);
- ``refresh_token`` (RFC 6749 §6), rotating (``refresh``).

Token scopes are what was asked for cut down to the role's ceiling (``identities.ROLES``)
and the client's registered scopes. A user whose password must change (the first
administrator) gets no token until a ``new_password`` is sent with the password. Break the
glass: ``purpose_of_use=ETREAT`` marks the token ``btg`` — the store will then widen the
organisational scope, and every use is audited as emergency access, with the ``reason`` the
clinician stated in the token request (``audit.AuditLog.break_glass_granted``).

Who the token speaks for (``identity_claims``): a user with a Practitioner gets ``fhirUser:
Practitioner/<id>``; a citizen gets ``fhirUser: Patient/<id>`` and the SMART launch context
claim ``patient: <id>``, and the token response carries ``"patient": "<id>"`` next to the
access token (SMART App Launch 2.0 §"Launch context arrives with your access_token"). Both
are read from the account at every token and refresh, so a relinked account takes effect
at the next refresh.
"""

from __future__ import annotations

import secrets
from typing import Any

from .assertions import ASSERTION_TYPE, verify_assertion
from .audit import MAX_REASON, AuditLog
from .audit_db import open_audit
from .context import AccessContext
from .db import Db
from .identities import CITIZEN, ROLES, AuthError, Client, Identities, User
from .keys import KeyRing
from .passwords import Clock, Throttle, system_clock
from .pkce import AuthorizationCodes
from .policy import ContextAccess
from .refresh import RefreshGrant, RefreshTokens
from .scopes import ScopeError, ScopeSet
from .tokens import ACCESS_TTL, InvalidToken, TokenService

BREAK_GLASS_ROLES = frozenset({"doctor", "specialist", "health_worker"})
PURPOSES = frozenset({"TREAT", "ETREAT", "HPAYMT", "HOPERAT", "PUBHLTH", "HRESCH", "HSYSADMIN"})
ADMIN_USERNAME = "admin"
IDENTITY_CLAIMS = ("fhirUser", "patient")  # from the account, at every token and refresh


def identity_claims(user: User) -> dict[str, str]:
    """The claims saying whom ``user``'s token speaks for: ``fhirUser`` (SMART App Launch 2.0
    §"Scopes for requesting identity data": a Practitioner, or the Patient of a citizen) and,
    for a citizen, the launch context ``patient``. A citizen without a Patient gets no token."""
    if user.role == CITIZEN:
        if not user.patient:
            raise AuthError("invalid_grant", "this citizen account is not linked to a Patient: "
                                             "ask an administrator")
        return {"fhirUser": f"Patient/{user.patient}", "patient": user.patient}
    if user.practitioner:
        return {"fhirUser": f"Practitioner/{user.practitioner}"}
    return {}


class Auth:
    """Everything security needs for one store. ``clock`` is injectable for tests."""

    def __init__(self, store: Any, *, issuer: str = "songkhoe", audience: str = "songkhoe-fhir",
                 clock: Clock = system_clock, throttle: Throttle | None = None,
                 access_ttl: int = ACCESS_TTL, audit_db: str | None = None) -> None:
        """``audit_db``: the audit log's database URL (default: ``audit_db.open_audit``'s
        place — beside a SQLite store, in a PostgreSQL store's own database)."""
        self.store = store
        self.clock = clock
        db = self.db = Db(store)
        self.identities = Identities(db, clock, throttle)
        self.keys = KeyRing(db, clock, grace=access_ttl + 60)
        self.tokens = TokenService(db, self.keys, clock, issuer=issuer, audience=audience,
                                   ttl=access_ttl)
        self.codes = AuthorizationCodes(db, clock)
        self.refresh = RefreshTokens(db, clock)
        self.audit = AuditLog(open_audit(store, audit_db), clock, directory=db)

    def close(self) -> None:
        """Close the audit database if it is not the store's (the store closes its own)."""
        self.audit.db.close()

    # --- bearer tokens -----------------------------------------------------------------------

    def verify(self, token: str, address: str | None = None) -> AccessContext:
        """The access context of a bearer token, or ``InvalidToken``."""
        return self.tokens.verify(token, address)

    def verify_with_rules(self, token: str, address: str | None = None
                          ) -> tuple[AccessContext, ContextAccess]:
        """``verify``, and the store's rules for the context (remembered with the token)."""
        return self.tokens.verify_with_rules(token, address)

    # --- sign-in -----------------------------------------------------------------------------

    def sign_in(self, username: str, password: str, new_password: str | None = None) -> User:
        user = self.identities.authenticate(username, password)
        if user.must_change:
            if not new_password:
                raise AuthError("invalid_grant", "password_change_required: this password was "
                                                 "issued once; send new_password to set your own")
            if new_password == password:
                raise AuthError("invalid_request", "the new password must differ from the old")
            try:
                self.identities.set_password(username, new_password)
            except ValueError as exc:
                raise AuthError("invalid_request", str(exc)) from None
            return self.identities.user(username) or user
        return user

    # --- the token endpoint ------------------------------------------------------------------

    def token_request(self, form: dict[str, str], *, basic: tuple[str, str] | None = None,
                      token_url: str = "") -> dict[str, Any]:
        """Answer a token request (form fields already decoded) with RFC 6749 §5.1 JSON."""
        grant = form.get("grant_type", "")
        client = self.authenticate_client(form, basic, token_url)
        if grant == "password":
            user = self.sign_in(form.get("username", ""), form.get("password", ""),
                                form.get("new_password") or None)
            return self._user_token(user, form.get("scope", ""), client,
                                    form.get("purpose_of_use"), form.get("reason"))
        if grant == "authorization_code":
            if client is None:
                raise AuthError("invalid_request", "client_id is required")
            code = self.codes.redeem(form.get("code", ""), client_id=client.client_id,
                                     redirect_uri=form.get("redirect_uri", ""),
                                     verifier=form.get("code_verifier", ""))
            code_user = self.identities.user(code.username)
            if code_user is None or code_user.locked:
                raise AuthError("invalid_grant", "the user of this code can no longer sign in")
            return self._user_token(code_user, code.scope, client, None)
        if grant == "client_credentials":
            if client is None or client.public:
                raise AuthError("invalid_client", "client_credentials needs an authenticated "
                                                  "confidential client", 401)
            if not client.role:
                raise AuthError("unauthorized_client", "this client is not registered for "
                                                       "client_credentials (no role)")
            scope = self._scope(form.get("scope", "") or client.scope, client.role, client)
            return self._issue(client.client_id, "system", client.role, client.org, scope, client,
                               {}, refresh=False)
        if grant == "refresh_token":
            refreshed, new_refresh = self.refresh.rotate(form.get("refresh_token", ""),
                                                         client.client_id if client else None)
            claims = refreshed.claims
            scope = ScopeSet.parse(refreshed.scope)
            if refreshed.username:  # the user's current role and place, not the old ones
                holder = self.identities.user(refreshed.username)
                if holder is None or holder.locked:
                    self.refresh.revoke(new_refresh)
                    raise AuthError("invalid_grant", "the user can no longer sign in")
                try:
                    identity = identity_claims(holder)
                except AuthError:
                    self.refresh.revoke(new_refresh)
                    raise
                extra = {k: v for k, v in claims.get("extra", {}).items()
                         if k not in IDENTITY_CLAIMS}
                claims = {**claims, "role": holder.role, "org": holder.org,
                          "extra": {**extra, **identity}}
                scope = scope.within(ScopeSet.parse(ROLES[holder.role]))
            answer = self._issue(claims["sub"], claims.get("kind", "user"), claims["role"],
                                 claims.get("org"), scope, client, claims.get("extra", {}),
                                 refresh=False)
            answer["refresh_token"] = new_refresh
            return answer
        raise AuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported; use "
                        "password, authorization_code, client_credentials or refresh_token")

    def authenticate_client(self, form: dict[str, str], basic: tuple[str, str] | None,
                            token_url: str) -> Client | None:
        """The client making the request, authenticated as it registered (RFC 6749 §2.3)."""
        client_id = basic[0] if basic else form.get("client_id")
        assertion = form.get("client_assertion")
        if assertion and not client_id:
            import jwt

            try:
                client_id = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
            except jwt.PyJWTError:
                raise AuthError("invalid_client", "malformed client assertion", 401) from None
        if not client_id:
            return None
        client = self.identities.client(client_id)
        if client is None:
            raise AuthError("invalid_client", f"unknown client {client_id!r}", 401)
        secret = basic[1] if basic else form.get("client_secret")
        if assertion:
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                raise AuthError("invalid_client", f"client_assertion_type must be "
                                                  f"{ASSERTION_TYPE}", 401)
            verify_assertion(assertion, client, token_url, self.clock, self.tokens)
        elif client.secret_hash is not None:
            if not secret or not self.identities.check_client_secret(client, secret):
                raise AuthError("invalid_client", "wrong client secret", 401)
        elif client.jwks is not None:
            raise AuthError("invalid_client", "this client authenticates with private_key_jwt",
                            401)
        return client

    def _scope(self, requested: str, role: str, client: Client | None) -> ScopeSet:
        try:
            ceiling = ScopeSet.parse(ROLES[role])
            asked = ScopeSet.parse(requested) if requested.strip() else ceiling
            granted = asked.within(ceiling)
            if client is not None and client.scope:
                granted = granted.within(ScopeSet.parse(client.scope))
        except ScopeError as exc:
            raise AuthError("invalid_scope", str(exc)) from None
        if not granted.clinical and requested.strip():
            raise AuthError("invalid_scope", f"none of the scopes {requested!r} is allowed for "
                                             f"role {role}")
        return granted

    def _user_token(self, user: User, requested: str, client: Client | None,
                    purpose: str | None, reason: str | None = None) -> dict[str, Any]:
        scope = self._scope(requested, user.role, client)
        extra: dict[str, Any] = {}
        if purpose:
            if purpose not in PURPOSES:
                raise AuthError("invalid_request", f"purpose_of_use must be one of "
                                                   f"{', '.join(sorted(PURPOSES))}")
            if purpose == "ETREAT" and user.role not in BREAK_GLASS_ROLES:
                raise AuthError("invalid_request", f"role {user.role} may not break the glass")
            extra = {"purpose": purpose, "btg": purpose == "ETREAT" or None,
                     "reason": (reason or "").strip()[:MAX_REASON] or None}  # audited
        extra.update(identity_claims(user))
        return self._issue(user.username, "user", user.role, user.org, scope, client, extra,
                           refresh=True)

    def _issue(self, subject: str, kind: str, role: str, org: str | None, scope: ScopeSet,
               client: Client | None, extra: dict[str, Any], *, refresh: bool) -> dict[str, Any]:
        client_id = client.client_id if client else None
        token, claims = self.tokens.issue(subject=subject, kind=kind, role=role, org=org,
                                          scope=scope, client_id=client_id, extra=extra)
        if claims.get("btg"):  # audited at issue, with the reason stated for it
            self.audit.break_glass_granted(claims, claims.get("reason"))
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer",
                                  "expires_in": self.tokens.ttl, "scope": claims["scope"]}
        if extra.get("patient"):  # SMART launch context, next to the token
            answer["patient"] = extra["patient"]
        if refresh:
            answer["refresh_token"] = self.refresh.issue(RefreshGrant(
                subject if kind == "user" else None, client_id, claims["scope"],
                {"sub": subject, "kind": kind, "role": role, "org": org, "extra": extra}))
        return answer

    # --- revocation (RFC 7009) ---------------------------------------------------------------

    def revoke(self, token: str) -> None:
        """Revoke an access token (by ``jti``) or a refresh token (its family). Unknown
        tokens are not an error (RFC 7009 §2.2)."""
        if self.refresh.revoke(token):
            return
        try:
            claims = self.tokens.decode(token)
        except InvalidToken:
            return
        self.tokens.revoke(claims["jti"], float(claims["exp"]) + 60)

    # --- first start -------------------------------------------------------------------------

    def bootstrap_admin(self) -> str | None:
        """With no users yet, create ``admin`` with a one-time password and return it (to be
        printed once); it must be changed at the first sign-in. Otherwise None."""
        if self.db.one("SELECT 1 FROM auth_users LIMIT 1") is not None:
            return None
        password = secrets.token_urlsafe(12)
        self.identities.add_user(ADMIN_USERNAME, password, "administrator", None,
                                 must_change=True)
        return password
