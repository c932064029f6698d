"""Programme indicators for the managers' dashboards: ``GET /api/indicators``, read from the
analytics warehouse.

The figures are those of :mod:`songkhoe.analytics.indicators` (SQL over the SQL-on-FHIR views,
docs/indicators.md), computed over the warehouse (:mod:`songkhoe.analytics.warehouse`) that
this module keeps beside the store. Before answering, the warehouse is brought up to the
store's change feed when the store has changed since the last answer (an incremental refresh:
the resources changed since), so a check-up recorded a moment ago is counted. The indicators'
per-person base (every result read once, :func:`indicators.prepare`) is built once a day for
the three grains and, after a refresh, built again only for the people whose resources
changed (:mod:`songkhoe.analytics.kept_base`); the indicators of one grain and day are
computed once for every unit and kept until the warehouse's rows change. The folder:
``$SONGKHOE_WAREHOUSE_DIR``; else beside a SQLite store's file
(``<file>-warehouse``); else a temporary folder for the life of the process (rebuilt at
start).

``GET /api/indicators?level=nation|province|commune&org=&period=month|quarter|year&today=
&format=json|csv&lang=vi|en`` answers, for the Organization ``org`` (default: the caller's
own; ``level=nation`` alone: the Ministry ``moh``) and each unit one level below it (a
province's communes; a commune: itself), the indicators of each of the last periods (12
months, 8 quarters or 3 years, the current one up to ``today``), as counts of people and
rates (%):

- ``adults`` (registered adults), ``screened`` (a check-up in the period), ``coverage``;
- ``bp_measured``, ``bp_raised`` (latest reading ≥ 140/90), ``raised``; ``glucose_tested``,
  ``glucose_raised`` (latest fasting glucose ≥ 7.0 mmol/L), ``glucose``; ``bmi_measured``,
  ``obese`` (latest BMI ≥ 25), ``obesity``;
- WHO HEARTS for hypertension and diabetes care: ``htn_registered`` (registered before the
  last 3 months), ``htn_controlled``, ``htn_uncontrolled``, ``htn_no_visit``, ``controlled``;
  the same with ``dm_`` and ``dm_controlled_rate``;
- ``referrals_open`` (now, not per period): people with a programme referral still open after
  its window (the ``referral`` worklist, from the programmes' status table).

Who may ask: a caller whose token may search Patients, for an Organization in their own
subtree (another province's figures answer 404, as hidden records do). Counts are of people,
so a unit's figures add up to its parent's. CSV (``format=csv``) has one row per unit and
period, UTF-8 with a byte-order mark so that spreadsheet programs read Vietnamese names.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from songkhoe.analytics import indicators as ind
from songkhoe.analytics import warehouse
from songkhoe.analytics.kept_base import KeptBase
from songkhoe.fhir.outcome import FhirError, Issue
from songkhoe.store.changes import position

LEVELS = ind.LEVELS[::-1]  # nation, province, commune: the order of depth
PERIODS = ind.DEFAULT_COUNT
NATION = "moh"
ENV_WAREHOUSE = "SONGKHOE_WAREHOUSE_DIR"

#: the series' counts: (indicator, numerator or denominator) they are read from
COUNTS = {
    "adults": ("checkup_coverage", "denominator"), "screened": ("checkup_coverage", "numerator"),
    "bp_measured": ("raised_blood_pressure", "denominator"),
    "bp_raised": ("raised_blood_pressure", "numerator"),
    "glucose_tested": ("raised_glucose", "denominator"),
    "glucose_raised": ("raised_glucose", "numerator"),
    "bmi_measured": ("obesity", "denominator"), "obese": ("obesity", "numerator"),
    "htn_registered": ("htn_controlled", "denominator"),
    "htn_controlled": ("htn_controlled", "numerator"),
    "htn_uncontrolled": ("htn_uncontrolled", "numerator"),
    "htn_no_visit": ("htn_no_visit", "numerator"),
    "dm_registered": ("dm_controlled", "denominator"),
    "dm_controlled": ("dm_controlled", "numerator"),
    "dm_uncontrolled": ("dm_uncontrolled", "numerator"),
    "dm_no_visit": ("dm_no_visit", "numerator"),
}
RATES = {"coverage": ("screened", "adults"), "raised": ("bp_raised", "bp_measured"),
         "glucose": ("glucose_raised", "glucose_tested"), "obesity": ("obese", "bmi_measured"),
         "controlled": ("htn_controlled", "htn_registered"),
         "dm_controlled_rate": ("dm_controlled", "dm_registered")}
_GONE = "(s.call_outcome IS NULL OR s.call_outcome NOT IN ('moved-away', 'died'))"

_HEADERS = {
    "vi": {"unit": "Mã đơn vị", "name": "Đơn vị", "level": "Cấp", "period": "Kỳ",
           "adults": "Người trưởng thành quản lý", "screened": "Đã khám định kỳ",
           "coverage": "Độ bao phủ (%)", "bp_measured": "Đã đo huyết áp",
           "bp_raised": "Huyết áp cao (≥ 140/90)", "raised": "Tỷ lệ huyết áp cao (%)",
           "glucose_tested": "Đã xét nghiệm glucose lúc đói",
           "glucose_raised": "Glucose lúc đói cao (≥ 7,0 mmol/L)",
           "glucose": "Tỷ lệ glucose cao (%)", "bmi_measured": "Đã đo BMI",
           "obese": "Béo phì (BMI ≥ 25)", "obesity": "Tỷ lệ béo phì (%)",
           "htn_registered": "BN tăng huyết áp đăng ký trước 3 tháng",
           "htn_controlled": "Kiểm soát (< 140/90)", "htn_uncontrolled": "Chưa kiểm soát",
           "htn_no_visit": "Không khám trong 3 tháng", "controlled": "Tỷ lệ kiểm soát (%)",
           "dm_registered": "BN đái tháo đường đăng ký trước 3 tháng",
           "dm_controlled": "ĐTĐ kiểm soát", "dm_uncontrolled": "ĐTĐ chưa kiểm soát",
           "dm_no_visit": "ĐTĐ không khám trong 3 tháng",
           "dm_controlled_rate": "Tỷ lệ kiểm soát ĐTĐ (%)",
           "referrals_open": "Chuyển tuyến chưa theo dõi"},
    "en": {"unit": "Unit id", "name": "Unit", "level": "Level", "period": "Period",
           "adults": "Registered adults", "screened": "Checked up",
           "coverage": "Coverage (%)", "bp_measured": "BP measured",
           "bp_raised": "Raised BP (≥ 140/90)", "raised": "Raised BP (%)",
           "glucose_tested": "Fasting glucose tested",
           "glucose_raised": "Raised fasting glucose (≥ 7.0 mmol/L)",
           "glucose": "Raised glucose (%)", "bmi_measured": "BMI measured",
           "obese": "Obese (BMI ≥ 25)", "obesity": "Obesity (%)",
           "htn_registered": "Hypertension patients registered > 3 months",
           "htn_controlled": "Controlled (< 140/90)", "htn_uncontrolled": "Uncontrolled",
           "htn_no_visit": "No visit in 3 months", "controlled": "Controlled (%)",
           "dm_registered": "Diabetes patients registered > 3 months",
           "dm_controlled": "Diabetes controlled", "dm_uncontrolled": "Diabetes uncontrolled",
           "dm_no_visit": "Diabetes: no visit in 3 months",
           "dm_controlled_rate": "Diabetes controlled (%)",
           "referrals_open": "Referrals without follow-up"},
}


def periods(kind: str, today: date) -> list[ind.Period]:
    """The last ``PERIODS[kind]`` periods up to the one holding ``today``, oldest first."""
    return ind.last_periods(kind, today)


def period_json(p: ind.Period) -> dict[str, str]:
    return {"key": p.key, "start": p.start.isoformat(), "end": p.end.isoformat()}


@dataclass
class Unit:
    id: str
    name: str
    level: str
    counts: list[dict[str, int]] = field(default_factory=list)  # per period
    referrals_open: int = 0

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "level": self.level,
                "referrals_open": self.referrals_open,
                "series": [with_rates(c) for c in self.counts]}


def with_rates(counts: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = dict(counts)
    for rate, (num, den) in RATES.items():
        out[rate] = round(100 * counts[num] / counts[den], 1) if counts[den] else None
    return out


class Figures:
    """The indicators over the store's warehouse, refreshed when the store changed and kept
    per grain and day while the warehouse's rows stay the same."""

    def __init__(self, store: Any, folder: Path | None = None) -> None:
        self.store = store
        self.folder, temporary = _folder(store, folder)
        if temporary:  # removed with this object (at the latest when the process ends)
            weakref.finalize(self, shutil.rmtree, self.folder, True)
        self._lock = threading.Lock()
        self._seen: Any = None  # the store's feed position at the last refresh
        self._generation = 0  # bumped whenever a refresh changed the warehouse's rows
        self._cache: dict[tuple[str, date], dict[tuple[str, str, date, str], tuple[Any, Any]]] \
            = {}
        # the indicators' per-person base (every grain's runs read it), kept up to date
        self._base = KeptBase(self.folder)

    def rows(self, kind: str, today: date) -> dict[tuple[str, str, date, str], tuple[Any, Any]]:
        """(level, org, period start, indicator) → (numerator, denominator) for every unit."""
        with self._lock:
            now = position(self.store)
            if now != self._seen:
                report = warehouse.refresh(self.store, self.folder)
                self._base.refreshed(report)
                if self._generation == 0 or any(v.mode != "unchanged"
                                                for v in report.views.values()):
                    self._generation += 1
                    self._cache.clear()
                self._seen = now
            if (kind, today) not in self._cache:
                con, base, closed = self._base.get(today)
                table = ind.compute(ind.DuckDBEngine(con), grains=[kind], as_of=today,
                                    base=base, closed=closed)
                self._cache[(kind, today)] = {
                    (r["org_level"], r["org"], r["period_start"], r["indicator"]):
                        (r["numerator"], r["denominator"]) for r in table.to_pylist()}
            return self._cache[(kind, today)]


