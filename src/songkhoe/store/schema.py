"""The store's tables, their version, and automatic migration.

One logical layout on both backends (SQLite and PostgreSQL):

- ``resources``: one row per logical resource (type, id) with its current version number,
  last-updated time (µs since the Unix epoch, UTC) and deletion flag, keyed by a surrogate
  ``rid`` that the search indexes point to;
- ``history``: one row per version, holding the resource's JSON bytes (NULL for a deletion);
- ``idx_*``: search-index rows of the current version of each live resource, one table per
  FHIR search-parameter type (http://hl7.org/fhir/R4/search.html#ptypes).

The schema version lives in ``schema_meta``. Opening an older database applies the missing
migrations in order inside one transaction; a newer one is refused with a clear message.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Types:
    """Column types that differ between backends."""

    rid: str
    text: str
    bigint: str
    blob: str
    boolean: str
    real: str


SQLITE_TYPES = Types(rid="INTEGER PRIMARY KEY", text="TEXT", bigint="INTEGER", blob="BLOB",
                     boolean="INTEGER", real="REAL")
# PostgreSQL compares text in code-point order (COLLATE "C"), as SQLite does, so that prefix
# ranges on folded search keys use the indexes on both.
POSTGRES_TYPES = Types(rid="BIGINT PRIMARY KEY DEFAULT nextval('rid_seq')", text='TEXT COLLATE "C"', bigint="BIGINT", blob="BYTEA",
                       boolean="BOOLEAN", real="DOUBLE PRECISION")

# The columns of each search-index table after (rid, type, param), in insert order.
INDEX_COLUMNS: dict[str, tuple[str, ...]] = {
    "idx_string": ("value", "exact"),
    "idx_token": ("system", "code", "display"),
    "idx_reference": ("target_type", "target_id", "url"),
    "idx_date": ("lo", "hi"),
    "idx_number": ("lo", "hi"),
    "idx_quantity": ("system", "code", "lo", "hi"),
    "idx_uri": ("value",),
}


def _v1(t: Types) -> list[str]:
    """The first schema: resources, history and the search indexes."""
    txt = t.text
    sequence = ["CREATE SEQUENCE rid_seq"] if "nextval" in t.rid else []
    return sequence + [
        f"""CREATE TABLE resources (
            rid {t.rid},
            type {txt} NOT NULL,
            id {txt} NOT NULL,
            version INTEGER NOT NULL,
            last_updated {t.bigint} NOT NULL,
            deleted {t.boolean} NOT NULL,
            UNIQUE (type, id))""",
        f"""CREATE TABLE history (
            rid {t.bigint} NOT NULL,
            version INTEGER NOT NULL,
            type {txt} NOT NULL,
            id {txt} NOT NULL,
            last_updated {t.bigint} NOT NULL,
            method {txt} NOT NULL,
            content {t.blob},
            PRIMARY KEY (rid, version))""",
        "CREATE INDEX history_time ON history (last_updated)",
        "CREATE INDEX history_type_time ON history (type, last_updated)",
        "CREATE INDEX resources_type_updated ON resources (type, last_updated)",
        f"""CREATE TABLE idx_string (rid {t.bigint} NOT NULL, type {txt} NOT NULL,
            param {txt} NOT NULL, value {txt} NOT NULL, exact {txt} NOT NULL)""",
        "CREATE INDEX idx_string_key ON idx_string (type, param, value)",
        "CREATE INDEX idx_string_rid ON idx_string (rid)",
        f"""CREATE TABLE idx_token (rid {t.bigint} NOT NULL, type {txt} NOT NULL,
            param {txt} NOT NULL, system {txt}, code {txt}, display {txt})""",
        "CREATE INDEX idx_token_key ON idx_token (type, param, code, system)",
        "CREATE INDEX idx_token_rid ON idx_token (rid)",
        f"""CREATE TABLE idx_reference (rid {t.bigint} NOT NULL, type {txt} NOT NULL,
            param {txt} NOT NULL, target_type {txt}, target_id {txt}, url {txt})""",
        "CREATE INDEX idx_reference_key ON idx_reference (target_id, type, param, target_type)",
        "CREATE INDEX idx_reference_url ON idx_reference (url)",
        "CREATE INDEX idx_reference_rid ON idx_reference (rid)",
        f"""CREATE TABLE idx_date (rid {t.bigint} NOT NULL, type {txt} NOT NULL,
            param {txt} NOT NULL, lo {t.bigint} NOT NULL, hi {t.bigint} NOT NULL)""",
        "CREATE INDEX idx_date_key ON idx_date (type, param, lo, hi)",
        "CREATE INDEX idx_date_rid ON idx_date (rid)",
        f"""CREATE TABLE idx_number (rid {t.bigint} NOT NULL, type {txt} NOT NULL,
            param {txt} NOT NULL, lo {t.real} NOT NULL, hi {t.real} NOT NULL)""",
        "CREATE INDEX idx_number_key ON idx_number (type, param, lo, hi)",
        "CREATE INDEX idx_number_rid ON idx_number (rid)",
        f"""CREATE TABLE idx_quantity (rid {t.bigint} NOT NULL, type {txt} NOT NULL,
            param {txt} NOT NULL, system {txt}, code {txt},
            lo {t.real} NOT NULL, hi {t.real} NOT NULL)""",
        "CREATE INDEX idx_quantity_key ON idx_quantity (type, param, code, lo)",
        "CREATE INDEX idx_quantity_rid ON idx_quantity (rid)",
        f"""CREATE TABLE idx_uri (rid {t.bigint} NOT NULL, type {txt} NOT NULL,
            param {txt} NOT NULL, value {txt} NOT NULL)""",
        "CREATE INDEX idx_uri_key ON idx_uri (type, param, value)",
        "CREATE INDEX idx_uri_rid ON idx_uri (rid)",
    ]


# MIGRATIONS[n] takes a database at version n to version n + 1.
MIGRATIONS = {0: _v1}


class SchemaTooNew(RuntimeError):
    """The database was written by a newer songkhoe."""


def migration_statements(current: int, types: Types) -> list[str]:
    """The statements that bring a database at ``current`` to ``SCHEMA_VERSION``."""
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"this database has schema version {current}, but this songkhoe only knows up to "
            f"version {SCHEMA_VERSION}: upgrade songkhoe, or open a copy made for this version")
    statements: list[str] = []
    for version in range(current, SCHEMA_VERSION):
        statements += MIGRATIONS[version](types)
    return statements
