"""Validating only what changed (``validate.validate_change``): over synthetic records, each
top-level element in turn replaced by another record's, by a wrong value, or removed, and an
unknown one added, it finds exactly the issues ``validate`` finds in the whole new version —
or declines (None) where a rule spans elements."""

from __future__ import annotations

import copy
import random
from datetime import date

import orjson

from songkhoe.fhir.validate import validate, validate_change
from songkhoe.synth import SynthConfig, items

WRONG = ({"bogus": 1}, [], "", 12, [{"coding": "x"}], {"reference": "Nope/1"}, [None])


def _changed(new: dict, old: dict) -> dict:
    return {k: v for k, v in new.items() if k not in old or old[k] != v}


def _issues(issues: list) -> list[tuple]:
    return [(i.code, i.diagnostics, i.expression) for i in issues]


def test_the_issues_of_a_change_are_those_of_the_whole_version():
    config = SynthConfig(people=30, seed=9, provinces=(1,), years=2, as_of=date(2026, 11, 1))
    by_type: dict[str, list[dict]] = {}
    for _, raw in items(config):
        r = orjson.loads(raw) if isinstance(raw, bytes) else raw
        by_type.setdefault(r["resourceType"], []).append(r)
    assert len(by_type) >= 6 and all(not validate(r) for g in by_type.values() for r in g)
    rng = random.Random(2)
    checked = declined = invalid = 0
    for group in by_type.values():
        for old in group[:30]:
            others = [o for o in group if o is not old] or [old]
            for key in [k for k in old if k != "resourceType"] + ["note", "unknownElement"]:
                for variant in ("other", "wrong", "removed"):
                    new = copy.deepcopy(old)
                    other = rng.choice(others)
                    if variant == "other" and key in other:
                        new[key] = copy.deepcopy(other[key])
                    elif variant == "wrong":
                        new[key] = copy.deepcopy(rng.choice(WRONG))
                    else:
                        new.pop(key, None)
                    found = validate_change(new, old, _changed(new, old))
                    if found is None:
                        declined += 1
                        continue
                    checked += 1
                    whole = validate(new)
                    invalid += bool(whole)
                    assert _issues(found) == _issues(whole), (old["resourceType"], key, variant)
    assert checked > 3000 and invalid > 1000 and declined > 100, (checked, invalid, declined)


def test_what_spans_elements_is_left_to_the_whole_validation():
    obs = {"resourceType": "Observation", "id": "o1", "status": "final",
           "code": {"text": "huyết áp"}, "valueString": "cao"}
    # a second choice of value[x] beside the unchanged one
    twice = {**obs, "valueInteger": 3}
    assert validate_change(twice, obs, {"valueInteger": 3}) is None
    assert validate(twice)
    contained = {**obs, "contained": [{"resourceType": "Patient", "id": "p"}]}
    assert validate_change({**contained, "note": [{"text": "x"}]}, contained,
                           {"note": [{"text": "x"}]}) is None
    assert validate_change({**obs, "resourceType": "Condition"}, obs, {}) is None
    bundle = {"resourceType": "Bundle", "type": "collection"}
    assert validate_change({**bundle, "total": 1}, bundle, {"total": 1}) is None


def test_a_removed_required_element_is_found():
    obs = {"resourceType": "Observation", "id": "o1", "status": "final",
           "code": {"text": "huyết áp"}}
    new = {k: v for k, v in obs.items() if k != "status"}
    found = validate_change(new, obs, {})
    assert found is not None and [i.expression for i in found] == ["Observation.status"]
