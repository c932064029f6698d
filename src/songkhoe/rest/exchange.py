"""One FHIR interaction as a plain request (``Call``) and answer (``Answer``), free of HTTP.

The same handlers serve a direct HTTP request and one entry of a batch or transaction Bundle
(FHIR R4 §3.1.0.11, http://hl7.org/fhir/R4/http.html#transaction): the HTTP layer turns a request
into a ``Call`` and an ``Answer`` into a response; ``bundle.py`` turns ``Bundle.entry.request``
into a ``Call`` and an ``Answer`` into ``Bundle.entry.response``.

This module also holds the small pieces every handler shares: version-header parsing
(§3.1.0.5 Managing Resource Contention, http://hl7.org/fhir/R4/http.html#concurrency), time
formats (§3.1.0.1.3 Resource Metadata and Versioning, #versioning) and how a stored resource is
embedded in a JSON document without re-serialising it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import orjson

from songkhoe.fhir.outcome import FhirError, Issue
from songkhoe.store.api import Stored, WriteResult

if TYPE_CHECKING:
    from songkhoe.rest.routing import Target

#: Parameters that shape the HTTP response and are never passed on to the store
#: (§3.1.0.1.9 Content Types and encodings, http://hl7.org/fhir/R4/http.html#mime-type).
FORMAT_PARAMS = frozenset({"_format", "_pretty"})

#: Prefer: return=… values (§3.1.0.1.7 Managing Return Content, http://hl7.org/fhir/R4/http.html#ins).
RETURN_MINIMAL = "minimal"
RETURN_REPRESENTATION = "representation"
RETURN_OUTCOME = "OperationOutcome"


@dataclass(slots=True)
class Call:
    """One interaction to perform: where (``target``), with what (``params``, ``body``) and how."""

    method: str
    target: Target
    params: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None  # a resource dict, a JSON Patch list, or None
    base: str = ""  # absolute service base URL, no trailing slash
    if_match: str | None = None
    if_none_exist: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    prefer_return: str | None = None
    pretty: bool = False
    in_bundle: bool = False
    strict: bool = False  # Prefer: handling=strict (search.html#errors)

    def param(self, name: str) -> str | None:
        """The last value of a parameter, or None."""
        value = None
        for key, v in self.params:
            if key == name:
                value = v
        return value

    def query(self) -> str:
        """The search parameters as a query string for the store's conditional operations."""
        return encode_query(self.params)


@dataclass(slots=True)
class Answer:
    """What an interaction produced.

    ``stored`` is the resource version the answer is about (its ``ETag``/``Last-Modified``);
    ``body`` is a JSON document to send instead of ``stored.content`` (a Bundle, an
    OperationOutcome, a shaped resource). ``write`` marks answers to which ``Prefer: return``
    applies; ``location`` asks for a ``Location`` header; ``issues`` feed
    ``Prefer: return=OperationOutcome`` and the ``outcome`` of a Bundle entry.
    """

    status: int
    stored: Stored | None = None
    body: dict[str, Any] | None = None
    raw: bytes | None = None  # a pre-serialised body (the CapabilityStatement)
    write: bool = False
    location: bool = False
    issues: list[Issue] = field(default_factory=list)


def write_answer(result: WriteResult, *, created_status: int = 201) -> Answer:
    """The answer to a create/update/patch from the store's ``WriteResult``."""
    stored = result.stored
    if result.outcome == "created":
        status = created_status
        what = "Created"
    elif result.outcome == "unchanged":
        status = 200
        what = "Matched existing"
    else:
        status = 200
        what = "Updated"
    issues = []
    if stored is not None:
        issues.append(Issue("informational",
                            f"{what} {stored.reference} version {stored.version}",
                            severity="information"))
    return Answer(status, stored=stored, write=True, location=stored is not None,
                  issues=issues)


