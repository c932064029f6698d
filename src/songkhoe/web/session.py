"""Browser sessions for the web app: tokens in cookies, CSRF by double submit.

The FHIR and app APIs take bearer tokens (``rest.guard``). A browser app that kept them in
JavaScript would hand them to any script injected into the page, so the web app signs in
through ``POST /app/session`` instead, and the tokens live in cookies scripts cannot read:

- ``sk_access`` (the access token) and ``sk_refresh`` (the refresh token): ``HttpOnly;
  SameSite=Strict; Path=/`` (and ``Secure`` over https), session cookies — closing the
  browser signs out;
- ``sk_csrf``: a random value the page's script *can* read (not HttpOnly), set with the
  shell and renewed at each sign-in.

``SessionMiddleware`` runs before the guard. For ``/api`` and ``/fhir`` requests that carry
no ``Authorization`` header but the session cookies, it:

1. requires, for every method but GET and HEAD, an ``X-CSRF-Token`` header equal to the
   ``sk_csrf`` cookie (double submit; OWASP CSRF Prevention Cheat Sheet) and, when the browser
   sends an ``Origin``, that it is this server's — else 403, audited like any refusal;
2. refreshes the access token with the refresh token when it has expired (or is about to),
   sets the new cookies on the answer, and clears them when the refresh is refused;
3. adds ``Authorization: Bearer <access token>``, so the guard checks, scopes and audits the
   request exactly as for any other client;
4. gzips the answer (≥ 1 KB) for browsers that accept it — the web app's requests only, so
   FHIR clients see no change.

Refresh tokens rotate, and replaying a spent one revokes its whole family (RFC 9700
§4.14.2): a page that sends several requests at once after the access token expired must not
refresh it several times. Refreshes are single-flight per process (concurrent requests with
the same refresh token wait for one refresh and share its result for 30 s). With several
server processes two of them may still refresh the same token at once: the second is refused
without revoking anything (``auth.refresh.RefreshRace``), and its request goes on unsigned —
the guard answers 401 — with the header ``X-Session-Refreshing: 1`` and no cookie changed;
the page (``static/js/api.js``) retries it once the first process's answer has brought the
new cookies.

The session endpoints (public routes, the guard audits them):

- ``POST /app/session`` — form ``username``, ``password`` (and ``new_password`` when the
  password was issued once), with the CSRF header: the password grant of ``Auth`` (its
  throttle and lockout apply), answered ``{"user", "role", "org"}`` and the cookies; an OAuth
  error ``{"error", "error_description"}`` otherwise;
- ``POST /app/logout`` — revokes the refresh token's family and the access token, clears the
  cookies (CSRF header required).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from songkhoe.auth import AuthError, InvalidToken
from songkhoe.auth.audit import Event
from songkhoe.auth.refresh import RefreshRace
from songkhoe.rest.auth_routes import read_form

ACCESS_COOKIE = "sk_access"
REFRESH_COOKIE = "sk_refresh"
CSRF_COOKIE = "sk_csrf"
CSRF_HEADER = b"x-csrf-token"
COVERED = ("/api/", "/fhir/", "/fhir")
SAFE = frozenset({"GET", "HEAD"})
REFRESH_EARLY = 15  # seconds before expiry an access token is refreshed
SHARED_FOR = 30.0  # seconds a refresh's result answers other requests with the same token
#: on the answer to a request whose refresh lost a race with another server process's
RACED_HEADER = (b"x-session-refreshing", b"1")
_RACED: dict[str, Any] = {}  # ``_Refresher.refresh``: another process refreshed the token
_NO_STORE = {"Cache-Control": "no-store"}


def cookies_of(scope: Any) -> dict[str, str]:
    for name, value in scope["headers"]:
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed cookie header counts as none
                return {}
            return {k: m.value for k, m in jar.items()}
    return {}


def _header(scope: Any, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return value.decode("latin-1")
    return None


def _expires(token: str) -> float:
    """A JWT's ``exp`` (unverified: only to decide when to refresh; the guard verifies)."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims.get("exp", 0))
    except Exception:  # noqa: BLE001 - unreadable: treat as expired
        return 0.0


