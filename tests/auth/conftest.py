"""Fixtures for the security tests: an ``Auth`` with a clock the test moves (no sleeps)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from songkhoe.auth import Auth
from songkhoe.auth.passwords import Throttle
from songkhoe.rest import create_app

T0 = 1_800_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    import time

    return FakeClock(time.time())


@pytest.fixture
def auth(store: Any, clock: FakeClock) -> Auth:
    return Auth(store, clock=clock, throttle=Throttle(free_failures=3, base_delay=1.0,
                                                      max_delay=60.0, lock_after=6))


@pytest.fixture
def app(store: Any, auth: Auth) -> Any:
    return create_app(store, auth=auth)


@pytest.fixture
def http(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=True) as c:
        yield c


PASSWORD = "correct horse battery"


def add_orgs(store: Any) -> None:
    """The Ministry, two province departments and a commune station under each."""
    for id_, parent in [("moh", None), ("so-04", "moh"), ("so-08", "moh"),
                        ("tyt-00004", "so-04"), ("tyt-00008", "so-08")]:
        body: dict[str, Any] = {"resourceType": "Organization", "id": id_, "name": id_}
        if parent:
            body["partOf"] = {"reference": f"Organization/{parent}"}
        store.update("Organization", id_, body)


def patient_of(org: str, **more: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "managingOrganization": {"reference": f"Organization/{org}"},
            **more}


@pytest.fixture
def doctor(auth: Auth, store: Any) -> str:
    """A doctor at the commune station tyt-00004 (province so-04)."""
    add_orgs(store)
    auth.identities.add_user("bacsi", PASSWORD, "doctor", "tyt-00004")
    return "bacsi"


def password_token(http: TestClient, username: str, password: str = PASSWORD,
                   **extra: str) -> dict[str, Any]:
    r = http.post("/auth/token", data={"grant_type": "password", "username": username,
                                       "password": password, **extra})
    assert r.status_code == 200, r.text
    return dict(r.json())
