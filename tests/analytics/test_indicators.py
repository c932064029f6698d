"""The population indicators (``songkhoe.analytics.indicators``) against an independent
computation straight from the FHIR resources, on DuckDB and on Spark.

A small population is built by hand to reach every edge the definitions have — blood pressure
exactly at 140/90 on either side, the latest reading winning within a day and a month,
glucose in mg/dL around 126, BMI at 25, the HEARTS 3-month window and registration rule,
no visit, lost to follow-up, children and people turning 18 (on 29 February too), a person
moved to another station, people found moved away or dead (and back), period boundaries,
partial dates, wrong units and statuses — plus a seeded random population around it. The
resources go through the ViewDefinitions (the DuckDB runner), the indicators are computed,
and every row is compared with :class:`Reference`, which reads the resources themselves and
applies the definitions of docs/indicators.md day by day (no month bits, no grouping). The
same SQL then runs on Spark (local mode) and must give the same table.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
import pytest

from songkhoe.analytics import indicators as ind
from songkhoe.analytics.duckdb_runner import compile_view, run_view

VIEWS = Path(ind.__file__).parent / "views"
AS_OF = date(2026, 11, 23)
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ATC = "http://www.whocc.no/atc"
GONE = ("moved-away", "died")


# --- resources ----------------------------------------------------------------------------------

class Population:
    """FHIR resources made the way the product writes them (synth, the check-up form, the
    programmes engine, the worklist call)."""

    def __init__(self) -> None:
        self.resources: list[dict[str, Any]] = []
        self.n = 0

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def add(self, resource: dict[str, Any]) -> dict[str, Any]:
        self.resources.append(resource)
        return resource

    def org(self, id_: str, parent: str | None) -> None:
        body: dict[str, Any] = {"resourceType": "Organization", "id": id_, "name": f"Đơn vị {id_}"}
        if parent:
            body["partOf"] = {"reference": f"Organization/{parent}"}
        self.add(body)

    def person(self, org: str | None, born: str, **extra: Any) -> str:
        pid = self._id("p")
        body: dict[str, Any] = {"resourceType": "Patient", "id": pid, "gender": "female",
                                "birthDate": born, **extra}
        if org:
            body["managingOrganization"] = {"reference": f"Organization/{org}"}
        self.add(body)
        return pid

    def checkup(self, patient: str, when: str, status: str = "finished",
                snomed: bool = False) -> None:
        coding = {"system": "http://snomed.info/sct", "code": "185349003"} if snomed else \
            {"system": ICD10, "code": "Z00.0"}
        self.add({"resourceType": "Encounter", "id": self._id("e"), "status": status,
                  "class": {"code": "AMB"}, "type": [{"coding": [coding]}],
                  "subject": {"reference": f"Patient/{patient}"},
                  "period": {"start": when, "end": when}})

    def _obs(self, patient: str, when: str | dict[str, Any], code: str,
             status: str = "final", id_: str | None = None) -> dict[str, Any]:
        timing = {"effectivePeriod": when} if isinstance(when, dict) else \
            {"effectiveDateTime": when}
        return {"resourceType": "Observation", "id": id_ or self._id("o"), "status": status,
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "subject": {"reference": f"Patient/{patient}"}, **timing}

    def bp(self, patient: str, when: str | dict[str, Any], sbp: float, dbp: float,
           unit: str = "mm[Hg]", status: str = "final", id_: str | None = None) -> None:
        obs = self._obs(patient, when, "85354-9", status, id_)
        obs["component"] = [
            {"code": {"coding": [{"system": LOINC, "code": code}]},
             "valueQuantity": {"value": v, "unit": unit, "system": "http://unitsofmeasure.org",
                               "code": unit}}
            for code, v in (("8480-6", sbp), ("8462-4", dbp))]
        self.add(obs)

    def quantity(self, patient: str, when: str, code: str, value: float, unit: str,
                 status: str = "final") -> None:
        obs = self._obs(patient, when, code, status)
        obs["valueQuantity"] = {"value": value, "unit": unit,
                                "system": "http://unitsofmeasure.org", "code": unit}
        self.add(obs)

    def enrol(self, patient: str, programme: str, start: str, end: str | None = None,
              status: str = "active") -> None:
        period = {"start": start, **({"end": end} if end else {})}
        self.add({"resourceType": "EpisodeOfCare", "id": self._id("eoc"), "status": status,
                  "type": [{"coding": [{"system": f"urn:songkhoe:programme:{programme}",
                                        "version": "2026.1", "code": programme}]}],
                  "patient": {"reference": f"Patient/{patient}"}, "period": period})

    def condition(self, patient: str, code: str, onset: str | None,
                  clinical: str = "active") -> None:
        body: dict[str, Any] = {
            "resourceType": "Condition", "id": self._id("c"),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                     "condition-clinical", "code": clinical}]},
            "code": {"coding": [{"system": ICD10, "code": code}]},
            "subject": {"reference": f"Patient/{patient}"}}
        if onset:
            body["onsetDateTime"] = onset
        self.add(body)

    def medicine(self, patient: str, atc: str, start: str, end: str | None = None,
                 status: str = "active") -> None:
        self.add({"resourceType": "MedicationStatement", "id": self._id("m"), "status": status,
                  "medicationCodeableConcept": {"coding": [{"system": ATC, "code": atc}]},
                  "subject": {"reference": f"Patient/{patient}"},
                  "effectivePeriod": {"start": start, **({"end": end} if end else {})}})

    def call(self, patient: str, day: str, outcome: str) -> None:
        self.add({"resourceType": "Task", "id": self._id("t"), "status": "completed",
                  "intent": "order",
                  "instantiatesUri": "urn:songkhoe:programme:hypertension-care|2026.1",
                  "code": {"coding": [{"system": "urn:songkhoe:worklist", "code": "call"}]},
                  "businessStatus": {"coding": [{"system": "urn:songkhoe:call-outcome",
                                                 "code": outcome}]},
                  "for": {"reference": f"Patient/{patient}"}, "authoredOn": day,
                  "executionPeriod": {"start": day}})


def edge_cases(pop: Population) -> dict[str, str]:
    """The people whose numbers the definitions turn on; their ids by role."""
    for id_, parent in [("moh", None), ("so-a", "moh"), ("so-b", "moh"), ("tyt-a1", "so-a"),
                        ("tyt-a2", "so-a"), ("tyt-b1", "so-b"), ("post-a1", "tyt-a1")]:
        pop.org(id_, parent)
    who: dict[str, str] = {}
    # thresholds: 140/89 and 139/90 are raised, 139/89 is not
    for name, (sbp, dbp) in {"at_140": (140, 89), "at_90": (139, 90), "below": (139, 89)}.items():
        who[name] = p = pop.person("tyt-a1", "1970-05-05")
        pop.checkup(p, "2026-10-05T08:00:00+07:00")
        pop.bp(p, "2026-10-05T08:10:00+07:00", sbp, dbp)
    # latest reading wins: the same day (time), the same moment (id), the same month
    who["latest"] = p = pop.person("tyt-a1", "1960-01-01")
    pop.bp(p, "2026-09-03T08:00:00+07:00", 120, 70)
    pop.bp(p, "2026-09-20T08:00:00+07:00", 170, 100)
    pop.bp(p, "2026-09-20T15:00:00+07:00", 125, 75)  # later that day: not raised
    pop.bp(p, "2026-10-11", 150, 95, id_="o-a")
    pop.bp(p, "2026-10-11", 121, 71, id_="o-b")  # same text, larger id wins: not raised
    # a child, someone turning 18 mid-year, someone born on 29 February
    who["child"] = p = pop.person("tyt-a1", "2015-04-01")
    pop.checkup(p, "2026-03-02")
    pop.bp(p, "2026-03-02", 150, 95)
    who["turns_18"] = p = pop.person("tyt-a1", "2008-06-15")
    pop.checkup(p, "2026-02-10")
    pop.bp(p, "2026-07-10", 145, 80)
    who["leap"] = p = pop.person("tyt-a2", "2008-02-29")
    pop.checkup(p, "2026-02-27")
    # moved: managed by tyt-a2 now; seen at a1's station before, under a post of a1 too
    who["moved"] = p = pop.person("tyt-a2", "1980-01-01")
    pop.checkup(p, "2025-03-01T09:00:00+07:00")
    who["post"] = p = pop.person("post-a1", "1975-01-01")
    pop.checkup(p, "2026-06-30T16:00:00+07:00")
    who["province"] = p = pop.person("so-b", "1975-01-01")  # managed by the Department itself
    pop.checkup(p, "2026-06-30")
    pop.person(None, "1975-01-01")  # no managing organisation: not counted
    p = pop.person("tyt-b1", "1975")  # partial birth date: not counted
    pop.checkup(p, "2026-05-05")
    # period boundaries: last minute of March, first of April, 31 Dec / 1 Jan
    who["boundary"] = p = pop.person("tyt-b1", "1950-01-01")
    pop.bp(p, "2026-03-31T23:59:00+07:00", 160, 100)
    pop.bp(p, "2026-04-01T00:00:00+07:00", 110, 70)
    pop.checkup(p, "2025-12-31T16:00:00+07:00")
    pop.checkup(p, "2026-01-01T07:00:00+07:00")
    # ignored: partial date, a unit not accepted, a preliminary result, a cancelled visit,
    # a result after the day of the run
    p = pop.person("tyt-b1", "1950-01-01")
    pop.bp(p, "2026-05", 170, 110)
    pop.bp(p, "2026-05-05", 20, 12, unit="kPa")
    pop.bp(p, "2026-06-06", 170, 110, status="preliminary")
    pop.checkup(p, "2026-06-06", status="cancelled")
    pop.checkup(p, "2026-11-24")
    pop.bp(p, "2026-11-30", 170, 100)
    pop.bp(p, {"start": "2026-07-07T08:00:00+07:00"}, 150, 80)  # effectivePeriod.start counts
    # glucose: 126 mg/dL is 7.0 mmol/L (raised), 125 mg/dL 6.9, 7.0 mmol/L raised, 6.9 not;
    # HbA1c and fasting glucose on one day, one high
    for name, value, unit in [("mg126", 126, "mg/dL"), ("mg125", 125, "mg/dL"),
                              ("mmol70", 7.0, "mmol/L"), ("mmol69", 6.9, "mmol/L")]:
        who[name] = p = pop.person("tyt-a2", "1965-01-01")
        pop.quantity(p, "2026-08-08", "14771-0", value, unit)
    # BMI at the cut-off
    for name, value in (("bmi25", 25.0), ("bmi249", 24.9)):
        who[name] = p = pop.person("tyt-a2", "1990-01-01")
        pop.quantity(p, "2026-04-04", "39156-5", value, "kg/m2")
    # HEARTS: enrolled 2025-12-15; the 2026 year's window is September–November, the
    # November month's registration rule needs enrolment by the end of August
    who["controlled"] = p = pop.person("tyt-a1", "1950-02-02")
    pop.enrol(p, "hypertension-care", "2025-12-15")
    pop.condition(p, "I10", "2025-12-15T08:00:00+07:00")
    pop.medicine(p, "C08CA01", "2025-12-15")
    pop.bp(p, "2026-09-01", 150, 95)
    pop.bp(p, "2026-10-28", 130, 80)  # latest in the window: controlled
    who["uncontrolled"] = p = pop.person("tyt-a1", "1950-02-02")
    pop.enrol(p, "hypertension-care", "2026-08-31")  # the last day that counts for November
    pop.bp(p, "2026-11-02", 150, 85)
    who["no_visit"] = p = pop.person("tyt-a1", "1950-02-02")
    pop.enrol(p, "hypertension-care", "2024-02-01")
    pop.bp(p, "2026-08-31", 120, 80)  # one day before November's window
    who["new"] = p = pop.person("tyt-a1", "1950-02-02")
    pop.enrol(p, "hypertension-care", "2026-09-01")  # registered within the window
    pop.bp(p, "2026-09-05", 120, 80)
    who["ltfu"] = p = pop.person("tyt-a2", "1950-02-02")
    pop.enrol(p, "hypertension-care", "2024-01-10")
    pop.bp(p, "2025-10-31", 150, 95)
    who["ended"] = p = pop.person("tyt-a2", "1950-02-02")
    pop.enrol(p, "hypertension-care", "2024-01-10", end="2026-03-15", status="finished")
    pop.enrol(p, "hypertension-care", "2024-05-10", status="entered-in-error")
    who["dm"] = p = pop.person("tyt-a2", "1955-03-03")
    pop.enrol(p, "diabetes-care", "2025-01-20")
    pop.condition(p, "E11.9", None)  # undated: diagnosed from always
    pop.medicine(p, "A10BA02", "2025-01-20", end="2026-06-30")
    pop.quantity(p, "2026-10-10", "14771-0", 6.5, "mmol/L")
    pop.quantity(p, "2026-10-10", "4548-4", 7.2, "%")  # same day, HbA1c high: uncontrolled
    pop.quantity(p, "2026-09-09", "1558-6", 110, "mg/dL")
    pop.condition(p, "E11", "2026-01-01", clinical="resolved")  # not active: ignored
    # leaving the population: found moved away (and staying away), found dead and back for a
    # visit (a wrong call), deceased on a date, a record not in use
    who["moved_away"] = p = pop.person("tyt-b1", "1960-01-01")
    pop.checkup(p, "2026-02-02")
    pop.call(p, "2026-05-20", "moved-away")
    who["back"] = p = pop.person("tyt-b1", "1960-01-01")
    pop.call(p, "2026-04-10", "died")
    pop.checkup(p, "2026-06-01")
    pop.call(p, "2026-07-01", "agreed-to-return")
    who["deceased"] = p = pop.person("tyt-b1", "1940-01-01",
                                     deceasedDateTime="2026-08-15T10:00:00+07:00")
    pop.checkup(p, "2026-03-03")
    who["inactive"] = p = pop.person("tyt-b1", "1940-01-01", active=False)
    pop.checkup(p, "2026-03-03")
    return who


def random_people(pop: Population, people: int, seed: int) -> None:
    """People with random check-ups, results and care around the thresholds, over 2024–2026."""
    rng = random.Random(seed)
    stations = ["tyt-a1", "tyt-a2", "tyt-b1", "post-a1"]
    first = date(2023, 11, 1).toordinal()

    def when() -> str:
        day = date.fromordinal(first + rng.randrange(1130))
        if rng.random() < 0.5:
            return day.isoformat()
        return f"{day.isoformat()}T{rng.randrange(7, 17):02d}:{rng.choice(['00', '30'])}:00+07:00"

    for _ in range(people):
        born = date(rng.randrange(1940, 2012), rng.randrange(1, 13), rng.randrange(1, 29))
        p = pop.person(rng.choice(stations), born.isoformat())
        for _ in range(rng.randrange(3)):
            pop.checkup(p, when(), snomed=rng.random() < 0.3)
        for _ in range(rng.choice([0, 1, 1, 2, 6])):
            pop.bp(p, when(), rng.randrange(125, 155), rng.randrange(80, 96))
        for _ in range(rng.randrange(3)):
            if rng.random() < 0.5:
                pop.quantity(p, when(), "14771-0", rng.choice([6.9, 6.95, 7.0, 7.1, 5.5]), "mmol/L")
            else:
                pop.quantity(p, when(), "1558-6", rng.choice([124, 125, 126, 127, 130]), "mg/dL")
        if rng.random() < 0.3:
            pop.quantity(p, when(), "4548-4", rng.choice([6.5, 7.0, 7.5]), "%")
        if rng.random() < 0.6:
            pop.quantity(p, when(), "39156-5", rng.choice([22.0, 24.9, 25.0, 28.0]), "kg/m2")
        if rng.random() < 0.3:
            pop.enrol(p, rng.choice(["hypertension-care", "diabetes-care"]), when()[:10])
        if rng.random() < 0.2:
            pop.condition(p, rng.choice(["I10", "I15.0", "E11", "E14", "J45"]), when())
        if rng.random() < 0.15:
            pop.medicine(p, rng.choice(["C09CA01", "C03AA03", "A10BA02", "N02BE01"]),
                         when()[:10], end=rng.choice([None, "2025-06-30"]))
        if rng.random() < 0.05:
            pop.call(p, when()[:10], rng.choice(["moved-away", "died", "call-later"]))


# --- the independent computation ------------------------------------------------------------------

def _day(text: str | None) -> date | None:
    if not text or len(text) < 10:
        return None
    return date.fromisoformat(text[:10])


def _age(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def _first_of_month(day: date, back: int) -> date:
    m = day.year * 12 + day.month - 1 - back
    return date(m // 12, m % 12 + 1, 1)


@dataclass
class Reading:
    day: date
    key: tuple[str, str]  # the dateTime as written, the id
    high: bool


class Reference:
    """The indicators computed from the resources, person by person and day by day, from
    the definitions in docs/indicators.md."""

    def __init__(self, resources: list[dict[str, Any]], as_of: date) -> None:
        self.as_of = as_of
        by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in resources:
            by_type[r["resourceType"]].append(r)
        parent = {o["id"]: o.get("partOf", {}).get("reference", "/").split("/")[1] or None
                  for o in by_type["Organization"]}
        self.units: dict[str, dict[str, str]] = {}
        for org in parent:
            down = [org]  # the root first, down to org
            while parent.get(down[0]):
                down.insert(0, parent[down[0]])
            self.units[org] = {"nation": down[0], "province": down[1] if len(down) > 1 else org,
                               "commune": down[2] if len(down) > 2 else org}
        self.people: dict[str, dict[str, Any]] = {}
        for p in by_type["Patient"]:
            org = (p.get("managingOrganization") or {}).get("reference", "/").split("/")[1]
            born = _day(p.get("birthDate"))
            if org in self.units and born:
                self.people[p["id"]] = {"org": org, "born": born, "resource": p}
        self.checkups: dict[str, list[date]] = defaultdict(list)
        for e in by_type["Encounter"]:
            codes = {(c.get("system"), c.get("code")) for cc in e.get("type", []) +
                     e.get("reasonCode", []) for c in cc.get("coding", [])}
            if codes & {(ICD10, "Z00.0"), ("http://snomed.info/sct", "185349003")} and \
                    e.get("status") not in ("cancelled", "entered-in-error"):
                if (d := _day(e.get("period", {}).get("start"))) and d <= as_of:
                    self.checkups[_ref(e["subject"])].append(d)
        self.readings: dict[tuple[str, str], list[Reading]] = defaultdict(list)
        for o in by_type["Observation"]:
            self._observation(o)
        self.care = self._episodes(by_type["EpisodeOfCare"])
        self.diagnosed: dict[tuple[str, str], date] = {}
        for c in by_type["Condition"]:
            clinical = c["clinicalStatus"]["coding"][0]["code"]
            code = c["code"]["coding"][0]["code"]
            kind = "htn" if "I10" <= code[:3] <= "I15" else "dm" if "E10" <= code[:3] <= "E14" \
                else None
            if kind and clinical in ("active", "recurrence", "relapse"):
                since = _day(c.get("onsetDateTime")) or date.min
                key = (_ref(c["subject"]), kind)
                self.diagnosed[key] = min(since, self.diagnosed.get(key, date.max))
        self.treated: dict[tuple[str, str], list[tuple[date, date | None]]] = defaultdict(list)
        for m in by_type["MedicationStatement"]:
            atc = m["medicationCodeableConcept"]["coding"][0]["code"]
            kind = "htn" if atc[:3] in ("C02", "C03", "C07", "C08", "C09") else \
                "dm" if atc[:3] == "A10" else None
            if kind:
                period = m["effectivePeriod"]
                self.treated[(_ref(m["subject"]), kind)].append(
                    (_day(period["start"]) or date.min, _day(period.get("end"))))
        self.calls: dict[str, list[tuple[date, str, str]]] = defaultdict(list)
        for t in by_type["Task"]:
            self.calls[_ref(t["for"])].append((_day(t["executionPeriod"]["start"]), t["id"],
                                               t["businessStatus"]["coding"][0]["code"]))

    def _observation(self, o: dict[str, Any]) -> None:
        if o["status"] not in ("final", "amended", "corrected"):
            return
        text = o.get("effectiveDateTime") or o.get("effectivePeriod", {}).get("start")
        day = _day(text)
        if day is None or day > self.as_of:
            return
        code = o["code"]["coding"][0]["code"]
        patient, key = _ref(o["subject"]), (text, o["id"])
        if code == "85354-9":
            values = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in o["component"]}
            sbp, dbp = values["8480-6"], values["8462-4"]
            if sbp["code"] == dbp["code"] == "mm[Hg]" and 50 <= sbp["value"] <= 300 and \
                    20 <= dbp["value"] <= 200:
                self.readings[(patient, "bp")].append(
                    Reading(day, key, sbp["value"] >= 140 or dbp["value"] >= 90))
            return
        q = o["valueQuantity"]
        if code in ("14771-0", "1558-6"):
            mmol = Decimal(str(q["value"])) if q["code"] == "mmol/L" else \
                (Decimal(str(q["value"])) * Decimal("0.05550745")).quantize(
                    Decimal("0.1"), rounding=ROUND_HALF_UP)
            if (q["code"] == "mg/dL" or code == "14771-0") and 1 <= mmol <= 50:
                self.readings[(patient, "fpg")].append(Reading(day, key, mmol >= 7.0))
                self.readings[(patient, "sugar")].append(Reading(day, key, mmol >= 7.0))
        elif code == "4548-4" and q["code"] == "%" and 3 <= q["value"] <= 20:
            self.readings[(patient, "sugar")].append(Reading(day, key, q["value"] >= 7))
        elif code == "39156-5" and q["code"] == "kg/m2" and 8 <= q["value"] <= 80:
            self.readings[(patient, "bmi")].append(Reading(day, key, q["value"] >= 25))

    @staticmethod
    def _episodes(episodes: list[dict[str, Any]]
                  ) -> dict[tuple[str, str], tuple[date, date | None]]:
        spans: dict[tuple[str, str], list[tuple[date, date | None]]] = defaultdict(list)
        for e in episodes:
            if e["status"] in ("entered-in-error", "cancelled"):
                continue
            coding = e["type"][0]["coding"][0]
            kind = {"hypertension-care": "htn", "diabetes-care": "dm"}[coding["code"]]
            spans[(_ref(e["patient"]), kind)].append(
                (_day(e["period"]["start"]), _day(e["period"].get("end"))))
        return {k: (min(s for s, _ in v),
                    None if any(e is None for _, e in v) else max(e for _, e in v))
                for k, v in spans.items()}

    def gone(self, patient: str, end: date) -> bool:
        p = self.people[patient]["resource"]
        if p.get("active") is False or p.get("deceasedBoolean") is True:
            return True
        if (d := _day(p.get("deceasedDateTime"))) and d <= end:
            return True
        calls = [c for c in self.calls.get(patient, []) if c[0] <= end]
        if not calls:
            return False
        day, _, outcome = max(calls)
        seen = [d for d in self.checkups.get(patient, [])] + \
            [r.day for r in self.readings.get((patient, "bp"), [])]
        return outcome in GONE and not any(day <= d <= end for d in seen)

    def counts(self, period: ind.Period) -> dict[tuple[str, str], list[float]]:
        """(commune, indicator) → [numerator, denominator]."""
        s, e = period.start, period.end
        window0, year0 = _first_of_month(e, 2), _first_of_month(e, 11)
        out: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0])

        def add(unit: str, name: str, num: float, den: float | None) -> None:
            cell = out[(unit, name)]
            cell[0] += num
            cell[1] = None if den is None else (cell[1] or 0) + den

        def latest(rs: list[Reading], lo: date, hi: date, by_day: bool = False) -> bool | None:
            inside = [r for r in rs if lo <= r.day <= hi]
            if not inside:
                return None
            if by_day:
                last = max(r.day for r in inside)
                return any(r.high for r in inside if r.day == last)
            return max(inside, key=lambda r: r.key).high

        for pid, person in self.people.items():
            unit = self.units[person["org"]]["commune"]
            age = _age(person["born"], e)
            if age < 18 or self.gone(pid, e):
                continue
            add(unit, "checkup_coverage", any(s <= d <= e for d in self.checkups[pid]), 1)
            for name, kind in (("raised_blood_pressure", "bp"), ("raised_glucose", "fpg"),
                               ("obesity", "bmi")):
                high = latest(self.readings.get((pid, kind), []), s, e)
                if high is not None:
                    add(unit, name, high, 1)
            for p in ind.PROGRAMMES:
                kind = "bp" if p.prefix == "htn" else "sugar"
                rs = self.readings.get((pid, kind), [])
                young, old = p.ages
                in_band = young <= age <= old
                enrolled, ended = self.care.get((pid, p.prefix), (None, None))
                registered = enrolled is not None and enrolled <= e and \
                    (ended is None or ended >= e)
                window = latest(rs, window0, e, by_day=kind == "sugar")
                year_visit = any(year0 <= r.day <= e for r in rs)
                diagnosed = self.diagnosed.get((pid, p.prefix), date.max) <= e
                since, until = _span(self.treated.get((pid, p.prefix), []))
                treated = since is not None and since <= e and (until is None or until >= e)
                cascade = {"diagnosed": diagnosed, "treated": treated, "registered": registered,
                           "under_care": False, "controlled": registered and window is False}
                add(unit, f"{p.prefix}_estimate", p.prevalence * in_band, None)
                if registered:
                    assert enrolled is not None
                    add(unit, f"{p.prefix}_registrations", s <= enrolled, None)
                    add(unit, f"{p.prefix}_registered", 1, None)
                    under = year_visit or enrolled >= year0
                    cascade["under_care"] = under
                    add(unit, f"{p.prefix}_under_care", under, 1)
                    add(unit, f"{p.prefix}_lost_to_follow_up", not under, 1)
                    if enrolled < window0:
                        add(unit, f"{p.prefix}_controlled", window is False, 1)
                        add(unit, f"{p.prefix}_uncontrolled", window is True, 1)
                        add(unit, f"{p.prefix}_no_visit", window is None, 1)
                for step, yes in cascade.items():
                    add(unit, f"{p.prefix}_cascade_{step}", yes, None)
        for (unit, name), cell in list(out.items()):  # the cascade's denominator: the estimate
            for p in ind.PROGRAMMES:
                if name.startswith(f"{p.prefix}_cascade_"):
                    cell[1] = out[(unit, f"{p.prefix}_estimate")][0]
        return {k: v for k, v in out.items() if not k[1].endswith("_estimate")}

    def table(self, grains: tuple[str, ...],
              chosen: dict[str, list[ind.Period]] | None = None) -> list[dict[str, Any]]:
        rows = []
        for grain in grains:
            for period in (chosen or {}).get(grain) or ind.last_periods(grain, self.as_of):
                for level in ind.LEVELS:
                    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0])
                    for (commune, name), (num, den) in self.counts(period).items():
                        cell = sums[(self.units[commune][level], name)]
                        cell[0] += num
                        cell[1] = None if den is None else (cell[1] or 0) + den
                    for (org, name), (num, den) in sums.items():
                        if num > 0 or (den or 0) > 0:
                            rows.append({"org": org, "org_level": level, "period_grain": grain,
                                         "period_start": period.start, "indicator": name,
                                         "numerator": num, "denominator": den,
                                         "value": num if den is None else
                                         (num / den if den else None)})
        return rows


def _ref(reference: dict[str, str]) -> str:
    return reference["reference"].split("/")[1]


def _span(spans: list[tuple[date, date | None]]) -> tuple[date | None, date | None]:
    if not spans:
        return None, None
    return min(a for a, _ in spans), None if any(b is None for _, b in spans) else \
        max(b for _, b in spans if b)


# --- fixtures and helpers ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def population() -> tuple[list[dict[str, Any]], dict[str, str]]:
    pop = Population()
    who = edge_cases(pop)
    random_people(pop, 400, seed=7)
    return pop.resources, who


def view_tables(resources: list[dict[str, Any]]) -> dict[str, pa.Table]:
    """Every view of analytics/views over the resources, by the DuckDB runner (compiled)."""
    out = {}
    for path in sorted(VIEWS.glob("*.json")):
        view = json.loads(path.read_text(encoding="utf-8"))
        assert compile_view(view).fallback is None, (path.name, compile_view(view).fallback)
        out[view["name"]] = run_view(view, [r for r in resources
                                            if r["resourceType"] == view["resource"]])
    return out


@pytest.fixture(scope="module")
def tables(population: tuple[list[dict[str, Any]], dict[str, str]]) -> dict[str, pa.Table]:
    return view_tables(population[0])


def duck(tables: dict[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for name, table in tables.items():
        con.register(f"{name}_arrow", table)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_arrow")
        con.unregister(f"{name}_arrow")
    return con


@pytest.fixture(scope="module")
def computed(tables: dict[str, pa.Table]) -> pa.Table:
    return ind.compute(ind.DuckDBEngine(duck(tables)), as_of=AS_OF)


def keyed(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], tuple[Any, Any, Any]]:
    return {(r["org_level"], r["org"], r["period_grain"], r["period_start"], r["indicator"]):
            (r["numerator"], r["denominator"], r["value"]) for r in rows}


def assert_same(got: dict[tuple[Any, ...], tuple[Any, Any, Any]],
                want: dict[tuple[Any, ...], tuple[Any, Any, Any]]) -> None:
    assert set(got) == set(want), (sorted(set(got) - set(want))[:5],
                                   sorted(set(want) - set(got))[:5])
    for key, (num, den, value) in want.items():
        g = got[key]
        assert g[0] == num, (key, g, (num, den, value))
        assert (g[1] is None) == (den is None) and (den is None or abs(g[1] - den) < 1e-9), \
            (key, g, (num, den, value))
        assert (g[2] is None) == (value is None) and (value is None or abs(g[2] - value) < 1e-9), \
            (key, g, (num, den, value))


def value_of(table: pa.Table, org: str, grain: str, start: date, indicator: str
             ) -> tuple[Any, Any]:
    for r in table.to_pylist():
        if (r["org"], r["period_grain"], r["period_start"], r["indicator"]) == \
                (org, grain, start, indicator):
            return r["numerator"], r["denominator"]
    return None, None


# --- tests ------------------------------------------------------------------------------------

def test_views_compile_fully_in_the_duckdb_runner() -> None:
    names = set()
    for path in sorted(VIEWS.glob("*.json")):
        view = json.loads(path.read_text(encoding="utf-8"))
        assert compile_view(view).fallback is None, path.name
        names.add(view["name"])
    assert {"patient", "organization", "blood_pressure", "blood_sugar", "body_measure",
            "checkup_encounter", "condition", "medication", "episode_of_care",
            "worklist_call"} == names


def test_periods() -> None:
    months = ind.last_periods("month", AS_OF)
    assert [p.key for p in months][-2:] == ["2026-10", "2026-11"] and len(months) == 12
    assert months[-1].end == AS_OF and months[-2].end == date(2026, 10, 31)
    quarters = ind.last_periods("quarter", date(2026, 2, 10))
    assert [p.key for p in quarters][-3:] == ["2025-Q3", "2025-Q4", "2026-Q1"]
    assert quarters[-2].start == date(2025, 10, 1) and quarters[-2].end == date(2025, 12, 31)
    assert [p.key for p in ind.last_periods("year", AS_OF)] == ["2024", "2025", "2026"]
    assert [p.key for p in ind.periods("quarter", date(2024, 2, 1), date(2024, 8, 1), AS_OF)] \
        == ["2024-Q1", "2024-Q2", "2024-Q3"]


def test_clamp_keeps_every_comparison_with_the_cutoffs() -> None:
    cutoffs = ["2008-11-23", "2008-10-31", "2008-01-31", "1996-11-23", "1946-11-23"]
    con = duckdb.connect()
    days = [date(1940, 1, 1) + timedelta(days=k * 37) for k in range(800)] + \
        [date.fromisoformat(c) + timedelta(days=d) for c in cutoffs for d in (-1, 0, 1)]
    con.execute("CREATE TABLE t (b VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?)", [[d.isoformat()] for d in days])
    mapped = dict(con.execute(f"SELECT b, {ind.clamp('b', cutoffs)} FROM t").fetchall())
    assert len(set(mapped.values())) < len(mapped) / 4
    for b, m in mapped.items():
        for c in cutoffs:
            assert (b < c, b <= c, b == c, b >= c, b > c) == (m < c, m <= c, m == c, m >= c,
                                                              m > c), (b, m, c)


def test_indicators_equal_an_independent_computation(
        population: tuple[list[dict[str, Any]], dict[str, str]], computed: pa.Table) -> None:
    resources, _ = population
    want = Reference(resources, AS_OF).table(ind.GRAINS)
    assert len(want) > 1000
    assert_same(keyed(computed.to_pylist()), keyed(want))
    assert computed.schema == ind.SCHEMA
    assert set(computed.column("indicator").to_pylist()) == set(ind.INDICATORS)


def test_long_ranges_run_in_parts(
        population: tuple[list[dict[str, Any]], dict[str, str]], tables: dict[str, pa.Table]
        ) -> None:
    """Eight years need more months than a BIGINT holds: the periods run in parts."""
    years = ind.periods("year", date(2019, 1, 1), AS_OF, AS_OF)
    assert len(list(ind.runs(years))) > 1
    got = ind.compute(ind.DuckDBEngine(duck(tables)), grains=["year"], as_of=AS_OF,
                      chosen={"year": years})
    want = Reference(population[0], AS_OF).table(("year",), {"year": years})
    assert_same(keyed(got.to_pylist()), keyed(want))


def test_more_periods_than_bits_run_in_parts(
        population: tuple[list[dict[str, Any]], dict[str, str]], tables: dict[str, pa.Table]
        ) -> None:
    """48 months and 16 quarters fit in a BIGINT's months but not in its bits as periods (a
    person's periods are bits too): they run in parts."""
    chosen = {"month": ind.periods("month", date(2022, 12, 1), AS_OF, AS_OF),
              "quarter": ind.periods("quarter", date(2022, 12, 1), AS_OF, AS_OF)}
    runs = list(ind.runs(chosen["month"] + chosen["quarter"]))
    assert len(runs) == 2 and len(runs[0]) == ind.MAX_MONTHS
    got = ind.compute(ind.DuckDBEngine(duck(tables)), grains=["month", "quarter"], as_of=AS_OF,
                      chosen=chosen)
    want = Reference(population[0], AS_OF).table(("month", "quarter"), chosen)
    assert_same(keyed(got.to_pylist()), keyed(want))


