"""SMART on FHIR scopes, parsed into a structure the store can compile to SQL.

SMART App Launch 2.0 §"Scopes and Launch Context"
(https://hl7.org/fhir/smart-app-launch/STU2/scopes-and-launch-context.html):

- clinical-data scopes ``<context>/<ResourceType or *>.<permissions>[?<query>]`` where the
  context is ``patient`` (the token's patient compartment), ``user`` (what the user may see)
  or ``system`` (a backend service), and permissions are a subset of ``cruds`` in that order
  (create, read, update, delete, search);
- SMART v1 synonyms: ``.read`` = ``.rs``, ``.write`` = ``.cud``, ``.*`` = ``.cruds``;
- v2 query restrictions ``patient/Observation.rs?category=laboratory`` (kept as FHIR search
  parameters, ANDed with the request's own);
- launch/identity scopes (``openid``, ``fhirUser``, ``launch``, ``launch/patient``,
  ``offline_access``, ``online_access``) are kept as plain strings.

Invalid scope strings raise ``ScopeError`` naming the scope and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

ACTIONS = "cruds"
CONTEXTS = frozenset({"patient", "user", "system"})
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(?:\?(.*))?")
OTHER_SCOPES = frozenset({"openid", "fhirUser", "profile", "launch", "launch/patient",
                          "launch/encounter", "offline_access", "online_access"})


class ScopeError(ValueError):
    """A scope string that is not a SMART scope."""


@dataclass(frozen=True, slots=True)
class Scope:
    """One clinical-data scope: ``context``/``type``.``actions``?``params``."""

    context: str  # patient | user | system
    type: str  # a resource type or "*"
    actions: frozenset[str]  # subset of c r u d s
    params: tuple[tuple[str, str], ...] = ()  # v2 query restriction, as search parameters

    def covers(self, type_: str | None, action: str) -> bool:
        """Whether this scope permits ``action`` on ``type_`` (None: all types, needs ``*``)."""
        return action in self.actions and (self.type == "*" or self.type == type_)

    def __str__(self) -> str:
        text = f"{self.context}/{self.type}.{''.join(a for a in ACTIONS if a in self.actions)}"
        if self.params:
            text += "?" + "&".join(f"{k}={v}" for k, v in self.params)
        return text


def parse_scope(text: str) -> Scope:
    match = _SCOPE.fullmatch(text)
    if not match:
        raise ScopeError(f"{text!r} is not a SMART clinical scope: expected "
                         "<patient|user|system>/<ResourceType|*>.<cruds|read|write|*>")
    context, type_, perms, query = match.groups()
    perms = _V1.get(perms, perms)
    if not perms or any(c not in ACTIONS for c in perms) or \
            "".join(sorted(perms, key=ACTIONS.index)) != perms or len(set(perms)) != len(perms):
        raise ScopeError(f"{text!r}: permissions must be letters of 'cruds' in that order "
                         "(or v1 'read', 'write', '*')")
    params = tuple(parse_qsl(query, keep_blank_values=True)) if query else ()
    return Scope(context, type_, frozenset(perms), params)


@dataclass(frozen=True, slots=True)
class ScopeSet:
    """The scopes of a token: clinical scopes plus the launch/identity ones."""

    clinical: tuple[Scope, ...] = ()
    other: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> ScopeSet:
        parts = text.split() if isinstance(text, str) else list(text)
        clinical: list[Scope] = []
        other: set[str] = set()
        for part in parts:
            if "/" in part and part.split("/", 1)[0] in CONTEXTS:
                clinical.append(parse_scope(part))
            elif part in OTHER_SCOPES:
                other.add(part)
            else:
                raise ScopeError(f"unknown scope {part!r}: expected a SMART clinical scope or "
                                 f"one of {', '.join(sorted(OTHER_SCOPES))}")
        return cls(tuple(clinical), frozenset(other))

    def permits(self, type_: str | None, action: str) -> bool:
        """The coarse check: some scope allows ``action`` on ``type_`` (rows are filtered later)."""
        return any(s.covers(type_, action) for s in self.clinical)

    def grants_for(self, type_: str | None, action: str) -> list[Scope]:
        """The scopes that allow ``action`` on ``type_``: a row is visible when it satisfies
        any of them (their ``params`` and ``context`` restrictions are ORed)."""
        return [s for s in self.clinical if s.covers(type_, action)]

    def within(self, allowed: ScopeSet) -> ScopeSet:
        """These scopes cut down to what ``allowed`` permits (a role's or client's ceiling)."""
        out: list[Scope] = []
        for s in self.clinical:
            for a in allowed.clinical:
                if a.params and a.params != s.params:
                    continue
                if a.type not in ("*", s.type) and s.type != "*":
                    continue
                actions = s.actions & a.actions
                if not actions or (a.context == "patient" and s.context != "patient"):
                    continue
                if (a.context == "system") != (s.context == "system"):
                    continue
                type_ = s.type if a.type == "*" else a.type
                narrowed = Scope(s.context, type_, frozenset(actions), s.params)
                if narrowed not in out:
                    out.append(narrowed)
        return ScopeSet(tuple(out), self.other & (allowed.other | OTHER_SCOPES))

    def __str__(self) -> str:
        return " ".join([*(str(s) for s in self.clinical), *sorted(self.other)])