def cookie(name: str, value: str, *, secure: bool, http_only: bool = True,
           clear: bool = False) -> bytes:
    parts = [f"{name}={'' if clear else value}", "Path=/", "SameSite=Strict"]
    if http_only:
        parts.append("HttpOnly")
    if secure:
        parts.append("Secure")
    if clear:
        parts.append("Max-Age=0")
    return "; ".join(parts).encode("latin-1")


def session_cookies(tokens: dict[str, Any], secure: bool) -> list[bytes]:
    out = [cookie(ACCESS_COOKIE, tokens["access_token"], secure=secure)]
    if tokens.get("refresh_token"):
        out.append(cookie(REFRESH_COOKIE, tokens["refresh_token"], secure=secure))
    return out


def cleared(secure: bool) -> list[bytes]:
    return [cookie(ACCESS_COOKIE, "", secure=secure, clear=True),
            cookie(REFRESH_COOKIE, "", secure=secure, clear=True)]


def _same_origin(scope: Any) -> bool:
    origin = _header(scope, b"origin")
    if origin is None:  # same-origin GETs and older browsers send none; the token decides
        return True
    host = _header(scope, b"host")
    return bool(host) and urlsplit(origin).netloc == host


def csrf_ok(scope: Any, jar: dict[str, str]) -> bool:
    sent = _header(scope, CSRF_HEADER)
    kept = jar.get(CSRF_COOKIE)
    return bool(sent and kept and hmac.compare_digest(sent, kept)) and _same_origin(scope)


class _Refresher:
    """Single-flight refreshes, keyed by a hash of the refresh token."""

    def __init__(self) -> None:
        self.running: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self.done: dict[str, tuple[float, dict[str, Any] | None]] = {}

    async def refresh(self, auth: Any, token: str) -> dict[str, Any] | None:
        """The new tokens; None when the refresh is refused; ``_RACED`` when another server
        process has just refreshed the same token."""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        for k in [k for k, (at, _) in self.done.items() if now - at > SHARED_FOR]:
            del self.done[k]
        if key in self.done:
            return self.done[key][1]
        if key in self.running:
            return await asyncio.shield(self.running[key])
        future: asyncio.Future[dict[str, Any] | None] = \
            asyncio.get_running_loop().create_future()
        self.running[key] = future
        try:
            try:
                tokens: dict[str, Any] | None = await run_in_threadpool(
                    auth.token_request, {"grant_type": "refresh_token", "refresh_token": token})
            except RefreshRace:
                tokens = _RACED
            except AuthError:
                tokens = None
            self.done[key] = (time.monotonic(), tokens)
            future.set_result(tokens)
            return tokens
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            del self.running[key]


