"""Create, read, update, delete, patch and versions, on both backends."""

from __future__ import annotations

import unicodedata

import pytest

from songkhoe.fhir.outcome import FhirError

from .conftest import patient


def test_create_assigns_id_version_and_meta(store):
    result = store.create(patient(id="client-chosen"))
    assert result.outcome == "created"
    stored = result.stored
    assert stored.id != "client-chosen" and len(stored.id) == 26
    assert stored.version == 1
    res = store.read("Patient", stored.id).resource
    assert res["id"] == stored.id
    assert res["meta"]["versionId"] == "1"
    assert res["meta"]["lastUpdated"].endswith("Z")
    assert res["name"][0]["family"] == "Nguyễn"


def test_text_is_stored_nfc(store):
    decomposed = unicodedata.normalize("NFD", "Đặng Thị Ánh")
    created = store.create(patient(family=decomposed)).stored
    family = store.read("Patient", created.id).resource["name"][0]["family"]
    assert family == unicodedata.normalize("NFC", decomposed)
    assert unicodedata.is_normalized("NFC", family)


def test_update_creates_new_version_and_keeps_history(store):
    created = store.create(patient()).stored
    changed = {**created.resource, "gender": "female"}
    updated = store.update("Patient", created.id, changed)
    assert updated.outcome == "updated" and updated.stored.version == 2
    assert store.read("Patient", created.id).resource["gender"] == "female"
    assert store.vread("Patient", created.id, 1).resource["gender"] == "male"


def test_update_as_create_with_client_id(store):
    result = store.update("Patient", "p-001", patient(id="p-001"))
    assert result.outcome == "created" and result.stored.version == 1
    assert store.read("Patient", "p-001").resource["birthDate"] == "1960-05-01"


def test_update_id_mismatch_is_400(store):
    with pytest.raises(FhirError) as err:
        store.update("Patient", "a", patient(id="b"))
    assert err.value.status == 400


def test_if_match_stale_version_is_412(store):
    created = store.create(patient()).stored
    store.update("Patient", created.id, created.resource, if_match=1)
    with pytest.raises(FhirError) as err:
        store.update("Patient", created.id, created.resource, if_match=1)
    assert err.value.status == 412
    assert store.read("Patient", created.id).version == 2


def test_delete_is_logical(store):
    created = store.create(patient()).stored
    deleted = store.delete("Patient", created.id)
    assert deleted.outcome == "deleted" and deleted.stored.version == 2
    with pytest.raises(FhirError) as err:
        store.read("Patient", created.id)
    assert err.value.status == 410
    assert store.vread("Patient", created.id, 1).resource["gender"] == "male"
    assert store.delete("Patient", created.id).outcome == "unchanged"
    assert store.search("Patient", [("_id", created.id)]).matches == []
    revived = store.update("Patient", created.id, {**created.resource})
    assert revived.outcome == "created" and revived.stored.version == 3


def test_read_unknown_is_404_and_bad_id_400(store):
    with pytest.raises(FhirError) as err:
        store.read("Patient", "nope")
    assert err.value.status == 404
    with pytest.raises(FhirError) as err:
        store.read("Patient", "bad id!")
    assert err.value.status == 400
    with pytest.raises(FhirError) as err:
        store.read("NotAType", "x")
    assert err.value.status == 404


def test_invalid_resource_is_rejected_and_nothing_stored(store):
    bad = patient()
    bad["birthDate"] = "1960-13-01"
    with pytest.raises(FhirError) as err:
        store.create(bad)
    assert err.value.status == 400
    assert any("birthDate" in (i.expression or "") for i in err.value.issues)
    assert store.search("Patient", [("_summary", "count")]).total == 0
    assert store.history().versions == []


def test_patch_applies_json_patch_as_new_version(store):
    created = store.create(patient()).stored
    result = store.patch("Patient", created.id, [{"op": "replace", "path": "/gender", "value": "female"}])
    assert result.stored.version == 2
    assert store.read("Patient", created.id).resource["gender"] == "female"
    assert store.history("Patient", created.id).versions[0].method == "PATCH"


def test_patch_producing_invalid_resource_is_rejected(store):
    created = store.create(patient()).stored
    with pytest.raises(FhirError) as err:
        store.patch("Patient", created.id, [{"op": "replace", "path": "/gender", "value": 7}])
    assert err.value.status == 400
    with pytest.raises(FhirError) as err:
        store.patch("Patient", created.id, [{"op": "remove", "path": "/nothing"}])
    assert err.value.status == 422
    assert store.read("Patient", created.id).version == 1


def test_conditional_create(store):
    first = store.create(patient(), if_none_exist="identifier=urn:vn:cccd|001060012345")
    again = store.create(patient(), if_none_exist="identifier=urn:vn:cccd|001060012345")
    assert first.outcome == "created" and again.outcome == "unchanged"
    assert again.stored.id == first.stored.id
    store.create(patient(cccd="001060099999"))
    store.create(patient(cccd="001060099999"))
    with pytest.raises(FhirError) as err:
        store.create(patient(), if_none_exist="identifier=001060099999")
    assert err.value.status == 412


def test_conditional_update_and_delete(store):
    created = store.conditional_update("Patient", "identifier=urn:vn:cccd|079090000001",
                                       patient(cccd="079090000001"))
    assert created.outcome == "created"
    updated = store.conditional_update("Patient", "identifier=urn:vn:cccd|079090000001",
                                       {**patient(cccd="079090000001"), "gender": "female"})
    assert updated.outcome == "updated" and updated.stored.id == created.stored.id
    results = store.conditional_delete("Patient", "identifier=urn:vn:cccd|079090000001")
    assert [r.outcome for r in results] == ["deleted"]


def test_transaction_rolls_back_everything_on_error(store):
    with pytest.raises(FhirError):
        with store.transaction() as tx:
            tx.create(patient())
            tx.update("Patient", "ok-1", patient(id="ok-1"))
            tx.create({"resourceType": "Patient", "gender": "robot"})
    assert store.search("Patient", [("_summary", "count")]).total == 0
    assert store.history().versions == []


def test_reads_inside_a_transaction_see_its_writes(store):
    with store.transaction() as tx:
        created = tx.create(patient(family="Trần")).stored
        assert tx.read("Patient", created.id).resource["name"][0]["family"] == "Trần"
        assert [s.id for s in tx.search("Patient", [("name", "tran")]).matches] == [created.id]


def test_conditional_criteria_must_be_known_and_selective(store):
    store.create(patient())
    for query in ("shoe-size=42", "_count=1", ""):
        with pytest.raises(FhirError) as err:
            store.conditional_update("Patient", query, patient())
        assert err.value.status == 400, query
    assert store.search("Patient", [("_summary", "count")]).total == 1


def test_delete_with_if_match(store):
    created = store.create(patient()).stored
    with pytest.raises(FhirError) as err:
        store.delete("Patient", created.id, if_match=7)
    assert err.value.status == 412
    assert store.delete("Patient", created.id, if_match=1).outcome == "deleted"
