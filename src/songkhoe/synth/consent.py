"""Research Consents of the synthetic population (FHIR R4 Consent, scope ``research``).

An adult (18 and over) records a choice about research use of their health records at their
commune station with probability ``SynthConfig.consent_permit`` (a permit) or
``consent_deny`` (a deny); the others record nothing, which under songkhoe's opt-in default
(``songkhoe.auth.consent``) excludes them from research exports. Children record nothing:
their consent is their parents' or guardian's, which the generator does not model.

The shares are 0 unless asked for, so populations made without them keep their bytes.
``ILLUSTRATIVE`` (80% permit, 5% deny) is for demos: illustrative figures, not calibrated to any
survey of Vietnamese patients' choices.

Each Consent (http://hl7.org/fhir/R4/consent.html): ``status`` active, ``scope`` consentscope
``research``, ``category`` LOINC 57016-8 (privacy policy acknowledgement), the person as
``patient`` and ``performer``, their station as ``organization``, ``dateTime`` a working day and
office hour in the check-up years, ``policyRule`` v3-ActCode ``OPTIN``/``OPTOUT`` (R4 invariant
ppc-1 asks for a policy or a policy rule), and ``provision``: ``type`` permit or deny, ``period``
from that day with no end, ``purpose`` v3-ActReason ``HRESCH`` (healthcare research).
Ids: ``s1-consent42`` is person 42's, seed 1.

The draws come from a random stream of their own (``population``), so turning Consents on or
off changes no other resource. This module imports nothing from ``songkhoe.auth``
(``synth`` sits below it): the code systems are spelled out here as there.
"""

from __future__ import annotations

import random
from datetime import date
from typing import Any

import orjson

from . import codes

ILLUSTRATIVE = (0.80, 0.05)  # (permit, deny): demo figures, not survey figures

SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PRIVACY_POLICY_ACK = "57016-8"
CATEGORY_TEXT = "Đồng ý sử dụng dữ liệu sức khỏe cho nghiên cứu"
POLICY = {"permit": "OPTIN", "deny": "OPTOUT"}


def choose(rng: random.Random, permit: float, deny: float) -> str | None:
    """``permit``, ``deny`` or None (no Consent), one draw."""
    u = rng.random()
    if u < permit:
        return "permit"
    if u < permit + deny:
        return "deny"
    return None


def when(rng: random.Random, start: int, end: int) -> tuple[str, str]:
    """(dateTime, date) of a working day in [start, end) (ordinals; Saturday and Sunday move to
    Friday) at an office hour of a station (07:00–11:00, 13:30–16:30), Viet Nam time."""
    day = start + int(rng.random() * (end - start))
    weekday = date.fromordinal(day).weekday()
    if weekday > 4:
        day -= weekday - 4
    m = int(rng.random() * 420)
    minute = 420 + m if m < 240 else 810 + (m - 240)
    iso = date.fromordinal(day).isoformat()
    return f"{iso}T{minute // 60:02d}:{minute % 60:02d}:00+07:00", iso


def research(id: str, patient: str, org: str, kind: str, recorded: str, day: str) -> bytes:
    """The Consent ``id`` of Patient ``patient`` given at Organization ``org``: ``kind``
    (permit or deny) research use of their records from ``day`` on."""
    resource: dict[str, Any] = {
        "resourceType": "Consent", "id": id, "status": "active",
        "scope": {"coding": [{"system": SCOPE, "code": "research", "display": "Research"}]},
        "category": [{"coding": [{"system": codes.LOINC, "code": PRIVACY_POLICY_ACK}],
                      "text": CATEGORY_TEXT}],
        "patient": {"reference": f"Patient/{patient}"},
        "dateTime": recorded,
        "performer": [{"reference": f"Patient/{patient}"}],
        "organization": [{"reference": f"Organization/{org}"}],
        "policyRule": {"coding": [{"system": codes.ACT_CODE, "code": POLICY[kind]}]},
        "provision": {
            "type": kind,
            "period": {"start": day},
            "purpose": [{"system": ACT_REASON, "code": "HRESCH", "display": "healthcare research"}],
        },
    }
    return orjson.dumps(resource)