def if_none_exist_query(value: str) -> str:
    """The search part of an ``If-None-Exist`` value (``identifier=…`` or
    ``Patient?identifier=…``), §3.1.0.8.1 (http://hl7.org/fhir/R4/http.html#ccreate)."""
    value = value.strip().lstrip("?")
    if "?" in value:
        value = value.split("?", 1)[1]
    if not value:
        raise FhirError(400, "If-None-Exist needs search parameters such as "
                             "identifier=http://example.org|123", code="invalid")
    return value


# --- version headers (§3.1.0.5, http://hl7.org/fhir/R4/http.html#concurrency) ---------------

_ETAG = re.compile(r'^\s*(?:W/)?"?([0-9]{1,18})"?\s*$')


def parse_version_tag(value: str, header: str) -> int:
    """The version number in an ``If-Match``/``If-None-Match`` value such as ``W/"3"``."""
    m = _ETAG.match(value)
    if m is None:
        raise FhirError(400, f"{header} must be a weak ETag such as W/\"3\" naming a version; "
                             f"got {value!r}", code="invalid")
    return int(m.group(1))


def parse_http_date(value: str, header: str) -> datetime:
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        dt = None
    if dt is None:
        raise FhirError(400, f"{header} must be an HTTP date such as "
                             f"'Tue, 15 Nov 1994 08:12:31 GMT'; got {value!r}")
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def not_modified(stored: Stored, call: Call) -> bool:
    """Whether a conditional read (``If-None-Match``/``If-Modified-Since``) may answer 304."""
    if call.if_none_match is not None:
        tag = call.if_none_match.strip()
        if tag == "*":
            return True
        return parse_version_tag(tag, "If-None-Match") == stored.version
    if call.if_modified_since is not None:
        since = parse_http_date(call.if_modified_since, "If-Modified-Since")
        return stored.last_updated.replace(microsecond=0) <= since
    return False


# --- time formats ---------------------------------------------------------------------------


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(dt: datetime) -> str:
    """RFC 7231 IMF-fixdate for ``Last-Modified`` (``email.utils`` is several times slower)."""
    if dt.utcoffset():
        dt = dt.astimezone(UTC)
    return (f"{_DAYS[dt.weekday()]}, {dt.day:02d} {_MONTHS[dt.month - 1]} {dt.year:04d} "
            f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d} GMT")


def instant(dt: datetime) -> str:
    """FHIR ``instant`` (UTC, ``Z``)."""
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_instant(value: str, name: str) -> datetime:
    """A FHIR instant or date from a query parameter (``_since``); a date means 00:00 UTC.

    A ``+`` in a time-zone offset that was not percent-encoded arrives as a space; it is put back.
    """
    text = value.strip().replace(" ", "+")
    try:
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        dt = datetime.fromisoformat(text)
    except ValueError:
        dt = None
    if dt is None or dt.tzinfo is None:
        raise FhirError(400, f"{name} must be an instant with a time zone such as "
                             f"2024-05-01T00:00:00Z (or a date); got {value!r}",
                        code="invalid", expression=name)
    return dt


def parse_count(value: str | None, name: str, default: int, maximum: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise FhirError(400, f"{name} must be a non-negative integer; got {value!r}",
                        code="invalid", expression=name)
    return min(int(value), maximum)


# --- JSON -----------------------------------------------------------------------------------


def embed(stored: Stored, pretty: bool) -> Any:
    """A stored resource for inclusion in a larger JSON document: its bytes as they are
    (``orjson.Fragment``), or parsed when the document is to be pretty-printed."""
    assert stored.content is not None
    return stored.resource if pretty else orjson.Fragment(stored.content)


def dumps(doc: Any, pretty: bool) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 if pretty else 0)


def encode_query(params: list[tuple[str, str]]) -> str:
    """A query string keeping ``|``, ``,``, ``:`` and ``/`` readable."""
    return urlencode(params, quote_via=quote, safe="|,:/$*")
