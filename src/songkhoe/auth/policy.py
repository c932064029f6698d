"""What an access context may see of one resource type for one action: the rule the store
compiles into its SQL (the store-side step of issue 5). Nothing here touches SQL.

A row of ``type`` is visible for ``action`` when the ``RowPolicy`` allows the action and:

- ``orgs`` is None, or the row belongs to one of these Organizations (a Patient by its
  ``managingOrganization``; a resource in a Patient's compartment by that Patient's; an
  Organization by being one of them);
- ``patient`` is None, or the row is that Patient or in its compartment;
- ``alternatives`` is empty, or the row matches at least one of them, each a conjunction of
  FHIR search parameters (from SMART v2 scope queries such as ``?category=laboratory``);
  an empty conjunction inside ``alternatives`` means "no restriction".

Break the glass (SMART/HL7 v3 purpose ETREAT) lifts the ``orgs`` limit but not the scopes.
Administrators and system clients registered without an Organization see every
Organization's records. SMART App Launch 2.0 §"Scopes and Launch Context" defines the scope
semantics; FHIR R4 §"Compartments" (http://hl7.org/fhir/R4/compartmentdefinition.html) the
patient compartment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .context import AccessContext

Params = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class RowPolicy:
    allowed: bool
    orgs: frozenset[str] | None = None
    patient: str | None = None
    alternatives: tuple[Params, ...] = ()

    @property
    def unrestricted(self) -> bool:
        return self.allowed and self.orgs is None and self.patient is None and \
            (not self.alternatives or () in self.alternatives)


DENY = RowPolicy(False)


def row_policy(access: AccessContext, type_: str | None, action: str,
               subtree: Callable[[str], frozenset[str]]) -> RowPolicy:
    """The rows of ``type_`` (None: every type) that ``access`` may ``action`` (c r u d s).
    ``subtree(org)`` gives the Organization ids under ``org`` (``orgs.org_subtree``)."""
    grants = access.scopes.grants_for(type_, action)
    if not grants:
        return DENY
    patient = None
    if all(g.context == "patient" for g in grants):
        if access.patient is None:
            return DENY  # a patient scope without a patient in context grants nothing
        patient = access.patient
    alternatives = tuple(dict.fromkeys(g.params for g in grants))
    if () in alternatives:
        alternatives = ()
    orgs = None
    if access.org is not None and not access.break_glass:
        orgs = subtree(access.org)
    return RowPolicy(True, orgs, patient, alternatives)
