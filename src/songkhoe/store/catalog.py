"""Which search parameters exist, and how each one's index rows are stored.

The R4 SearchParameter definitions (http://hl7.org/fhir/R4/searchparameter-registry.html,
generated into ``songkhoe.fhir.definitions``) say what each parameter means; this module decides
how the store keeps them, once per resource type:

- every index row carries ``sp``, a stable 31-bit number for "resource type + parameter"
  (``Observation.code``) instead of two text columns, which keeps rows and B-trees small.
  Parameters defined on Resource/DomainResource (``_tag``, ``_profile``, ``_security``,
  ``_source``, ``_text``) share one number across types, so a system-wide ``_tag`` search reads
  one index range;
- a parameter whose expression is the union of other parameters' expressions is not stored
  again but searched as that union: Observation ``combo-code`` is ``code`` ∪ ``component-code``,
  ``combo-value-quantity`` is ``value-quantity`` ∪ ``component-value-quantity``, Patient
  ``phonetic`` is ``name``; a parameter ``X.where(resolve() is T)`` is the rows of ``X`` whose
  target is a ``T`` (Observation ``patient`` is ``subject`` restricted to Patient);
- composite parameters (R4 Search, "Composite Search Parameters", #composite) rooted at the
  resource itself (Observation ``code-value-quantity``) are searched as their components' own
  rows joined on the resource; composites rooted at a repeating element
  (``component-code-value-quantity`` on ``Observation.component``) get rows per component
  tagged with the element's position (``grp``), so that a code and a value match only when
  they sit in the same component.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from types import MappingProxyType

from songkhoe.fhir import definitions

from .paths import split_union

#: Index table of each stored parameter type (R4 Search, "Search Parameter Types", #ptypes).
#: Numbers are kept with quantities: a number is a quantity without a unit.
TABLES = {"string": "idx_string", "token": "idx_token", "reference": "idx_reference",
          "date": "idx_date", "number": "idx_quantity", "quantity": "idx_quantity",
          "uri": "idx_uri"}

#: Parameters of every resource type (R4 Search, "Parameters for all resources", #all).
COMMON = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "_text",
          "_content", "_list", "_has", "_type", "_query")


def sp_id(key: str) -> int:
    """The stable row tag of a parameter key such as ``Observation.code`` (31 bits)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big") & 0x7FFFFFFF


@lru_cache(maxsize=4096)
def system_key(system: str | None) -> int | None:
    """How a token's or quantity's ``system`` URI is kept: a 64-bit hash. Systems are only
    ever compared for equality, and ``http://terminology.hl7.org/CodeSystem/observation-category``
    in every row and index entry would cost more than the rest of the row."""
    if system is None:
        return None
    return int.from_bytes(hashlib.blake2b(system.encode(), digest_size=8).digest(), "big",
                          signed=True)


@dataclass(frozen=True)
class Source:
    """Index rows a search on a parameter reads: rows tagged ``sp`` (and, for a reference
    parameter restricted by ``where(resolve() is T)``, only those whose target type is ``T``)."""

    sp: int
    target: str | None = None


@dataclass(frozen=True)
class Component:
    """One part of a composite parameter: the parameter giving its type, its expression
    relative to the composite's root, and where its rows are."""

    code: str
    kind: str
    table: str
    expression: str
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class Param:
    """A search parameter of one resource type, as the store keeps it."""

    rtype: str
    code: str
    kind: str  # number | date | string | token | reference | composite | quantity | uri | special
    table: str | None
    sp: int
    expression: str | None
    targets: tuple[str, ...] = ()
    sources: tuple[Source, ...] = ()  # rows to search; empty for composite/special
    stored: bool = False  # the indexer writes rows tagged ``sp`` for it
    shared: bool = False  # ``sp`` is shared by every resource type (Resource-level parameter)
    components: tuple[Component, ...] = ()
    root: str | None = None  # composite: the expression of the element its parts sit in
    members: tuple[str, ...] = ()  # composite: searched as the union of these composites
    element_types: frozenset[str] = field(default_factory=frozenset)

    @property
    def name(self) -> str:
        return f"{self.rtype}.{self.code}"


_RESOLVE = re.compile(r"^(.+)\.where\(resolve\(\) is ([A-Za-z]+)\)$")
_UNIVERSAL = re.compile(r"/SearchParameter/(?:Resource|DomainResource)-")


