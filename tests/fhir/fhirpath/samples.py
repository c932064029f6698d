"""Sample R4 resources for the FHIRPath tests, built from the generated R4 element table
(``songkhoe.fhir.definitions``): every element populated with a plausible value, to a bounded
depth. Variant ``k`` picks the k-th option wherever there is a choice — the type of a choice
element (``value[x]``), the target type of a Reference, the code of a required binding — so
that across the variants every ``as Type``, ``resolve() is Type`` and ``where(code = …)`` of a
search expression meets matching data."""

from __future__ import annotations

from typing import Any

PRIMITIVES: dict[str, Any] = {
    "boolean": True, "integer": 1, "unsignedInt": 2, "positiveInt": 3, "decimal": 1.5,
    "string": "mẫu Đặng", "markdown": "**x**", "code": "final", "id": "abc",
    "uri": "http://example.org/x", "url": "http://example.org/u",
    "canonical": "http://example.org/StructureDefinition/x", "oid": "urn:oid:1.2.3",
    "uuid": "urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7", "base64Binary": "aGVsbG8=",
    "date": "2020-01-02", "dateTime": "2020-01-02T03:04:05+07:00",
    "instant": "2020-01-02T03:04:05.678+07:00", "time": "10:11:12",
    "xhtml": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>',
}
SKIP = {"extension", "modifierExtension", "contained"}
MAX_VARIANTS = 16


def _codes(definitions: Any, el: Any) -> list[str]:
    if not el.binding:
        return []
    codes = definitions.valueset_codes(el.binding)
    return sorted(codes) if codes else []


def _targets(el: Any) -> list[str]:
    targets = [t for t in el.targets.get("Reference", ()) if t != "Resource"]
    if not targets:
        return ["Patient"]
    return sorted(targets, key=lambda t: (t != "Patient", t))


class SampleBuilder:
    def __init__(self, definitions: Any, variant: int = 0, max_depth: int = 6) -> None:
        self.d = definitions
        self.variant = variant
        self.max_depth = max_depth

    def resource(self, rtype: str) -> dict[str, Any]:
        out: dict[str, Any] = {"resourceType": rtype}
        out.update(self.fill(rtype, 0))
        out["id"] = "s1"
        return out

    def pick(self, options: list[Any] | tuple[Any, ...]) -> Any:
        return options[self.variant % len(options)]

    def fill(self, path: str, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if depth > self.max_depth:
            return out
        for name, el in self.d.children(path).items():
            if name in SKIP:
                continue
            if el.content_reference:
                if depth + 2 > self.max_depth:
                    continue
                value: Any = self.fill(el.content_reference.lstrip("#"), depth + 2)
                key = name
            elif el.is_choice:
                t = self.pick(el.types)
                json_name = self.d.json_type_name(t)
                key = name[:-3] + json_name[0].upper() + json_name[1:]
                value = self.value(f"{path}.{name}", t, el, depth)
            else:
                if not el.types:
                    continue
                key = name
                value = self.value(f"{path}.{name}", el.types[0], el, depth)
            if value is None or value == {}:
                continue
            out[key] = [value] if el.repeats else value
        return out

    def value(self, path: str, t: str, el: Any, depth: int) -> Any:
        if t == "code":
            codes = _codes(self.d, el)
            return self.pick(codes) if codes else PRIMITIVES["code"]
        if t in PRIMITIVES:
            return PRIMITIVES[t]
        if t.startswith("http://hl7.org/fhirpath/System."):
            return "sys"
        if t == "Reference":
            return {"reference": f"{self.pick(_targets(el))}/p1", "display": "x"}
        if t in ("BackboneElement", "Element"):
            return self.fill(path, depth + 1)
        if t in ("Resource", "DomainResource"):
            return {"resourceType": "Patient", "id": "inner"}
        if t == "Extension":
            return None
        if t == "Narrative":
            return {"status": "generated", "div": PRIMITIVES["xhtml"]}
        return self.fill(self.d.json_type_name(t), depth + 1)


def variant_count(definitions: Any, rtype: str, max_depth: int = 3) -> int:
    """How many variants it takes to meet every option of the resource (capped)."""
    most = 1
    stack = [(rtype, 0)]
    seen = set()
    while stack:
        path, depth = stack.pop()
        if path in seen or depth > max_depth:
            continue
        seen.add(path)
        for name, el in definitions.children(path).items():
            if name in SKIP:
                continue
            if el.is_choice:
                most = max(most, len(el.types))
            if "Reference" in el.types:
                most = max(most, len(_targets(el)))
            if el.types == ("code",):
                most = max(most, len(_codes(definitions, el)))
            for t in el.types:
                if t in ("BackboneElement", "Element"):
                    stack.append((f"{path}.{name}", depth + 1))
                elif t[:1].isupper() and t not in ("Reference", "Extension", "Resource"):
                    stack.append((definitions.json_type_name(t), depth + 1))
    return min(most, MAX_VARIANTS)
