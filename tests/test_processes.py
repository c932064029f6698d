"""Real server processes: concurrent If-Match writers, and a kill in the middle of a
transaction Bundle. Both backends."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from .server import ServerProcess

pytestmark = pytest.mark.slow
JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def server(db_url):
    proc = ServerProcess(db_url, workers=2).start()
    try:
        yield proc
    finally:
        proc.stop()


def _patient(marker: str) -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": marker}],
            "name": [{"family": "Phạm", "given": ["Thị", "Hoa"]}], "gender": "female"}


def test_same_if_match_exactly_one_wins(server):
    created = httpx.post(f"{server.base}/Patient", json=_patient("c"), headers=JSON).json()
    pid = created["id"]
    for round_ in range(3):
        version = round_ + 1
        barrier = threading.Barrier(8)
        statuses: list[int] = []

        def put(n: int) -> None:
            body = {**created, "id": pid, "gender": "male" if n % 2 else "female"}
            with httpx.Client(timeout=60) as client:
                barrier.wait()
                r = client.put(f"{server.base}/Patient/{pid}", json=body,
                               headers={**JSON, "If-Match": f'W/"{version}"'})
            statuses.append(r.status_code)

        threads = [threading.Thread(target=put, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [200] + [412] * 7, statuses
        current = httpx.get(f"{server.base}/Patient/{pid}").json()
        assert current["meta"]["versionId"] == str(version + 1)


def test_concurrent_read_modify_write_loses_no_update(server):
    pid = httpx.post(f"{server.base}/Patient", json=_patient("base"), headers=JSON).json()["id"]

    def add_identifier(n: int) -> None:
        with httpx.Client(timeout=60) as client:
            while True:
                r = client.get(f"{server.base}/Patient/{pid}")
                res = r.json()
                res["identifier"].append({"system": "urn:writer", "value": str(n)})
                w = client.put(f"{server.base}/Patient/{pid}", json=res,
                               headers={**JSON, "If-Match": r.headers["ETag"]})
                if w.status_code == 200:
                    return
                assert w.status_code == 412, w.text

    threads = [threading.Thread(target=add_identifier, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = httpx.get(f"{server.base}/Patient/{pid}").json()
    assert sorted(i["value"] for i in final["identifier"] if i["system"] == "urn:writer") == \
        [str(n) for n in range(6)]
    assert final["meta"]["versionId"] == "7"


def test_kill_during_transaction_bundle_leaves_nothing(db_url):
    server = ServerProcess(db_url, workers=1).start()
    try:
        kept = httpx.post(f"{server.base}/Patient", json=_patient("kept"), headers=JSON)
        assert kept.status_code == 201
        marker = uuid.uuid4().hex
        entries = []
        for n in range(20000):
            full = f"urn:uuid:{uuid.uuid4()}"
            entries.append({"fullUrl": full, "resource": _patient(f"{marker}-{n}"),
                            "request": {"method": "POST", "url": "Patient"}})
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        outcome: dict[str, object] = {}

        def send() -> None:
            try:
                outcome["status"] = httpx.post(server.base, json=bundle, headers=JSON,
                                               timeout=120).status_code
            except httpx.HTTPError as exc:
                outcome["error"] = exc

        cpu_before = server.cpu_seconds()
        sender = threading.Thread(target=send)
        sender.start()
        deadline = time.monotonic() + 60
        while server.cpu_seconds() - cpu_before < 1.0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "status" not in outcome, "the bundle finished before the kill: make it larger"
        server.kill()
        sender.join()
        assert "error" in outcome and "status" not in outcome
    finally:
        server.stop()

    again = ServerProcess(db_url, workers=1).start()
    try:
        found = httpx.get(f"{again.base}/Patient", params={"identifier": f"urn:test|{marker}-0"}).json()
        assert found.get("entry", []) == []
        count = httpx.get(f"{again.base}/Patient", params={"_summary": "count"}).json()
        assert count["total"] == 1
        assert httpx.get(f"{again.base}/Patient", params={"identifier": "urn:test|kept"}).json()["entry"]
    finally:
        again.stop()
