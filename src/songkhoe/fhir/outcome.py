"""OperationOutcome issues and the one exception type that carries them to a client.

FHIR R4 §2.42 OperationOutcome (http://hl7.org/fhir/R4/operationoutcome.html): each issue has a
severity, an issue-type code (http://hl7.org/fhir/R4/valueset-issue-type.html), human-readable
``diagnostics`` and ``expression`` — the FHIRPath of the element at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue."""

    code: str  # issue-type: invalid, structure, required, value, not-found, conflict, ...
    diagnostics: str
    expression: str | None = None
    severity: str = "error"  # fatal | error | warning | information

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code,
                               "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = [self.expression]
        return out


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    """An OperationOutcome resource for ``issues`` (an 'all ok' information issue if empty)."""
    if not issues:
        issues = [Issue("informational", "All OK", severity="information")]
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


@dataclass
class FhirError(Exception):
    """An error to report to the client as an HTTP status with an OperationOutcome."""

    status: int
    issues: list[Issue] = field(default_factory=list)

    def __init__(self, status: int, issues: list[Issue] | Issue | str, code: str = "invalid",
                 expression: str | None = None) -> None:
        if isinstance(issues, str):
            issues = [Issue(code, issues, expression)]
        elif isinstance(issues, Issue):
            issues = [issues]
        self.status = status
        self.issues = issues
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues)

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def not_found(diagnostics: str) -> FhirError:
    return FhirError(404, diagnostics, code="not-found")


def gone(diagnostics: str) -> FhirError:
    return FhirError(410, diagnostics, code="deleted")


def conflict(diagnostics: str) -> FhirError:
    return FhirError(409, diagnostics, code="conflict")


def precondition_failed(diagnostics: str) -> FhirError:
    return FhirError(412, diagnostics, code="conflict")
