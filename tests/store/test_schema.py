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


def test_version_8_is_upgraded_and_a_refresh_tokens_use_time_fits(db_url):
    """v9 (``auth_refresh.used`` holds when a token was spent): a version-8 database —
    ``used INTEGER``, 32 bits on PostgreSQL — is upgraded on opening, and a time past 2038
    is stored."""
    store = open_store(db_url)
    with store.backend.transaction(write=True) as conn:
        if store.backend.name == "postgres":
            store.backend.execute(conn, "ALTER TABLE auth_refresh ALTER COLUMN used TYPE INTEGER")
        store.backend.execute(conn, "UPDATE schema_meta SET value = '8' WHERE key = 'version'")
    store.close()
    store = open_store(db_url)
    try:
        assert _version(store) == str(SCHEMA_VERSION)
        with store.backend.transaction(write=True) as conn:
            store.backend.execute(
                conn, "INSERT INTO auth_refresh (token_hash, family, scope, claims, expires, "
                      "used, revoked) VALUES ('h', 'f', '', '{}', 0, ?, 0)", (2**31 + 1,))
            assert store.backend.execute(conn, "SELECT used FROM auth_refresh").fetchone()[0] \
                == 2**31 + 1
    finally:
        store.close()
