"""Programme indicators for the managers' dashboards: ``GET /api/indicators``.

**Interim.** This is the dashboards' source until the analytics warehouse (issue 7:
SQL-on-FHIR ViewDefinitions → Parquet → DuckDB/Spark) serves these indicators; it then
becomes a thin reader of the warehouse and this module's SQL goes. It reads the operational
store directly: ``programme_status`` (one row per person and programme, kept by the
programmes engine) and the FHIR search-index rows of Encounters and blood-pressure
Observations, joined through ``owners`` (each resource's Patient and managing Organization)
and ``org_tree`` (the Organization hierarchy). One statement per indicator group, a few
milliseconds on the demo population; a nation's worth of Observations is what the warehouse is
for.

``GET /api/indicators?level=nation|province|commune&org=&period=month|quarter|year&today=
&format=json|csv&lang=vi|en`` answers, for the Organization ``org`` (default: the caller's
own; ``level=nation`` alone: the Ministry ``moh``) and each unit one level below it
(province → its communes' health stations; a commune: itself), the indicators of each of the
last periods (12 months, 8 quarters or 3 years, the current one up to ``today``):

- ``adults``: registered adults — people of the unit (``programme_status`` of the
  ``adult-checkup`` programme, eligible from 18) aged 18 or more by the period's end, less
  those a call found to have moved away or died;
- ``screened``: people with a yearly check-up in the period (an Encounter typed or reasoned
  "general medical examination": ICD-10 Z00.0 or SNOMED CT 185349003); ``coverage`` =
  screened / adults;
- ``bp_measured``, ``bp_raised``: people with a blood pressure (LOINC 85354-9) measured in the
  period, and those whose latest reading in it was ≥ 140/90 mmHg (VNHA 2022 office
  threshold; ``raised`` = bp_raised / bp_measured);
- WHO HEARTS control (as in the DHIS2 hypertension package, /work/shared/reference/
  CLINICAL.md "Standard programme indicators"): of the people registered in the
  ``hypertension-care`` programme before the last 3 months of the period (enrolment date ≤
  end − 3 months), ``htn_controlled`` — latest BP in those 3 months < 140/90,
  ``htn_uncontrolled`` — latest BP ≥ 140/90, ``htn_no_visit`` — no BP recorded in them;
  ``controlled`` = htn_controlled / htn_registered;
- ``referrals_open`` (current, not per period): people with a programme referral still open
  after its window — a positive screen without follow-up (the ``referral`` worklist).

Who may ask: a caller whose token may search Patients, for an Organization in their own
subtree (another province's figures answer 404, as hidden records do). Counts are of people,
so a unit's figures add up to its parent's. CSV (``format=csv``) has one row per unit and
period, UTF-8 with a byte-order mark so that spreadsheet programs read Vietnamese names.
"""

from __future__ import annotations

import calendar
import csv
import io
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from songkhoe.fhir.outcome import FhirError, Issue
from songkhoe.store.catalog import sp_id, system_key

LEVELS = ("nation", "province", "commune")
PERIODS = {"month": 12, "quarter": 8, "year": 3}
NATION = "moh"
RAISED_SBP, RAISED_DBP = 140, 90
CONTROL_WINDOW_MONTHS = 3

#: The counted indicators (additive over units), then the rates derived from them.
COUNTS = ("adults", "screened", "bp_measured", "bp_raised", "htn_registered",
          "htn_controlled", "htn_uncontrolled", "htn_no_visit")
RATES = {"coverage": ("screened", "adults"), "raised": ("bp_raised", "bp_measured"),
         "controlled": ("htn_controlled", "htn_registered")}

_CHECKUP_CODES = [(system_key("http://hl7.org/fhir/sid/icd-10"), "Z00.0"),
                  (system_key("http://snomed.info/sct"), "185349003")]
_LOINC = system_key("http://loinc.org")
_SP = {name: sp_id(name) for name in (
    "Encounter.type", "Encounter.reason-code", "Encounter.date", "Observation.code",
    "Observation.date", "Observation.component-code-value-quantity#0",
    "Observation.component-code-value-quantity#1")}
