"""Searching the audit log: R4 AuditEvent search (http://hl7.org/fhir/R4/auditevent.html#search)
over ``audit_log``'s search columns (``audit.search_columns``, schema version 4), newest first,
one SQL statement per page, keyset paging on the entry's sequence number.

Parameters (R4 Search, http://hl7.org/fhir/R4/search.html: ``,`` is OR, a repeated parameter
is AND):

- ``_id`` — the entry's sequence number;
- ``date`` — when it was recorded (prefixes eq ne gt lt ge le sa eb ap; a date without a time
  zone is UTC, as everywhere in songkhoe), read as a range of sequence numbers;
- ``agent`` (also ``agent:identifier`` and ``altid``) — who made the request: ``bacsi`` (the
  requestor, a user or a system client), ``urn:songkhoe:user|bacsi`` (a user), or
  ``urn:songkhoe:client|app`` (a client: its own requests and its users' through it) —
  songkhoe identifies agents by identifier, not by reference;
- ``agent-role`` — the requestor's role (``doctor``, ``programme_manager``…);
- ``agent-org`` (songkhoe) — the requestor's Organization (``Organization/so-01`` or
  ``so-01``); ``agent-org:below`` also takes every Organization under it (``org_tree``);
- ``entity`` — the resource of the request, ``Type/id`` (or ``entity:Type=id``);
- ``patient`` — the Patient the event is about (``audit`` says how it is found);
- ``type``, ``subtype`` — the event type (``rest``, DICOM ``110114``, ``110113``) and the FHIR
  interaction (``read``, ``search-type``…; DICOM ``110122`` a sign-in or token, ``110123`` a
  sign-out, ``110106`` a Bulk Data export, ``110132`` a refused cookie request), each
  ``[system|]code``;
- ``action`` (C R U D E), ``outcome`` (0 4 8 12; ``outcome:not=0`` the failures); token
  parameters take ``:not``;
- ``address`` — the client's network address, prefix match (``:exact`` for equality);
- ``policy`` — ``urn:songkhoe:policy:break-the-glass`` for emergency access, or
  ``urn:songkhoe:token:<jti>`` for the requests of one break-the-glass token;
- result parameters ``_count`` (default 50, at most 1000), ``_sort`` (``-date``, the default,
  or ``date``; ``_lastUpdated`` is the same), ``_total`` (none, estimate, accurate),
  ``_summary`` (count, true, text, data, false), ``_elements``; ``_cursor`` carries the page.

Read from an index ending in ``seq``: ``_id`` and ``date`` (the primary key: a time range is
a range of ``seq``), ``agent`` (a user or a system client), ``entity``, ``patient``, ``policy``
and ``outcome`` other than 0.
The rest (``agent-role``, ``agent-org``, ``type``, ``subtype``, ``action``, ``address``, a
client's users) filter the entries read newest first, as a manager's subtree does, and are
best bounded by ``date`` or an indexed parameter: each index costs every append a page
written at commit (``store.schema._v4``).

Anything else, or a value of the wrong form, is a 400 naming the parameter: an audit search
that silently dropped a condition would show a reviewer more than was asked, or less.

Who sees what (``viewer``): administrators (and requests without an access context, where
security is off) see every entry; a programme manager sees the entries whose requestor's
Organization is theirs or below it (``org_tree``), or every entry when they have no
Organization. Entries without an Organization (failed sign-ins, anonymous requests, system
administrators) are only for administrators. Nobody else may search (``may_search``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from songkhoe.fhir.outcome import FhirError
from songkhoe.store.ranges import format_instant
from songkhoe.store.search_values import (
    alternatives,
    bad,
    date_value,
    prefixed,
    split_unescaped,
    token_value,
    unescape,
)

from .audit import (
    _DCM,
    _EVENT_TYPE,
    _INTERACTION,
    BREAK_GLASS,
    CLIENT,
    DICOM_SUBTYPES,
    TOKEN,
    USER,
)
from .context import AccessContext
from .db import Db

SEARCHERS = frozenset({"programme_manager", "administrator"})
DEFAULT_COUNT = 50
MAX_COUNT = 1000
ACTIONS = ("C", "R", "U", "D", "E")
OUTCOMES = ("0", "4", "8", "12")
_TYPE_SYSTEMS = {"rest": _EVENT_TYPE, "110114": _DCM, "110113": _DCM}
_RESULT = frozenset({"_count", "_sort", "_total", "_summary", "_elements", "_cursor"})
_SUMMARY = ("count", "true", "text", "data", "false")
_SORTS = {"-date": True, "-_lastUpdated": True, "date": False, "_lastUpdated": False}


def may_search(viewer: AccessContext | None) -> bool:
    """Whether ``viewer`` may search or read the audit log (None: security is off)."""
    return viewer is None or viewer.role in SEARCHERS


def refused(viewer: AccessContext) -> FhirError:
    return FhirError(403, f"Only programme managers and administrators may search the audit "
                          f"log; this token's role is {viewer.role or 'none'}", code="forbidden")


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    recorded: int  # µs since the epoch
    content: str  # the AuditEvent as recorded (canonical JSON, without id)

    def resource_bytes(self) -> bytes:
        """The AuditEvent with ``id`` (the sequence number) and ``meta``, the recorded bytes
        otherwise untouched."""
        meta = orjson.dumps({"lastUpdated": format_instant(self.recorded), "versionId": "1"})
        return (b'{"id":"' + str(self.seq).encode() + b'","meta":' + meta + b","
                + self.content.encode()[1:])

    @property
    def resource(self) -> dict[str, Any]:
        return dict(orjson.loads(self.resource_bytes()))


@dataclass(slots=True)
class Page:
    entries: list[Entry]
    applied: list[tuple[str, str]]  # parameters applied, for the self and next links
    next_cursor: str | None = None
    total: int | None = None


@dataclass(slots=True)
class _Query:
    where: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    applied: list[tuple[str, str]] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    newest_first: bool = True
    cursor: int | None = None
    total: str | None = None
    summary: str | None = None
    times: list[tuple[int | None, int | None]] = field(default_factory=list)  # µs, ``_date``
    below: Callable[[list[str]], tuple[str, Any]] | None = None  # ``AuditSearch._below``

    def add(self, sql: str, *args: Any) -> None:
        self.where.append(sql)
        self.args.extend(args)


class AuditSearch:
    """Search and read of one database's audit log, as seen by one viewer."""

    def __init__(self, db: Db, viewer: AccessContext | None, directory: Db | None = None
                 ) -> None:
        """``db``: the audit log's database; ``directory``: the store's, whose ``org_tree``
        gives Organization subtrees (default: ``db``)."""
        self.db = db
        self.directory = directory or db
        self.viewer = viewer
        if not may_search(viewer):
            assert viewer is not None
            raise refused(viewer)

    # --- the two interactions ----------------------------------------------------------------

    def read(self, seq: str) -> Entry | None:
        """One entry by its id, or None when there is none or the viewer may not see it."""
        if not seq.isdigit() or len(seq) > 18:
            return None
        q = _Query(below=self._below)
        q.add("seq = ?", int(seq))
        self._visible(q)
        rows = self._rows(f"SELECT seq, recorded, content FROM audit_log WHERE "
                          f"{' AND '.join(q.where)}", q.args)
        return Entry(int(rows[0][0]), int(rows[0][1]), rows[0][2]) if rows else None

    def search(self, params: list[tuple[str, str]], *, patient: str | None = None) -> Page:
        """One page of the entries matching ``params`` (``patient``: a Patient compartment)."""
        q = _Query(below=self._below)
        if patient is not None:
            q.add("patient = ?", patient)
        for raw, value in params:
            self._param(q, raw, value)
        self._visible(q)
        for lo, hi in q.times:
            self._seq_range(q, lo, hi)
        page = Page([], q.applied)
        if q.summary == "count" or q.count == 0 or q.total is not None and q.total != "none":
            page.total = self._total(q)
        if q.summary == "count" or q.count == 0:
            return page
        where = list(q.where)
        args = list(q.args)
        if q.cursor is not None:
            where.append("seq < ?" if q.newest_first else "seq > ?")
            args.append(q.cursor)
        order = "DESC" if q.newest_first else "ASC"
        sql = (f"SELECT seq, recorded, content FROM audit_log"
               f"{' WHERE ' + ' AND '.join(where) if where else ''} "
               f"ORDER BY seq {order} LIMIT ?")
        rows = self._rows(sql, [*args, q.count + 1])
        page.entries = [Entry(int(s), int(r), c) for s, r, c in rows[:q.count]]
        if len(rows) > q.count:
            page.next_cursor = str(page.entries[-1].seq)
        return page

    def pages(self, params: list[tuple[str, str]]) -> Iterator[Entry]:
        """Every matching entry, page after page."""
        cursor: str | None = None
        while True:
            page = self.search([*params, *([("_cursor", cursor)] if cursor else [])])
            yield from page.entries
            cursor = page.next_cursor
            if cursor is None:
                return

    def _seq_range(self, q: _Query, lo: int | None, hi: int | None) -> None:
        """Bound the sequence number by a range of ``recorded`` (µs, inclusive). ``recorded``
        never goes back from one entry to the next (``AuditLog.record``; the schema version 4
        migration made it so for older entries), so a binary search over the sequence numbers
        finds the first and the last entry of the range: some 2 log2(n) primary-key probes,
        where an index on ``recorded`` would cost every append a page."""
        with self.db.read() as c:
            ends = c.one("SELECT (SELECT seq FROM audit_log ORDER BY seq LIMIT 1), "
                         "(SELECT seq FROM audit_log ORDER BY seq DESC LIMIT 1)")
            if ends[0] is None:  # (MIN and MAX together would scan the table on SQLite)
                q.add("1 = 0")
                return
            first, last = int(ends[0]), int(ends[1])

            def first_after(t: int, strict: bool) -> int:
                """The first seq recorded at or after ``t`` (after, when strict); last + 1 if
                none. Invariant: entries below ``a`` are earlier, entries from ``b`` are not."""
                a, b = first, last + 1
                while a < b:
                    m = (a + b) // 2  # <= last: an entry at or after it exists
                    s, r = c.one("SELECT seq, recorded FROM audit_log WHERE seq >= ? "
                                 "ORDER BY seq LIMIT 1", (m,))
                    if r > t or (r == t and not strict):
                        b = m
                    else:
                        a = int(s) + 1
                return a

            start = first_after(lo, False) if lo is not None else first
            end = first_after(hi, True) - 1 if hi is not None else last
        if start > end:
            q.add("1 = 0")
            return
        q.add("seq >= ? AND seq <= ?", start, end)

    # --- who sees what -----------------------------------------------------------------------

    def _visible(self, q: _Query) -> None:
        v = self.viewer
        if v is None or v.role == "administrator" or v.org is None:
            return
        # a filter on the entries read newest first (org has no index: schema._v4)
        q.add(*self._below([v.org]))

    def _below(self, orgs: list[str]) -> tuple[str, Any]:
        """A condition: ``org`` is one of ``orgs`` or below one of them. The subtree comes
        from the store's ``org_tree`` (the log may live in another database) and goes into
        the statement as one parameter: a province's subtree is some 700 Organizations."""
        below = self.directory.all(f"SELECT DISTINCT org FROM org_tree WHERE ancestor IN "
                                   f"({_marks(orgs)})", orgs)
        subtree = sorted({*orgs, *(r[0] for r in below)})
        if self.db.backend.name == "postgres":
            return "org = ANY(?)", subtree
        return "org IN (SELECT value FROM json_each(?))", orjson.dumps(subtree).decode()

    # --- parameters --------------------------------------------------------------------------

    def _param(self, q: _Query, raw: str, value: str) -> None:
        name, _, modifier = raw.partition(":")
        if name in _RESULT:
            if modifier:
                raise bad(raw, "result parameters take no modifier")
            self._result(q, name, value)
            return
        handler = _PARAMS.get(name)
        if handler is None:
            raise bad(raw, f"unknown or unsupported AuditEvent search parameter; the audit log "
                           f"is searched by {', '.join(sorted(_PARAMS))}", code="not-supported")
        if value == "":
            raise bad(raw, "expected a value")
        handler(q, raw, modifier, value)
        q.applied.append((raw, value))

    def _result(self, q: _Query, name: str, value: str) -> None:
        if name == "_cursor":
            if not value.isdigit() or len(value) > 18:
                raise bad(name, f"not a cursor of this server: {value!r}")
            q.cursor = int(value)
            return
        if name == "_count":
            if not value.isdigit():
                raise bad(name, f"expected a whole number, got {value!r}")
            q.count = min(int(value), MAX_COUNT)
            value = str(q.count)
        elif name == "_sort":
            if value not in _SORTS:
                raise bad(name, f"the audit log sorts by date only: -date (newest first, the "
                                f"default) or date, got {value!r}")
            q.newest_first = _SORTS[value]
        elif name == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise bad(name, f"expected none, estimate or accurate, got {value!r}")
            q.total = value
        elif name == "_summary":
            if value not in _SUMMARY:
                raise bad(name, f"expected one of {', '.join(_SUMMARY)}, got {value!r}")
            q.summary = value
        elif name == "_elements":
            return  # applied to each entry by the REST layer
        q.applied.append((name, value))

    # --- SQL -----------------------------------------------------------------------------------

    def _total(self, q: _Query) -> int:
        where = f" WHERE {' AND '.join(q.where)}" if q.where else ""
        if q.total == "estimate" and self.db.backend.name == "postgres":
            with self.db.read() as c:
                plan = c.conn.execute(_pg(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM audit_log"
                                          f"{where}"), q.args, prepare=False).fetchone()[0]
            doc = plan if isinstance(plan, list) else orjson.loads(plan)
            return int(doc[0]["Plan"]["Plan Rows"])
        return int(self._rows(f"SELECT COUNT(*) FROM audit_log{where}", q.args)[0][0])

    def _rows(self, sql: str, args: list[Any]) -> list[Any]:
        with self.db.read() as c:
            if c.postgres:  # planned for its values: which index is selective depends on them
                return list(c.conn.execute(_pg(sql), args, prepare=False).fetchall())
            return list(c.all(sql, args))


