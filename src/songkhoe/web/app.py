"""Everything the web app adds to the server, for ``create_app(extra_routes=...)``.

``routes(store, programmes)`` returns a ``WebRoutes``: the routes of the app API
(``api``, ``people``, ``indicators``), the session endpoints (``session``) and the page shell
with its assets (``shell``), plus what ``rest.app.create_app`` reads from it:

- ``public``: the paths that answer without a token — ``/`` (a redirect) and everything under
  ``/app/`` (the shell, the assets, sign-in and sign-out; a trailing ``/`` marks a prefix);
- ``middleware``: ``session.SessionMiddleware``, which must run before the guard (it turns the
  session cookie into the bearer token the guard checks).

The app API routes (``/api/*``) are not public: the guard checks, scopes and audits them
like the FHIR API.
"""

from __future__ import annotations

from typing import Any

from starlette.middleware import Middleware
from starlette.routing import Route

from songkhoe.programs.definition import Programme
from songkhoe.web import api
from songkhoe.web.indicators import Indicators
from songkhoe.web.people import People
from songkhoe.web.session import SessionEndpoints, SessionMiddleware
from songkhoe.web.shell import Shell

PUBLIC = ("/", "/app", "/app/")


class WebRoutes(list[Route]):
    """Routes, with the public paths and the middleware the web app needs."""

    public: tuple[str, ...] = PUBLIC
    middleware: list[Middleware]


def routes(store: Any, programmes: dict[str, Programme]) -> WebRoutes:
    out = WebRoutes([*api.routes(store, programmes), *People(store).routes(),
                     *Indicators(store).routes(), *SessionEndpoints().routes(),
                     *Shell().routes()])
    out.middleware = [Middleware(SessionMiddleware)]
    return out
