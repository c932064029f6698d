"""Errors as OperationOutcome responses.

FHIR R4 §3.1.0.1.8 Error handling (http://hl7.org/fhir/R4/http.html#errors) and §3.1.0.1.5
HTTP Status Codes (#status): every 4xx/5xx carries an OperationOutcome
(http://hl7.org/fhir/R4/operationoutcome.html) whose issues name the element at fault in
``expression``. An unexpected exception is logged with its traceback and answered as a 500
OperationOutcome that does not leak internals.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from starlette.responses import Response

from songkhoe.fhir.outcome import FhirError, Issue
from songkhoe.rest.exchange import dumps
from songkhoe.rest.negotiation import DEFAULT, Format

log = logging.getLogger("songkhoe.rest")


def error_response(err: FhirError, fmt: Format = DEFAULT) -> Response:
    headers = {}
    if err.status == 405:
        headers["Allow"] = "GET, HEAD, POST, PUT, PATCH, DELETE"
    return Response(dumps(err.outcome(), fmt.pretty), status_code=err.status,
                    media_type=fmt.content_type, headers=headers)


def internal_error(exc: BaseException, what: str) -> FhirError:
    """Log an unexpected exception and turn it into a 500 FhirError."""
    log.exception("unexpected error while handling %s", what, exc_info=exc)
    return FhirError(500, f"Internal server error ({type(exc).__name__}) while handling "
                          f"{what}; the details are in the server log", code="exception")


def internal_error_response(exc: BaseException, what: str, fmt: Format = DEFAULT) -> Response:
    return error_response(internal_error(exc, what), fmt)


def rebase_issues(issues: list[Issue], prefix: str, resource_type: str | None) -> list[Issue]:
    """Issues of a Bundle entry with expressions made relative to the Bundle:
    ``Patient.birthDate`` in entry 3 becomes ``Bundle.entry[3].resource.birthDate``."""
    out = []
    for issue in issues:
        expr = issue.expression
        if expr and resource_type and (expr == resource_type
                                       or expr.startswith(resource_type + ".")):
            expr = f"{prefix}.resource{expr[len(resource_type):]}"
        elif expr and not expr.startswith("Bundle"):
            expr = f"{prefix}.{expr}" if resource_type is None else f"{prefix}.resource.{expr}"
        elif not expr:
            expr = prefix
        out.append(replace(issue, expression=expr))
    return out
