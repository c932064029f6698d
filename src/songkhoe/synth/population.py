"""People and their records, one chunk of people at a time.

Person ``i`` belongs to chunk ``i // config.chunk``; each chunk draws from its own random
stream seeded by (seed, chunk), so a chunk's output depends on nothing but the config and its
number — chunks can be made in any process, in any order, and written in order, giving the same
bytes for any number of workers.

Per person: a commune (evenly over the selected communes — no population figures per commune
are published with the unit list), age and sex (``demography``), a name (``names``), a date
of birth, citizen ID, social insurance number, mobile phone from age 15, a home address, and
the commune station as managing organisation. Per adult: a latent health state (``health``),
Conditions for diagnosed hypertension or diabetes with MedicationStatements when treated,
a check-up each year with probability ``coverage`` (on a weekday, in office hours), and
follow-up visits every ``follow_up_days`` (± 3 days) for people on treatment, of which 85% are
attended and 8% of people stop coming at some point (assumptions). When the config asks for
them, a research Consent per adult (``consent``), drawn from a stream of its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from typing import Any

import orjson

from . import admin, codes, demography, facilities, faults, health, identifiers, names, records
from . import consent as research_consent
from .config import SynthConfig
from .rng import Stream

TYPES = ("Patient", "Condition", "MedicationStatement", "Encounter", "Observation")
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
REFORM = date(2025, 7, 1).toordinal()
BORN_ELSEWHERE = 0.10  # share whose birth was registered outside their province (assumption)
FOLLOW_UP_ATTENDED = 0.85
LOST_TO_FOLLOW_UP = 0.08
# Observation ids end in the measurement: "s1-o42-0-bp" is person 42's first visit's BP.
SUFFIX = {"height": "ht", "weight": "wt", "bmi": "bmi", "waist": "waist", "heart_rate": "hr",
          "glucose": "glu", "hba1c": "a1c", "cholesterol": "chol", "activity": "pa"}


def types(config: SynthConfig) -> tuple[str, ...]:
    """The person-level resource types ``config`` writes: ``TYPES``, and Consent when asked."""
    return (*TYPES, "Consent") if config.consent_permit or config.consent_deny else TYPES


@cache
def _day(ordinal: int) -> str:
    return date.fromordinal(ordinal).isoformat()


def _time(ordinal: int, minute: int) -> str:
    return f"{_day(ordinal)}T{minute // 60:02d}:{minute % 60:02d}:00+07:00"


def _weekday(ordinal: int) -> int:
    """The working day on or just before ``ordinal`` (Saturday, Sunday → Friday)."""
    wd = date.fromordinal(ordinal).weekday()
    return ordinal - (wd - 4) if wd > 4 else ordinal


def _office_minute(rng: random.Random) -> int:
    """A start time in a station's office hours: 07:00–11:00 or 13:30–16:30."""
    m = rng.randrange(420)
    return 420 + m if m < 240 else 810 + (m - 240)


@dataclass
class World:
    """What every chunk needs: the config, the communes people live in, the facilities."""

    config: SynthConfig
    communes: list[admin.Commune]
    system: facilities.HealthSystem

    @classmethod
    def make(cls, config: SynthConfig) -> World:
        communes = admin.select(list(config.provinces), config.communes_per_province)
        if not communes:
            raise ValueError("no communes selected")
        return cls(config, communes, facilities.build(communes, config.seed))


@dataclass
class Chunk:
    """The NDJSON lines of one chunk by resource type, and its ground-truth lines."""

    number: int
    lines: dict[str, bytes] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    truth: bytes = b""


class _Out:
    def __init__(self) -> None:
        self.lines: dict[str, list[str | bytes]] = {t: [] for t in (*TYPES, "Consent")}

    def chunk(self, number: int, truth: list[bytes]) -> Chunk:
        out = Chunk(number, truth=b"".join(truth))
        for rtype, lines in self.lines.items():
            if not lines:
                continue
            if isinstance(lines[0], str):  # filled templates
                out.lines[rtype] = ("\n".join(lines) + "\n").encode()  # type: ignore[arg-type]
            else:
                out.lines[rtype] = b"\n".join(lines) + b"\n"  # type: ignore[arg-type]
            out.counts[rtype] = len(lines)
        return out


