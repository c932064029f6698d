"""The store's tables, their version, and automatic migration.

One logical layout on both backends (SQLite and PostgreSQL):

- ``resources``: one row per logical resource (type, id) with its current version number,
  last-updated time (µs since the Unix epoch, UTC) and deletion flag, keyed by a surrogate
  ``rid`` that the search indexes point to;
- ``history``: one row per version, holding the resource's JSON bytes (NULL for a deletion)
  and the number of the transaction that wrote it in the change feed (``change_seq``);
- ``idx_*``: search-index rows of the current version of each live resource, one table per
  FHIR search-parameter type (http://hl7.org/fhir/R4/search.html#ptypes).

The schema version lives in ``schema_meta``. Opening an older database applies the missing
migrations in order inside one transaction; a newer one is refused with a clear message.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import uuid4

from .access import backfill_statements

SCHEMA_VERSION = 9


@dataclass(frozen=True)
class Types:
    """Column types that differ between backends."""

    rid: str
    text: str
    bigint: str
    blob: str
    boolean: str
    real: str
    backend: str = "sqlite"


SQLITE_TYPES = Types(rid="INTEGER PRIMARY KEY", text="TEXT", bigint="INTEGER", blob="BLOB",
                     boolean="INTEGER", real="REAL")
# PostgreSQL compares text in code-point order (COLLATE "C"), as SQLite does, so that prefix
# ranges on folded search keys use the indexes on both.
POSTGRES_TYPES = Types(rid="BIGINT PRIMARY KEY DEFAULT nextval('rid_seq')", text='TEXT COLLATE "C"', bigint="BIGINT", blob="BYTEA",
                       boolean="BOOLEAN", real="DOUBLE PRECISION", backend="postgres")

# The columns of each search-index table after ``rid``, in insert order: ``sp`` names the
# parameter (``catalog.sp_id``), ``grp`` the position of the element a composite's parts sit in.
INDEX_COLUMNS: dict[str, tuple[str, ...]] = {
    "idx_string": ("sp", "value", "exact", "grp"),
    "idx_token": ("sp", "system", "code", "display", "grp"),
    "idx_reference": ("sp", "target_type", "target_id", "url", "grp"),
    "idx_date": ("sp", "lo", "hi", "grp"),
    "idx_quantity": ("sp", "system", "unit", "lo", "hi", "clo", "chi", "grp"),
    "idx_uri": ("sp", "value", "grp"),
}

#: Dates spanning at least a day are also indexed by their end (``idx_date_long``), so that
#: ``gt``/``ge``/``sa`` searches bound ``lo`` for everything shorter (``search_sql``).
LONG_DATE_US = 86_400_000_000


def index_tables(t: Types) -> list[str]:
    """The search-index tables (http://hl7.org/fhir/R4/search.html#ptypes). Every table has a
    key index ending in ``rid`` — equal keys list their resources in ``rid`` order, which keyset
    paging reads without sorting — and an index on ``rid`` for probes and unindexing.

    - string: ``value`` is the folded key, ``exact`` the text as written when it differs;
    - token: ``system`` is a 64-bit hash of the system URI (``catalog.system_key``), ``display``
      the folded Coding.display / CodeableConcept.text (``:text``);
    - reference: ``target_type``/``target_id`` of a relative reference, else ``url``;
    - date: inclusive µs range; ``idx_date_long`` holds the long ones by their end;
    - quantity (and number): ``system`` hashed as for tokens, ``lo``/``hi`` the number as
      written (``hi`` NULL for a plain value),
      ``unit`` the canonical UCUM unit (or the code as given) and ``clo``/``chi`` the value in it;
    - uri.
    """
    txt, big, real = t.text, t.bigint, t.real
    return [
        f"""CREATE TABLE idx_string (rid {big} NOT NULL, sp INTEGER NOT NULL,
            value {txt} NOT NULL, exact {txt}, grp INTEGER)""",
        "CREATE INDEX idx_string_key ON idx_string (sp, value, rid)",
        "CREATE INDEX idx_string_rid ON idx_string (rid)",
        f"""CREATE TABLE idx_token (rid {big} NOT NULL, sp INTEGER NOT NULL, system {big},
            code {txt}, display {txt}, grp INTEGER)""",
        "CREATE INDEX idx_token_key ON idx_token (sp, code, system, rid)",
        "CREATE INDEX idx_token_rid ON idx_token (rid)",
        f"""CREATE TABLE idx_reference (rid {big} NOT NULL, sp INTEGER NOT NULL,
            target_type {txt}, target_id {txt}, url {txt}, grp INTEGER)""",
        "CREATE INDEX idx_reference_key ON idx_reference (sp, target_id, target_type, rid)",
        "CREATE INDEX idx_reference_url ON idx_reference (sp, url, rid) WHERE url IS NOT NULL",
        "CREATE INDEX idx_reference_rid ON idx_reference (rid)",
        f"""CREATE TABLE idx_date (rid {big} NOT NULL, sp INTEGER NOT NULL, lo {big} NOT NULL,
            hi {big} NOT NULL, grp INTEGER)""",
        "CREATE INDEX idx_date_key ON idx_date (sp, lo, hi, rid)",
        f"CREATE INDEX idx_date_long ON idx_date (sp, hi, lo, rid) WHERE hi - lo >= {LONG_DATE_US}",
        "CREATE INDEX idx_date_rid ON idx_date (rid)",
        f"""CREATE TABLE idx_quantity (rid {big} NOT NULL, sp INTEGER NOT NULL, system {big},
            unit {txt}, lo {real}, hi {real}, clo {real}, chi {real}, grp INTEGER)""",
        "CREATE INDEX idx_quantity_key ON idx_quantity (sp, lo, hi, rid)",
        "CREATE INDEX idx_quantity_unit ON idx_quantity (sp, unit, clo, rid) WHERE unit IS NOT NULL",
        "CREATE INDEX idx_quantity_range ON idx_quantity (sp, hi, rid) WHERE hi IS NOT NULL",
        "CREATE INDEX idx_quantity_crange ON idx_quantity (sp, unit, chi, rid) "
        "WHERE chi IS NOT NULL",
        "CREATE INDEX idx_quantity_rid ON idx_quantity (rid)",
        f"""CREATE TABLE idx_uri (rid {big} NOT NULL, sp INTEGER NOT NULL, value {txt} NOT NULL,
            grp INTEGER)""",
        "CREATE INDEX idx_uri_key ON idx_uri (sp, value, rid)",
        "CREATE INDEX idx_uri_rid ON idx_uri (rid)",
        *(_statistics() if t.backend == "postgres" else []),
    ]


def _statistics() -> list[str]:
    """PostgreSQL statistics on (parameter, value) pairs. A column's own histogram mixes every
    parameter's values, so ``sp = name AND value starts with 'huynh'`` was estimated at one row
    (3,582 at 100,000 patients) and the planner rescanned that range for each candidate
    (0.8 s); the most common pairs per parameter give it the right order of magnitude."""
    return [
        "CREATE STATISTICS idx_string_sp_value (mcv) ON sp, value FROM idx_string",
        "ALTER STATISTICS idx_string_sp_value SET STATISTICS 1000",
        "CREATE STATISTICS idx_token_sp_code (mcv) ON sp, code FROM idx_token",
        "ALTER STATISTICS idx_token_sp_code SET STATISTICS 1000",
    ]


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
        # SQLite search: a type's resources in rid order, for searches whose terms all select
        # many (search_exec.scan_plan); PostgreSQL's planner finds its own way from statistics
        *(["CREATE INDEX resources_type_rid ON resources (type, rid)"]
          if t.backend == "sqlite" else []),
        *index_tables(t),
    ]


def _v2(t: Types) -> list[str]:
    """Security (``songkhoe.auth``): users, system clients, token-signing keys, revoked token
    ids, refresh tokens, authorization codes and the hash-chained audit log. Times are seconds
    since the Unix epoch (µs for ``last_failure`` and ``recorded``); secrets are stored only as hashes (argon2 for passwords, SHA-256 for
    random tokens), except the signing keys' private halves."""
    txt, big = t.text, t.bigint
    return [
        f"""CREATE TABLE auth_users (
            username {txt} PRIMARY KEY, password_hash {txt} NOT NULL, role {txt} NOT NULL,
            org {txt}, practitioner {txt}, must_change INTEGER NOT NULL, locked INTEGER NOT NULL,
            failures INTEGER NOT NULL, last_failure {big}, created {big} NOT NULL)""",
        f"""CREATE TABLE auth_clients (
            client_id {txt} PRIMARY KEY, name {txt} NOT NULL, secret_hash {txt}, jwks {txt},
            redirect_uris {txt} NOT NULL, scope {txt} NOT NULL, role {txt}, org {txt},
            created {big} NOT NULL)""",
        f"""CREATE TABLE auth_keys (
            kid {txt} PRIMARY KEY, alg {txt} NOT NULL, private_pem {txt} NOT NULL,
            public_jwk {txt} NOT NULL, created {big} NOT NULL, retired {big})""",
        f"CREATE TABLE auth_revoked (jti {txt} PRIMARY KEY, expires {big} NOT NULL)",
        f"""CREATE TABLE auth_refresh (
            token_hash {txt} PRIMARY KEY, family {txt} NOT NULL, username {txt},
            client_id {txt}, scope {txt} NOT NULL, claims {txt} NOT NULL, expires {big} NOT NULL,
            used INTEGER NOT NULL, revoked INTEGER NOT NULL)""",
        "CREATE INDEX auth_refresh_family ON auth_refresh (family)",
        f"""CREATE TABLE auth_codes (
            code_hash {txt} PRIMARY KEY, client_id {txt} NOT NULL, redirect_uri {txt} NOT NULL,
            challenge {txt} NOT NULL, username {txt} NOT NULL, scope {txt} NOT NULL,
            expires {big} NOT NULL, used INTEGER NOT NULL)""",
        f"""CREATE TABLE audit_log (
            seq {big} PRIMARY KEY, recorded {big} NOT NULL, content {txt} NOT NULL,
            prev_hash {txt} NOT NULL, hash {txt} NOT NULL)""",
    ]


def _v3(t: Types) -> list[str]:
    """Row-level access (``songkhoe.store.access``): who owns each resource of the Patient
    compartment, and the Organization tree.

    - ``owners``: one row per (resource, Patient whose compartment holds it) — a Patient owns
      itself — with that Patient's managing Organization (``org``, NULL when it has none);
      rows are kept when a resource is deleted, so its history stays within the same scope;
    - ``org_tree``: the closure of ``Organization.partOf`` — (ancestor, org) for every
      Organization and each Organization above it, itself included;
    - ``auth_users.patient``: the Patient a citizen's account speaks for (patient-facing tokens).
    """
    txt, big = t.text, t.bigint
    return [
        f"""CREATE TABLE owners (rid {big} NOT NULL, type {txt} NOT NULL, patient {txt} NOT NULL,
            org {txt}, PRIMARY KEY (rid, patient))""",
        "CREATE INDEX owners_patient ON owners (patient, type, rid)",
        "CREATE INDEX owners_org ON owners (type, org, rid)",
        f"""CREATE TABLE org_tree (ancestor {txt} NOT NULL, org {txt} NOT NULL,
            PRIMARY KEY (ancestor, org))""",
        "CREATE INDEX org_tree_org ON org_tree (org)",
        f"ALTER TABLE auth_users ADD COLUMN patient {txt}",
        *backfill_statements(),
    ]


def _v4(t: Types) -> list[str]:
    """Audit search (``songkhoe.auth.audit_search``): the search columns of ``audit_log``,
    written by the same INSERT that appends an entry (``audit.search_columns``) and outside
    the hash (which covers ``content`` only). Indexes, each ending in ``seq`` so that a search
    reads its newest matches first and stops after a page: ``agent``, ``entity`` (not a
    Patient), ``patient``, ``policy``, ``token`` and the refused or failed requests (outcome
    other than 0). Each index an entry enters costs its append a page written at commit
    (``bench/bench_audit.py``), so the app (``client``), the Organization (a manager's subtree
    is a filter anyway), the network address and the rarely selective codes are filters on
    the entries read newest first, and a time range is found by a binary search over ``seq``
    (``recorded`` never goes back, below). The entries
    already written get their columns from their JSON (``json_extract`` on SQLite, ``jsonb`` on
    PostgreSQL) by the rules of ``audit.search_columns`` for the shapes ``audit.audit_event``
    writes (the Patient is the first or second entity, the token the second policy)."""
    if t.backend == "postgres":
        def j(*path: str) -> str:
            return f"(s.j #>> '{{{','.join(path)}}}')"
        frm = " FROM (SELECT seq, content::jsonb AS j FROM audit_log) AS s WHERE a.seq = s.seq"
        table = "audit_log AS a"
    else:
        def j(*path: str) -> str:
            return "json_extract(content, '$" + "".join(
                f"[{p}]" if p.isdigit() else f".{p}" for p in path) + "')"
        frm, table = "", "audit_log"

    def after(prefix: str, value: str) -> str:
        return (f"CASE WHEN substr({value}, 1, {len(prefix)}) = '{prefix}' "
                f"THEN substr({value}, {len(prefix) + 1}) END")

    who = ("agent", "0", "who", "identifier")
    entity0, entity1 = (j("entity", n, "what", "reference") for n in ("0", "1"))
    policy0, policy1 = (j("agent", "0", "policy", n) for n in ("0", "1"))
    token = "urn:songkhoe:token:"
    backfill = (
        f"UPDATE {table} SET "
        f"agent = {j(*who, 'value')}, "
        f"client = CASE WHEN {j(*who, 'system')} = 'urn:songkhoe:client' "
        f"THEN {j(*who, 'value')} ELSE {j('agent', '1', 'who', 'identifier', 'value')} END, "
        f"role = {j('agent', '0', 'role', '0', 'text')}, "
        f"org = {after('Organization/', j('agent', '0', 'location', 'reference'))}, "
        f"entity = CASE WHEN substr({entity0}, 1, 8) <> 'Patient/' THEN {entity0} END, "
        f"patient = COALESCE({after('Patient/', entity0)}, {after('Patient/', entity1)}), "
        f"type = {j('type', 'code')}, subtype = {j('subtype', '0', 'code')}, "
        f"action = {j('action')}, outcome = {j('outcome')}, "
        f"address = {j('agent', '0', 'network', 'address')}, "
        f"policy = CASE WHEN substr({policy0}, 1, {len(token)}) <> '{token}' "
        f"THEN {policy0} END, "
        f"token = COALESCE({after(token, policy0)}, {after(token, policy1)}){frm}")
    columns = ("agent", "client", "role", "org", "entity", "patient", "type", "subtype",
               "action", "outcome", "address", "policy", "token")
    return [
        *(f"ALTER TABLE audit_log ADD COLUMN {c} {t.text}" for c in columns),
        backfill,
        # ``recorded`` never goes back from one entry to the next (``AuditLog.record``), so a
        # time range is a range of seq: older entries a little out of order (appenders that
        # waited for the lock) take the time of the entry before them; the JSON keeps its own
        ("UPDATE audit_log SET recorded = w.m FROM (SELECT seq, MAX(recorded) OVER "
         "(ORDER BY seq) AS m FROM audit_log) AS w WHERE audit_log.seq = w.seq "
         "AND audit_log.recorded < w.m"),
        "CREATE INDEX audit_log_agent ON audit_log (agent, seq)",
        "CREATE INDEX audit_log_entity ON audit_log (entity, seq) WHERE entity IS NOT NULL",
        "CREATE INDEX audit_log_patient ON audit_log (patient, seq) WHERE patient IS NOT NULL",
        "CREATE INDEX audit_log_policy ON audit_log (policy, seq) WHERE policy IS NOT NULL",
        "CREATE INDEX audit_log_token ON audit_log (token, seq) WHERE token IS NOT NULL",
        "CREATE INDEX audit_log_failed ON audit_log (seq) WHERE outcome <> '0'",
    ]


def _v5(t: Types) -> list[str]:
    """Programme status (``songkhoe.programs``): one row per person and programme that applies
    to them now or later, derived from their records in the transaction that writes them, so
    worklists are index reads. Dates are ISO ``YYYY-MM-DD`` text (ordered as dates).
    ``org``: the Patient's managing Organization (a worklist reads one commune's rows in due
    order from ``programme_status_due``); ``eligible_from``/``eligible_until``: the ages that
    bound a screening programme, as dates; ``next_due``: the next visit (the eligibility date
    when never seen); ``referral_due``: the earliest open referral's end of window;
    ``call_*``: the latest call after the last visit (outcome, day, day to call again).
    Rebuilt by ``songkhoe programmes run``."""
    txt = t.text
    return [
        f"""CREATE TABLE programme_status (patient {txt} NOT NULL, programme {txt} NOT NULL,
            org {txt}, kind {txt} NOT NULL, eligible_from {txt}, eligible_until {txt},
            enrolled {txt}, last_visit {txt}, next_due {txt}, referral_due {txt},
            call_outcome {txt}, call_day {txt}, call_again {txt},
            PRIMARY KEY (patient, programme))""",
        "CREATE INDEX programme_status_due ON programme_status (programme, org, next_due)",
    ]


def _v6(t: Types) -> list[str]:
    """Bulk Data export jobs (``songkhoe.store.jobs``; Bulk Data Access IG 2.0.0 ``$export``),
    kept in the database so that a job survives a restart of the server that accepted it.

    - ``bulk_jobs``: one row per export, from kick-off until it is cancelled or expires.
      ``status`` queued | running | completed | failed; ``owner`` who started it (``user:name``
      or ``system:client``, NULL with security off); ``request`` the kick-off URL; ``access``
      the caller's access context as JSON (the job runs under it, also after a restart);
      ``params`` what to export (JSON); ``transaction_time`` (µs) is fixed when the job first
      runs; ``progress`` the point to resume from (JSON), ``output`` the files written so far,
      ``error`` why it failed (JSON); ``worker`` the process running it, whose ``heartbeat``
      (µs) shows it alive — a job ``running`` without one for a while is taken over.
    - ``bulk_job_patients``: the people a Group-level (or ``patient=``, or research) export is
      limited to, probed by the reading statements.
    - PostgreSQL: ``resources (type, last_updated, rid)``, the order an export reads a type in
      (keyset on ``(last_updated, rid)``, ``store/export.py``), in place of
      ``resources_type_updated (type, last_updated)``, which it extends: without ``rid`` each
      page sorted every remaining row of the type. Building it locks ``resources`` against
      writes for a few seconds per million rows. SQLite's index already ends in the row id."""
    txt, big = t.text, t.bigint
    return [
        f"""CREATE TABLE bulk_jobs (id {txt} PRIMARY KEY, status {txt} NOT NULL, owner {txt},
            request {txt} NOT NULL, access {txt}, params {txt} NOT NULL,
            transaction_time {big}, progress {txt}, output {txt}, error {txt}, worker {txt},
            heartbeat {big}, created {big} NOT NULL, updated {big} NOT NULL)""",
        "CREATE INDEX bulk_jobs_status ON bulk_jobs (status, created)",
        f"""CREATE TABLE bulk_job_patients (job {txt} NOT NULL, patient {txt} NOT NULL,
            PRIMARY KEY (job, patient))""",
        *(["CREATE INDEX resources_type_updated_rid ON resources (type, last_updated, rid)",
           "DROP INDEX resources_type_updated"] if t.backend == "postgres" else []),
    ]


def _v7(t: Types) -> list[str]:
    """The change feed (``songkhoe.store.changes``): ``history.change_seq``, the number of the
    transaction that wrote the version, and ``schema_meta`` ``change_feed``, a random id of
    this database's feed (a warehouse refreshed from another database rebuilds in full).

    - SQLite: the store writes it, one above the largest committed, under the write lock
      (``changes.stamp``);
    - PostgreSQL: a column default, the writing transaction's id (``pg_current_xact_id()``),
      set after the column is added so that the versions already written are not rewritten.

    Versions written before this migration keep NULL: a warehouse first builds in full from
    ``resources``, so the feed is only read for versions written after it."""
    statements = [f"ALTER TABLE history ADD COLUMN change_seq {t.bigint}"]
    if t.backend == "postgres":
        statements.append("ALTER TABLE history ALTER COLUMN change_seq "
                          "SET DEFAULT (pg_current_xact_id()::text::bigint)")
    return [*statements,
            "CREATE INDEX history_change ON history (change_seq)",
            f"INSERT INTO schema_meta (key, value) VALUES ('change_feed', '{uuid4().hex}')"]


def _v8(t: Types) -> list[str]:
    """What the last programmes run left for each person (``songkhoe.programs.batch``), so a
    batch run skips the people whose records and programme definitions did not change since,
    and tells a changed definition that changes nothing for a person without reading the
    outputs stored for them: ``inputs``, the state of the records of the person's
    compartment that the programmes read, right after the run wrote its outputs (how many,
    and the sums of their row ids and versions, the latest write time); ``definitions``, the
    digest of the definitions it ran; ``outputs``, the digest of what they derived."""
    txt = t.text
    return [f"""CREATE TABLE programme_settled (patient {txt} NOT NULL PRIMARY KEY,
                inputs {txt} NOT NULL, definitions {txt} NOT NULL, outputs {txt} NOT NULL)"""]


def _v9(t: Types) -> list[str]:
    """``auth_refresh.used`` holds when the token was spent (seconds since the epoch; it was
    0 or 1), so that a refresh racing another of the same browser is told from a replay
    (``auth.refresh``): a 64-bit column on PostgreSQL (SQLite's INTEGER is already)."""
    if t.backend != "postgres":
        return []
    return ["ALTER TABLE auth_refresh ALTER COLUMN used TYPE BIGINT"]


# MIGRATIONS[n] takes a database at version n to version n + 1.
MIGRATIONS = {0: _v1, 1: _v2, 2: _v3, 3: _v4, 4: _v5, 5: _v6, 6: _v7, 7: _v8, 8: _v9}


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