def _pg(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


# --- one function per parameter: (query, name as written, modifier, value) -----------------


def _marks(values: list[Any]) -> str:
    return ", ".join("?" * len(values))


def _in(column: str, values: list[str], negate: bool = False) -> str:
    marks = _marks(values)
    if negate:
        return f"({column} IS NULL OR {column} NOT IN ({marks}))"
    return f"{column} = ?" if len(values) == 1 else f"{column} IN ({marks})"


def _no_modifier(raw: str, modifier: str, allowed: tuple[str, ...] = ()) -> None:
    if modifier and modifier not in allowed:
        shown = f" (allowed: {', '.join(':' + m for m in allowed)})" if allowed else ""
        raise bad(raw, f"modifier :{modifier} is not supported here{shown}",
                  code="not-supported")


def _codes(raw: str, value: str, systems: Callable[[str], str | None] | None,
           allowed: tuple[str, ...] = ()) -> list[str]:
    """The codes of a token value's alternatives; a ``system|`` that is not the code's own
    system matches nothing (so the code is left out)."""
    codes = []
    for alt in alternatives(value):
        token = token_value(raw, alt)
        if token.code is None:
            raise bad(raw, "expected a code (system| alone is not supported here)")
        if allowed and token.code not in allowed:
            raise bad(raw, f"expected one of {', '.join(allowed)}, got {token.code!r}")
        if token.system is not None and (systems is None
                                         or systems(token.code) != token.system):
            continue
        codes.append(token.code)
    return codes


def _token(column: str, systems: Callable[[str], str | None] | None,
           allowed: tuple[str, ...] = ()) -> Any:
    def apply(q: _Query, raw: str, modifier: str, value: str) -> None:
        _no_modifier(raw, modifier, ("not",))
        codes = _codes(raw, value, systems, allowed)
        if modifier == "not":
            if not codes:
                return
            if column == "outcome":  # never NULL; without 0: the index of failures
                q.add(f"outcome NOT IN ({_marks(codes)})", *codes)
                if "0" in codes:
                    q.add("outcome <> '0'")
            elif codes:
                q.add(_in(column, codes, negate=True), *codes)
        elif not codes:
            q.add("1 = 0")
        else:
            q.add(_in(column, codes), *codes)
            if column == "outcome" and "0" not in codes:
                q.add("outcome <> '0'")
    return apply


def _system(default: str, exceptions: dict[str, str] | None = None) -> Callable[[str], str]:
    """The code system of every code of a parameter: ``default`` but for the ``exceptions``."""
    return lambda code: (exceptions or {}).get(code, default)


def _agent(q: _Query, raw: str, modifier: str, value: str) -> None:
    _no_modifier(raw, modifier, ("identifier",) if raw.startswith("agent") else ())
    terms: list[str] = []
    args: list[str] = []
    for alt in alternatives(value):
        token = token_value(raw, alt)
        if token.code is None:
            raise bad(raw, "expected a user or client id, or system|id")
        if token.system is None:  # the requestor (a user, or a system client)
            terms.append("agent = ?")
            args.append(token.code)
        elif token.system == USER:  # the user, not a system client of the same name
            terms.append("agent = ? AND (client IS NULL OR client <> ?)")
            args += [token.code, token.code]
        elif token.system == CLIENT:
            terms.append("client = ?")
            args.append(token.code)
        else:
            raise bad(raw, f"agents are identified in {USER} (users) or {CLIENT} (clients), "
                           f"not {token.system!r}")
    q.add("(" + " OR ".join(f"({t})" for t in terms) + ")", *args)


def _plain(column: str) -> Any:
    def apply(q: _Query, raw: str, modifier: str, value: str) -> None:
        _no_modifier(raw, modifier)
        values = [unescape(v) for v in alternatives(value)]
        q.add(_in(column, values), *values)
    return apply


def _relative(raw: str, text: str, rtype: str | None) -> tuple[str, str]:
    """(type, id) of a reference value: ``Type/id``, ``id`` when the type is known, or an
    absolute URL ending in ``Type/id``."""
    value = unescape(text).split("/_history/")[0]
    parts = value.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] and parts[-1]:
        if rtype is not None and parts[-2] != rtype:
            raise bad(raw, f"expected a reference to a {rtype}, got {text!r}")
        return parts[-2], parts[-1]
    if len(parts) == 1 and rtype is not None and parts[0]:
        return rtype, parts[0]
    raise bad(raw, f"expected Type/id (or {raw}:Type=id), got {text!r}")


