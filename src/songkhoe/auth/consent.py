"""Consent to research use: each person's choice, and the filter every research export calls.

A person's choice about secondary use of their records for research is a FHIR R4 Consent
(http://hl7.org/fhir/R4/consent.html) with ``scope`` consentscope ``research``, ``category``
LOINC 57016-8 (privacy policy acknowledgement), the person as ``patient``, ``dateTime`` when
it was recorded and a ``provision``: ``type`` permit or deny, ``period`` when the rule is in
force, ``purpose`` (v3-ActReason ``HRESCH`` healthcare research, or one of its specialisations,
``RESEARCH``) and nested ``provision``s, the exceptions to their parent rule (R4
``Consent.provision.provision``: "rules which provide exceptions to the base rule or
subrules"). Only ``status`` ``active`` counts: draft, proposed, rejected, inactive and
entered-in-error Consents record no choice.

The decision for one person at an instant ``at`` (``decide``):

1. *Applicable* Consents: active, research scope, recorded (``dateTime``) no later than ``at``,
   and whose base provision is in force at ``at`` (``period``) and is about research (no
   ``purpose``, or a research purpose; a Consent whose rule is only about treatment, say, is
   silent on research).
2. The latest applicable Consent (``dateTime``, then ``meta.lastUpdated``) decides; older ones
   are superseded. None applicable: the ``default`` decides — ``opt-in`` (excluded, the
   default) or ``opt-out`` (included).
3. Inside that Consent, an exception that matches (in force, about research) overrides its
   parent rule; among sibling exceptions a deny wins over a permit.

The question is always "may this person's *whole* record be used for research", since an export
cannot yet honour a restriction inside a record. So a rule that covers only part of the record
or only some recipients — it names ``actor``, ``action``, ``securityLabel``, ``class``,
``code``, ``dataPeriod`` or ``data`` other than the person themself, or only a narrower
research purpose, or a purpose from an unknown code system — can deny but cannot permit: a
partial deny excludes the person, a partial permit leaves the parent rule in force, and a
Consent whose base rule is partial excludes the person. A base rule without ``type`` takes it
from ``policyRule`` (v3-ActCode ``OPTIN``/``OPTINR`` permit, ``OPTOUT``/``OPTOUTE`` deny);
without either, and in a nested rule without ``type``, the rule is read as deny. Every doubt
ends in exclusion.

``research_cohort`` applies the decision to a list of people with one Consent search per
batch of people (``BATCH``), paging with ``_cursor``, never one query per person. It runs
with the caller's access (``songkhoe.store.access``): call it with the same store or
transaction, and so the same access, as the export that follows.

Why opt-in by default: health data are sensitive personal data under Decree 13/2023/NĐ-CP on
personal data protection (art. 2(4)), processing needs the data subject's consent, and
silence or non-response is not consent (art. 11) — [to verify: the article numbers, and the
corresponding articles of Law 91/2025/QH15 on personal data protection, reported in force
from 1 January 2026]. ``docs/security.md`` ("Consent") says how an export must call this.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from songkhoe.fhir.primitives import ID
from songkhoe.store.api import Operations
from songkhoe.store.ranges import MAX_US, MIN_US, RangeError, date_range, instant_us

SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
RESEARCH_SCOPE = f"{SCOPE_SYSTEM}|research"
CATEGORY_SYSTEM = "http://loinc.org"
CATEGORY_CODE = "57016-8"  # Privacy policy acknowledgement Document
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_REASON_STU3 = "http://hl7.org/fhir/v3/ActReason"  # the same code system's former URI
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

# v3-ActReason research purposes of use, each with its parent: HRESCH healthcare research and
# its specialisations (biomedical, clinical trial with and without patient care, preclinical,
# disease-specific, population origins or ancestry, translational research).
RESEARCH: dict[str, str | None] = {
    "HRESCH": None,
    "BIORCH": "HRESCH",
    "CLINTRCH": "HRESCH",
    "CLINTRCHNPC": "CLINTRCH",
    "CLINTRCHPC": "CLINTRCH",
    "PRECLINTRCH": "HRESCH",
    "DSRCH": "HRESCH",
    "POARCH": "HRESCH",
    "TRANSRCH": "HRESCH",
}
# policyRule codes (v3-ActCode consent directive types) that give a base rule without ``type``
POLICY_TYPE = {"OPTIN": "permit", "OPTINR": "permit", "OPTOUT": "deny", "OPTOUTE": "deny"}
# Elements that narrow a provision to part of the record, or to some recipients or actions
NARROWING = ("actor", "action", "securityLabel", "class", "code", "dataPeriod")

DEFAULTS = ("opt-in", "opt-out")
BATCH = 500  # people per Consent search
PAGE = 1000  # Consents per page (the store's largest _count)


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a person's records may be used for research at an instant, and why.
    ``consent`` is the Consent that decided (``Consent/<id>``), None when the default did."""

    permitted: bool
    consent: str | None
    reason: str


