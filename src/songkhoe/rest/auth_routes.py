"""The authorization server's HTTP endpoints under ``/auth``, SMART discovery and ``/health``.

- ``POST /auth/token``: OAuth 2.0 token endpoint (RFC 6749 §3.2, §5; form-encoded request,
  JSON answer, errors as §5.2 ``{"error", "error_description"}``, ``Cache-Control: no-store``);
  client authentication by HTTP Basic, form fields or ``client_assertion`` (RFC 7523).
- ``GET|POST /auth/authorize``: authorization endpoint for the code grant with PKCE
  (RFC 6749 §4.1, RFC 7636): a server-rendered sign-in form (Vietnamese; ``?lang=en``
  English) that redirects back with ``code`` and ``state``.
- ``POST /auth/revoke``: token revocation (RFC 7009).
- ``GET /auth/jwks``: the public signing keys (RFC 7517).
- ``GET /fhir/.well-known/smart-configuration``: SMART App Launch 2.0 §"Conformance"
  discovery document.
- ``GET /health``: liveness.
"""

from __future__ import annotations

import base64
import html
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from songkhoe.auth import Auth, AuthError
from songkhoe.auth.scopes import ScopeError, ScopeSet

MAX_FORM = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def read_form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM:
        raise AuthError("invalid_request", "request too large")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        raise AuthError("invalid_request", "the form is not UTF-8") from None


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        user, _, secret = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        raise AuthError("invalid_client", "malformed Basic credentials", 401) from None
    return unquote(user), unquote(secret)


def _error(err: AuthError) -> JSONResponse:
    headers = dict(_NO_STORE)
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="songkhoe"'
    return JSONResponse({"error": err.error, "error_description": err.description},
                        status_code=err.status, headers=headers)


def origin(request: Request) -> str:
    host = request.headers.get("host", "localhost")
    return f"{request.url.scheme}://{host}"


class AuthEndpoints:
    def __init__(self, auth: Auth, fhir_prefix: str) -> None:
        self.auth = auth
        self.fhir_prefix = fhir_prefix

    def routes(self) -> list[Route]:
        return [
            Route("/auth/token", self.token, methods=["POST"]),
            Route("/auth/authorize", self.authorize, methods=["GET", "POST"]),
            Route("/auth/revoke", self.revoke, methods=["POST"]),
            Route("/auth/jwks", self.jwks, methods=["GET"]),
            Route(f"{self.fhir_prefix}/.well-known/smart-configuration", self.smart,
                  methods=["GET"]),
        ]

    async def token(self, request: Request) -> Response:
        audit = request.scope.setdefault("songkhoe.audit", {})
        try:
            form = await read_form(request)
            audit["who"] = form.get("username") or form.get("client_id")
            basic = _basic(request)
            if basic:
                audit["who"] = basic[0]
            answer = await run_in_threadpool(self.auth.token_request, form, basic=basic,
                                             token_url=f"{origin(request)}/auth/token")
        except AuthError as err:
            audit["detail"] = f"{err.error}: {err.description}"
            return _error(err)
        audit["detail"] = f"granted {answer['scope']}"
        return JSONResponse(answer, headers=_NO_STORE)

    async def revoke(self, request: Request) -> Response:
        try:
            form = await read_form(request)
            await run_in_threadpool(self.auth.authenticate_client, form, _basic(request),
                                    f"{origin(request)}/auth/token")
            await run_in_threadpool(self.auth.revoke, form.get("token", ""))
        except AuthError as err:
            return _error(err)
        return Response(status_code=200, headers=_NO_STORE)

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.auth.keys.jwks))

    async def smart(self, request: Request) -> Response:
        base = origin(request)
        return JSONResponse({
            "issuer": self.auth.tokens.issuer,
            "jwks_uri": f"{base}/auth/jwks",
            "authorization_endpoint": f"{base}/auth/authorize",
            "token_endpoint": f"{base}/auth/token",
            "revocation_endpoint": f"{base}/auth/revoke",
            "grant_types_supported": ["authorization_code", "client_credentials",
                                      "refresh_token", "password"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic",
                                                      "client_secret_post", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384", "RS256",
                                                                 "ES256"],
            "scopes_supported": ["openid", "fhirUser", "launch/patient", "offline_access",
                                 "online_access", "patient/*.rs", "user/*.rs", "user/*.cruds",
                                 "system/*.rs"],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "capabilities": ["launch-standalone", "client-public", "client-confidential-symmetric",
                             "client-confidential-asymmetric", "context-standalone-patient",
                             "permission-v1", "permission-v2", "permission-user",
                             "permission-patient", "permission-offline"],
        })

    # --- the authorization endpoint and its sign-in form ------------------------------------

    async def authorize(self, request: Request) -> Response:
        if request.method == "GET":
            params = dict(request.query_params)
        else:
            try:
                params = await read_form(request)
            except AuthError as err:
                return _error(err)
        lang = "en" if params.get("lang") == "en" else "vi"
        t = TEXT[lang]
        client = self.auth.identities.client(params.get("client_id", ""))
        redirect_uri = params.get("redirect_uri", "")
        if client is None or redirect_uri not in client.redirect_uris:
            # RFC 6749 §4.1.2.1: never redirect to an unverified URI
            return HTMLResponse(_page(t, t["bad_client"], None, lang), status_code=400)
        state = params.get("state", "")

        def back(**answer: str) -> Response:
            sep = "&" if "?" in redirect_uri else "?"
            return RedirectResponse(f"{redirect_uri}{sep}{urlencode({**answer, 'state': state})}",
                                    status_code=302)

        if params.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return back(error="invalid_request", error_description="PKCE S256 is required")
        try:
            ScopeSet.parse(params.get("scope", ""))
        except ScopeError as exc:
            return back(error="invalid_scope", error_description=str(exc))
        if request.method == "GET":
            return HTMLResponse(_page(t, None, params, lang))
        audit = request.scope.setdefault("songkhoe.audit", {})
        audit["who"] = params.get("username")
        try:
            user = await run_in_threadpool(self.auth.sign_in, params.get("username", ""),
                                           params.get("password", ""),
                                           params.get("new_password") or None)
            scope = str(self.auth._scope(params.get("scope", ""), user.role, client))
            code = await run_in_threadpool(
                self.auth.codes.issue, client_id=client.client_id, redirect_uri=redirect_uri,
                challenge=params["code_challenge"], method="S256", username=user.username,
                scope=scope)
        except AuthError as err:
            audit["detail"] = err.description
            message = t["change"] if "password_change_required" in err.description else t["failed"]
            return HTMLResponse(_page(t, f"{message} ({err.description})", params, lang,
                                      new_password="password_change_required" in err.description),
                                status_code=401)
        audit["detail"] = f"code issued for {scope}"
        return back(code=code)