def test_a_kept_base_gives_the_same_numbers(tables: dict[str, pa.Table],
                                           computed: pa.Table) -> None:
    """The per-person base is built once and serves later runs as of the same day; a run it
    cannot serve (another day, months before its epoch) is refused, not answered wrongly."""
    con = duck(tables)
    engine = ind.DuckDBEngine(con)
    base = ind.prepare(engine, AS_OF)
    assert base.epoch == ind.default_epoch(AS_OF)
    for day in (AS_OF, date(2026, 2, 10), date(2025, 12, 31), date(2024, 2, 29)):
        base_then = ind.Base(day, ind.default_epoch(day))  # serves every grain's defaults
        for grain in ind.GRAINS:
            for run in ind.runs(ind.last_periods(grain, day)):
                assert base_then.serves(day, min(ind._months(p.end) - 11 for p in run),
                                        max(ind._months(p.end) for p in run)), (day, grain)
    want = keyed(computed.to_pylist())
    for _ in range(2):  # the base outlives a run
        assert_same(keyed(ind.compute(engine, as_of=AS_OF, base=base).to_pylist()), want)
    months = ind.compute(engine, grains=["month"], levels=["province"], as_of=AS_OF, base=base)
    assert_same(keyed(months.to_pylist()),
                {k: v for k, v in want.items() if k[0] == "province" and k[2] == "month"})
    with pytest.raises(ValueError, match="does not serve"):
        ind.compute(engine, as_of=AS_OF - timedelta(days=1), base=base)
    with pytest.raises(ValueError, match="does not serve"):
        ind.compute(engine, grains=["year"], as_of=AS_OF, base=base,
                    chosen={"year": ind.periods("year", date(2020, 1, 1), AS_OF, AS_OF)})
    tables_left = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                             "WHERE table_catalog = 'temp'").fetchall()}
    assert tables_left == set(ind.BASE_TABLES)


