"""Token-signing keys: ES256 (ECDSA P-256, RFC 7518 §3.4) key pairs kept in the database,
published as a JWK Set (RFC 7517) at ``/auth/jwks``.

Rotation: ``rotate()`` makes a new key the signing key and retires the old one; a retired key
still verifies tokens until every token it signed has expired (``retired + grace``), then it
is dropped from the JWK Set and from verification. Each token names its key in the ``kid``
header (RFC 7515 §4.1.4). The private halves are stored as PKCS#8 PEM in ``auth_keys``;
whoever can read the database can sign tokens, so protect the database (docs/security.md).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from .db import Db
from .passwords import Clock

ALG = "ES256"
REREAD = 5.0  # seconds a verifying process trusts its list of valid keys


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Any  # cryptography EllipticCurvePrivateKey
    public_jwk: dict[str, Any]
    retired: float | None


class KeyRing:
    def __init__(self, db: Db, clock: Clock, grace: float) -> None:
        self.db = db
        self.clock = clock
        self.grace = grace  # how long a retired key still verifies (the access-token lifetime)
        self._cache: dict[str, SigningKey] = {}
        self._valid: tuple[float, dict[str, SigningKey]] | None = None  # (read at, by kid)

    def _new_key(self, conn: Any) -> None:
        private = ec.generate_private_key(ec.SECP256R1())
        kid = secrets.token_urlsafe(12)
        jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
        jwk.update(kid=kid, alg=ALG, use="sig")
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        conn.run("INSERT INTO auth_keys (kid, alg, private_pem, public_jwk, created, retired) "
                 "VALUES (?, ?, ?, ?, ?, NULL)", (kid, ALG, pem, json.dumps(jwk), int(self.clock())))

    def _load(self, row: Any) -> SigningKey:
        kid = row[0]
        key = self._cache.get(kid)
        if key is None or key.retired != row[3]:
            private = serialization.load_pem_private_key(row[1].encode(), password=None)
            key = self._cache[kid] = SigningKey(kid, private, json.loads(row[2]), row[3])
        return key

    def current(self) -> SigningKey:
        """The signing key, created on first use."""
        sql = ("SELECT kid, private_pem, public_jwk, retired FROM auth_keys WHERE retired IS NULL "
               "ORDER BY created DESC, kid LIMIT 1")
        row = self.db.one(sql)
        if row is None:
            with self.db.write() as conn:
                if conn.one(sql) is None:
                    self._new_key(conn)
            row = self.db.one(sql)
        return self._load(row)

    def rotate(self) -> SigningKey:
        """A new signing key; the old one keeps verifying for ``grace`` seconds."""
        with self.db.write() as conn:
            conn.run("UPDATE auth_keys SET retired = ? WHERE retired IS NULL", (int(self.clock()),))
            self._new_key(conn)
        self._valid = None
        return self.current()

    def valid(self) -> list[SigningKey]:
        """Keys that may verify a token now: the current one and retired ones in their grace."""
        now = self.clock()
        rows = self.db.all("SELECT kid, private_pem, public_jwk, retired FROM auth_keys "
                           "WHERE retired IS NULL OR retired >= ? ORDER BY created DESC",
                           (int(now - self.grace),))
        return [self._load(r) for r in rows]

    def find(self, kid: str) -> SigningKey | None:
        """The valid key ``kid``. The list is re-read at most every ``REREAD`` seconds, and at
        once for a kid not seen yet (another process may just have rotated)."""
        now = self.clock()
        valid = self._valid
        if valid is None or not 0 <= now - valid[0] < REREAD or kid not in valid[1]:
            valid = self._valid = (now, {k.kid: k for k in self.valid()})
        key = valid[1].get(kid)
        if key is None or (key.retired is not None and key.retired < now - self.grace):
            return None
        return key

    def jwks(self) -> dict[str, Any]:
        self.current()
        return {"keys": [k.public_jwk for k in self.valid()]}
