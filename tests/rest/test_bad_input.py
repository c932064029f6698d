"""Bad input never reaches the store and never answers 500: every malformed request gets a 4xx
with an OperationOutcome (http://hl7.org/fhir/R4/http.html#errors), and nothing is stored."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.rest.helpers import FHIR_JSON, created, patient
from tests.rest.test_transaction import total


def is_outcome(r) -> bool:
    body = r.json()
    return body["resourceType"] == "OperationOutcome" and bool(body["issue"])


BAD_REQUESTS = [
    ("POST", "/fhir/Patient", {"content-type": FHIR_JSON}, b"{"),
    ("POST", "/fhir/Patient", {"content-type": FHIR_JSON}, b'{"resourceType":"Patient","name":"x"}'),
    ("POST", "/fhir/Patient", {"content-type": FHIR_JSON}, b'{"resourceType":"Patient","bogus":1}'),
    ("POST", "/fhir/Patient", {"content-type": FHIR_JSON}, b'{"resourceType":"Patient","id":5}'),
    ("POST", "/fhir/Patient", {"content-type": FHIR_JSON}, b'[{"resourceType":"Patient"}]'),
    ("POST", "/fhir/Patient", {"content-type": FHIR_JSON},
     b'{"resourceType":"Patient","name":[{"family":"' + b"\xed\xa0\x80" + b'"}]}'),
    ("POST", "/fhir/Patient", {"content-type": FHIR_JSON}, b"[" * 5000 + b"]" * 5000),
    ("POST", "/fhir/Patient", {"content-type": FHIR_JSON},
     b'{"resourceType":"Patient","birthDate":99999999999999999999999}'),
    ("POST", "/fhir/Patient", {"content-type": "application/fhir+xml"}, b"<Patient/>"),
    ("POST", "/fhir/Patient", {}, b'{"resourceType":"Patient"}'),
    ("PUT", "/fhir/Patient/x", {"content-type": FHIR_JSON}, b'{"resourceType":"Patient","id":"y"}'),
    ("PUT", "/fhir/Patient/x", {"content-type": FHIR_JSON}, b'"just a string"'),
    ("PUT", "/fhir/Patient/x", {"content-type": FHIR_JSON, "if-match": "W/\"abc\""},
     b'{"resourceType":"Patient","id":"x"}'),
    ("PUT", "/fhir/Patient/..%2F..", {"content-type": FHIR_JSON}, b'{"resourceType":"Patient"}'),
    ("PATCH", "/fhir/Patient/x", {"content-type": "application/json-patch+json"}, b"{}"),
    ("PATCH", "/fhir/Patient/x", {"content-type": "application/json-patch+json"},
     b'[{"op":"replace","path":"/id","value":"z"}]'),
    ("POST", "/fhir", {"content-type": FHIR_JSON}, b'{"resourceType":"Bundle"}'),
    ("POST", "/fhir", {"content-type": FHIR_JSON},
     (b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST",'
     b'"url":"Patient"},"resource":{"resourceType":"Patient","gender":"nope"}}]}')),
    ("POST", "/fhir", {"content-type": FHIR_JSON},
     (b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST",'
     b'"url":"Patient"},"resource":{"resourceType":"Patient"}},{"request":{"method":"GET",'
     b'"url":"Patient?birthdate=notadate"}}]}')),
    ("POST", "/fhir", {"content-type": FHIR_JSON},
     (b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST",'
     b'"url":"Patient"},"resource":{"resourceType":"Patient"}},{"request":{"method":"PATCH",'
     b'"url":"Patient/none"},"resource":{"resourceType":"Binary","contentType":'
     b'"application/json-patch+json","data":"!!!"}}]}')),
    ("GET", "/fhir/Patient/%00", {}, b""),
    ("GET", "/fhir/Patient?_count=-5", {}, b""),
    ("GET", "/fhir/Patient?_lastUpdated=gt20x", {}, b""),
    ("GET", "/fhir/Patient/1/_history/99999999999999999999999", {}, b""),
    ("GET", "/fhir/Patient/1/_history?_since=%FF", {}, b""),
    ("GET", "/fhir/Patient/1/Observation/2/3", {}, b""),
    ("DELETE", "/fhir/Patient", {}, b""),
    ("DELETE", "/fhir/Patient/1", {"if-match": "*"}, b""),
    ("OPTIONS", "/fhir/Patient", {}, b""),
    ("GET", "/fhir/Patient", {"prefer": "return=bogus"}, b""),
    ("POST", "/fhir/Patient", {"content-type": FHIR_JSON, "prefer": "return=bogus"},
     b'{"resourceType":"Patient"}'),
    ("POST", "/fhir/Patient", {"content-type": FHIR_JSON, "if-none-exist": "bogus-param=1&&"},
     b'{"resourceType":"Patient"}'),
]


@pytest.mark.parametrize("method,path,headers,body", BAD_REQUESTS)
def test_bad_requests_are_4xx_outcomes_and_store_nothing(client, method, path, headers, body):
    r = client.request(method, path, headers=headers, content=body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert is_outcome(r), r.text
    assert total(client) == 0


def test_unexpected_exception_is_a_500_outcome(client, store, monkeypatch, caplog):
    p = created(client, patient())

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "read", broken)
    r = client.get(f"/fhir/Patient/{p['id']}")
    assert r.status_code == 500 and is_outcome(r)
    assert "disk on fire" not in r.text and "RuntimeError" in r.text
    assert any("unexpected error" in m for m in caplog.messages)


# --- property-based: arbitrary bodies, paths and headers -------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["resourceType", "id", "name", "gender", "meta",
                                       "birthDate", "entry", "type", "request", "url",
                                       "method", "resource", "contained", "extension",
                                       "reference", "x"]), children, max_size=5),
    max_leaves=20)

resource_like = st.fixed_dictionaries(
    {"resourceType": st.sampled_from(["Patient", "Bundle", "Observation", "Nope", ""])},
    optional={"id": json_values, "name": json_values, "gender": json_values,
              "birthDate": json_values, "type": st.sampled_from(["transaction", "batch", "x"]),
              "entry": json_values, "meta": json_values})

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FUZZ
@given(body=json_values | resource_like,
       target=st.sampled_from([("POST", "/fhir/Patient"), ("PUT", "/fhir/Patient/fz"),
                               ("POST", "/fhir"), ("POST", "/fhir/Patient/$validate"),
                               ("PATCH", "/fhir/Patient/fz")]))
def test_arbitrary_json_bodies_never_500(client, body, target):
    method, path = target
    before = total(client)
    ctype = "application/json-patch+json" if method == "PATCH" else FHIR_JSON
    r = client.request(method, path, content=json.dumps(body).encode(),
                       headers={"content-type": ctype})
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert is_outcome(r)
        assert total(client) == before


segment = st.one_of(st.sampled_from(["Patient", "Observation", "_history", "_search", "$validate",
                                     "$everything", "metadata", "1", "x" * 70, "*", "..", ""]),
                    st.text(alphabet=st.characters(codec="utf-8",
                                                   exclude_characters="/?#"), max_size=8))


@FUZZ
@given(method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
       segments=st.lists(segment, max_size=5),
       query=st.lists(st.tuples(st.sampled_from(["_count", "_since", "_format", "_pretty",
                                                 "_summary", "_elements", "name", "_cursor",
                                                 "identifier", "_type", "_total"]),
                                st.text(max_size=10)), max_size=3),
       headers=st.dictionaries(st.sampled_from(["accept", "if-match", "if-none-match",
                                                "if-modified-since", "prefer", "content-type",
                                                "if-none-exist"]),
                               st.text(alphabet=st.characters(min_codepoint=32,
                                                              max_codepoint=126), max_size=20),
                               max_size=3))
def test_arbitrary_requests_never_500(client, method, segments, query, headers):
    from urllib.parse import quote, urlencode

    path = "/fhir/" + "/".join(quote(s, safe="$*") for s in segments)
    url = path + ("?" + urlencode(query) if query else "")
    r = client.request(method, url, headers=headers, content=b'{"resourceType":"Patient"}')
    assert r.status_code < 500, (url, headers, r.text)
    # a ".." segment is resolved by the client (RFC 3986 §5.2.4): "/fhir/.." asks for "/",
    # which is not the FHIR API and may answer in plain text
    if r.status_code >= 400 and method != "HEAD" and r.request.url.path.startswith("/fhir"):
        assert is_outcome(r), r.text