def test_kept_counts_of_complete_periods_are_read_not_computed(
        tables: dict[str, pa.Table], computed: pa.Table) -> None:
    """Counts of complete periods kept in a table serve a later run without any base (only
    the current year is computed); they are not taken for the cut current period."""
    con = duck(tables)
    engine = ind.DuckDBEngine(con)
    base = ind.prepare(engine, AS_OF)
    years = ind.last_periods("year", AS_OF)
    complete = [p for p in years if ind.complete(p)]
    assert [p.start.year for p in complete] == [2024, 2025]
    parts = ind.commune_rows(engine, complete, base.epoch, "kept")
    con.execute("CREATE TABLE kept_counts AS " +
                " UNION ALL ".join(f"SELECT * FROM {name}" for name in parts))
    for name in [*parts, *ind.BASE_TABLES]:
        engine.drop(name)
    closed = ind.Closed("kept_counts", frozenset(("year", p.start) for p in years))
    want = {k: v for k, v in keyed(computed.to_pylist()).items() if k[2] == "year"}
    assert_same(keyed(ind.compute(engine, grains=["year"], as_of=AS_OF,
                                  closed=closed).to_pylist()), want)
    con.execute("DELETE FROM kept_counts")  # read, not computed: nothing kept, nothing shown
    got = keyed(ind.compute(engine, grains=["year"], as_of=AS_OF, closed=closed).to_pylist())
    assert {k[3].year for k in got} == {2026}