_GONE = "(s.call_outcome IS NULL OR s.call_outcome NOT IN ('moved-away', 'died'))"

_HEADERS = {
    "vi": {"unit": "Mã đơn vị", "name": "Đơn vị", "level": "Cấp", "period": "Kỳ",
           "adults": "Người trưởng thành quản lý", "screened": "Đã khám định kỳ",
           "coverage": "Độ bao phủ (%)", "bp_measured": "Đã đo huyết áp",
           "bp_raised": "Huyết áp cao (≥ 140/90)", "raised": "Tỷ lệ huyết áp cao (%)",
           "htn_registered": "BN tăng huyết áp đăng ký trước 3 tháng",
           "htn_controlled": "Kiểm soát (< 140/90)", "htn_uncontrolled": "Chưa kiểm soát",
           "htn_no_visit": "Không khám trong 3 tháng", "controlled": "Tỷ lệ kiểm soát (%)",
           "referrals_open": "Chuyển tuyến chưa theo dõi"},
    "en": {"unit": "Unit id", "name": "Unit", "level": "Level", "period": "Period",
           "adults": "Registered adults", "screened": "Checked up",
           "coverage": "Coverage (%)", "bp_measured": "BP measured",
           "bp_raised": "Raised BP (≥ 140/90)", "raised": "Raised BP (%)",
           "htn_registered": "Hypertension patients registered > 3 months",
           "htn_controlled": "Controlled (< 140/90)", "htn_uncontrolled": "Uncontrolled",
           "htn_no_visit": "No visit in 3 months", "controlled": "Controlled (%)",
           "referrals_open": "Referrals without follow-up"},
}


@dataclass(frozen=True)
class Period:
    key: str  # 2026-11, 2026-Q4, 2026
    start: date
    end: date  # inclusive; the current period ends today

    def json(self) -> dict[str, str]:
        return {"key": self.key, "start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass
class Unit:
    id: str
    name: str
    level: str
    counts: list[dict[str, int]] = field(default_factory=list)  # per period
    referrals_open: int = 0

    def json(self, periods: list[Period]) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "level": self.level,
                "referrals_open": self.referrals_open,
                "series": [with_rates(c) for c in self.counts]}


