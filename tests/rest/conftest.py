"""Fixtures for the FHIR REST API tests: a TestClient over ``create_app(store, auth=…)`` on each
backend, with security on and an administrator's bearer token on every request, so the whole
REST suite also runs through authentication, scope checks and the audit log (and proves that
each request left one AuditEvent)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from songkhoe.auth import Auth, ScopeSet
from songkhoe.auth.identities import ROLES
from songkhoe.rest import create_app


@pytest.fixture
def auth(store: Any) -> Auth:
    return Auth(store)


@pytest.fixture
def admin_token(auth: Auth) -> str:
    token, _ = auth.tokens.issue(subject="test-admin", kind="user", role="administrator",
                                 org=None, scope=ScopeSet.parse(ROLES["administrator"]),
                                 client_id=None)
    return token


@pytest.fixture
def client(store: Any, auth: Auth, admin_token: str) -> Iterator[TestClient]:
    # raise_server_exceptions: a bug that escapes the app's own 500 handling fails the test.
    requests: list[str] = []
    with TestClient(create_app(store, auth=auth), raise_server_exceptions=True,
                    headers={"Authorization": f"Bearer {admin_token}"}) as c:
        c.event_hooks["request"].append(lambda r: requests.append(f"{r.method} {r.url}"))
        yield c
    # every request of every REST test left exactly one AuditEvent, and the chain holds
    assert len(auth.audit.entries()) == len(requests), requests
    assert auth.audit.verify() is None