def test_render_repeats_each_block_per_period(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t.sql").write_text("SELECT {{each ,}}{{p.day}} AS d{{#}}{{end}} FROM {{table}}")
    monkeypatch.setattr(ind, "SQL", tmp_path)
    rows = [{"day": "2026-01-31"}, {"day": "2026-02-28"}, {"day": 7}]
    assert ind.render("t.sql", {"table": ind._name("x")}, rows) == \
        "SELECT '2026-01-31' AS d0 , '2026-02-28' AS d1 , CAST(7 AS BIGINT) AS d2 FROM x"


def test_edges_land_where_the_definitions_say(
        population: tuple[list[dict[str, Any]], dict[str, str]]) -> None:
    """The hand-made people alone: the numbers the edges must give, written down."""
    pop = Population()
    edge_cases(pop)
    got = ind.compute(ind.DuckDBEngine(duck(view_tables(pop.resources))), as_of=AS_OF)
    october, november = date(2026, 10, 1), date(2026, 11, 1)

    def month(org: str, m: int, name: str) -> tuple[Any, Any]:
        return value_of(got, org, "month", date(2026, m, 1), name)

    # October in tyt-a1: at_140 and at_90 raised; below, latest (of two readings with the same
    # text the larger id wins) and controlled (130/80) not
    assert month("tyt-a1", 10, "raised_blood_pressure") == (2, 5)
    # September: latest's 15:00 reading wins over 08:00 the same day (not raised); controlled's
    # 150/95 raised; new's 120/80 not
    assert month("tyt-a1", 9, "raised_blood_pressure") == (1, 3)
    # the last minute of March and the first of April; the child's March 150/95 not counted
    assert month("tyt-b1", 3, "raised_blood_pressure") == (1, 1)
    assert month("tyt-b1", 4, "raised_blood_pressure") == (0, 1)
    assert value_of(got, "tyt-b1", "quarter", date(2026, 1, 1), "raised_blood_pressure") == (1, 1)
    assert value_of(got, "tyt-b1", "quarter", date(2026, 4, 1), "raised_blood_pressure") == (0, 1)
    # ignored: a partial date (May), kPa (May), a preliminary result (June); counted: a reading
    # dated by effectivePeriod.start (July)
    assert month("tyt-b1", 5, "raised_blood_pressure") == (None, None)
    assert month("tyt-b1", 7, "raised_blood_pressure") == (1, 1)
    # 31 Dec and 1 Jan check-ups fall in two years
    assert value_of(got, "tyt-b1", "year", date(2025, 1, 1), "checkup_coverage")[0] == 1
    # adults of tyt-a1: nine in February; turns_18 from June (its February check-up is a
    # child's); the child never; 29 February's person adult from 1 March
    assert month("tyt-a1", 2, "checkup_coverage") == (0, 9)
    assert month("tyt-a1", 6, "checkup_coverage") == (1, 10)  # post-a1 counts in tyt-a1
    assert month("tyt-a1", 7, "raised_blood_pressure") == (1, 1)
    assert month("tyt-a2", 2, "checkup_coverage") == (0, 10)
    assert month("tyt-a2", 3, "checkup_coverage") == (0, 11)
    # moved: the 2025 check-up at a1's station counts for tyt-a2, where the person is now; the
    # Department's own person is a unit of its own; no one without an organisation or a full
    # birth date
    assert value_of(got, "tyt-a2", "year", date(2025, 1, 1), "checkup_coverage")[0] == 1
    assert month("so-b", 6, "checkup_coverage") == (1, 1)
    assert value_of(got, "moh", "month", date(2026, 6, 1), "checkup_coverage") == (3, 26)
    # glucose: 126 mg/dL and 7.0 mmol/L raised, 125 mg/dL and 6.9 mmol/L not; BMI 25.0 obese
    assert month("tyt-a2", 8, "raised_glucose") == (2, 4)
    assert month("tyt-a2", 4, "obesity") == (1, 2)
    # HEARTS in November (window September–November, registered by 31 August): controlled's
    # latest 130/80; uncontrolled enrolled on 31 August; no_visit seen on 31 August; new
    # (enrolled 1 September) registered but not in the cohort
    assert month("tyt-a1", 11, "htn_controlled") == (1, 3)
    assert month("tyt-a1", 11, "htn_uncontrolled") == (1, 3)
    assert month("tyt-a1", 11, "htn_no_visit") == (1, 3)
    assert month("tyt-a1", 11, "htn_registered") == (4, None)
    assert month("tyt-a1", 9, "htn_registrations") == (1, None)
    # lost to follow-up: enrolled in 2024 and not seen for 12 months; new enrolments are under
    # care; the episode that ended on 15 March is not counted at the end of March
    assert month("tyt-a1", 2, "htn_lost_to_follow_up") == (1, 2)
    assert month("tyt-a2", 11, "htn_lost_to_follow_up") == (1, 1)
    assert month("tyt-a2", 2, "htn_registered") == (2, None)
    assert month("tyt-a2", 3, "htn_registered") == (1, None)
    # diabetes: the same day's HbA1c 7.2 % outweighs fasting glucose 6.5: uncontrolled; the
    # treatment ended in June; the undated E11.9 counts as diagnosed
    assert month("tyt-a2", 11, "dm_uncontrolled") == (1, 1)
    assert month("tyt-a2", 6, "dm_cascade_treated")[0] == 1
    assert month("tyt-a2", 7, "dm_cascade_treated")[0] == 0
    assert month("tyt-a2", 11, "dm_cascade_diagnosed")[0] == 1
    # leaving: back (found dead in April, seen in June), moved_away (May), deceased (August)
    counted = [month("tyt-b1", m, "checkup_coverage")[1] for m in range(3, 9)]
    assert counted == [5, 4, 3, 4, 4, 3]


def test_the_same_sql_gives_the_same_numbers_on_spark(tables: dict[str, pa.Table],
                                                      computed: pa.Table) -> None:
    """The same SQL on Spark local mode, for the quarters (every statement is a Spark job of
    a few seconds, so one grain; the SQL is the same for every grain). Prepared tables are
    Parquet read back (SparkEngine): cached as ``CACHE TABLE`` they made every later plan hold
    the earlier ones, and the driver's 1 GB heap ran out."""
    if shutil.which("java") is None:
        pytest.skip("Spark needs a Java runtime (java not found)")
    pytest.importorskip("pyspark", reason="pyspark is not installed")
    runner = pytest.importorskip("songkhoe.analytics.spark_runner",
                                 reason="the Spark runner is not installed")
    spark = runner.spark_session("local[2]", driver_memory="1g", shuffle_partitions=2)
    try:
        for name, table in tables.items():
            runner.register(spark, name, table)
        got = ind.compute(ind.SparkEngine(spark), grains=["quarter"], as_of=AS_OF)
    finally:
        for name in tables:
            spark.catalog.dropTempView(name)
    assert got.schema == ind.SCHEMA
    quarters = [r for r in computed.to_pylist() if r["period_grain"] == "quarter"]
    assert_same(keyed(got.to_pylist()), keyed(quarters))


def test_from_a_store_through_the_warehouse_and_the_cli(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The edge population stored, the warehouse refreshed from the store, the indicators read
    there equal those over the views run directly; a person moved to another station moves
    with their numbers after an incremental refresh; ``songkhoe indicators`` writes them."""
    from songkhoe.analytics import warehouse
    from songkhoe.cli import main
    from songkhoe.store import open_store

    pop = Population()
    who = edge_cases(pop)
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    folder = tmp_path / "warehouse"
    try:
        for r in pop.resources:
            store.update(r["resourceType"], r["id"], r)
        warehouse.refresh(store, folder)
        got = ind.compute(ind.DuckDBEngine(warehouse.connect(folder)), as_of=AS_OF)
        want = ind.compute(ind.DuckDBEngine(duck(view_tables(pop.resources))), as_of=AS_OF)
        assert_same(keyed(got.to_pylist()), keyed(want.to_pylist()))
        year = date(2025, 1, 1)
        before = [value_of(got, u, "year", year, "checkup_coverage") for u in ("tyt-a2", "tyt-b1")]
        moved = next(r for r in pop.resources if r["id"] == who["moved"])
        store.update("Patient", moved["id"], {**moved, "managingOrganization": {
            "reference": "Organization/tyt-b1"}})
        warehouse.refresh(store, folder)
        after = ind.compute(ind.DuckDBEngine(warehouse.connect(folder)), as_of=AS_OF)
        assert [value_of(after, u, "year", year, "checkup_coverage")[0]
                for u in ("tyt-a2", "tyt-b1")] == [before[0][0] - 1, before[1][0] + 1]
        assert value_of(after, "so-a", "year", year, "checkup_coverage")[1] == \
            value_of(got, "so-a", "year", year, "checkup_coverage")[1] - 1
        assert value_of(after, "moh", "year", year, "checkup_coverage") == \
            value_of(got, "moh", "year", year, "checkup_coverage")
    finally:
        store.close()
    assert main(["indicators", "--warehouse", str(folder), "--level", "province", "--period",
                 "year", "--as-of", AS_OF.isoformat()]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ",".join(ind.COLUMNS)
    provinces = [r for r in after.to_pylist() if r["org_level"] == "province"
                 and r["period_grain"] == "year"]
    assert len(lines) - 1 == len(provinces)
    assert "so-a,province,year,2025-01-01,checkup_coverage," in "\n".join(lines)
