"""Fixtures for the FHIR REST API tests: a TestClient over ``create_app(store)`` on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from songkhoe.rest import create_app


@pytest.fixture
def client(store: Any) -> Iterator[TestClient]:
    # raise_server_exceptions: a bug that escapes the app's own 500 handling fails the test.
    with TestClient(create_app(store), raise_server_exceptions=True) as c:
        yield c