TEXT: dict[str, dict[str, str]] = {
    "vi": {"title": "Đăng nhập songkhoe", "username": "Tên đăng nhập", "password": "Mật khẩu",
           "new_password": "Mật khẩu mới", "submit": "Đăng nhập",
           "asks": "Ứng dụng {name} xin quyền truy cập: {scope}",
           "failed": "Đăng nhập không thành công", "change": "Cần đặt mật khẩu mới",
           "bad_client": "Ứng dụng hoặc địa chỉ chuyển hướng không được đăng ký."},
    "en": {"title": "Sign in to songkhoe", "username": "Username", "password": "Password",
           "new_password": "New password", "submit": "Sign in",
           "asks": "The app {name} asks for access: {scope}",
           "failed": "Sign-in failed", "change": "Please choose a new password",
           "bad_client": "The application or its redirect address is not registered."},
}
_HIDDEN = ("response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
           "code_challenge_method", "aud", "lang")


def _page(t: dict[str, str], error: str | None, params: dict[str, Any] | None, lang: str,
          new_password: bool = False) -> str:
    e = html.escape
    parts = [f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
             f'<meta name="viewport" content="width=device-width, initial-scale=1">'
             f"<title>{e(t['title'])}</title></head><body><main><h1>{e(t['title'])}</h1>"]
    if error:
        parts.append(f'<p role="alert">{e(error)}</p>')
    if params is not None:
        parts.append(f"<p>{e(t['asks'].format(name=params.get('client_id', ''), scope=params.get('scope', '')))}</p>")
        parts.append('<form method="post" action="/auth/authorize">')
        for name in _HIDDEN:
            if params.get(name):
                parts.append(f'<input type="hidden" name="{name}" value="{e(params[name])}">')
        parts.append(f'<label>{e(t["username"])} <input name="username" autocomplete="username" '
                     f'value="{e(params.get("username", ""))}" required></label>')
        parts.append(f'<label>{e(t["password"])} <input name="password" type="password" '
                     'autocomplete="current-password" required></label>')
        if new_password:
            parts.append(f'<label>{e(t["new_password"])} <input name="new_password" '
                         'type="password" autocomplete="new-password" required></label>')
        parts.append(f'<button type="submit">{e(t["submit"])}</button></form>')
    parts.append("</main></body></html>")
    return "".join(parts)
