"""History at instance, type and system level, paged, with _since."""

from __future__ import annotations

from datetime import timedelta

from .conftest import patient


def test_instance_history_newest_first(store):
    p = store.create(patient()).stored
    store.update("Patient", p.id, {**p.resource, "gender": "female"})
    store.delete("Patient", p.id)
    page = store.history("Patient", p.id)
    assert [v.version for v in page.versions] == [3, 2, 1]
    assert page.versions[0].deleted and page.versions[0].method == "DELETE"
    assert [v.method for v in page.versions[1:]] == ["PUT", "POST"]
    assert page.total == 3


def test_type_and_system_history_paging(store):
    for n in range(5):
        store.create(patient(cccd=f"0010600000{n:02d}"))
    store.create({"resourceType": "Organization", "name": "Trạm Y tế xã Phú Lương"})
    seen, cursor = [], None
    while True:
        page = store.history("Patient", count=2, cursor=cursor)
        seen += [(v.id, v.version) for v in page.versions]
        cursor = page.next_cursor
        if not cursor:
            break
    assert len(seen) == 5 == len(set(seen))
    assert len(store.history(count=100).versions) == 6


def test_since(store):
    p = store.create(patient()).stored
    later = p.last_updated + timedelta(microseconds=1)
    assert store.history(since=later).versions == []
    assert len(store.history(since=p.last_updated).versions) == 1
