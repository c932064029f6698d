"""Refresh tokens (RFC 6749 §6) that rotate on every use (OAuth 2.0 Security BCP, RFC 9700
§4.14.2): each refresh returns a new refresh token and spends the old one. Presenting a spent
token again means it leaked, so the whole family (every token descended from the same
sign-in) is revoked. Only SHA-256 hashes are stored; a family can be revoked at once
(``/auth/revoke``, RFC 7009).

One exception: a token spent less than ``RACE_WINDOW`` seconds ago is refused without
revoking its family (``RefreshRace``). That is a browser whose requests reached two server
processes at once, each refreshing the same session (``web.session``): the first one's new
token is on its way to the browser, which retries with it. A replay in that window gets no
token either; one after it revokes the family as before.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from .db import Db
from .identities import AuthError
from .passwords import Clock
from .pkce import token_hash

REFRESH_TTL = 12 * 3600  # a working day
RACE_WINDOW = 10  # seconds after its use in which a spent token is refused but not a leak


class RefreshRace(AuthError):
    """The token was spent a moment ago, by another request of the same client."""

    def __init__(self) -> None:
        super().__init__("invalid_grant", "this refresh token was used a moment ago by another "
                                          "request; retry with the refresh token it returned")


@dataclass(frozen=True)
class RefreshGrant:
    username: str | None
    client_id: str | None
    scope: str
    claims: dict[str, Any]  # what to carry into the next access token (role, org, patient…)


class RefreshTokens:
    def __init__(self, db: Db, clock: Clock, ttl: int = REFRESH_TTL) -> None:
        self.db = db
        self.clock = clock
        self.ttl = ttl

    def issue(self, grant: RefreshGrant, family: str | None = None) -> str:
        token = secrets.token_urlsafe(32)
        self.db.run("INSERT INTO auth_refresh (token_hash, family, username, client_id, scope, "
                    "claims, expires, used, revoked) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0)",
                    (token_hash(token), family or secrets.token_urlsafe(12), grant.username,
                     grant.client_id, grant.scope, json.dumps(grant.claims),
                     int(self.clock()) + self.ttl))
        return token

    def rotate(self, token: str, client_id: str | None) -> tuple[RefreshGrant, str]:
        """Spend ``token``: its grant and a fresh refresh token of the same family."""
        with self.db.write() as c:
            row = c.one("SELECT family, username, client_id, scope, claims, expires, used, revoked "
                        "FROM auth_refresh WHERE token_hash = ?", (token_hash(token),))
            if row is None:
                raise AuthError("invalid_grant", "unknown refresh token")
            family, now = row[0], int(self.clock())
            # ``used``: when it was spent (seconds; 1 in rows spent before schema version 9)
            raced = bool(row[6]) and not row[7] and now - row[6] < RACE_WINDOW
            if row[6] and not row[7] and not raced:  # reuse of a spent token: a leak
                c.run("UPDATE auth_refresh SET revoked = 1 WHERE family = ?", (family,))
            elif not row[6]:
                c.run("UPDATE auth_refresh SET used = ? WHERE token_hash = ?",
                      (max(now, 1), token_hash(token)))
        if row[7]:
            raise AuthError("invalid_grant", "this refresh token has been revoked")
        if raced:
            raise RefreshRace()
        if row[6]:
            raise AuthError("invalid_grant", "this refresh token was already used; its whole "
                                             "family is now revoked")
        if row[5] < self.clock():
            raise AuthError("invalid_grant", "the refresh token has expired")
        if client_id is not None and row[2] is not None and client_id != row[2]:
            raise AuthError("invalid_grant", "the refresh token belongs to another client")
        grant = RefreshGrant(row[1], row[2], row[3], json.loads(row[4]))
        return grant, self.issue(grant, family)

    def revoke(self, token: str) -> bool:
        with self.db.write() as c:
            row = c.one("SELECT family FROM auth_refresh WHERE token_hash = ?", (token_hash(token),))
            if row is None:
                return False
            c.run("UPDATE auth_refresh SET revoked = 1 WHERE family = ?", (row[0],))
        return True