def _folder(store: Any, folder: Path | None) -> tuple[Path, bool]:
    if folder is not None:
        return folder, False
    if os.environ.get(ENV_WAREHOUSE):
        return Path(os.environ[ENV_WAREHOUSE]), False
    path = getattr(store.backend, "path", None)
    if path and path != ":memory:":
        return Path(f"{path}-warehouse"), False
    name = hashlib.sha256(str(getattr(store.backend, "url", id(store))).encode()).hexdigest()
    return Path(tempfile.mkdtemp(prefix=f"songkhoe-warehouse-{name[:12]}-")), True


def series(rows: dict[tuple[str, str, date, str], tuple[Any, Any]], level: str, org: str,
           ps: list[ind.Period]) -> list[dict[str, int]]:
    """The counts of one unit in each period (0 where no row: nobody to count)."""
    out = []
    for p in ps:
        counts = {}
        for name, (indicator, part) in COUNTS.items():
            num, den = rows.get((level, org, p.start, indicator), (0, 0))
            counts[name] = int((num if part == "numerator" else den) or 0)
        out.append(counts)
    return out


class Indicators:
    """The endpoint: who may ask about which Organization, its units, JSON or CSV."""

    def __init__(self, store: Any, folder: Path | None = None) -> None:
        self.store = store
        self.figures = Figures(store, folder)

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
            referrals = _referrals_open(tx, org, [c["id"] for c in children], today)
        ps = periods(kind, today)
        rows = self.figures.rows(kind, today)
        child_level = LEVELS[min(LEVELS.index(found) + 1, len(LEVELS) - 1)]
        names = {c["id"]: c.get("name", c["id"]) for c in children}
        # the units one level below (a commune: itself); the Organization's own people (a
        # Department's) are a unit of that level of their own (docs/indicators.md)
        ids = [org] if child_level == found else [org, *names]
        units = [Unit(u, names.get(u, resource.get("name", u)), child_level,
                      series(rows, child_level, u, ps), referrals.get(u, 0)) for u in ids]
        shown = [u for u in units if any(c["adults"] for c in u.counts)]
        part_of: dict[str, Any] = resource.get("partOf") or {}
        parent = str(part_of.get("reference", "")).partition("/")[2] or None
        return {
            "org": {"id": org, "name": resource.get("name", org), "level": found,
                    "parent": parent if access is None or access.org is None or
                    access.org != org else None,
                    "referrals_open": sum(u.referrals_open for u in shown),
                    "series": [with_rates(c) for c in series(rows, found, org, ps)]},
            "period": kind, "today": today.isoformat(),
            "periods": [period_json(p) for p in ps],
            "units": [u.json() for u in sorted(shown, key=lambda u: u.name)],
        }