def _patient(cfg: SynthConfig, rng: random.Random, world: World, i: int,
             cccd_serial: identifiers.Serials, bhxh_serial: identifiers.Serials, start: int
             ) -> tuple[dict[str, Any], int, bool, admin.Commune]:
    commune = world.communes[rng.randrange(len(world.communes))]
    province = admin.province(commune.province)
    age, male = demography.age_sex(rng)
    birth = start - 365 * age - rng.randrange(365) - age // 4
    birth_year = date.fromordinal(birth).year
    family, given = names.person_name(rng, male, birth_year, province.code >= 46)
    if birth >= REFORM:
        registered = province.code
    elif rng.random() < BORN_ELSEWHERE:
        registered = rng.choice(list(admin.OLD_PROVINCES))
    else:
        registered = rng.choice(admin.MERGED_FROM[province.code])
    cid = identifiers.cccd(registered, birth_year, male, cccd_serial(i % 1_000_000))
    if commune.kind == "xã":
        line = f"Thôn {rng.randrange(1, 16)}"
    else:
        line = f"Số {rng.randrange(1, 300)}, Tổ dân phố {rng.randrange(1, 41)}"
    resource: dict[str, Any] = {
        "resourceType": "Patient", "id": f"{cfg.tag}-p{i}",
        "identifier": [
            {"type": {"coding": [{"system": V2_0203, "code": "NI"}], "text": "Số CCCD"},
             "system": identifiers.CCCD_SYSTEM, "value": cid},
            {"type": {"coding": [{"system": V2_0203, "code": "SB"}], "text": "Mã số BHXH"},
             "system": identifiers.BHXH_SYSTEM, "value": f"{bhxh_serial(i):010d}"},
        ],
        "active": True,
        "name": [{"use": "official", "text": names.full_name(family, given), "family": family,
                  "given": given}],
    }
    if age >= 15:
        resource["telecom"] = [{"system": "phone", "value": identifiers.mobile(rng), "use": "mobile"}]
    resource["gender"] = "male" if male else "female"
    resource["birthDate"] = _day(birth)
    resource["address"] = [{"use": "home", "type": "physical",
                            "text": f"{line}, {commune.name}, {province.name}",
                            "line": [line], "city": commune.name, "state": province.name,
                            "country": "VN"}]
    resource["managingOrganization"] = {
        "reference": f"Organization/{facilities.station_id(commune.code)}"}
    resource["communication"] = [{"language": {"coding": [{"system": "urn:ietf:bcp:47",
                                                           "code": "vi"}]}, "preferred": True}]
    return resource, age, male, commune


