"""Access rules (``access.Rule``) compiled into SQL: a term of each search, and conditions on
the resource rows every other statement reads (reads, history, includes, chains, ``_has``).

A person-owned row is visible when an ``owners`` row of it satisfies the rule's person limit
(``access.owner_where``); a row of any type must also satisfy one of the rule's scope
queries, compiled with the same search compiler as the request itself (SMART App Launch 2.0,
"Scopes for requesting clinical data": ``patient/Observation.rs?category=laboratory``).
"""

from __future__ import annotations

from typing import Any

from songkhoe.fhir import definitions
from songkhoe.fhir.outcome import FhirError

from .access import Access, Rule, owned, owner_where
from .search_sql import Ctx, Term

#: An Organization subtree with more members than this is a district, province or the nation:
#: its people are many, so their ``owners`` rows do not drive a search.
SMALL_SUBTREE = 50


def forbidden(rtype: str | None, action: str) -> FhirError:
    names = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
    return FhirError(403, f"This access token may not {names.get(action, action)} "
                          f"{rtype or 'resources'}", code="forbidden")


class Guard:
    """An access context bound to one transaction (``execute(sql, args)`` runs a statement)."""

    def __init__(self, access: Access, execute: Any) -> None:
        self.access = access
        self._execute = execute
        self._sizes: dict[str, int] = {}

    def rule(self, rtype: str, action: str) -> Rule:
        return self.access.rule(rtype, action)

    def require(self, rtype: str, action: str) -> Rule:
        rule = self.rule(rtype, action)
        if not rule.allowed:
            raise forbidden(rtype, action)
        return rule

    def _small(self, org: str) -> bool:
        if org not in self._sizes:
            self._sizes[org] = int(self._execute(
                f"SELECT COUNT(*) FROM (SELECT 1 FROM org_tree WHERE ancestor = ? "
                f"LIMIT {SMALL_SUBTREE + 1}) s", [org]).fetchone()[0])
        return self._sizes[org] <= SMALL_SUBTREE

    # --- one type ------------------------------------------------------------------------

    def terms(self, rtype: str, action: str, ctx: Ctx) -> list[Term]:
        """The terms that limit a search of ``rtype`` (403 when the type is not allowed). The
        person limit can drive the search: a patient's or a commune's rows are few."""
        rule = self.require(rtype, action)
        out: list[Term] = []
        if owned(rtype) and rule.patient is not None:  # rid-ordered in owners_patient
            out.append(Term("{x}.patient = ? AND {x}.type = ?", [rule.patient, rtype], "owners",
                            ordered=True, cost=2, live_only=False))
        elif owned(rtype) and rule.org is not None:
            # probed by the row's rid; when it drives, the subtree's rows are listed instead
            o = ctx.alias("o")
            probe = owner_where(rule, o, probe=True)
            listed = owner_where(rule, "x", probe=False)
            assert probe is not None and listed is not None
            out.append(Term(f"EXISTS (SELECT 1 FROM owners {o} WHERE {o}.rid = {{r}}.rid AND "
                            f"{o}.type = ? AND {probe[0]})", [rtype, *probe[1]], None,
                            rids=f"SELECT x.rid FROM owners x WHERE x.type = ? AND {listed[0]}",
                            cost=1 if self._small(rule.org) else 7))
        alternatives = _alternatives(rule, rtype, ctx)
        if alternatives is not None:
            out.append(Term(alternatives[0], alternatives[1], None, cost=6))
        return out

    def condition(self, rtype: str, action: str, r: str, ctx: Ctx) -> tuple[str, list[Any]] | None:
        """A condition on the ``resources`` row ``r`` of type ``rtype`` (None: every row;
        ``1 = 0`` when the type is not allowed)."""
        rule = self.rule(rtype, action)
        if not rule.allowed:
            return "1 = 0", []
        return _rule_condition(rule, rtype, r, ctx)

    def limit(self, rtype: str, action: str, backend: str) -> tuple[str, list[Any]]:
        """`` AND <condition on the row r>`` for a statement that reads rows of ``rtype`` by
        key ("" when nothing limits them; 403 when the type is not allowed). Compiled once per
        rule without scope queries: a read by id costs a dictionary lookup here."""
        rule = self.require(rtype, action)
        key = (rule, owned(rtype), backend)
        found = None if rule.alternatives else _LIMITS.get(key)
        if found is None:
            cond = _rule_condition(rule, rtype, "r", Ctx(backend))
            found = (f" AND {cond[0]}", tuple(cond[1])) if cond else ("", ())
            if not rule.alternatives:
                if len(_LIMITS) >= _CONDITIONS_MAX:
                    _LIMITS.clear()
                _LIMITS[key] = found
        return found[0], list(found[1])

    def visible(self, rid: int, rtype: str, action: str, backend: str) -> bool:
        """Whether the row ``rid`` (of type ``rtype``) is visible under the rule."""
        sql, args = self.limit(rtype, action, backend)
        if not sql:
            return True
        return self._execute(f"SELECT 1 FROM resources r WHERE r.rid = ?{sql}",
                             [rid, *args]).fetchone() is not None

    # --- several types ---------------------------------------------------------------------

    def any_condition(self, types: list[str] | None, action: str, r: str, ctx: Ctx
                      ) -> tuple[str, list[Any]] | None:
        """A condition on the row ``r`` of any of ``types`` (None: all types): rows of types
        with the same rule share one branch. None when nothing is limited."""
        groups: dict[tuple[Rule, bool], list[str]] = {}
        for rtype in types if types is not None else sorted(definitions.resource_types()):
            rule = self.rule(rtype, action)
            groups.setdefault((rule, owned(rtype) and rule.allowed), []).append(rtype)
        if all(rule.unrestricted for rule, _ in groups):
            return None
        branches: list[str] = []
        args: list[Any] = []
        for (rule, _), members in groups.items():
            if not rule.allowed:
                continue
            if rule.alternatives:  # compiled per type: a scope query names type parameters
                for rtype in members:
                    c = _rule_condition(rule, rtype, r, ctx)
                    assert c is not None
                    branches.append(f"({r}.type = ? AND {c[0]})")
                    args += [rtype, *c[1]]
                continue
            cond = _rule_condition(rule, members[0], r, ctx)
            marks = ", ".join("?" * len(members))
            if cond is None:
                branches.append(f"{r}.type IN ({marks})")
                args += members
            else:
                branches.append(f"({r}.type IN ({marks}) AND {cond[0]})")
                args += [*members, *cond[1]]
        return ("(" + " OR ".join(branches) + ")" if branches else "1 = 0"), args


