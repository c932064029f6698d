"""The programmes exported as FHIR R4 PlanDefinition Bundles: every shipped programme exports
and validates (the Bundle and each resource in it); the export keeps the definition's facts —
item codes as ObservationDefinition codes, every condition's FHIRPath text unchanged, referral
priority, level and delay, intervals in days, enrolment as the care programme's
PlanDefinition, the definition file itself in the Library; classification bands written as
ranges classify every value as the engine does; and ``songkhoe programmes export`` writes
the files."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from songkhoe.cli import main
from songkhoe.fhir.fhirpath import compile
from songkhoe.fhir.outcome import FhirError
from songkhoe.programs.definition import DATA, Condition, Programme, load_dir, load_file
from songkhoe.programs.plandefinition import FHIRPATH, export
from songkhoe.store.engine import checked

PROGRAMMES = load_dir()
IDS = sorted(PROGRAMMES)


def resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def plan(bundle: dict[str, Any]) -> dict[str, Any]:
    (only,) = resources(bundle, "PlanDefinition")
    return only


def actions(action: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every action under ``action`` (itself included), by id."""
    out = {action["id"]: action}
    for child in action.get("action", []):
        out.update(actions(child))
    return out


def all_actions(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (root,) = plan(bundle)["action"]
    return actions(root)


def expression(action: dict[str, Any]) -> str | None:
    conditions = action.get("condition", [])
    assert len(conditions) <= 1, action["id"]
    return conditions[0]["expression"]["expression"] if conditions else None


def collected_by(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each item id → the action collecting it (through its ActivityDefinition's
    ObservationDefinitions)."""
    by_url = {ad["url"]: ad for ad in resources(bundle, "ActivityDefinition")}
    full_urls = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    out = {}
    for action in all_actions(bundle).values():
        if action["id"].startswith("item:"):
            ad = by_url[action["definitionCanonical"].split("|")[0]]
            for ref in ad["observationResultRequirement"]:
                out[full_urls[ref["reference"]]["identifier"][0]["value"]] = action
    return out


def english(element: dict[str, Any]) -> str:
    (translation,) = element["extension"]
    parts = {e["url"]: e for e in translation["extension"]}
    assert parts["lang"]["valueCode"] == "en"
    return parts["content"]["valueString"]


@pytest.fixture(scope="module", params=IDS)
def exported(request: pytest.FixtureRequest) -> tuple[Programme, dict[str, Any]]:
    p = PROGRAMMES[request.param]
    return p, export(p)


# ---- validity ------------------------------------------------------------------------------

def test_every_shipped_programme_is_exported():
    assert set(IDS) == {"hypertension-screening", "hypertension-care", "adult-checkup",
                        "diabetes-screening", "diabetes-care", "cvd-risk", "cervical-screening"}


def test_the_bundle_and_every_resource_in_it_are_valid_r4(exported):
    _, bundle = exported
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    checked(bundle)
    for entry in bundle["entry"]:
        checked(entry["resource"], entry["resource"]["resourceType"])
    full_urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(full_urls)) == len(full_urls)
    assert all(u == f"urn:uuid:{e['resource']['id']}" for u, e in zip(full_urls, bundle["entry"])
               if e["resource"]["resourceType"] not in ("PlanDefinition", "Library"))


def test_the_validator_is_not_vacuous():
    bundle = copy.deepcopy(export(PROGRAMMES["hypertension-screening"]))
    plan(bundle)["action"][0]["condition"][0]["kind"] = "always"
    with pytest.raises(FhirError, match="action-condition-kind"):
        checked(bundle)


def test_the_export_is_deterministic(exported):
    p, bundle = exported
    assert export(p) == bundle


# ---- the PlanDefinition --------------------------------------------------------------------

def test_plan_definition_names_the_programme_as_outputs_cite_it(exported):
    p, bundle = exported
    pd = plan(bundle)
    assert pd["url"] == p.uri == f"urn:songkhoe:programme:{p.id}"
    assert pd["version"] == p.version and pd["status"] == "active"
    assert pd["title"] == p.title.vi and english(pd["_title"]) == p.title.en
    assert pd["type"]["coding"][0]["code"] == "clinical-protocol"
    assert [(a["label"], a["citation"]) for a in pd["relatedArtifact"]] == list(p.sources.items())
    assert pd["library"] == [f"{p.uri}:Library|{p.version}"]
    for action in all_actions(bundle).values():  # every rule cites a listed source
        for doc in action.get("documentation", []):
            assert doc["label"] in p.sources


def test_every_condition_is_fhirpath_over_the_declared_variables(exported):
    _, bundle = exported
    (library,) = resources(bundle, "Library")
    names = {param["name"] for param in library["parameter"]}
    for action in all_actions(bundle).values():
        for condition in action.get("condition", []):
            assert condition["kind"] == "applicability"
            assert condition["expression"]["language"] == FHIRPATH == "text/fhirpath"
            assert compile(condition["expression"]["expression"]).free_variables <= names


def test_population_conditions(exported):
    p, bundle = exported
    (root,) = plan(bundle)["action"]
    texts = [c["expression"]["expression"] for c in root.get("condition", [])]
    expected = ([f"%enrolled.where($this = '{p.id}').exists()"] if p.kind == "care" else []) + \
        ([f"%age >= {p.min_age}"] if p.min_age is not None else []) + \
        ([f"%age <= {p.max_age}"] if p.max_age is not None else []) + \
        ([f"%sex = '{p.sexes[0]}'"] if len(p.sexes) == 1 else []) + \
        ([p.eligible.text] if p.eligible else [])
    assert texts == expected


def test_cervical_screening_population_and_use_context():
    pd = plan(export(PROGRAMMES["cervical-screening"]))
    texts = [c["expression"]["expression"] for c in pd["action"][0]["condition"]]
    assert texts == ["%age >= 30", "%age <= 54", "%sex = 'female'"]
    context = {c["code"]["code"]: c for c in pd["useContext"]}
    assert context["age"]["valueRange"]["low"]["value"] == 30
    assert context["age"]["valueRange"]["high"]["value"] == 54
    assert context["gender"]["valueCodeableConcept"]["coding"][0]["code"] == "female"


def test_every_condition_of_the_file_is_exported_unchanged(exported):
    p, bundle = exported
    found = all_actions(bundle)
    collect = collected_by(bundle)
    for item in p.items:
        assert expression(collect[item.id]) == (item.when.text if item.when else None)
    for c in p.classifications:
        for n, band in enumerate(c.bands):
            action = found[f"classification:{c.id}:{n}"]
            assert expression(action) == band.when.text
            codes = {(x["system"], x["code"]) for x in action["code"][0]["coding"]}
            assert (f"{p.uri}:{c.id}", band.code) in codes
    for s in p.scores:
        assert expression(found[f"score:{s.id}"]) == (s.when.text if s.when else None)
        for n, rule in enumerate(s.rules):
            assert expression(found[f"score:{s.id}:rule:{n}"]) == rule.when.text
            assert found[f"score:{s.id}:rule:{n}"]["title"] == f"{rule.points:+d} điểm"
    for a in p.actions:
        assert expression(found[a.id]) == a.when.text
        assert found[a.id]["code"][0]["coding"][0] == {
            "system": f"{p.uri}:action", "version": p.version, "code": a.id,
            "display": a.reason.vi}


def test_item_conditions_are_on_their_collect_action():
    found = all_actions(export(PROGRAMMES["diabetes-screening"]))
    assert expression(found["item:glucose"]) == "%age >= 45 or %bmi >= 23"
    assert expression(found["item:hba1c"]) == "%age >= 45 or %bmi >= 23"
    assert expression(found["item:height"]) is None


def test_intervals_keep_their_days_and_conditions(exported):
    p, bundle = exported
    group = all_actions(bundle)["next-visit"]
    assert group["selectionBehavior"] == "exactly-one"
    assert [(a["timingDuration"]["value"], a["timingDuration"]["code"], expression(a))
            for a in group["action"]] == \
        [(i.days, "d", i.when.text if i.when else None) for i in p.intervals]
    assert [a["title"] for a in group["action"]] == [i.label.vi for i in p.intervals]


# ---- items -------------------------------------------------------------------------------

def test_each_item_is_an_observation_definition(exported):
    p, bundle = exported
    definitions = {od["identifier"][0]["value"]: od
                   for od in resources(bundle, "ObservationDefinition")}
    assert set(definitions) == {i.id for i in p.items}
    for item in p.items:
        od = definitions[item.id]
        system, code = item.component or (item.system, item.code)
        assert od["code"]["coding"] == [{"system": system, "code": code}]
        assert od["preferredReportName"] == item.label.vi
        assert english(od["_preferredReportName"]) == item.label.en
        if item.kind == "quantity":
            assert od["quantitativeDetails"]["unit"]["coding"][0]["code"] == item.unit
            absolute = [q for q in od["qualifiedInterval"] if q.get("category") == "absolute"]
            assert [(Decimal(str(q["range"]["low"]["value"])),
                     Decimal(str(q["range"]["high"]["value"]))) for q in absolute] == [item.range]
            if item.decimals is not None:
                assert od["quantitativeDetails"]["decimalPrecision"] == item.decimals
        if item.derive is not None:
            assert od["method"]["text"] == item.derive.text
        if item.kind == "coded":
            (vs,) = od["contained"]
            assert od["validCodedValueSet"] == {"reference": f"#{vs['id']}"}
            words = {f"{inc['system']}|{c['code']}": c["designation"][0]["value"]
                     for inc in vs["compose"]["include"] for c in inc["concept"]}
            assert words == item.values


def test_each_item_is_requested_by_an_activity_definition(exported):
    p, bundle = exported
    by_url = {ad["url"]: ad for ad in resources(bundle, "ActivityDefinition")}
    full_urls = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    collect = [a for a in all_actions(bundle).values() if a["id"].startswith("item:")]
    requested = set()
    for action in collect:
        url, version = action["definitionCanonical"].split("|")
        ad = by_url[url]
        assert version == ad["version"] == p.version and ad["kind"] == "ServiceRequest"
        assert ad["code"] == action["code"][0]
        for ref in ad["observationResultRequirement"]:
            od = full_urls[ref["reference"]]
            requested.add((od["identifier"][0]["value"], ad["code"]["coding"][0]["code"]))
    assert requested == {(i.id, i.code) for i in p.items}


def test_a_blood_pressure_panel_is_one_request_for_both_components():
    bundle = export(PROGRAMMES["hypertension-screening"])
    (ad,) = [ad for ad in resources(bundle, "ActivityDefinition") if ad["url"].endswith(
        ":ActivityDefinition:collect-sbp")]
    assert collected_by(bundle)["sbp"] is collected_by(bundle)["dbp"]
    assert ad["code"]["coding"] == [{"system": "http://loinc.org", "code": "85354-9"}]
    assert len(ad["observationResultRequirement"]) == 2
    codes = sorted(od["code"]["coding"][0]["code"]
                   for od in resources(bundle, "ObservationDefinition"))
    assert codes == ["8462-4", "8480-6"]


def test_a_second_unit_is_the_customary_unit():
    bundle = export(PROGRAMMES["diabetes-screening"])
    (glucose,) = [od for od in resources(bundle, "ObservationDefinition")
                  if od["identifier"][0]["value"] == "glucose"]
    details = glucose["quantitativeDetails"]
    assert details["customaryUnit"]["coding"][0]["code"] == "mg/dL"
    # mmol/L × 18.01560 = mg/dL: the reciprocal of the definition's 0.05550745, 7 digits
    assert details["conversionFactor"] == 18.0156


# ---- bands as ranges ---------------------------------------------------------------------

RANGED = {("adult-checkup", "bmi_class"), ("adult-checkup", "activity_class"),
          ("diabetes-screening", "glucose_class"), ("diabetes-screening", "hba1c_class"),
          ("diabetes-care", "glucose_control"), ("diabetes-care", "hba1c_control")}


def band_ranges(p: Programme, bundle: dict[str, Any], cid: str) -> list[tuple[Any, ...]]:
    out = []
    for od in resources(bundle, "ObservationDefinition"):
        for q in od.get("qualifiedInterval", []):
            coding = q.get("context", {}).get("coding", [{}])[0]
            if coding.get("system") == f"{p.uri}:{cid}":
                low, high = q["range"].get("low"), q["range"].get("high")
                out.append((coding["code"], low and Decimal(str(low["value"])),
                            high and Decimal(str(high["value"])), q.get("category")))
    return out


def test_simple_bands_are_ranges_that_classify_as_the_engine_does():
    seen = set()
    for p in PROGRAMMES.values():
        bundle = export(p)
        for c in p.classifications:
            ranges = band_ranges(p, bundle, c.id)
            if not ranges:
                continue
            seen.add((p.id, c.id))
            item = p.item(c.item)
            assert item.range is not None and item.decimals is not None
            step = Decimal(1).scaleb(-item.decimals)
            value = item.range[0]
            while value <= item.range[1]:
                band = c.classify({c.item: value})
                hits = [code for code, low, high, _ in ranges
                        if (low is None or value >= low) and (high is None or value <= high)]
                assert hits == ([band.code] if band else []), (p.id, c.id, value)
                value += step
            for code, _, _, category in ranges:
                normal = next(b for b in c.bands if b.code == code).interpretation == "N"
                assert category == ("reference" if normal else None)
    assert seen == RANGED  # bp_grade reads two items, waist_class the sex, coded bands codes


def test_prediabetes_is_the_guideline_range():
    p = PROGRAMMES["diabetes-screening"]
    ranges = {code: (low, high) for code, low, high, _ in
              band_ranges(p, export(p), "glucose_class")}
    assert ranges == {"diabetes_range": (Decimal("7.0"), None),
                      "prediabetes": (Decimal("5.6"), Decimal("6.9")),
                      "normal": (None, Decimal("5.5"))}


DRAFT = """
id = "draft"
version = "1"
kind = "screening"
title = { vi = "Thử", en = "Draft" }
[sources]
s = "a source"
[population]
[[item]]
id = "x"
label = { vi = "X", en = "X" }
code = "urn:songkhoe:code|x"
unit = "1"
range = [0, 10]
%s
[[classification]]
id = "x_class"
label = { vi = "X", en = "X" }
item = "x"
  [[classification.band]]
  code = "high"
  display = { vi = "Cao", en = "High" }
  when = "%%x > 5.5"
  interpretation = "H"
  source = "s"
  [[classification.band]]
  code = "low"
  display = { vi = "Thấp", en = "Low" }
  when = "%%x < 5.5"
  interpretation = "N"
  source = "s"
[[interval]]
days = 365
label = { vi = "Mỗi năm", en = "Yearly" }
"""


def test_open_bounds_off_the_decimals_and_without_decimals(tmp_path):
    path = tmp_path / "draft.toml"
    path.write_text(DRAFT % "decimals = 0", encoding="utf-8")
    p = load_file(path)
    assert band_ranges(p, export(p), "x_class") == [
        ("high", Decimal(6), None, None), ("low", None, Decimal(5), "reference")]
    path.write_text(DRAFT % "", encoding="utf-8")
    p = load_file(path)
    bundle = export(p)
    checked(bundle)
    assert band_ranges(p, bundle, "x_class") == []  # > 5.5 has no inclusive bound
    (od,) = resources(bundle, "ObservationDefinition")
    assert [q["category"] for q in od["qualifiedInterval"]] == ["absolute"]


# ---- scores --------------------------------------------------------------------------------

def test_score_bands_as_conditions_pick_the_engines_band(exported):
    p, bundle = exported
    found = all_actions(bundle)
    for s in p.scores:
        conditions = []
        for n, band in enumerate(s.bands):
            text = expression(found[f"score:{s.id}:band:{n}"])
            assert text is not None
            conditions.append((band.code, Condition.of(text, compile(text))))
        probes = {b.min + d for b in s.bands for d in (Decimal("-0.001"), 0, Decimal("0.001"))}
        for value in sorted(probes):
            engine = s.band(value)
            holds = [code for code, cond in conditions if cond.holds({s.id: value})]
            assert holds == ([engine.code] if engine else []), (p.id, s.id, value)


def test_findrisc_rules_and_cvd_output():
    found = all_actions(export(PROGRAMMES["diabetes-screening"]))
    score = found["score:findrisc"]
    assert score["output"][0]["type"] == "RiskAssessment"
    assert len([i for i in found if i.startswith("score:findrisc:rule:")]) == 13
    assert found["score:findrisc:rule:0"]["condition"][0]["expression"]["expression"] == \
        "%age >= 45 and %age <= 54"
    assert english(found["score:findrisc:rule:0"]["_title"]) == "+2 points"


# ---- actions -------------------------------------------------------------------------------

def test_referrals_are_activity_definitions_with_priority_level_and_delay(exported):
    p, bundle = exported
    by_url = {ad["url"]: ad for ad in resources(bundle, "ActivityDefinition")}
    found = all_actions(bundle)
    for a in p.actions:
        action = found[a.id]
        if a.action == "refer":
            url, version = action["definitionCanonical"].split("|")
            assert url == f"{p.uri}:ActivityDefinition:{a.id}" and version == p.version
            ad = by_url[url]
            assert ad["kind"] == "ServiceRequest" and ad["intent"] == "order"
            assert ad["priority"] == a.urgency
            assert ad["timingRange"]["high"] == {"value": a.within_days, "unit": "d",
                                                 "system": "http://unitsofmeasure.org",
                                                 "code": "d"}
            assert ad["participant"][0]["role"]["coding"][0]["code"] == a.level
            assert ad["code"]["coding"][0]["code"] == a.id
        elif a.action == "flag":
            assert action["output"][0]["type"] == "Flag"
        else:
            assert action["definitionCanonical"] == PROGRAMMES[a.programme].uri
            assert action["output"][0]["type"] == "EpisodeOfCare"
        assert len(action.get("input", [])) == len(a.evidence)


def test_enrolment_points_at_the_care_programmes_plan_definition():
    found = all_actions(export(PROGRAMMES["hypertension-screening"]))
    care = plan(export(PROGRAMMES["hypertension-care"]))
    assert found["enrol_diagnosed"]["definitionCanonical"] == care["url"]


# ---- the Library ---------------------------------------------------------------------------

def test_library_carries_the_definition_file_and_its_variables(exported):
    p, bundle = exported
    (library,) = resources(bundle, "Library")
    assert library["url"] == f"{p.uri}:Library" and library["version"] == p.version
    (content,) = library["content"]
    source = (DATA / Path(p.file).name).read_bytes()
    assert content["contentType"] == "application/toml"
    assert base64.b64decode(content["data"]) == source
    assert base64.b64decode(content["hash"]) == hashlib.sha1(source).digest()
    params = {param["name"]: param for param in library["parameter"]}
    assert {"age", "sex", "conditions", "medications", "enrolled"} <= set(params)
    for item in p.items:
        assert params[item.id]["use"] == "in"
        assert params[item.id]["type"] == {"quantity": "decimal", "coded": "string",
                                           "boolean": "boolean"}[item.kind]
    for c in p.classifications:
        assert params[c.id]["use"] == "out"
    for s in p.scores:
        assert params[s.id]["type"] == "decimal" and params[f"{s.id}_band"]["type"] == "string"
    lookback = [r for r in library["dataRequirement"] if r["type"] == "Observation"]
    assert {r["codeFilter"][0]["code"][0]["code"] for r in lookback} == {i.code for i in p.items}
    assert all(r["dateFilter"][0]["valueDuration"]["value"] == p.lookback_days
               for r in lookback)


# ---- the command -------------------------------------------------------------------------

def test_cli_writes_one_file_per_programme(tmp_path, capsys):
    assert main(["programmes", "export", "--out", str(tmp_path / "out")]) == 0
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == [f"{pid}.json" for pid in IDS]
    for pid in IDS:
        written = json.loads((tmp_path / "out" / f"{pid}.json").read_text(encoding="utf-8"))
        assert written == json.loads(json.dumps(export(PROGRAMMES[pid])))
        checked(written)
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "out" / f) for f in files]


def test_cli_chosen_ids_and_stdout(tmp_path, capsys):
    assert main(["programmes", "export", "cvd-risk", "hypertension-care",
                 "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cvd-risk.json",
                                                          "hypertension-care.json"]
    capsys.readouterr()
    assert main(["programmes", "export", "hypertension-care"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert plan(out)["url"] == "urn:songkhoe:programme:hypertension-care"


def test_cli_refusals(tmp_path, capsys):
    assert main(["programmes", "export", "no-such-programme"]) == 2
    assert "no programme no-such-programme" in capsys.readouterr().err
    assert main(["programmes", "export"]) == 2
    assert "--out" in capsys.readouterr().err
    folder = tmp_path / "defs"
    folder.mkdir()
    text = (DATA / "hypertension-care.toml").read_text(encoding="utf-8")
    (folder / "hypertension-care.toml").write_text(
        text.replace('title = { vi = "Quản lý tăng huyết áp"', 'title = { vi = " "', 1),
        encoding="utf-8")
    assert main(["programmes", "export", "--dir", str(folder), "hypertension-care"]) == 2
    err = capsys.readouterr().err
    assert "hypertension-care.toml" in err and "not valid FHIR R4" in err
