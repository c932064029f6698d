"""What an access context may see and change: the ``songkhoe.store.access.Access`` the store
compiles into its SQL (issue 5). Nothing here touches SQL.

For one resource type and action (c r u d s) the token's SMART scopes decide whether the type
is allowed at all and under which scope queries (SMART App Launch 2.0, "Scopes for requesting
clinical data": a row is visible when it satisfies any granting scope). Then:

- a user of an Organization sees the people whose ``managingOrganization`` lies in its
  subtree (commune station → its commune; province department → the province), and what
  belongs to them; administrators and system clients registered without an Organization see
  every Organization's people;
- a specialist also sees the people of consultations assigned to their Practitioner;
- a researcher never reads identified records: no row of a person-owned type;
- directory data (types no person owns) are read by all and written only by administrators
  and system clients;
- patient-context scopes (``patient/…``) limit to the token's patient and its compartment;
  without a patient in the token they grant nothing;
- break the glass (purpose of use ETREAT, HL7 v3 ActReason) lifts the Organization limit for
  reads and searches, never for writes and never beyond the scopes; every use is audited.
"""

from __future__ import annotations

from songkhoe.store.access import DENY, Rule, owned

from .context import AccessContext

#: Roles that may write directory data — Organizations (the hierarchy access follows),
#: Practitioners, Locations, terminology — rather than people's records.
DIRECTORY_WRITERS = frozenset({"administrator", "system"})


def rule_for(access: AccessContext, rtype: str, action: str) -> Rule:
    """The rows of ``rtype`` that ``access`` may ``action``."""
    grants = access.scopes.grants_for(rtype, action)
    if not grants or (access.role == "researcher" and owned(rtype)):
        return DENY
    if action in "cud" and not owned(rtype) and access.role not in DIRECTORY_WRITERS:
        return DENY  # rewriting Organization.partOf would move whole communes into a scope
    patient = None
    if all(g.context == "patient" for g in grants):
        if access.patient is None:
            return DENY  # a patient scope without a patient in context grants nothing
        patient = access.patient
    alternatives = tuple(dict.fromkeys(g.params for g in grants))
    if () in alternatives:
        alternatives = ()
    org = access.org
    if access.break_glass and action in ("r", "s"):
        org = None
    practitioner = access.practitioner if access.role == "specialist" and org else None
    return Rule(True, org, practitioner, patient, alternatives)


class ContextAccess:
    """An ``AccessContext`` as the store's ``Access``, each rule computed once (per verified
    token: ``tokens.TokenService.verify_with_rules``). Rules do not depend on the client's
    address; concurrent requests may compute a rule twice, to the same value."""

    def __init__(self, context: AccessContext) -> None:
        self.context = context
        self._rules: dict[tuple[str, str], Rule] = {}

    def rule(self, rtype: str, action: str) -> Rule:
        key = (rtype, action)
        found = self._rules.get(key)
        if found is None:
            found = self._rules[key] = rule_for(self.context, rtype, action)
        return found
