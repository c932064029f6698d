"""``elem as T`` on a choice element is compiled to a direct key lookup: same results as the
general ``as`` (subtypes included), for every R4 search expression on generated samples."""

from __future__ import annotations

import pytest

from songkhoe.fhir import definitions
from songkhoe.fhir.fhirpath import compile, compiler, expression

from .samples import SampleBuilder


def test_as_reads_the_choice_key_and_subtypes():
    cm = {"resourceType": "ConceptMap", "status": "draft", "sourceCanonical": "http://x/vs"}
    assert compile("(ConceptMap.source as uri)")(cm) == ["http://x/vs"]
    obs = {"resourceType": "Observation", "valueQuantity": {"value": 5}}
    assert compile("(Observation.value as Quantity)").nodes(obs)[0].type == "Quantity"
    assert compile("(Observation.value as string)")(obs) == []


def test_fast_choice_cast_equals_general_as(monkeypatch: pytest.MonkeyPatch):
    samples = [SampleBuilder(definitions, variant=v).resource(t)
               for v in range(4) for t in sorted(definitions.resource_types())]
    exprs = sorted({sp.expression for t in definitions.resource_types()
                    for sp in definitions.search_parameters(t).values()
                    if sp.expression and " as " in sp.expression})
    fast = [[compile(e).nodes(r) for e in exprs] for r in samples]
    expression._clear_cache()
    monkeypatch.setattr(compiler.Compiler, "choice_cast", lambda self, *a: None)
    slow = [[compile(e).nodes(r) for e in exprs] for r in samples]
    expression._clear_cache()

    def plain(rows):
        return [[[(n.value, n.type) for n in nodes] for nodes in row] for row in rows]
    assert plain(fast) == plain(slow)
    assert sum(len(n) for row in fast for n in row) > 100  # the samples do exercise the casts
