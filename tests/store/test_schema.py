"""Schema creation, version record, and refusal of a database from a newer songkhoe."""

from __future__ import annotations

import pytest

from songkhoe.store import open_store
from songkhoe.store.schema import SCHEMA_VERSION, SchemaTooNew


def _version(store) -> str:
    with store.backend.transaction(write=False) as conn:
        return store.backend.execute(conn, "SELECT value FROM schema_meta WHERE key = 'version'").fetchone()[0]


def test_new_database_gets_the_current_version_and_reopens(db_url):
    store = open_store(db_url)
    store.create({"resourceType": "Patient", "gender": "male"})
    assert _version(store) == str(SCHEMA_VERSION)
    store.close()
    again = open_store(db_url)  # no migration runs twice: the data stays
    assert again.search("Patient", [("_summary", "count")]).total == 1
    again.close()


def test_newer_database_is_refused_with_a_clear_message(db_url):
    store = open_store(db_url)
    with store.backend.transaction(write=True) as conn:
        store.backend.execute(conn, "UPDATE schema_meta SET value = ? WHERE key = 'version'",
                              (str(SCHEMA_VERSION + 1),))
    store.close()
    with pytest.raises(SchemaTooNew) as err:
        open_store(db_url)
    assert f"schema version {SCHEMA_VERSION + 1}" in str(err.value)
    assert "upgrade songkhoe" in str(err.value)