def with_rates(counts: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = dict(counts)
    for rate, (num, den) in RATES.items():
        out[rate] = round(100 * counts[num] / counts[den], 1) if counts[den] else None
    return out


def periods(kind: str, today: date) -> list[Period]:
    """The last ``PERIODS[kind]`` periods up to the one holding ``today``, oldest first."""
    out: list[Period] = []
    if kind == "year":
        for y in range(today.year - PERIODS[kind] + 1, today.year + 1):
            out.append(Period(str(y), date(y, 1, 1), min(date(y, 12, 31), today)))
        return out
    step = 3 if kind == "quarter" else 1
    month = (today.month - 1) // step * step  # 0-based first month of the current period
    year = today.year
    for _ in range(PERIODS[kind]):
        first = date(year, month + 1, 1)
        last_month = month + step
        last = date(year, last_month, calendar.monthrange(year, last_month)[1])
        key = f"{year}-Q{month // 3 + 1}" if kind == "quarter" else f"{year}-{month + 1:02d}"
        out.append(Period(key, first, min(last, today)))
        month -= step
        if month < 0:
            month += 12
            year -= 1
    return out[::-1]


def _us(day: date, end: bool = False) -> int:
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if end:
        moment += timedelta(days=1)
    return int(moment.timestamp()) * 1_000_000 - (1 if end else 0)


def _months_before(day: date, months: int) -> date:
    m = day.month - 1 - months
    year, month = day.year + m // 12, m % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def compute(tx: Any, units: dict[str, list[str]], ps: list[Period], today: date
            ) -> dict[str, tuple[list[dict[str, int]], int]]:
    """Counts per unit (``units``: unit id → the Organization ids whose people it counts) and
    period, and each unit's open referrals. Registered adults and open referrals are counted
    by the database; check-ups, blood-pressure readings and hypertension registrations come
    back as rows (one per visit, reading or patient) that are bucketed into periods here, the
    latest reading of each person picked per period and control window."""
    unit_of = {o: u for u, orgs in units.items() for o in orgs}
    out: dict[str, tuple[list[dict[str, int]], int]] = {
        u: ([dict.fromkeys(COUNTS, 0) for _ in ps], 0) for u in units}
    if not unit_of:
        return out
    orgs = list(unit_of)
    marks = ", ".join("?" * len(orgs))
    rows = [(i, p.start.isoformat(), p.end.isoformat()) for i, p in enumerate(ps)]
    period_values = ", ".join("(?, ?, ?)" for _ in rows)
    for k, org, n in tx.execute(
            f"WITH p (k, d0, d1) AS (VALUES {period_values}) "
            "SELECT p.k, s.org, COUNT(*) FROM programme_status s JOIN p ON s.eligible_from <= p.d1 "
            f"WHERE s.programme = 'adult-checkup' AND s.org IN ({marks}) AND {_GONE} "
            "GROUP BY p.k, s.org", [*[x for row in rows for x in row], *orgs]).fetchall():
        out[unit_of[org]][0][k]["adults"] += int(n)
    for org, n in tx.execute(
            "SELECT s.org, COUNT(DISTINCT s.patient) FROM programme_status s "
            f"WHERE s.org IN ({marks}) AND s.referral_due < ? AND {_GONE} GROUP BY s.org",
            [*orgs, today.isoformat()]).fetchall():
        unit = unit_of[org]
        out[unit] = (out[unit][0], out[unit][1] + int(n))

    windows = [_months_before(p.end, CONTROL_WINDOW_MONTHS) for p in ps]
    lo, hi = _us(min(ps[0].start, *windows)), _us(ps[-1].end, True)
    bounds = [(_us(p.start), _us(p.end, True)) for p in ps]
    starts = [b[0] for b in bounds]

    def period_of(moment: int) -> int | None:
        k = bisect_right(starts, moment) - 1
        return k if k >= 0 and moment <= bounds[k][1] else None

    # Check-ups: people with a general-examination Encounter in the period. The ``+`` before a
    # column keeps SQLite from reading that index instead of following the row ids (PostgreSQL
    # plans by its statistics either way).
    codes = " OR ".join("(c.system = ? AND c.code = ?)" for _ in _CHECKUP_CODES)
    screened: list[set[tuple[str, str]]] = [set() for _ in ps]
    for org, patient, moment in tx.execute(
            "SELECT DISTINCT o.org, o.patient, d.lo FROM owners o "
            f"JOIN idx_token c ON c.rid = o.rid AND c.sp IN (?, ?) AND ({codes}) "
            "JOIN idx_date d ON d.rid = o.rid AND +d.sp = ? "
            f"WHERE o.type = 'Encounter' AND o.org IN ({marks}) AND +d.lo >= ? AND +d.lo <= ?",
            [_SP["Encounter.type"], _SP["Encounter.reason-code"],
             *[x for pair in _CHECKUP_CODES for x in pair], _SP["Encounter.date"], *orgs,
             lo, hi]).fetchall():
        k = period_of(moment)
        if k is not None and (org, patient) not in screened[k]:
            screened[k].add((org, patient))
            out[unit_of[org]][0][k]["screened"] += 1

    # Blood-pressure readings: (patient, org, moment, systolic, diastolic), the BP panels of
    # the units' people first (owners → code), then each one's date and component values.
    readings = tx.execute(
        "WITH r AS MATERIALIZED (SELECT o.rid AS rid, o.patient AS patient, o.org AS org "
        "FROM owners o JOIN idx_token c ON c.rid = o.rid AND c.sp = ? AND c.code = '85354-9' "
        f"AND c.system = ? WHERE o.type = 'Observation' AND o.org IN ({marks})) "
        "SELECT r.patient, r.org, d.lo, MAX(CASE WHEN ct.code = '8480-6' THEN q.lo END), "
        "MAX(CASE WHEN ct.code = '8462-4' THEN q.lo END) FROM r "
        "JOIN idx_date d ON d.rid = r.rid AND +d.sp = ? "
        "JOIN idx_token ct ON ct.rid = r.rid AND +ct.sp = ? AND ct.code IN ('8480-6', '8462-4') "
        "JOIN idx_quantity q ON q.rid = r.rid AND +q.sp = ? AND q.grp = ct.grp "
        "WHERE +d.lo >= ? AND +d.lo <= ? GROUP BY r.rid, r.patient, r.org, d.lo",
        [_SP["Observation.code"], _LOINC, *orgs, _SP["Observation.date"],
         _SP["Observation.component-code-value-quantity#0"],
         _SP["Observation.component-code-value-quantity#1"], lo, hi]).fetchall()
    latest: list[dict[str, tuple[int, str, bool]]] = [{} for _ in ps]  # patient → reading
    for patient, org, moment, sbp, dbp in readings:
        k = period_of(moment)
        if k is None or sbp is None or dbp is None:
            continue
        seen = latest[k].get(patient)
        if seen is None or moment > seen[0]:
            latest[k][patient] = (moment, org, sbp >= RAISED_SBP or dbp >= RAISED_DBP)
    for k, people in enumerate(latest):
        for _, org, raised in people.values():
            counts = out[unit_of[org]][0][k]
            counts["bp_measured"] += 1
            counts["bp_raised"] += raised

    # WHO HEARTS: registered before the last 3 months of the period, latest reading in them.
    in_window: list[dict[str, tuple[int, bool]]] = [{} for _ in ps]
    window_bounds = [(_us(w, True), b[1]) for w, b in zip(windows, bounds, strict=True)]
    for patient, _org, moment, sbp, dbp in readings:
        if sbp is None or dbp is None:
            continue
        for k, (w0, w1) in enumerate(window_bounds):
            if w0 <= moment <= w1:
                seen2 = in_window[k].get(patient)
                if seen2 is None or moment > seen2[0]:
                    in_window[k][patient] = (moment, sbp >= RAISED_SBP or dbp >= RAISED_DBP)
    for patient, org, enrolled in tx.execute(
            "SELECT s.patient, s.org, s.enrolled FROM programme_status s "
            f"WHERE s.programme = 'hypertension-care' AND s.org IN ({marks}) AND {_GONE}",
            orgs).fetchall():
        if enrolled is None:
            continue
        for k, window in enumerate(windows):
            if enrolled > window.isoformat():
                continue
            counts = out[unit_of[org]][0][k]
            counts["htn_registered"] += 1
            last = in_window[k].get(patient)
            if last is None:
                counts["htn_no_visit"] += 1
            elif last[1]:
                counts["htn_uncontrolled"] += 1
            else:
                counts["htn_controlled"] += 1
    return out