def _norm(part: str) -> str:
    part = part.strip()
    while part.startswith("(") and part.endswith(")") and _balanced(part[1:-1]):
        part = part[1:-1].strip()
    return part


def _balanced(text: str) -> bool:
    depth = 0
    for c in text:
        depth += c == "("
        depth -= c == ")"
        if depth < 0:
            return False
    return depth == 0


def _element_types(rtype: str, expression: str | None) -> frozenset[str]:
    """FHIR types of the elements a plain path reaches (``Patient.gender`` → {code})."""
    if not expression:
        return frozenset()
    out: set[str] = set()
    for part in split_union(expression):
        part = _norm(part)
        match = re.match(r"^([A-Za-z]+(?:\.[a-z][A-Za-z0-9]*)+)(?: as ([A-Za-z]+))?", part)
        if not match:
            continue
        path = match.group(1)
        if path.split(".")[0] != rtype:
            path = rtype + path[path.index("."):]
        el = definitions.element(path) or definitions.element(path + "[x]")
        if el is not None:
            out.update([match.group(2)] if match.group(2) else el.types)
    return frozenset(out)


@cache
def params(rtype: str) -> Mapping[str, Param]:
    """The search parameters of ``rtype`` by code (common ones included)."""
    defs = definitions.search_parameters(rtype)
    out: dict[str, Param] = {}
    # 1. plain parameters: stored, aliased to a union of others, or restricted by target type
    plain = {code: sp for code, sp in defs.items()
             if sp.type in TABLES and sp.expression and code not in ("_id", "_lastUpdated")}
    parts = {code: frozenset(_norm(p) for p in split_union(sp.expression or ""))
             for code, sp in plain.items()}
    stored: dict[str, frozenset[str]] = {}
    # parameters restricted by ``where(resolve() is T)`` after the ones they restrict
    order = sorted(plain, key=lambda c: (any(_RESOLVE.match(p) for p in parts[c]),
                                         len(parts[c]), c))
    resolved: dict[str, tuple[Source, ...]] = {}
    for code in order:
        sp = plain[code]
        shared = bool(sp.url and _UNIVERSAL.search(sp.url))
        key = f"Resource.{code}" if shared else f"{rtype}.{code}"
        mine = parts[code]
        sources = _alias(rtype, code, sp.type, mine, stored, plain, resolved)
        is_stored = sources is None
        if sources is None:
            sources = (Source(sp_id(key)),)
            stored[code] = mine
        resolved[code] = sources
        out[code] = Param(rtype, code, sp.type, TABLES[sp.type], sp_id(key), sp.expression,
                          tuple(sp.targets), sources, is_stored, shared,
                          element_types=_element_types(rtype, sp.expression))
    # 2. framework parameters
    for code in ("_id", "_lastUpdated"):
        if code in defs:
            out[code] = Param(rtype, code, defs[code].type, None, 0, None)
    if "_text" in defs:
        text_sp = sp_id("Resource._text")
        out["_text"] = Param(rtype, "_text", "string", "idx_string", text_sp, None,
                             sources=(Source(text_sp),), stored=True, shared=True)
    if "_content" in defs:
        strings = tuple(s for p in out.values() if p.kind == "string" and p.code != "_text"
                        for s in p.sources)
        text_sp = sp_id("Resource._text")
        out["_content"] = Param(rtype, "_content", "string", "idx_string",
                                sp_id("Resource._content"), None,
                                sources=tuple(dict.fromkeys((Source(text_sp), *strings))))
    for code, sp in defs.items():
        if code not in out and sp.type == "special":
            out[code] = Param(rtype, code, "special", None, 0, sp.expression)
    # 3. composites
    composites = {code: sp for code, sp in defs.items() if sp.type == "composite"}
    for code, sp in composites.items():
        out[code] = _composite(rtype, code, sp, out)
    for code, sp in composites.items():
        members = _composite_members(code, sp, composites, out)
        if members:
            current = out[code]
            out[code] = Param(rtype, code, "composite", None, current.sp, sp.expression,
                              components=current.components, root=current.root,
                              members=members)
    return MappingProxyType(out)