class _Match(Enum):
    NONE = 0  # the rule does not apply (out of its period, about another purpose)
    PARTIAL = 1  # it applies to part of the record, some recipients, or we cannot tell
    FULL = 2  # it applies to the whole record, for this purpose, now


def decide(consents: Iterable[dict[str, Any]], *, at: datetime, default: str = "opt-in",
           purpose: str = "HRESCH") -> Decision:
    """The decision for one person at ``at`` (an aware datetime) from their Consent resources
    (any status and scope; only active research Consents count). ``purpose``: the export's
    purpose of use, ``HRESCH`` or a narrower research code of ``RESEARCH``."""
    _check(at, default, purpose)
    return _decide(consents, instant_us(at), default, purpose)


def research_decisions(ops: Operations, patient_ids: Iterable[str], *, at: datetime,
                       default: str = "opt-in", purpose: str = "HRESCH",
                       batch: int = BATCH) -> dict[str, Decision]:
    """The decision for each of ``patient_ids`` (Patient ids, in order, repeats dropped),
    reading their active research Consents through ``ops`` (a ``Store`` or ``Tx``) with one
    search per ``batch`` people (more only when a batch has more than ``PAGE`` Consents)."""
    _check(at, default, purpose)
    if isinstance(batch, bool) or not isinstance(batch, int):
        raise TypeError(f"batch must be an integer from 1 to {PAGE}, not {batch!r}")
    if not 1 <= batch <= PAGE:
        raise ValueError(f"batch must be an integer from 1 to {PAGE}, not {batch!r}")
    ids = _ids(patient_ids)
    found: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    for start in range(0, len(ids), batch):
        people = ids[start:start + batch]
        params = [("patient", ",".join(f"Patient/{i}" for i in people)),
                  ("scope", RESEARCH_SCOPE), ("status", "active"), ("_count", str(PAGE))]
        cursor: str | None = None
        while True:
            page = ops.search("Consent", params + ([("_cursor", cursor)] if cursor else []),
                              strict=True)
            for stored in page.matches:
                consent = stored.resource
                pid = _patient_id(consent)
                if pid in found:
                    found[pid].append(consent)
            cursor = page.next_cursor
            if not cursor or not page.matches:
                break
    at_us = instant_us(at)
    return {i: _decide(found[i], at_us, default, purpose) for i in ids}


def research_cohort(ops: Operations, patient_ids: Iterable[str], *, at: datetime,
                    default: str = "opt-in", purpose: str = "HRESCH",
                    batch: int = BATCH) -> list[str]:
    """The ids of ``patient_ids`` whose records may be used for research at ``at``, in the
    order given. Every research export calls this on its cohort before reading any record."""
    decisions = research_decisions(ops, patient_ids, at=at, default=default, purpose=purpose,
                                   batch=batch)
    return [pid for pid, decision in decisions.items() if decision.permitted]


# --- checks -------------------------------------------------------------------------------