def _entity(q: _Query, raw: str, modifier: str, value: str) -> None:
    """An entity that is a Patient is in the ``patient`` column (``audit.search_columns``)."""
    rtype = modifier or None
    if rtype is not None and not rtype[:1].isupper():
        _no_modifier(raw, modifier)
    refs = [_relative(raw, alt, rtype) for alt in alternatives(value)]
    patients = [id_ for type_, id_ in refs if type_ == "Patient"]
    others = [f"{type_}/{id_}" for type_, id_ in refs if type_ != "Patient"]
    terms = ([_in("patient", patients)] if patients else []) + \
        ([_in("entity", others)] if others else [])
    q.add(terms[0] if len(terms) == 1 else f"({terms[0]} OR {terms[1]})", *patients, *others)


def _patient(q: _Query, raw: str, modifier: str, value: str) -> None:
    _no_modifier(raw, modifier, ("Patient",))
    ids = [_relative(raw, alt, "Patient")[1] for alt in alternatives(value)]
    q.add(_in("patient", ids), *ids)


def _org(q: _Query, raw: str, modifier: str, value: str) -> None:
    _no_modifier(raw, modifier, ("below", "Organization"))
    ids = [_relative(raw, alt, "Organization")[1] for alt in alternatives(value)]
    if modifier == "below":
        assert q.below is not None
        q.add(*q.below(ids))
    else:
        q.add(_in("org", ids), *ids)