def _referrals_open(tx: Any, org: str, children: list[str], today: date) -> dict[str, int]:
    """People with a programme referral still open after its window, per unit (``org``'s
    own people under ``org``, each child's subtree under the child)."""
    units = {org: [org], **{c: [r[0] for r in tx.execute(
        "SELECT org FROM org_tree WHERE ancestor = ?", [c]).fetchall()] for c in children}}
    unit_of = {o: u for u, orgs in units.items() for o in orgs}
    out: dict[str, int] = {}
    marks = ", ".join("?" * len(unit_of))
    for owner, n in tx.execute(
            "SELECT s.org, COUNT(DISTINCT s.patient) FROM programme_status s "
            f"WHERE s.org IN ({marks}) AND s.referral_due < ? AND {_GONE} GROUP BY s.org",
            [*unit_of, today.isoformat()]).fetchall():
        out[unit_of[owner]] = out.get(unit_of[owner], 0) + int(n)
    return out


def _level(depth: int) -> str:
    """An Organization's level from its depth in the hierarchy: the Ministry, a province's
    Department of Health, then the facilities below it (a commune's health station)."""
    return LEVELS[min(depth, 3) - 1]


def to_csv(body: dict[str, Any], lang: str) -> bytes:
    heads = _HEADERS[lang]
    columns = ["unit", "name", "level", "period", "adults", "screened", "coverage",
               "bp_measured", "bp_raised", "raised", "glucose_tested", "glucose_raised",
               "glucose", "bmi_measured", "obese", "obesity", "htn_registered",
               "htn_controlled", "htn_uncontrolled", "htn_no_visit", "controlled",
               "dm_registered", "dm_controlled", "dm_uncontrolled", "dm_no_visit",
               "dm_controlled_rate", "referrals_open"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([heads[c] for c in columns])
    rows = [({"id": body["org"]["id"], "name": body["org"]["name"],
              "level": body["org"]["level"], "referrals_open": body["org"]["referrals_open"]},
             body["org"]["series"]), *[(u, u["series"]) for u in body["units"]]]
    for unit, values_by_period in rows:
        for period, values in zip(body["periods"], values_by_period, strict=True):
            row = {"unit": unit["id"], "name": unit["name"], "level": unit["level"],
                   "period": period["key"], "referrals_open": unit["referrals_open"], **values}
            writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")