class Indicators:
    """The endpoint: who may ask about which Organization, its units, JSON or CSV."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def routes(self) -> list[Route]:
        return [Route("/api/indicators", self.endpoint, methods=["GET"])]

    async def endpoint(self, request: Request) -> Response:
        q = request.query_params
        try:
            kind = q.get("period", "month")
            if kind not in PERIODS:
                raise FhirError(400, Issue("value", f"period: expected one of "
                                                    f"{', '.join(PERIODS)}", "period"))
            level = q.get("level")
            if level is not None and level not in LEVELS:
                raise FhirError(400, Issue("value", f"level: expected one of "
                                                    f"{', '.join(LEVELS)}", "level"))
            try:
                today = date.fromisoformat(q["today"]) if "today" in q else date.today()
            except ValueError:
                raise FhirError(400, Issue("value", "today: expected YYYY-MM-DD", "today")
                                ) from None
            fmt = q.get("format", "json")
            if fmt not in ("json", "csv"):
                raise FhirError(400, Issue("value", "format: expected json or csv", "format"))
            access = request.scope.get("songkhoe.access")
            org = q.get("org") or (NATION if level == "nation" or access is None or
                                   access.org is None else access.org)
            body = await run_in_threadpool(self.answer, access, org, level, kind, today)
        except FhirError as err:
            return Response(orjson.dumps(err.outcome()), err.status,
                            media_type="application/fhir+json")
        if fmt == "csv":
            lang = "en" if q.get("lang") == "en" else "vi"
            name = f"songkhoe-{body['org']['id']}-{kind}-{today.isoformat()}.csv"
            return Response(to_csv(body, lang), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})
        return Response(orjson.dumps(body), media_type="application/json")

    def answer(self, access: Any, org: str, level: str | None, kind: str, today: date
               ) -> dict[str, Any]:
        if access is not None and (access.patient is not None or
                                   not access.scopes.permits("Patient", "s")):
            raise FhirError(403, "indicators need a token that may search Patients",
                            code="forbidden")
        with self.store.reading() as tx:
            if access is not None and access.org is not None and access.org != org:
                inside = tx.execute("SELECT 1 FROM org_tree WHERE ancestor = ? AND org = ?",
                                    [access.org, org]).fetchone()
                if inside is None:
                    raise FhirError(404, Issue("not-found", f"Organization/{org} is not known",
                                               "org"))
            depth = tx.execute("SELECT COUNT(*) FROM org_tree WHERE org = ?",
                               [org]).fetchone()[0]
            if not depth:
                raise FhirError(404, Issue("not-found", f"Organization/{org} is not known",
                                           "org"))
            found = _level(int(depth))
            if level is not None and level != found:
                raise FhirError(400, Issue("value", f"level: Organization/{org} is a {found}, "
                                                    f"not a {level}", "level"))
            me = tx.search("Organization", [("_id", org)]).matches
            resource: dict[str, Any] = me[0].resource if me else {"id": org}
            children = [m.resource for m in tx.search(
                "Organization", [("partof", f"Organization/{org}"), ("_count", "1000")]).matches]
            units: dict[str, list[str]] = {org: [org]}  # people the Organization manages itself
            for child in children:
                units[child["id"]] = [r[0] for r in tx.execute(
                    "SELECT org FROM org_tree WHERE ancestor = ?", [child["id"]]).fetchall()]
            ps = periods(kind, today)
            counts = compute(tx, units, ps, today)
        names = {c["id"]: c.get("name", c["id"]) for c in children}
        child_level = LEVELS[min(LEVELS.index(found) + 1, len(LEVELS) - 1)]
        shown = [Unit(u, names.get(u, resource.get("name", u)),
                      found if u == org else child_level, c, r)
                 for u, (c, r) in counts.items()]
        shown = [u for u in shown if any(c["adults"] for c in u.counts)]
        total = [dict.fromkeys(COUNTS, 0) for _ in ps]
        for u in shown:
            for k, c in enumerate(u.counts):
                for name in COUNTS:
                    total[k][name] += c[name]
        part_of: dict[str, Any] = resource.get("partOf") or {}
        parent = str(part_of.get("reference", "")).partition("/")[2] or None
        return {
            "org": {"id": org, "name": resource.get("name", org), "level": found,
                    "parent": parent if access is None or access.org is None or
                    access.org != org else None,
                    "referrals_open": sum(u.referrals_open for u in shown),
                    "series": [with_rates(c) for c in total]},
            "period": kind, "today": today.isoformat(),
            "periods": [p.json() for p in ps],
            "units": [u.json(ps) for u in sorted(shown, key=lambda u: u.name)],
        }


def _level(depth: int) -> str:
    """An Organization's level from its depth in the hierarchy: the Ministry, a province's
    Department of Health, then the facilities below it (a commune's health station)."""
    return LEVELS[min(depth, 3) - 1]


def to_csv(body: dict[str, Any], lang: str) -> bytes:
    heads = _HEADERS[lang]
    columns = ["unit", "name", "level", "period", *COUNTS[:2], "coverage", *COUNTS[2:4],
               "raised", *COUNTS[4:], "controlled", "referrals_open"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([heads[c] for c in columns])
    rows = [({"id": body["org"]["id"], "name": body["org"]["name"],
              "level": body["org"]["level"], "referrals_open": body["org"]["referrals_open"]},
             body["org"]["series"]), *[(u, u["series"]) for u in body["units"]]]
    for unit, series in rows:
        for period, values in zip(body["periods"], series, strict=True):
            row = {"unit": unit["id"], "name": unit["name"], "level": unit["level"],
                   "period": period["key"], "referrals_open": unit["referrals_open"], **values}
            writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")
