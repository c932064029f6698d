"""The songkhoe command: import (summary, rejections, exit status) and a refused newer schema."""

from __future__ import annotations

import json

from songkhoe.cli import main
from songkhoe.store import open_store
from songkhoe.store.schema import SCHEMA_VERSION


def test_import_prints_summary_and_fails_on_rejections(db_url, tmp_path, capsys):
    good = {"resourceType": "Patient", "id": "p1", "gender": "female",
            "name": [{"family": "Lê", "given": ["Thị", "Mai"]}]}
    path = tmp_path / "people.ndjson"
    path.write_text(json.dumps(good, ensure_ascii=False) + "\n{broken\n", encoding="utf-8")
    assert main(["import", "--db", db_url, str(path)]) == 1
    out = capsys.readouterr().out
    assert "loaded 1, unchanged 0, rejected 1" in out
    assert "rejected people.ndjson:2: not valid JSON" in out
    path.write_text(json.dumps(good, ensure_ascii=False) + "\n", encoding="utf-8")
    assert main(["import", "--db", db_url, str(path)]) == 0
    assert "loaded 0, unchanged 1, rejected 0" in capsys.readouterr().out
    store = open_store(db_url)
    assert store.read("Patient", "p1").resource["name"][0]["family"] == "Lê"
    store.close()


def test_import_of_a_missing_file(db_url, capsys):
    assert main(["import", "--db", db_url, "/nonexistent.ndjson"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_newer_schema_is_refused_with_a_message(db_url, tmp_path, capsys):
    store = open_store(db_url)
    with store.backend.transaction(write=True) as conn:
        store.backend.execute(conn, "UPDATE schema_meta SET value = ? WHERE key = 'version'",
                              (str(SCHEMA_VERSION + 5),))
    store.close()
    path = tmp_path / "x.ndjson"
    path.write_text("", encoding="utf-8")
    assert main(["import", "--db", db_url, str(path)]) == 2
    assert "upgrade songkhoe" in capsys.readouterr().err
