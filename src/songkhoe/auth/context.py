"""The access context: who is asking, in which role and place, with which scopes and why.

Every interaction with the store carries one (ARCHITECTURE.md: "access context (who, role,
org-unit scope, purpose) → audit"). The REST layer builds it from a verified access token
(``tokens.TokenService.verify``); ``policy.ContextAccess`` turns it into the rules the store's
queries apply (Organization subtree, patient compartment, SMART scopes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .scopes import ScopeSet


@dataclass(frozen=True, slots=True)
class AccessContext:
    subject: str  # username, or client id for a system client
    kind: str  # "user" | "system"
    role: str  # a role of ``identities.ROLES``
    org: str | None  # Organization id at the top of the subtree this identity may see
    scopes: ScopeSet = field(default_factory=ScopeSet)
    client_id: str | None = None
    patient: str | None = None  # Patient id for patient-context (SMART launch) tokens
    practitioner: str | None = None  # the user's Practitioner id (fhirUser), if any
    purpose: str | None = None  # purpose of use (v3-ActReason code, e.g. TREAT, ETREAT)
    break_glass: bool = False  # emergency access: purpose ETREAT, always audited as such
    address: str | None = None  # the client's network address
    token_id: str | None = None  # the access token's jti

    @property
    def is_admin(self) -> bool:
        return self.role == "administrator"