def _alias(rtype: str, code: str, kind: str, mine: frozenset[str],
           stored: dict[str, frozenset[str]], plain: Mapping[str, definitions.SearchParam],
           resolved: dict[str, tuple[Source, ...]]) -> tuple[Source, ...] | None:
    """The rows of already-stored parameters that give exactly ``mine``, or None."""
    # X.where(resolve() is T) for every part: the rows of X restricted to targets of type T
    if kind == "reference":
        bases, targets = set(), set()
        for part in mine:
            match = _RESOLVE.match(part)
            if not match:
                break
            bases.add(_norm(match.group(1)))
            targets.add(match.group(2))
        else:
            if len(targets) == 1:
                target = next(iter(targets))
                cover = _cover(frozenset(bases), kind, stored, plain)
                if cover:
                    return tuple(Source(s.sp, target) for c in cover for s in resolved[c])
    cover = _cover(mine, kind, stored, plain)
    if cover:
        return tuple(s for c in cover for s in resolved[c])
    return None


def _cover(wanted: frozenset[str], kind: str, stored: dict[str, frozenset[str]],
           plain: Mapping[str, definitions.SearchParam]) -> list[str] | None:
    """Stored parameters of the same type whose parts together are exactly ``wanted``."""
    chosen: list[str] = []
    covered: set[str] = set()
    for other, theirs in sorted(stored.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        if plain[other].type != kind or not theirs <= wanted or theirs <= covered:
            continue
        chosen.append(other)
        covered |= theirs
    return chosen if covered == wanted else None


def _composite(rtype: str, code: str, sp: definitions.SearchParam,
               known: Mapping[str, Param]) -> Param:
    root = (sp.expression or rtype).strip()
    components = []
    rooted = root == rtype
    for i, comp in enumerate(sp.components):
        part = known.get(comp.code)
        if part is None or part.table is None:
            return Param(rtype, code, "composite", None, sp_id(f"{rtype}.{code}"), sp.expression)
        if rooted:
            sources = part.sources  # the component's own rows, joined on the resource
        else:
            sources = (Source(sp_id(f"{rtype}.{code}#{i}")),)
        components.append(Component(comp.code, part.kind, part.table, comp.expression, sources))
    return Param(rtype, code, "composite", None, sp_id(f"{rtype}.{code}"), sp.expression,
                 components=tuple(components), root=None if rooted else root,
                 stored=not rooted)


def _composite_members(code: str, sp: definitions.SearchParam,
                       composites: Mapping[str, definitions.SearchParam],
                       known: Mapping[str, Param]) -> tuple[str, ...]:
    """A composite over several roots whose parts are other composites' (Observation
    ``combo-code-value-quantity`` = ``code-value-quantity`` ∪ ``component-code-value-quantity``)."""
    roots = [_norm(p) for p in split_union(sp.expression or "")]
    if len(roots) < 2:
        return ()
    expressions = tuple(c.expression for c in sp.components)
    members = []
    for root in roots:
        for other, osp in composites.items():
            if other != code and _norm(osp.expression or "") == root and \
                    tuple(c.expression for c in osp.components) == expressions and \
                    known[other].components:
                members.append(other)
                break
        else:
            return ()
    return tuple(members)


def param(rtype: str, code: str) -> Param | None:
    return params(rtype).get(code)


@cache
def stored_params(rtype: str) -> tuple[Param, ...]:
    """The parameters whose rows the indexer writes for ``rtype`` (composites included)."""
    return tuple(p for p in params(rtype).values() if p.stored and p.code != "_text")


@cache
def sp_names() -> Mapping[int, str]:
    """``sp`` → parameter key, for reading query plans and debugging."""
    out: dict[int, str] = {}
    for rtype in definitions.resource_types():
        for p in params(rtype).values():
            key = f"Resource.{p.code}" if p.shared else p.name
            out[p.sp] = key
            for i, comp in enumerate(p.components):
                if p.root is not None:
                    out[comp.sources[0].sp] = f"{p.name}#{i}"
            if p.stored and p.kind == "reference":
                out[identifier_sp(p.sp)] = f"{key}:identifier"
            if p.stored and p.kind == "token":
                out[of_type_sp(p.sp)] = f"{key}:of-type"
    return MappingProxyType(out)


def identifier_sp(sp: int) -> int:
    """Rows of the ``Reference.identifier`` values of the reference rows tagged ``sp``
    (the ``:identifier`` modifier)."""
    return sp_id(f"{sp}:identifier")


def of_type_sp(sp: int) -> int:
    """Rows of ``Identifier.type`` plus value of the token rows tagged ``sp`` (``:of-type``)."""
    return sp_id(f"{sp}:of-type")
