"""Where a runner reads resources from: NDJSON files (FHIR Bulk Data's format, one resource a
line, plain or compressed), or resources given as dicts, written to a temporary NDJSON file
first so that they are read exactly as files are."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

#: an NDJSON path, a list of paths, or resources as dicts parsed from FHIR JSON
Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Iterable[Mapping[str, Any]]


@contextmanager
def ndjson_files(source: Source) -> Iterator[list[str]]:
    """The NDJSON files of a source; resources given as dicts are written to a temporary
    file first, so that they are read exactly as files are."""
    if isinstance(source, (str, os.PathLike)):
        yield [os.fspath(source)]
        return
    items = list(source)
    if items and all(isinstance(i, (str, os.PathLike)) for i in items):
        yield [os.fspath(i) for i in items]  # type: ignore[arg-type]
        return
    with tempfile.TemporaryDirectory(prefix="sof-") as tmp:
        path = Path(tmp) / "resources.ndjson"
        with path.open("w", encoding="utf-8") as out:
            for resource in items:
                if not isinstance(resource, Mapping):
                    raise TypeError(f"a resource must be a dict parsed from FHIR JSON, not "
                                    f"{type(resource).__name__}")
                out.write(json_text(resource))
                out.write("\n")
        yield [str(path)]


def json_text(value: Any) -> str:
    """JSON text of parsed JSON, decimals (``Decimal``) written exactly as they are."""
    if isinstance(value, Mapping):
        return "{" + ",".join(json.dumps(str(k)) + ":" + json_text(v)
                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)
