"""Authorization codes with PKCE (RFC 6749 §4.1, RFC 7636), as SMART App Launch 2.0 requires
(§"Launch App: Standalone Launch"; ``S256`` only — SMART 2.0 forbids ``plain``).

A code is a random string handed to the client once; only its SHA-256 is stored. Redeeming
it needs the same ``client_id`` and ``redirect_uri`` and a ``code_verifier`` whose
``BASE64URL(SHA256(verifier))`` equals the stored ``code_challenge`` (RFC 7636 §4.6). A code
lives ``CODE_TTL`` seconds and works once; a second use is refused (RFC 6749 §4.1.2).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass

from .db import Db
from .identities import AuthError
from .passwords import Clock

CODE_TTL = 60
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")  # RFC 7636 §4.1


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Grant:
    client_id: str
    username: str
    scope: str


class AuthorizationCodes:
    def __init__(self, db: Db, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def issue(self, *, client_id: str, redirect_uri: str, challenge: str, method: str,
              username: str, scope: str) -> str:
        if method != "S256":
            raise AuthError("invalid_request", "code_challenge_method must be S256")
        if not re.fullmatch(r"[A-Za-z0-9\-_]{43}", challenge or ""):
            raise AuthError("invalid_request", "code_challenge must be BASE64URL(SHA256(verifier))")
        code = secrets.token_urlsafe(32)
        self.db.run("INSERT INTO auth_codes (code_hash, client_id, redirect_uri, challenge, "
                    "username, scope, expires, used) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                    (token_hash(code), client_id, redirect_uri, challenge, username, scope,
                     int(self.clock()) + CODE_TTL))
        return code

    def redeem(self, code: str, *, client_id: str, redirect_uri: str, verifier: str) -> Grant:
        with self.db.write() as c:
            row = c.one("SELECT client_id, redirect_uri, challenge, username, scope, expires, used "
                        "FROM auth_codes WHERE code_hash = ?", (token_hash(code),))
            if row is None:
                raise AuthError("invalid_grant", "unknown authorization code")
            c.run("UPDATE auth_codes SET used = 1 WHERE code_hash = ?", (token_hash(code),))
        if row[6]:
            raise AuthError("invalid_grant", "this authorization code was already used")
        if row[5] < self.clock():
            raise AuthError("invalid_grant", "the authorization code has expired")
        if row[0] != client_id or row[1] != redirect_uri:
            raise AuthError("invalid_grant", "client_id or redirect_uri differ from the "
                                             "authorization request")
        if not _VERIFIER.fullmatch(verifier or "") or s256(verifier) != row[2]:
            raise AuthError("invalid_grant", "code_verifier does not match the code_challenge")
        return Grant(row[0], row[3], row[4])
