"""Content negotiation and request-body decoding for the FHIR REST API.

FHIR R4 §3.1.0.1.9 Content Types and encodings (http://hl7.org/fhir/R4/http.html#mime-type):
this server speaks JSON only. Responses are ``application/fhir+json`` unless the client asks for
``application/json`` (``Accept`` or ``_format``); ``_format`` overrides ``Accept``; XML or Turtle
(``Accept``/``_format``) answers 406, an XML or other non-JSON request body 415, each with an
OperationOutcome saying what is accepted. ``_pretty=true`` indents the output.

Request bodies are limited in size (413), must be UTF-8 JSON objects (400 otherwise), and JSON
Patch bodies (§3.1.0.6 patch, http://hl7.org/fhir/R4/http.html#patch) must be
``application/json-patch+json`` arrays. ``Prefer: return=…`` is §3.1.0.1.7 Managing Return
Content (http://hl7.org/fhir/R4/http.html#ins).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from songkhoe.fhir.outcome import FhirError
from songkhoe.rest.exchange import RETURN_MINIMAL, RETURN_OUTCOME, RETURN_REPRESENTATION

FHIR_JSON = "application/fhir+json"
PLAIN_JSON = "application/json"
JSON_PATCH = "application/json-patch+json"
FORM = "application/x-www-form-urlencoded"

#: Request body media types read as a FHIR JSON resource (the DSTU2 name is tolerated).
RESOURCE_TYPES = frozenset({FHIR_JSON, PLAIN_JSON, "application/json+fhir"})

#: ``_format`` values and what they select (None: understood but not served here).
_FORMATS: dict[str, str | None] = {
    "json": FHIR_JSON,
    FHIR_JSON: FHIR_JSON,
    "application/json+fhir": FHIR_JSON,
    PLAIN_JSON: PLAIN_JSON,
    "text/json": PLAIN_JSON,
    "xml": None, "text/xml": None, "application/xml": None, "application/fhir+xml": None,
    "application/xml+fhir": None, "ttl": None, "text/turtle": None,
    "application/fhir+turtle": None, "html": None, "text/html": None,
}

_ACCEPTED = f"{FHIR_JSON} or {PLAIN_JSON}"


@dataclass(frozen=True, slots=True)
class Format:
    """How to write the response."""

    media_type: str = FHIR_JSON
    pretty: bool = False

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; charset=utf-8"


DEFAULT = Format()


def _media_ranges(header: str) -> list[tuple[float, int, str]]:
    ranges = []
    for pos, part in enumerate(header.split(",")):
        fields = part.strip().split(";")
        media = fields[0].strip().lower()
        if not media:
            continue
        q = 1.0
        for p in fields[1:]:
            k, _, v = p.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v.strip())
                except ValueError:
                    q = 0.0
        if q > 0:
            ranges.append((-q, pos, media))
    ranges.sort()
    return ranges


@lru_cache(maxsize=256)
def accept_media(header: str) -> str:
    """The media type to answer in for an ``Accept`` header (406 when JSON is not acceptable)."""
    for _, _, media in _media_ranges(header):
        if media in (FHIR_JSON, "application/json+fhir", "*/*", "application/*"):
            return FHIR_JSON
        if media in (PLAIN_JSON, "text/json"):
            return PLAIN_JSON
    raise FhirError(406, f"Cannot answer in any format of Accept: {header!r}; this server "
                         f"answers in JSON only ({_ACCEPTED})", code="not-supported")


def response_format(fmt_param: str | None, pretty_param: str | None, accept: str | None) -> Format:
    """The response format from ``_format``, ``_pretty`` and ``Accept`` (406 when JSON is not
    acceptable). A plain ``_format=json`` gives ``application/fhir+json``."""
    if pretty_param is None or pretty_param == "false":
        pretty = False
    elif pretty_param == "true":
        pretty = True
    else:
        raise FhirError(400, f"_pretty must be true or false; got {pretty_param!r}",
                        code="invalid", expression="_pretty")
    if fmt_param is not None:
        key = fmt_param.strip().lower().split(";")[0].strip()
        if key not in _FORMATS:
            raise FhirError(406, f"Unknown _format {fmt_param!r}; this server answers in JSON "
                                 f"only (_format=json, {FHIR_JSON} or {PLAIN_JSON})",
                            code="not-supported", expression="_format")
        media = _FORMATS[key]
        if media is None:
            raise FhirError(406, f"_format={fmt_param} is not supported; this server answers "
                                 f"in JSON only (_format=json, {FHIR_JSON} or {PLAIN_JSON})",
                            code="not-supported", expression="_format")
        return Format(media, pretty)
    if accept:
        return Format(accept_media(accept), pretty)
    return Format(FHIR_JSON, pretty) if pretty else DEFAULT


# --- request bodies -------------------------------------------------------------------------


def _media(content_type: str | None) -> tuple[str, str | None]:
    if not content_type:
        return "", None
    fields = content_type.split(";")
    charset = None
    for p in fields[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "charset":
            charset = v.strip().strip('"').lower()
    return fields[0].strip().lower(), charset


def check_content_type(content_type: str | None, allowed: frozenset[str], what: str) -> str:
    """The body's media type if allowed (415 otherwise, also for a charset other than UTF-8)."""
    media, charset = _media(content_type)
    if media not in allowed:
        shown = " or ".join(sorted(allowed))
        got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        raise FhirError(415, f"{what} must be sent as {shown}; got {got}",
                        code="not-supported")
    if charset not in (None, "utf-8", "utf8"):
        raise FhirError(415, f"Request bodies must be UTF-8; got charset={charset}",
                        code="not-supported")
    return media


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise FhirError(400, "The request needs a body (a JSON resource) but it is empty",
                        code="required")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FhirError(400, f"The request body is not valid JSON: {exc}",
                        code="structure") from None


def parse_resource(body: bytes) -> dict[str, Any]:
    """A JSON object with a string ``resourceType`` (400 otherwise)."""
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise FhirError(400, f"The request body must be a JSON object (a FHIR resource); got a "
                             f"JSON {type(doc).__name__ if doc is not None else 'null'}",
                        code="structure")
    rtype = doc.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise FhirError(400, "The request body has no resourceType: a FHIR JSON resource "
                             "names its type in \"resourceType\"", code="required",
                        expression="resourceType")
    return doc


def parse_patch(body: bytes) -> list[dict[str, Any]]:
    """A JSON Patch document (RFC 6902): an array of operation objects."""
    doc = parse_json(body)
    if not isinstance(doc, list) or not all(isinstance(op, dict) for op in doc):
        raise FhirError(400, "A JSON Patch body must be a JSON array of operation objects "
                             "(RFC 6902)", code="structure")
    return doc


def parse_prefer(header: str | None) -> str | None:
    """The ``return`` preference of a ``Prefer`` header (400 for an unknown value)."""
    if not header:
        return None
    for part in header.replace(";", ",").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "return":
            value = value.strip().strip('"')
            for known in (RETURN_MINIMAL, RETURN_REPRESENTATION, RETURN_OUTCOME):
                if value.lower() == known.lower():
                    return known
            raise FhirError(400, f"Prefer: return={value} is not one of minimal, "
                                 "representation, OperationOutcome", code="invalid")
    return None