def _check(at: datetime, default: str, purpose: str) -> None:
    if not isinstance(at, datetime):
        raise TypeError(f"at must be a timezone-aware datetime, not {at!r}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"at must be a timezone-aware datetime, not {at!r}")
    if default not in DEFAULTS:
        raise ValueError(f"default must be one of {', '.join(DEFAULTS)}, not {default!r}")
    if purpose not in RESEARCH:
        raise ValueError(f"purpose must be a v3-ActReason research code "
                         f"({', '.join(RESEARCH)}), not {purpose!r}")


def _ids(patient_ids: Iterable[str]) -> list[str]:
    if isinstance(patient_ids, (str, bytes)):
        raise TypeError("patient_ids must be a collection of Patient ids, not one string")
    out: dict[str, None] = {}
    for pid in patient_ids:
        if not isinstance(pid, str):
            raise TypeError(f"not a Patient id: {pid!r}")
        if not ID.fullmatch(pid):
            raise ValueError(f"not a Patient id: {pid!r}")
        out[pid] = None
    return list(out)


def _patient_id(consent: dict[str, Any]) -> str | None:
    ref = (consent.get("patient") or {}).get("reference")
    if not isinstance(ref, str) or "Patient/" not in ref:
        return None
    return ref.rsplit("Patient/", 1)[1].split("/_history", 1)[0]


# --- the decision ---------------------------------------------------------------------------

def _decide(consents: Iterable[dict[str, Any]], at_us: int, default: str,
            purpose: str) -> Decision:
    latest: tuple[tuple[int, int, str], str, dict[str, Any]] | None = None
    for consent in consents:
        if not _research_active(consent):
            continue
        recorded = _recorded(consent)
        if recorded > at_us:
            continue  # not yet given at that instant
        outcome = _outcome(consent, at_us, purpose)
        if outcome is None:
            continue  # in force at another time, or about another purpose
        key = (recorded, _last_updated(consent), str(consent.get("id", "")))
        if latest is None or key > latest[0]:
            latest = (key, outcome, consent)
    if latest is None:
        if default == "opt-out":
            return Decision(True, None, "no applicable research Consent; the opt-out default "
                                        "includes the person")
        return Decision(False, None, "no applicable research Consent; the opt-in default "
                                     "excludes the person")
    _, outcome, consent = latest
    ref = f"Consent/{consent.get('id', '')}"
    if outcome == "permit":
        return Decision(True, ref, "the latest applicable research Consent permits research use")
    return Decision(False, ref, "the latest applicable research Consent denies research use "
                                "(or restricts it in a way an export cannot honour)")


def _research_active(consent: dict[str, Any]) -> bool:
    if consent.get("resourceType") != "Consent" or consent.get("status") != "active":
        return False
    return any(c.get("system") == SCOPE_SYSTEM and c.get("code") == "research"
               for c in (consent.get("scope") or {}).get("coding") or ())


def _recorded(consent: dict[str, Any]) -> int:
    """When the Consent was given (the start of ``dateTime``'s interval), else when it was
    stored; MIN_US when neither is known (it counts as given, and as the oldest)."""
    for text in (consent.get("dateTime"), (consent.get("meta") or {}).get("lastUpdated")):
        if isinstance(text, str):
            try:
                return date_range(text)[0]
            except RangeError:
                pass
    return MIN_US


def _last_updated(consent: dict[str, Any]) -> int:
    text = (consent.get("meta") or {}).get("lastUpdated")
    try:
        return date_range(text)[0] if isinstance(text, str) else MIN_US
    except RangeError:
        return MIN_US


def _outcome(consent: dict[str, Any], at_us: int, purpose: str) -> str | None:
    """``permit`` or ``deny`` for the whole record, None when the Consent says nothing about
    research at ``at``."""
    base = consent.get("provision")
    if not isinstance(base, dict):
        return "deny"  # a research Consent without a rule: read as deny
    patient = (consent.get("patient") or {}).get("reference")
    match = _match(base, at_us, purpose, patient)
    if match is _Match.NONE:
        return None
    kind = base.get("type", _policy_type(consent))
    if kind not in ("permit", "deny"):
        kind = "deny"  # no rule we can read: read as deny
    if match is _Match.PARTIAL:
        return "deny"  # a base rule for part of the record: the person cannot be exported whole
    return _exceptions(base, kind, False, at_us, purpose, patient)


def _exceptions(rule: dict[str, Any], own: str, partial: bool, at_us: int, purpose: str,
                patient: str | None) -> str:
    """``own`` (the rule's outcome) as changed by its nested rules."""
    return _overrides(rule, own, partial, at_us, purpose, patient) or own


def _overrides(rule: dict[str, Any], own: str, partial: bool, at_us: int, purpose: str,
               patient: str | None) -> str | None:
    """What the nested rules of ``rule`` (whose outcome is ``own``) change: ``deny`` when one
    of them denies, else ``permit`` when one permits, else None. A nested rule that applies
    to part of the record only (``partial``, inherited by its own nested rules) may take
    research use away but never grants it."""
    results = []
    for sub in rule.get("provision") or ():
        if not isinstance(sub, dict):
            continue
        match = _match(sub, at_us, purpose, patient)
        if match is _Match.NONE:
            continue
        kind = "permit" if sub.get("type") == "permit" else "deny"  # no type: read as deny
        sub_partial = partial or match is _Match.PARTIAL
        if kind == "deny" or not sub_partial:
            sub_own, changes = kind, True
        else:
            sub_own, changes = own, False  # a permit for part of the record changes nothing
        inner = _overrides(sub, sub_own, sub_partial, at_us, purpose, patient)
        if inner is not None:
            results.append(inner)
        elif changes:
            results.append(sub_own)
    if "deny" in results:
        return "deny"
    if "permit" in results:
        return "permit"
    return None


def _policy_type(consent: dict[str, Any]) -> str | None:
    for coding in (consent.get("policyRule") or {}).get("coding") or ():
        if coding.get("system") == ACT_CODE and coding.get("code") in POLICY_TYPE:
            return POLICY_TYPE[coding["code"]]
    return None


def _match(rule: dict[str, Any], at_us: int, purpose: str, patient: str | None) -> _Match:
    partial = False
    period = rule.get("period")
    if isinstance(period, dict):
        try:
            start = date_range(period["start"])[0] if "start" in period else MIN_US
            end = date_range(period["end"])[1] if "end" in period else MAX_US
        except (RangeError, TypeError):
            partial = True  # a period we cannot read: in force or not, we cannot tell
        else:
            if not start <= at_us <= end:
                return _Match.NONE
    purposes = rule.get("purpose")
    if purposes:
        match = _purpose_match(purposes, purpose)
        if match is _Match.NONE:
            return _Match.NONE
        partial = partial or match is _Match.PARTIAL
    if any(rule.get(name) for name in NARROWING):
        partial = True
    data = rule.get("data")
    if data and not all(_whole_record(d, patient) for d in data):
        partial = True
    return _Match.PARTIAL if partial else _Match.FULL


def _purpose_match(purposes: list[dict[str, Any]], purpose: str) -> _Match:
    """FULL when a purpose is the export's or broader (HRESCH covers CLINTRCH), PARTIAL when
    only narrower research purposes or unknown code systems are named, else NONE."""
    best = _Match.NONE
    for coding in purposes:
        code = coding.get("code") if isinstance(coding, dict) else None
        system = coding.get("system") if isinstance(coding, dict) else None
        if system not in (ACT_REASON, ACT_REASON_STU3):
            best = _Match.PARTIAL  # not a purpose-of-use code we know: it may be research
        elif code in RESEARCH:
            if _within(purpose, code):
                return _Match.FULL
            if _within(code, purpose):
                best = _Match.PARTIAL
    return best


def _within(code: str, ancestor: str) -> bool:
    """``code`` is ``ancestor`` or one of its specialisations in ``RESEARCH``."""
    current: str | None = code
    while current is not None:
        if current == ancestor:
            return True
        current = RESEARCH.get(current)
    return False


def _whole_record(data: Any, patient: str | None) -> bool:
    """A ``provision.data`` entry that names the person themself with meaning ``related``
    (everything related to them) covers the whole record."""
    if not isinstance(data, dict) or patient is None:
        return False
    ref = (data.get("reference") or {}).get("reference")
    return data.get("meaning") == "related" and ref == patient


__all__ = ["BATCH", "DEFAULTS", "RESEARCH", "RESEARCH_SCOPE", "Decision", "decide",
           "research_cohort", "research_decisions"]
