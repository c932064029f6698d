"""Regenerate r4_search_expressions.json: the (code, base, expression) triples of the R4
SearchParameter Bundle (FHIR content, CC0). Usage:

    python tests/fhir/fhirpath/data/extract_search_expressions.py \
        path/to/dist/fhir/r4/search-parameters.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(source: str) -> None:
    bundle = json.loads(Path(source).read_text())
    rows = []
    for entry in bundle["entry"]:
        sp = entry["resource"]
        if sp.get("expression"):
            rows.append({"code": sp["code"], "base": sp["base"], "expression": sp["expression"]})
    out = Path(__file__).with_name("r4_search_expressions.json")
    out.write_text(json.dumps({"source": "FHIR R4 4.0.1 search-parameters.json (CC0)",
                               "parameters": rows}, indent=0, ensure_ascii=False) + "\n")
    print(f"{len(rows)} expressions -> {out}")


if __name__ == "__main__":
    main(sys.argv[1])
