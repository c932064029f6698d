"""``Tx.update_many``: many updates in a few statements give what one ``update`` each gives —
versions, contents, index and owner rows — on both backends; with a guard, or a resource
named twice, it is one ``update`` each."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest

from songkhoe.auth import AccessContext, ScopeSet
from songkhoe.auth.policy import ContextAccess
from songkhoe.fhir.outcome import FhirError
from songkhoe.store.engine import prepare_version
from songkhoe.store.schema import INDEX_COLUMNS

from ..conftest import pg_schema
from .conftest import bp, patient

INTERPRETATION = [{"coding": [{"system": "urn:songkhoe:programme:test:bp", "code": "high"}],
                   "text": "cao"}]


def _flag(pid: str, fid: str, text: str) -> dict:
    return {"resourceType": "Flag", "id": fid, "status": "active", "code": {"text": text},
            "subject": {"reference": f"Patient/{pid}"}}


def _state(store) -> dict:
    """Every stored version (without its time) and every index and owner row, by type/id."""
    with store.reading() as tx:
        key = {rid: (t, i) for rid, t, i in tx.execute("SELECT rid, type, id FROM resources")}
        out = {"resources": sorted((t, i, v, bool(d)) for t, i, v, d in tx.execute(
            "SELECT type, id, version, deleted FROM resources").fetchall())}
        versions = []
        for t, i, v, m, content in tx.execute(
                "SELECT type, id, version, method, content FROM history").fetchall():
            resource = orjson.loads(content)
            del resource["meta"]["lastUpdated"]
            versions.append((t, i, v, m, orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)))
        out["history"] = sorted(versions)
        for table in (*INDEX_COLUMNS, "owners"):
            out[table] = sorted(repr((key[row[0]], *row[1:])) for row in tx.execute(
                f"SELECT * FROM {table}").fetchall())
    return out


@contextmanager
def _empty(backend: str, tmp_path, name: str) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / name}.db"
    else:
        with pg_schema() as url:
            yield url


def _seed(store) -> list[dict]:
    store.update("Patient", "p1", patient(id="p1"))
    store.update("Patient", "p2", patient(id="p2", cccd="001060012346"))
    store.update("Observation", "o1", {**bp("p1", systolic=165), "id": "o1"})
    store.update("Flag", "f1", _flag("p1", "f1", "cũ"))
    return [store.read("Observation", "o1").resource, store.read("Flag", "f1").resource]


def _writes(obs: dict, flag: dict) -> list[tuple]:
    return [("Observation", obs["id"], {**obs, "interpretation": INTERPRETATION}, obs),
            ("Flag", "f1", {**flag, "code": {"text": "mới"},  # ``date`` reads the period
                            "period": {"start": "2026-11-01"}}, flag),
            ("Flag", "f2", _flag("p2", "f2", "mới"), None),
            ("Flag", "f3", _flag("p1", "f3", "khác"), None)]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_many_updates_store_what_one_update_each_stores(backend, tmp_path):
    from songkhoe.store import open_store

    results = {}
    for name in ("many", "each"):
        with _empty(backend, tmp_path, name) as url:
            store = open_store(url)
            try:
                obs, flag = _seed(store)
                with store.transaction() as tx:
                    if name == "many":
                        written = tx.update_many(_writes(obs, flag))
                    else:
                        written = [tx.update(t, i, r, previous=p)
                                   for t, i, r, p in _writes(obs, flag)]
                assert [(w.outcome, w.stored.version) for w in written] == \
                    [("updated", 2), ("updated", 2), ("created", 1), ("created", 1)]
                results[name] = _state(store)
            finally:
                store.close()
    assert results["many"] == results["each"]


def test_many_updates_on_each_backend(store):
    obs, flag = _seed(store)
    with store.transaction() as tx:
        written = tx.update_many(_writes(obs, flag))
    assert [(w.stored.type, w.stored.id, w.stored.version) for w in written] == [
        ("Observation", obs["id"], 2), ("Flag", "f1", 2), ("Flag", "f2", 1), ("Flag", "f3", 1)]
    assert store.read("Observation", obs["id"]).resource["interpretation"] == INTERPRETATION
    assert [r.id for r in store.search("Flag", [("patient", "p2")]).matches] == ["f2"]
    assert sorted(r.id for r in store.search("Flag", [("patient", "p1")]).matches) == \
        ["f1", "f3"]
    # the interpreted Observation kept its index and owner rows: still found by value and
    # in its Patient's compartment
    assert [r.id for r in store.search("Observation", [
        ("component-value-quantity", "gt160"), ("patient", "p1")]).matches] == [obs["id"]]
    with store.reading() as tx:
        owners = tx.execute("SELECT o.patient FROM owners o JOIN resources r ON r.rid = o.rid "
                            "WHERE r.type = 'Observation' AND r.id = ?", [obs["id"]]).fetchall()
    assert [o[0] for o in owners] == ["p1"]


def test_a_bad_resource_writes_nothing(store):
    obs, flag = _seed(store)
    writes = _writes(obs, flag)
    writes[2] = ("Flag", "f2", {**_flag("p2", "f2", "mới"), "status": "bogus"}, None)
    with pytest.raises(FhirError) as failed:
        with store.transaction() as tx:
            tx.update_many(writes)
    assert failed.value.status == 400 and "Flag.status" in str(failed.value.issues)
    assert store.read("Flag", "f1").version == 1
    assert not store.search("Flag", [("_id", "f3")]).matches


def test_a_resource_named_twice_gets_two_versions(store):
    _seed(store)
    with store.transaction() as tx:
        written = tx.update_many([("Flag", "f9", _flag("p1", "f9", "một"), None),
                                  ("Flag", "f9", _flag("p1", "f9", "hai"), None)])
    assert [w.stored.version for w in written] == [1, 2]
    assert store.read("Flag", "f9").resource["code"]["text"] == "hai"


def test_with_a_guard_each_write_is_checked(store):
    obs, flag = _seed(store)
    worker = AccessContext(subject="u", kind="user", role="health_worker", org="tyt-x",
                           scopes=ScopeSet.parse("user/*.cruds"))
    with pytest.raises(FhirError) as refused:
        with store.transaction(ContextAccess(worker)) as tx:
            tx.update_many(_writes(obs, flag))
    assert refused.value.status == 403
    assert store.read("Observation", obs["id"]).version == 1


def test_a_version_prepared_over_a_replaced_one_is_prepared_again(store):
    """Prepared before the transaction over version 1 (``prepare_version``: version 1's
    index rows kept), written after version 2 changed a searched value: it is validated and
    indexed in full from its own content (version 2's systolic 120 would not be found
    above 160)."""
    obs, _ = _seed(store)
    ready = prepare_version({**obs, "interpretation": INTERPRETATION}, "Observation", obs)
    assert ready.keeps_index and ready.replaces == "1"
    lowered = copy.deepcopy(obs)
    lowered["component"][0]["valueQuantity"]["value"] = 120
    store.update("Observation", "o1", lowered)
    with store.transaction() as tx:
        tx.update_many([("Observation", "o1", ready, obs)])
    assert store.read("Observation", "o1").version == 3
    assert [r.id for r in store.search("Observation", [
        ("component-value-quantity", "gt160")]).matches] == ["o1"]
