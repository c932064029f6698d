"""Worklists per organisation unit, read from ``programme_status`` (one indexed statement).

Lists (``LISTS``), for one programme, on a day:

- ``due``: the next visit falls in the period (default: the day's month);
- ``overdue``: the next visit has passed (never-screened people who are eligible included),
  hiding those a caller was told to call later until that day;
- ``referral``: a referral the programme made is still open after its window — a positive
  screen without follow-up;
- ``lost``: enrolled in a care programme, no visit for the programme's ``lost_after_days``
  (HEARTS: 12 months).

People a call found to have moved away or died (after their last visit) leave every list, as
DHIS2's overdue lists do. The statement starts from the Organization's subtree (``org_tree``)
and reads that commune's rows of ``programme_status`` in due order (index ``(programme, org,
next_due)``), so a commune's list reads only its people, and it carries the caller's access
rule on the Patient: nobody lists people they may not see.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import orjson

from songkhoe.fhir.outcome import FhirError
from songkhoe.programs.definition import Programme
from songkhoe.store.engine import Tx

LISTS = ("due", "overdue", "referral", "lost")
_GONE = "(s.call_outcome IS NULL OR s.call_outcome NOT IN ('moved-away', 'died'))"


@dataclass(frozen=True)
class Entry:
    patient: str
    name: str
    birth_date: str | None
    gender: str | None
    phone: str | None
    programme: str
    next_due: str | None
    last_visit: str | None
    referral_due: str | None
    call_outcome: str | None
    call_day: str | None
    call_again: str | None
    days_overdue: int | None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    total: int
    next_cursor: str | None


def worklist(tx: Tx, programme: Programme, kind: str, *, today: date,
             org: str | None = None, start: date | None = None, end: date | None = None,
             count: int = 50, cursor: str | None = None) -> Page:
    """One page of a list (``kind`` in ``LISTS``), ordered by due day then patient."""
    if kind not in LISTS:
        raise FhirError(400, f"unknown worklist {kind!r}; expected one of {', '.join(LISTS)}",
                        code="value")
    day = today.isoformat()
    where = ["s.programme = ?", _GONE]
    args: list[Any] = [programme.id]
    if kind == "due":
        first = start or today.replace(day=1)
        last = end or (first.replace(day=28) + timedelta(days=4)).replace(day=1) - \
            timedelta(days=1)
        where.append("s.next_due >= ? AND s.next_due <= ?")
        args += [first.isoformat(), last.isoformat()]
    elif kind == "overdue":
        where.append("s.next_due < ? AND (s.call_again IS NULL OR s.call_again <= ?)")
        args += [day, day]
    elif kind == "referral":
        where.append("s.referral_due < ?")
        args.append(day)
    else:
        where.append("s.kind = 'care' AND s.last_visit < ?")
        args.append((today - timedelta(days=programme.lost_after_days)).isoformat())
    if kind != "lost":  # still of an age the programme covers
        where.append("(s.eligible_until IS NULL OR s.eligible_until >= ?)")
        args.append(day)
    limit, limit_args = tx.read_limit("Patient")
    scope, scope_args = "", []
    if org is not None:
        scope = "JOIN org_tree t ON t.org = s.org AND t.ancestor = ? "
        scope_args = [org]
    joins = (f"FROM programme_status s {scope}"
             "JOIN resources r ON r.type = 'Patient' AND r.id = s.patient ")
    condition = f"WHERE NOT r.deleted AND {' AND '.join(where)}{limit}"
    base_args = [*scope_args, *args, *limit_args]
    total = int(tx.execute(f"SELECT COUNT(*) {joins}{condition}", base_args).fetchone()[0])
    order_key = "COALESCE(s.next_due, '')"
    page_where, page_args = "", []
    if cursor:
        due, _, patient = cursor.partition("|")
        page_where = f" AND ({order_key} > ? OR ({order_key} = ? AND s.patient > ?))"
        page_args = [due, due, patient]
    rows = tx.execute(
        "SELECT s.patient, s.next_due, s.last_visit, s.referral_due, s.call_outcome, "
        f"s.call_day, s.call_again, h.content {joins}"
        "JOIN history h ON h.rid = r.rid AND h.version = r.version "
        f"{condition}{page_where} ORDER BY {order_key}, s.patient LIMIT ?",
        [*base_args, *page_args, count + 1]).fetchall()
    entries = [_entry(programme.id, row, today) for row in rows[:count]]
    more = len(rows) > count
    last = rows[count - 1] if more else None
    return Page(entries, total, f"{last[1] or ''}|{last[0]}" if last else None)


def _entry(programme: str, row: tuple[Any, ...], today: date) -> Entry:
    patient, due, last, referral, outcome, call_day, again, content = row
    resource = orjson.loads(bytes(content))
    name = next(iter(resource.get("name") or []), {})
    text = name.get("text") or " ".join([name.get("family", ""), *name.get("given", [])]).strip()
    phone = next((t.get("value") for t in resource.get("telecom", [])
                  if t.get("system") == "phone"), None)
    overdue = (today - date.fromisoformat(due)).days \
        if last and due and due < today.isoformat() else None  # never seen: no count
    return Entry(patient, text, resource.get("birthDate"), resource.get("gender"), phone,
                 programme, due, last, referral, outcome, call_day, again, overdue)