#: ``_rule_condition`` of rules without scope queries, by (rule, owned type, row alias, first
#: alias number): (condition, its arguments, aliases used); a few entries per Organization
_CONDITIONS: dict[tuple[Rule, bool, str, int], tuple[tuple[str, tuple[Any, ...]] | None, int]] = {}
_CONDITIONS_MAX = 4096
#: ``Guard.limit`` of rules without scope queries, by (rule, owned type, backend)
_LIMITS: dict[tuple[Rule, bool, str], tuple[str, tuple[Any, ...]]] = {}


def _rule_condition(rule: Rule, rtype: str, r: str, ctx: Ctx) -> tuple[str, list[Any]] | None:
    """The condition of ``rule`` on the row ``r``. The same rule, type ownership, alias and
    alias counter always compile to the same SQL: without scope queries (whose compilation may
    read the clock) it is compiled once and replayed, advancing ``ctx``'s counter alike."""
    if rule.alternatives:
        return _compile_condition(rule, rtype, r, ctx)
    key = (rule, owned(rtype), r, ctx.counter)
    found = _CONDITIONS.get(key)
    if found is None:
        start = ctx.counter
        cond = _compile_condition(rule, rtype, r, ctx)
        found = ((cond[0], tuple(cond[1])) if cond else None), ctx.counter - start
        if len(_CONDITIONS) >= _CONDITIONS_MAX:
            _CONDITIONS.clear()
        _CONDITIONS[key] = found
        return cond
    ctx.counter += found[1]
    return (found[0][0], list(found[0][1])) if found[0] else None


def _compile_condition(rule: Rule, rtype: str, r: str, ctx: Ctx
                       ) -> tuple[str, list[Any]] | None:
    parts: list[str] = []
    args: list[Any] = []
    o = ctx.alias("o")
    owner = owner_where(rule, o, probe=True) if owned(rtype) else None
    if owner is not None:
        parts.append(f"EXISTS (SELECT 1 FROM owners {o} WHERE {o}.rid = {r}.rid AND {owner[0]})")
        args += owner[1]
    alternatives = _alternatives(rule, rtype, ctx)
    if alternatives is not None:
        parts.append(alternatives[0].replace("{r}", r))
        args += alternatives[1]
    return (" AND ".join(parts), args) if parts else None


def _alternatives(rule: Rule, rtype: str, ctx: Ctx) -> tuple[str, list[Any]] | None:
    """The scope queries as one condition on ``{r}``: any one of them holds."""
    from .search import compile_param

    if not rule.alternatives:
        return None
    plain = Ctx(ctx.backend, ctx.counter + 1000)  # no guard: scope queries are not re-checked
    ors: list[str] = []
    args: list[Any] = []
    for conjunction in rule.alternatives:
        ands = []
        for name, value in conjunction:
            term = compile_param(plain, [rtype], name, value, strict=True)
            if term is None:  # a query the type has no parameter for selects none of it
                ands.append("1 = 0")
                continue
            sql, a = term.condition("{r}", plain)
            ands.append(sql)
            args += a
        ors.append("(" + " AND ".join(ands) + ")" if ands else "1 = 1")
    ctx.counter = plain.counter
    return "(" + " OR ".join(ors) + ")", args