def _address(q: _Query, raw: str, modifier: str, value: str) -> None:
    _no_modifier(raw, modifier, ("exact",))
    terms, args = [], []
    for alt in alternatives(value):
        text = unescape(alt)
        if modifier == "exact":
            terms.append("address = ?")
            args.append(text)
        else:  # starts with: a key range, which the index reads
            terms.append("(address >= ? AND address < ?)")
            args += [text, text[:-1] + chr(ord(text[-1]) + 1)]
    q.add("(" + " OR ".join(terms) + ")", *args)


def _policy(q: _Query, raw: str, modifier: str, value: str) -> None:
    _no_modifier(raw, modifier)
    terms, args = [], []
    for alt in alternatives(value):
        uri = unescape(alt)
        if uri.startswith(TOKEN):
            terms.append("token = ?")
            args.append(uri[len(TOKEN):])
        else:
            terms.append("policy = ?")
            args.append(uri)
    q.add("(" + " OR ".join(terms) + ")", *args)


def _id(q: _Query, raw: str, modifier: str, value: str) -> None:
    _no_modifier(raw, modifier)
    seqs = [unescape(v) for v in alternatives(value)]
    if not all(s.isdigit() and len(s) <= 18 for s in seqs):
        q.add("1 = 0")  # ids of the audit log are sequence numbers: nothing else matches
        return
    q.add(_in("seq", seqs), *(int(s) for s in seqs))


