"""Security: identities, sign-in, OAuth 2.0 / SMART tokens, scopes, access context and audit.

Modules, one concept each: ``passwords`` (argon2, throttle), ``identities`` (users, roles,
clients), ``keys`` (signing keys, rotation), ``tokens`` (JWT access tokens, revocation),
``pkce`` (authorization codes), ``refresh`` (rotating refresh tokens), ``assertions``
(RFC 7523 client assertions), ``scopes`` (SMART v2), ``context`` (``AccessContext``),
``audit`` (hash-chained AuditEvents), ``service`` (the ``Auth`` facade), ``policy``
(``ContextAccess``: the rows a context may touch, which the store compiles to SQL), ``demo``
(demo users), ``cli`` (administration commands). See docs/security.md.
"""

from __future__ import annotations

from .context import AccessContext
from .identities import ROLES, AuthError
from .scopes import Scope, ScopeSet
from .service import Auth
from .tokens import InvalidToken

__all__ = ["ROLES", "AccessContext", "Auth", "AuthError", "InvalidToken", "Scope", "ScopeSet"]
