"""The record store's public API: what every other part of songkhoe reads and writes through.

A ``Store`` is opened from a URL (``sqlite:///path.db`` or ``postgresql://…``). Every operation
runs inside a ``Tx`` — one database transaction holding the resource, its history row and all its
search-index rows. ``Store`` offers the same operations as one-shot transactions for convenience.

Errors are raised as ``songkhoe.fhir.outcome.FhirError`` carrying the HTTP status and the
OperationOutcome issues (400/422 invalid, 404 unknown, 410 deleted, 409 conflict, 412 stale
``If-Match`` or a conditional that matched several resources).

Semantics follow the FHIR R4 RESTful API (http://hl7.org/fhir/R4/http.html).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson

Outcome = Literal["created", "updated", "deleted", "unchanged"]


@dataclass(frozen=True, slots=True)
class Stored:
    """One version of a resource as stored.

    ``content`` is the resource's JSON as UTF-8 bytes, with ``id``, ``meta.versionId`` and
    ``meta.lastUpdated`` set by the store; it is ``None`` for a deletion (a tombstone version).
    """

    type: str
    id: str
    version: int
    last_updated: datetime  # timezone-aware, UTC
    content: bytes | None
    method: str = "PUT"  # how this version came to be: POST, PUT, PATCH or DELETE (history)

    @property
    def deleted(self) -> bool:
        return self.content is None

    @property
    def resource(self) -> dict[str, Any]:
        if self.content is None:
            raise ValueError(f"{self.type}/{self.id} version {self.version} is a deletion")
        return orjson.loads(self.content)

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @property
    def reference(self) -> str:
        return f"{self.type}/{self.id}"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A resource already validated, NFC-normalised and indexed (``prepare``), so that a write
    holds its database locks only as long as its SQL takes. Accepted wherever a resource is."""

    resource: dict[str, Any]
    index: dict[str, list[tuple[Any, ...]]]  # search-index rows without their row id
    #: prepared as the next version of this stored version (``engine.prepare_version``):
    #: written as prepared only while that version is still the current one
    replaces: str | None = None
    keeps_index: bool = False  # ``index`` is empty: that version's rows are kept


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did. ``unchanged`` is a conditional create that matched an existing resource
    (``stored`` is then that resource) or a delete of something already absent."""

    outcome: Outcome
    stored: Stored | None


@dataclass(slots=True)
class SearchResult:
    """One page of a search.

    ``params`` are the parameters the store understood and applied, in a normalised order, for
    the ``self`` link; ``next_cursor``/``prev_cursor`` are opaque keyset cursors to pass back as
    the ``_cursor`` parameter; ``total`` is set when the request asked for it (or ``_summary=count``).
    """

    matches: list[Stored]
    included: list[Stored] = field(default_factory=list)
    total: int | None = None
    params: list[tuple[str, str]] = field(default_factory=list)
    next_cursor: str | None = None
    prev_cursor: str | None = None


@dataclass(slots=True)
class HistoryPage:
    """One page of history, newest first; ``next_cursor`` continues it."""

    versions: list[Stored]
    total: int | None
    next_cursor: str | None = None


class Operations:
    """The operations of a transaction (``Tx``) and, one transaction each, of a ``Store``.

    A resource argument may be a ``Prepared`` one (``Store.prepare``), validated and indexed
    beforehand outside any transaction.

    ``params`` are search parameters as (name, value) pairs in request order, exactly as decoded
    from a query string or form body (repeats are AND, commas inside a value are OR).
    """

    def create(self, resource: dict[str, Any] | Prepared, *, if_none_exist: str | None = None,
               id: str | None = None) -> WriteResult:
        """Store a new resource under a server-assigned id (any client id is replaced).
        ``if_none_exist`` is a query string (``identifier=a|b``): when exactly one resource
        matches, nothing is written and that one is returned as ``unchanged``; several → 412.
        ``id``: a server id reserved beforehand with ``songkhoe.store.ids.new_id()`` (a
        transaction Bundle assigns ids before it rewrites references)."""
        raise NotImplementedError

    def update(self, type: str, id: str, resource: dict[str, Any] | Prepared, *,
               if_match: int | None = None, method: str = "PUT") -> WriteResult:
        """Replace ``type/id`` with a new version, or create it with that client id
        (update-as-create). ``if_match`` is the version the client last saw (412 if stale)."""
        raise NotImplementedError

    def conditional_update(self, type: str, query: str, resource: dict[str, Any] | Prepared, *,
                           if_match: int | None = None) -> WriteResult:
        """Update the one resource matching ``query``; create if none matches; 412 if several."""
        raise NotImplementedError

    def patch(self, type: str, id: str, operations: list[dict[str, Any]], *,
              if_match: int | None = None) -> WriteResult:
        """Apply a JSON Patch (RFC 6902) and store the result as a new, validated version."""
        raise NotImplementedError

    def delete(self, type: str, id: str, *, if_match: int | None = None) -> WriteResult:
        """Logically delete: a tombstone version is added, later reads answer 410.
        ``if_match``: the version the client last saw (412 if stale or absent)."""
        raise NotImplementedError

    def match(self, type: str, params: list[tuple[str, str]], what: str, *,
              limit: int = 2) -> list[Stored]:
        """Up to ``limit`` resources matching conditional criteria, parsed strictly: criteria
        that are unknown or select nothing answer 400 naming ``what``."""
        raise NotImplementedError

    def conditional_delete(self, type: str, query: str, *, multiple: bool = False) -> list[WriteResult]:
        """Delete the resource(s) matching ``query`` (412 when several match and not ``multiple``)."""
        raise NotImplementedError

    def read(self, type: str, id: str) -> Stored:
        """The current version; 404 when unknown, 410 when deleted."""
        raise NotImplementedError

    def vread(self, type: str, id: str, version: int) -> Stored:
        """One version (a deletion version raises 410)."""
        raise NotImplementedError

    def search(self, type: str | None, params: list[tuple[str, str]], *,
               compartment: tuple[str, str] | None = None, strict: bool = False) -> SearchResult:
        """Search one type (``None``: all types). ``compartment`` = ("Patient", id) restricts to
        that compartment. Paging, counting, includes and sorting come from ``params``
        (``_count``, ``_cursor``, ``_total``, ``_summary``, ``_include``, ``_revinclude``, ``_sort``).
        ``strict``: an unknown parameter is a 400 (``Prefer: handling=strict``), not ignored."""
        raise NotImplementedError

    def history(self, type: str | None = None, id: str | None = None, *,
                since: datetime | None = None, count: int = 50,
                cursor: str | None = None) -> HistoryPage:
        """History of the system, a type or one instance, newest first."""
        raise NotImplementedError

    def everything(self, patient_id: str, *, since: datetime | None = None,
                   types: list[str] | None = None, count: int = 100,
                   cursor: str | None = None) -> SearchResult:
        """``Patient/{id}/$everything``: the patient and every resource in its compartment."""
        raise NotImplementedError