def make_chunk(world: World, number: int) -> Chunk:
    cfg = world.config
    rng = Stream(f"synth-{cfg.seed}-{number}")
    frng = Stream(f"synth-{cfg.seed}-{number}-faults")
    crng = Stream(f"synth-{cfg.seed}-{number}-consent")  # its own: Consents change nothing else
    cccd_serial = identifiers.Serials(cfg.seed, 1_000_000)
    bhxh_serial = identifiers.Serials(cfg.seed, 10_000_000_000)
    end = cfg.as_of.toordinal()  # exclusive
    start = end - 365 * cfg.years
    out = _Out()
    truth: list[bytes] = []
    Q = records.QUANTITY
    for i in range(number * cfg.chunk, min((number + 1) * cfg.chunk, cfg.people)):
        patient, age, male, commune = _patient(cfg, rng, world, i, cccd_serial, bhxh_serial, start)
        site = world.system.stations[commune.code]
        pid = patient["id"]
        if cfg.faults:
            faults.patient(frng, patient)
        out.lines["Patient"].append(orjson.dumps(patient))
        if cfg.faults and frng.random() < faults.DUPLICATE:
            others = [c for c in world.communes if c.province == commune.province and c != commune]
            other = (world.system.stations[frng.choice(others).code] if others
                     else world.system.centres[commune.code])
            dup, fault = faults.duplicate(frng, patient, f"{pid}-dup", other.org)
            out.lines["Patient"].append(orjson.dumps(dup))
            truth.append(faults.truth_line(dup["id"], pid, fault, other.org))
        if age < 18:
            continue
        kind = research_consent.choose(crng, cfg.consent_permit, cfg.consent_deny)
        recorded = research_consent.when(crng, start, end)  # every adult: shares move no one
        if kind:
            out.lines["Consent"].append(research_consent.research(
                f"{cfg.tag}-consent{i}", pid, site.org, kind, *recorded))
        h = health.adult(rng, age, male)

        conditions: list[str] = []
        for key, stage, years, code, drugs, table in (
                ("htn", h.htn, h.htn_years, codes.HYPERTENSION, h.htn_drugs, codes.HTN_DRUGS),
                ("dm", h.dm, h.dm_years, codes.DIABETES, h.dm_drugs, codes.DM_DRUGS)):
            if stage not in health.STAGES[2:]:
                continue
            onset = start - int(365 * years)
            cid = f"{cfg.tag}-c{i}-{key}"
            conditions.append(cid)
            out.lines["Condition"].append(records.condition(cid, pid, code, _day(onset), site.doctor))
            for d in drugs:
                out.lines["MedicationStatement"].append(records.medication_statement(
                    f"{cfg.tag}-m{i}-{key}{d}", pid, table[d], _day(onset + rng.randrange(90)),
                    _day(start), cid))

        visit = 0
        checkup_days = set()
        for year in range(cfg.years):
            if rng.random() >= cfg.coverage:
                continue
            day = _weekday(start + 365 * year + rng.randrange(365))
            checkup_days.add(day)
            minute = _office_minute(rng)
            when = _time(day, minute)
            eid, oid = f"{cfg.tag}-e{i}-{visit}", f"{cfg.tag}-o{i}-{visit}-"
            visit += 1
            out.lines["Encounter"].append(records.CHECKUP % (
                eid, pid, site.doctor, when, _time(day, minute + 10 + rng.randrange(25)),
                records.CHECKUP_REASON, site.org))
            obs = out.lines["Observation"]
            height = h.height_cm + rng.gauss(0, 0.5)
            weight = h.bmi * (h.height_cm / 100) ** 2 + rng.gauss(0, 0.4)
            fpg = h.fpg * (1 + rng.gauss(0, 0.04))
            values: list[tuple[str, float]] = [
                ("height", height), ("weight", weight),
                ("bmi", round(weight, 1) / (round(height, 1) / 100) ** 2),
                ("waist", h.waist_cm + rng.gauss(0, 1.0)),
                ("heart_rate", h.heart_rate + rng.gauss(0, 4)),
                ("glucose", fpg),
            ]
            if round(fpg, 1) >= 5.6 or h.dm in health.STAGES[2:]:
                values.append(("hba1c", h.hba1c + rng.gauss(0, 0.2)))
            if age + year >= 40 or h.htn in health.STAGES[2:] or h.dm in health.STAGES[2:]:
                values.append(("cholesterol", h.cholesterol + rng.gauss(0, 0.15)))
            values.append(("activity", h.activity_min_week))
            sbp = round(h.sbp + rng.gauss(0, 3))
            dbp = round(h.dbp + rng.gauss(0, 2))
            drop = cfg.faults
            if not (drop and frng.random() < faults.MISSING_OBSERVATION):
                obs.append(records.BLOOD_PRESSURE % (oid + "bp", pid, eid, when, sbp, dbp))
            for key, value in values:
                if not (drop and frng.random() < faults.MISSING_OBSERVATION):
                    obs.append(Q[key] % (oid + SUFFIX[key], pid, eid, when, value))
            obs.append(records.SMOKING[h.smoking] % (oid + "smk", pid, eid, when))
            obs.append(records.ALCOHOL[h.drinker] % (oid + "alc", pid, eid, when))

        if health.under_care(h):
            reason = records.follow_up_reason(conditions)
            on_bp = h.htn in ("treated", "controlled")
            on_dm = h.dm in ("treated", "controlled")
            stop = end
            if rng.random() < LOST_TO_FOLLOW_UP:
                stop = start + rng.randrange(end - start)
            day = start + rng.randrange(cfg.follow_up_days)
            while day < stop:
                if rng.random() < FOLLOW_UP_ATTENDED:
                    d = _weekday(day)
                    if d not in checkup_days and d >= start:
                        minute = _office_minute(rng)
                        when = _time(d, minute)
                        eid, oid = f"{cfg.tag}-e{i}-{visit}", f"{cfg.tag}-o{i}-{visit}-"
                        visit += 1
                        out.lines["Encounter"].append(records.FOLLOW_UP % (
                            eid, pid, site.doctor, when, _time(d, minute + 5 + rng.randrange(10)),
                            reason, site.org))
                        if on_bp:
                            out.lines["Observation"].append(records.BLOOD_PRESSURE % (
                                oid + "bp", pid, eid, when, round(h.sbp + rng.gauss(0, 3)),
                                round(h.dbp + rng.gauss(0, 2))))
                        if on_dm:
                            out.lines["Observation"].append(Q["glucose"] % (
                                oid + "glu", pid, eid, when, h.fpg * (1 + rng.gauss(0, 0.04))))
                day += cfg.follow_up_days + rng.randrange(-3, 4)
    return out.chunk(number, truth)
