"""``_sort`` and keyset paging cursors.

R4 Search, "Sorting (_sort)" (http://hl7.org/fhir/R4/search.html#sort): ``_sort=a,-b`` sorts by ``a``
ascending, then ``b`` descending; a parameter with several values in one resource sorts by its
lowest value ascending and its highest descending. Resources without a value come last in
either direction; ties end in ``rid`` order, so the order is total and stable.

Paging (R4 http.html#paging, search.html#count): the ``next`` and ``previous`` links carry an
opaque ``_cursor`` — base64url of JSON ``[direction, sort spec, key values, rid]`` of the row
the page continues from — and each page is a keyset query (``WHERE (keys, rid) > cursor``), never
an offset: inserts and deletes elsewhere neither repeat nor skip rows, and a deep page costs
what the first one does.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from .catalog import Param
from .search_sql import sources_sql
from .search_values import bad


@dataclass(frozen=True)
class SortKey:
    code: str
    descending: bool
    expr: str  # SQL over ``{r}`` (and ``{x}`` for the index alias) giving the key
    args: tuple[Any, ...]

    @property
    def spec(self) -> str:
        return ("-" if self.descending else "") + self.code


_COLUMNS = {"_id": "{r}.id", "_lastUpdated": "{r}.last_updated"}


def sort_key(name: str, code: str, descending: bool, p: Param | None) -> SortKey | None:
    """The SQL key of one ``_sort`` item, or None when the parameter cannot be sorted on."""
    if code in _COLUMNS:
        return SortKey(code, descending, _COLUMNS[code], ())
    if p is None or p.table is None or not p.sources:
        return None
    agg = "MAX" if descending else "MIN"
    column = {"string": "{x}.value", "token": "{x}.code", "uri": "{x}.value",
              "reference": "COALESCE({x}.target_type || '/' || {x}.target_id, {x}.url)",
              "date": "{x}.hi" if descending else "{x}.lo",
              "number": "COALESCE({x}.hi, {x}.lo)" if descending else "{x}.lo",
              "quantity": "COALESCE({x}.hi, {x}.lo)" if descending else "{x}.lo"}.get(p.kind)
    if column is None:
        return None
    where, args = sources_sql("{x}", p.sources)
    expr = (f"(SELECT {agg}({column}) FROM {p.table} {{x}} WHERE {{x}}.rid = {{r}}.rid "
            f"AND {where})")
    return SortKey(code, descending, expr, tuple(args))


# --- cursors ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: after (``forward``) or before the row with ``keys`` and ``rid``."""

    forward: bool
    spec: str
    keys: tuple[Any, ...]
    rid: int

    def encode(self) -> str:
        raw = orjson.dumps(["n" if self.forward else "p", self.spec, list(self.keys), self.rid])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, spec: str) -> Cursor:
    """A cursor from a ``_cursor`` value; 400 when it is not one this search made."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        direction, cursor_spec, keys, rid = orjson.loads(raw)
        if direction not in ("n", "p") or not isinstance(rid, int) or not isinstance(keys, list) \
                or cursor_spec != spec or len(keys) != spec.count(",") + (1 if spec else 0) \
                or not all(k is None or isinstance(k, (str, int, float)) for k in keys):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise bad("_cursor", "this paging link is not valid for this search: start the search "
                             "again from its first page") from None
    return Cursor(direction == "n", cursor_spec, tuple(keys), rid)


def order_by(keys: list[tuple[str, bool]], rid: str, forward: bool) -> str:
    """ORDER BY for key columns (SQL, descending) then ``rid``: missing values last; a backward
    page reads the same order reversed."""
    parts = []
    for column, descending in keys:
        desc = descending != (not forward)
        parts.append(f"({column} IS NULL){' DESC' if not forward else ''}")
        parts.append(f"{column}{' DESC' if desc else ''}")
    last_desc = keys[-1][1] if keys else False
    parts.append(f"{rid}{' DESC' if last_desc == forward else ''}")
    return ", ".join(parts)


def keyset(keys: list[tuple[str, bool]], rid: str, cursor: Cursor) -> tuple[str, list[Any]]:
    """Rows strictly after (forward) or before the cursor in the order of ``order_by``."""
    last_desc = keys[-1][1] if keys else False
    rid_after = "<" if last_desc else ">"
    if not cursor.forward:
        rid_after = ">" if rid_after == "<" else "<"
    sql, args = f"{rid} {rid_after} ?", [cursor.rid]
    for (column, descending), value in reversed(list(zip(keys, cursor.keys))):
        after_op = "<" if descending else ">"
        if not cursor.forward:
            after_op = ">" if after_op == "<" else "<"
        if value is None:
            # nothing sorts after a missing value but more missing values
            if cursor.forward:
                sql = f"({column} IS NULL AND ({sql}))"
            else:
                sql = f"({column} IS NOT NULL OR ({column} IS NULL AND ({sql})))"
            continue
        if cursor.forward:
            sql = f"({column} IS NULL OR {column} {after_op} ? OR ({column} = ? AND ({sql})))"
        else:
            sql = f"({column} IS NOT NULL AND ({column} {after_op} ? OR ({column} = ? AND ({sql}))))"
        args = [value, value, *args]
    return sql, args
