"""Helpers for the FHIR REST API tests."""

from __future__ import annotations

from typing import Any

import httpx
from starlette.testclient import TestClient

FHIR_JSON = "application/fhir+json"
BASE = "http://testserver/fhir"


def post(client: TestClient, resource: dict[str, Any],
         headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post(f"/fhir/{resource['resourceType']}", json=resource,
                       headers={"content-type": FHIR_JSON, **(headers or {})})


def put(client: TestClient, resource: dict[str, Any],
        headers: dict[str, str] | None = None) -> httpx.Response:
    return client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource,
                      headers={"content-type": FHIR_JSON, **(headers or {})})


def created(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    """Create ``resource`` and return it as stored (with id and meta)."""
    r = post(client, resource)
    assert r.status_code == 201, r.text
    return r.json()


def outcome(r: httpx.Response, status: int, *, code: str | None = None,
            expression: str | None = None, text: str | None = None) -> dict[str, Any]:
    """Assert ``r`` is an OperationOutcome with ``status``; optionally an issue with ``code``,
    an ``expression`` and ``text`` in its diagnostics."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith(FHIR_JSON), r.headers
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    issues = body["issue"]
    assert issues and all(i["diagnostics"] for i in issues)
    if code is not None:
        assert any(i["code"] == code for i in issues), issues
    if expression is not None:
        assert any(expression in i.get("expression", []) for i in issues), issues
    if text is not None:
        assert any(text in i["diagnostics"] for i in issues), issues
    return body


def patient(family: str = "Nguyễn", given: str = "An", *, identifier: str | None = None,
            **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": family,
                                                                "given": [given]}], **extra}
    if identifier is not None:
        res["identifier"] = [{"system": "urn:songkhoe:test", "value": identifier}]
    return res


def observation(subject: str, value: float = 120.0, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "subject": {"reference": subject},
            "valueQuantity": {"value": value, "unit": "mm[Hg]",
                              "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
            **extra}


def count(client: TestClient, path: str) -> int:
    r = client.get(path, params={"_summary": "count"})
    assert r.status_code == 200, r.text
    return int(r.json()["total"])
