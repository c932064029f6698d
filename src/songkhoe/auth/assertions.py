"""Client authentication with a signed JWT (``private_key_jwt``): RFC 7523 §2.2 and §3, as
profiled by SMART Backend Services (SMART App Launch 2.0, "Backend Services",
``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``).

The assertion must be signed (RS384/ES384/RS256/ES256) by a key in the client's registered
JWK Set, with ``iss`` = ``sub`` = the client id, ``aud`` = our token endpoint URL, an ``exp``
no more than five minutes ahead and a ``jti`` never seen before (replay protection: spent
``jti``s are kept in the revocation table until they expire).
"""

from __future__ import annotations

import json
from typing import Any

import jwt

from .identities import AuthError, Client
from .passwords import Clock
from .tokens import TokenService

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGS = ["RS384", "ES384", "RS256", "ES256"]
MAX_LIFETIME = 300


def verify_assertion(assertion: str, client: Client, token_url: str, clock: Clock,
                     tokens: TokenService) -> None:
    if not client.jwks:
        raise AuthError("invalid_client", "this client has no registered keys for "
                                          "private_key_jwt", 401)
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError as exc:
        raise AuthError("invalid_client", f"malformed client assertion: {exc}", 401) from None
    if header.get("alg") not in ALGS:
        raise AuthError("invalid_client", f"client assertion alg must be one of {ALGS}", 401)
    keys = client.jwks.get("keys", [])
    candidates = [k for k in keys if header.get("kid") in (None, k.get("kid"))]
    claims: dict[str, Any] | None = None
    for jwk in candidates:
        try:
            key = jwt.PyJWK.from_json(json.dumps(jwk), algorithm=header["alg"])
            claims = jwt.decode(assertion, key, algorithms=[header["alg"]], audience=token_url,
                                options={"require": ["iss", "sub", "aud", "exp", "jti"],
                                         "verify_exp": False, "verify_iat": False,
                                         "verify_nbf": False})
            break
        except jwt.PyJWTError:
            continue
    if claims is None:
        raise AuthError("invalid_client", "the client assertion's signature, audience or claims "
                                          "do not verify against the client's registered keys", 401)
    now = clock()
    if claims["iss"] != client.client_id or claims["sub"] != client.client_id:
        raise AuthError("invalid_client", "client assertion iss and sub must be the client id", 401)
    if not now - 30 < float(claims["exp"]) <= now + MAX_LIFETIME + 30:
        raise AuthError("invalid_client", "client assertion expired or lives longer than 5 min", 401)
    jti = f"assertion:{client.client_id}:{claims['jti']}"
    if tokens.is_revoked(jti):
        raise AuthError("invalid_client", "client assertion jti already used (replay)", 401)
    tokens.revoke(jti, float(claims["exp"]) + 60)
