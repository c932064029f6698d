"""The web app's page shell and static assets, served by songkhoe itself (no CDN, no build).

- ``GET /app`` and ``GET /app/<anything>``: ``static/index.html`` — the same shell for every
  page; the page's script routes on the path (``static/js/main.js``). It is answered
  ``Cache-Control: no-cache`` with a strict Content-Security-Policy (scripts, styles and
  connections from this origin only, no inline script), and sets the ``sk_csrf`` cookie
  (``session``) when the browser has none.
- ``GET /app/static/<version>/<path>``: the files under ``static/``, read once at start and
  kept in memory with their gzip encodings. ``<version>`` is a hash of all of them, written
  into the shell, so an asset's URL changes whenever any asset does: assets are cached by the
  browser for a year (``immutable``) and a weak connection fetches only the shell again.
  An asset asked for under another version is still answered (``no-cache``), for a shell
  loaded just before an upgrade.
- ``GET /``: a redirect to ``/app/``.

All are public routes (the guard audits them like every request).
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import secrets
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from songkhoe.web.session import CSRF_COOKIE, cookie

STATIC = Path(__file__).parent / "static"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".json": "application/json; charset=utf-8", ".svg": "image/svg+xml",
          ".html": "text/html; charset=utf-8", ".png": "image/png", ".ico": "image/x-icon"}
_COMPRESS = (".js", ".css", ".json", ".svg", ".html")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
_SECURITY = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
             "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"}


class Asset:
    def __init__(self, path: Path) -> None:
        self.body = path.read_bytes()
        self.type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or \
            "application/octet-stream"
        self.gzipped = gzip.compress(self.body, 9, mtime=0) if path.suffix in _COMPRESS \
            else None
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'


class Shell:
    def __init__(self, root: Path = STATIC) -> None:
        self.assets = {p.relative_to(root).as_posix(): Asset(p)
                       for p in sorted(root.rglob("*")) if p.is_file()}
        digest = hashlib.sha256()
        for name, asset in self.assets.items():
            digest.update(name.encode() + b"\0" + asset.body)
        self.version = digest.hexdigest()[:12]
        html = self.assets.pop("index.html").body.decode()
        base = f"/app/static/{self.version}"
        # every module and the default catalog announced at once: no import waterfall
        preload = [f'<link rel="modulepreload" href="{base}/{name}">'
                   for name in self.assets if name.endswith(".js")]
        preload.append(f'<link rel="preload" href="{base}/i18n/vi.json" as="fetch" '
                       'crossorigin="anonymous">')
        self.index = html.replace("{{preload}}", "\n".join(preload)).replace(
            "{{static}}", base).encode()

    def routes(self) -> list[Route]:
        return [Route("/", self.root, methods=["GET", "HEAD"]),
                Route("/app/static/{version}/{path:path}", self.asset, methods=["GET", "HEAD"]),
                Route("/app", self.page, methods=["GET", "HEAD"]),
                Route("/app/{path:path}", self.page, methods=["GET", "HEAD"])]

    async def root(self, request: Request) -> Response:
        return RedirectResponse("/app/", 302)

    async def page(self, request: Request) -> Response:
        response = Response(self.index, media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-cache", **_SECURITY})
        if CSRF_COOKIE not in request.cookies:
            response.raw_headers.append((b"set-cookie", cookie(
                CSRF_COOKIE, secrets.token_urlsafe(24), secure=request.url.scheme == "https",
                http_only=False)))
        return response

    async def asset(self, request: Request) -> Response:
        asset = self.assets.get(request.path_params["path"])
        if asset is None:
            return Response("not found", 404, media_type="text/plain")
        current = request.path_params["version"] == self.version
        headers = {"ETag": asset.etag, "Vary": "Accept-Encoding",
                   "X-Content-Type-Options": "nosniff",
                   "Cache-Control": "public, max-age=31536000, immutable" if current
                   else "no-cache"}
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        body = asset.body
        if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
            body = asset.gzipped
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=asset.type, headers=headers)