def _date(q: _Query, raw: str, modifier: str, value: str) -> None:
    """``recorded`` within the value's range, as (from, to) µs, both inclusive (None: open).
    ``_Query.times`` also turns the range into a range of sequence numbers
    (``AuditSearch._seq_range``), which the primary key reads newest first, stopping after a
    page; the condition on ``recorded`` itself is a filter (it has no index)."""
    _no_modifier(raw, modifier)
    terms: list[str] = []
    args: list[int] = []
    ranges: list[tuple[int | None, int | None] | None] = []
    for alt in split_unescaped(value, ","):
        d = date_value(raw, alt)
        prefix = prefixed(alt)[0]
        span: tuple[int | None, int | None] | None
        if prefix in ("gt", "sa"):
            span = (d.hi + 1, None)
        elif prefix in ("lt", "eb"):
            span = (None, d.lo - 1)
        elif prefix == "ge":
            span = (d.lo, None)
        elif prefix == "le":
            span = (None, d.hi)
        elif prefix == "ap":  # within 10% of the distance from now
            margin = abs(time.time_ns() // 1000 - d.lo) // 10
            span = (d.lo - margin, d.hi + margin)
        elif prefix == "eq":
            span = (d.lo, d.hi)
        else:  # ne: no range
            terms.append("(recorded < ? OR recorded > ?)")
            args += [d.lo, d.hi]
            ranges.append(None)
            continue
        lo, hi = span
        terms.append(" AND ".join([*(["recorded >= ?"] if lo is not None else []),
                                   *(["recorded <= ?"] if hi is not None else [])]))
        args += [v for v in span if v is not None]
        ranges.append(span)
    q.add("(" + " OR ".join(f"({t})" for t in terms) + ")" if len(terms) > 1 else terms[0],
          *args)
    if len(ranges) == 1 and ranges[0] is not None:  # one range (not an OR of several)
        q.times.append(ranges[0])


_PARAMS: dict[str, Any] = {
    "_id": _id,
    "date": _date,
    "agent": _agent,
    "altid": _agent,
    "agent-role": _plain("role"),
    "agent-org": _org,
    "entity": _entity,
    "patient": _patient,
    "type": _token("type", _TYPE_SYSTEMS.get),
    "subtype": _token("subtype", _system(_INTERACTION,
                                         {code: _DCM for code in DICOM_SUBTYPES.values()})),
    "action": _token("action", _system("http://hl7.org/fhir/audit-event-action"), ACTIONS),
    "outcome": _token("outcome", _system("http://hl7.org/fhir/audit-event-outcome"),
                      OUTCOMES),
    "address": _address,
    "policy": _policy,
}


def break_glass_params(since: str | None = None, org: str | None = None
                       ) -> list[tuple[str, str]]:
    """The search that lists break-the-glass events for review (``songkhoe audit
    break-glass``, ``GET AuditEvent?policy=…``)."""
    params = [("policy", BREAK_GLASS)]
    if since:
        params.append(("date", f"ge{since}"))
    if org:
        params.append(("agent-org:below", org))
    return params