class SessionMiddleware:
    """Cookie session → bearer token for ``/api`` and ``/fhir`` (see the module docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=1024)
        self.refresher = _Refresher()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(COVERED) or \
                _header(scope, b"authorization") is not None:
            await self.app(scope, receive, send)
            return
        jar = cookies_of(scope)
        access, refresh = jar.get(ACCESS_COOKIE), jar.get(REFRESH_COOKIE)
        if not access and not refresh:
            await self.app(scope, receive, send)
            return
        if scope["method"] not in SAFE and not csrf_ok(scope, jar):
            await self._refuse(scope, receive, send, access)
            return
        secure = scope.get("scheme") == "https"
        set_cookies: list[bytes] = []
        raced = False
        if refresh and (not access or _expires(access) - REFRESH_EARLY < time.time()):
            auth = scope["app"].state.auth
            tokens = await self.refresher.refresh(auth, refresh) if auth is not None else None
            if tokens is _RACED:  # no cookie set: the other process's answer sets new ones
                if not access or _expires(access) <= time.time():
                    access, raced = None, True
            elif tokens is None:
                access, set_cookies = None, cleared(secure)
            else:
                access, set_cookies = tokens["access_token"], session_cookies(tokens, secure)
        headers = list(scope["headers"])
        if access:
            headers.append((b"authorization", f"Bearer {access}".encode("latin-1")))
        scope = {**scope, "headers": headers}

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start" and (set_cookies or raced):
                message = {**message, "headers": [
                    *message.get("headers", []), *((b"set-cookie", c) for c in set_cookies),
                    *([RACED_HEADER] if raced else [])]}
            await send(message)

        await self.gzip(scope, receive, sending)

    async def _refuse(self, scope: Any, receive: Any, send: Any, token: str | None) -> None:
        """403, audited as a security alert (``audit.DICOM_SUBTYPES``: ``restricted``) of the
        session's user when its access cookie still verifies."""
        writer = scope["app"].state.audit_writer
        client = scope.get("client")
        address = client[0] if client else None
        if writer is not None:
            who = None
            if token:
                try:
                    who = scope["app"].state.auth.verify(token, address)
                except InvalidToken:  # expired or revoked: the refusal is anonymous
                    pass
            await writer.record(Event(
                interaction="restricted", method=scope["method"], path=scope["path"],
                status=403, query=scope.get("query_string", b"").decode("latin-1"),
                access=who, address=address,
                detail="session cookie without a matching X-CSRF-Token header (or from "
                       "another origin)"))
        body = orjson.dumps({"resourceType": "OperationOutcome", "issue": [{
            "severity": "error", "code": "forbidden",
            "diagnostics": "A request signed in by cookie must carry the X-CSRF-Token header "
                           "(the value of the sk_csrf cookie) and come from this site"}]})
        await Response(body, 403, media_type="application/fhir+json")(scope, receive, send)


class SessionEndpoints:
    """``POST /app/session`` and ``POST /app/logout``."""

    def routes(self) -> list[Route]:
        return [Route("/app/session", self.sign_in, methods=["POST"]),
                Route("/app/logout", self.sign_out, methods=["POST"])]

    async def sign_in(self, request: Request) -> Response:
        audit = request.scope.setdefault("songkhoe.audit", {})
        auth = request.app.state.auth
        if auth is None:
            return JSONResponse({"error": "unsupported", "error_description":
                                 "security is off on this server: no sign-in needed"}, 400)
        if not csrf_ok(request.scope, request.cookies):
            audit["detail"] = "web sign-in refused: no matching X-CSRF-Token header"
            return JSONResponse({"error": "invalid_request", "error_description":
                                 "missing or wrong X-CSRF-Token header"}, 403, headers=_NO_STORE)
        try:
            form = await read_form(request)
            fields = {k: form.get(k, "") for k in ("username", "password", "new_password")}
            audit["who"] = fields["username"]
            tokens = await run_in_threadpool(auth.token_request, {
                "grant_type": "password", **{k: v for k, v in fields.items() if v}})
            access = await run_in_threadpool(auth.verify, tokens["access_token"])
        except AuthError as err:
            audit["detail"] = f"web sign-in: {err.error}: {err.description}"
            return JSONResponse({"error": err.error, "error_description": err.description},
                                err.status, headers=_NO_STORE)
        audit["detail"] = f"web sign-in: granted {tokens['scope']}"
        secure = request.url.scheme == "https"
        response = JSONResponse({"user": access.subject, "role": access.role,
                                 "org": access.org, "patient": access.patient},
                                headers=_NO_STORE)
        for value in [*session_cookies(tokens, secure),
                      cookie(CSRF_COOKIE, secrets.token_urlsafe(24), secure=secure,
                             http_only=False)]:
            response.raw_headers.append((b"set-cookie", value))
        return response

    async def sign_out(self, request: Request) -> Response:
        auth = request.app.state.auth
        if not csrf_ok(request.scope, request.cookies):
            return JSONResponse({"error": "invalid_request", "error_description":
                                 "missing or wrong X-CSRF-Token header"}, 403)
        if auth is not None:
            for name in (REFRESH_COOKIE, ACCESS_COOKIE):
                token = request.cookies.get(name)
                if token:
                    await run_in_threadpool(auth.revoke, token)
        response = Response(status_code=204, headers=_NO_STORE)
        for value in cleared(request.url.scheme == "https"):
            response.raw_headers.append((b"set-cookie", value))
        return response
