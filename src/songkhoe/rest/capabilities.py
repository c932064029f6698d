"""capabilities: ``GET [base]/metadata`` — the server's CapabilityStatement.

FHIR R4 §3.1.0.10 capabilities (http://hl7.org/fhir/R4/http.html#capabilities) and
CapabilityStatement (http://hl7.org/fhir/R4/capabilitystatement.html). It is generated once
per app from what this code does: every R4 resource type from ``songkhoe.fhir.definitions`` with
the interactions of ``routing.py``, the search parameters the store compiles (parameter types
string, token, reference, date, number, quantity and uri, plus ``_id`` and ``_lastUpdated``;
composite and special parameters are not offered), ``$validate`` on every type and
``$everything`` on Patient; JSON only. With Bulk Data export served (``bulk=True``): the
``$export`` operations at system, Patient and Group level with the IG's OperationDefinitions,
and ``instantiates`` the IG's CapabilityStatement (Bulk Data Access IG 2.0.0,
http://hl7.org/fhir/uv/bulkdata/STU2/CapabilityStatement-bulk-data.html). Always: the SQL on FHIR
v2 ``$viewdefinition-run`` at system level.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

import songkhoe
from songkhoe.fhir import definitions

#: Search parameter types the store compiles to SQL (``songkhoe.store.search``).
SEARCHABLE_TYPES = frozenset({"string", "token", "reference", "date", "number", "quantity",
                              "uri"})
#: Common parameters the store implements as columns (search.html#all).
COMMON = ({"name": "_id", "type": "token",
           "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"},
          {"name": "_lastUpdated", "type": "date",
           "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"})

VALIDATE = {"name": "validate",
            "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
EVERYTHING = {"name": "everything",
              "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}

#: Bulk Data Access IG 2.0.0: the CapabilityStatement a server instantiates, the operations.
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
_BULK = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
EXPORT = {"name": "export", "definition": f"{_BULK}export"}
PATIENT_EXPORT = {"name": "export", "definition": f"{_BULK}patient-export"}
GROUP_EXPORT = {"name": "export", "definition": f"{_BULK}group-export"}
#: SQL on FHIR v2 (2.1.0-pre), R4 mode: a system-level operation (rest.viewdefinition_run).
VIEWDEFINITION_RUN = {
    "name": "viewdefinition-run",
    "definition": "http://sql-on-fhir.org/OperationDefinition/$viewdefinition-run",
    "documentation": "Also at [base]/ViewDefinition/$viewdefinition-run. The view is given as "
                     "viewResource, or as viewReference to one of the server's views "
                     "(ViewDefinition/[name] or its canonical url: the warehouse's views; "
                     "no ViewDefinition is stored). source is not supported. Formats: json, "
                     "ndjson, csv, parquet.",
}

_INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance",
                 "history-type", "create", "search-type")


def search_params(rtype: str) -> list[dict[str, Any]]:
    """The search parameters this server applies for ``rtype``, by name."""
    out = [dict(p) for p in COMMON]
    for code, sp in sorted(definitions.search_parameters(rtype).items()):
        if code.startswith("_") or sp.type not in SEARCHABLE_TYPES:
            continue
        entry: dict[str, Any] = {"name": code, "type": sp.type}
        if sp.url:
            entry["definition"] = sp.url
        out.append(entry)
    return out


def _resource(rtype: str, bulk: bool = False) -> dict[str, Any]:
    if rtype == "AuditEvent":  # served from the append-only audit log (``audit_events``)
        return {"type": rtype, "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
                "interaction": [{"code": c} for c in ("read", "vread", "search-type")],
                "versioning": "no-version", "readHistory": False, "updateCreate": False,
                "searchParam": search_params(rtype)}
    operations = [VALIDATE, EVERYTHING] if rtype == "Patient" else [VALIDATE]
    if bulk and rtype in ("Patient", "Group"):
        operations.append(PATIENT_EXPORT if rtype == "Patient" else GROUP_EXPORT)
    return {
        "type": rtype,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
        "interaction": [{"code": code} for code in _INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "full-support",
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        "referencePolicy": ["literal", "local"],
        "searchParam": search_params(rtype),
        "operation": operations,
    }


def capability_statement(base: str | None, *, bulk: bool = False) -> dict[str, Any]:
    """The CapabilityStatement; ``base`` is the service base URL when it is fixed; ``bulk``:
    Bulk Data export is served."""
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    implementation: dict[str, Any] = {"description": "songkhoe FHIR R4 server"}
    if base:
        implementation["url"] = base
    statement: dict[str, Any] = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now,
        "publisher": "songkhoe",
        "kind": "instance",
        "software": {"name": "songkhoe", "version": songkhoe.__version__},
        "implementation": implementation,
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json", "application/json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "documentation": "Bundles of type batch and transaction are processed at the "
                             "service base; search pages through next/previous links.",
            "resource": [_resource(t, bulk) for t in sorted(definitions.resource_types())],
            "interaction": [{"code": "transaction"}, {"code": "batch"},
                            {"code": "search-system"}, {"code": "history-system"}],
            "searchParam": [dict(p) for p in COMMON],
        }],
    }
    statement["rest"][0]["operation"] = [EXPORT, VIEWDEFINITION_RUN] if bulk else \
        [VIEWDEFINITION_RUN]
    if bulk:
        statement["instantiates"] = [BULK_DATA]
    return statement


def capability_bytes(base: str | None, *, bulk: bool = False) -> bytes:
    return orjson.dumps(capability_statement(base, bulk=bulk))
