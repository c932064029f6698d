"""The authorisation matrix over HTTP (issue 5): who may see and change what.

One small world is built once per backend (module-scoped ``world``): the Organizations of
``add_orgs`` (moh → so-04 → tyt-00004, moh → so-08 → tyt-00008), the Practitioner ``pr-1``, and
five Patients, each with a vital-signs Observation (``<p>-vs``, LOINC 8480-6), a laboratory
Observation (``<p>-lab``, 718-7) and an Encounter (``<p>-enc``, class AMB)::

    Patient  managed by  family  also
    p4       tyt-00004   Pham    p4-vs.focus → p8, p4-lab.derivedFrom → p8-lab,
                                 p4-lab.encounter → p8-enc
    ps       so-04       Son
    pc       tyt-00004   Cao     ServiceRequest sr-c (performer Practitioner/pr-1)
    pt       tyt-00004   Ta      Task task-t (owner Practitioner/pr-1)
    p8       tyt-00008   Tran    p8-vs.focus → p4, p8-lab.derivedFrom → p4-lab,
                                 p8-lab.encounter → p4-enc

The cross links (focus, derivedFrom, encounter) join rows of different communes, so includes,
chains and ``_has`` that walked through a hidden row would show it.

Callers (rows of the matrix; ``ROLES`` below says how each token is obtained)::

    caller             token                                     sees the people of     SEES
    health_worker      password, tyt-00004, user/*.cruds         tyt-00004              p4 pc pt
    doctor             password, tyt-00004, user/*.cruds         tyt-00004              p4 pc pt
    programme_manager  password, so-04, user/*.rs                so-04 subtree          p4 ps pc pt
    specialist         password, so-08, pr-1, user/*.rs +        so-08 subtree and      pc pt p8
                       user/Observation.cu …                     its consultations
    researcher         password, moh, user/*.rs                  nobody (403)           -
    administrator      password, no Organization                 everyone               all five
    system             client_credentials, so-04, system/*.rs    so-04 subtree          p4 ps pc pt
    citizen            minted: patient/*.rs, patient=p4          p4 only                p4
    lab                minted: doctor tyt-00004,                 tyt-00004, laboratory  (p4 pc pt)
                       user/Observation.rs?category=laboratory   Observations only
    break_glass        password + purpose_of_use=ETREAT, doctor  everyone (reads)       all five

Columns: the types Patient, Observation, Encounter, Organization (directory data: visible to
every caller whose scopes name it), and system-level interactions (``*``). Interactions
(``INTERACTIONS``) — reads: read, vread, history of an instance (every probe resource of the
type, plus an unknown id), search, ``_total=accurate``, ``_summary=count``, paging (``_count=2``
followed to the end), ``_include``, ``_revinclude``, a chain, ``_has``, compartment search
(``Patient/{each}/T``), ``$everything`` (each Patient), type history, system history; writes:
create in the caller's own area / another commune's / for a consultation, update, patch and
delete of the caller's own and of a hidden resource, update/patch that moves a resource out of
the caller's area ("take"), update-as-create of another commune's resource, batch (entries
judged one by one), transaction (Patient + Observation + Encounter by ``urn:uuid``, Patient
first or last, and with another commune's Patient).

Expected outcomes (``CAN`` is the scope table, ``World.visible`` the "sees" column as a
function, ``READ_AREA``/``WRITE_AREA`` the Organization subtrees):

- type not granted by the scopes, or a researcher on a person-owned type → 403 (reads by id
  included: the type itself is denied); a compartment search also needs Patient read, system
  history a ``*`` scope;
- read / vread / instance history / ``$everything`` of a hidden resource → 404, with the same
  OperationOutcome as an unknown id;
- searches of every kind → exactly the visible rows: the administrator's answer to the same
  request filtered by ``visible``; chains and ``_has`` only through visible rows, includes only
  visible rows reached from visible matches; ``total``, ``_summary=count`` and the pages (no
  empty page, no extra page) agree with the rows; the Patients behind a search's rows are the
  caller's ``SEES`` row;
- writes inside the caller's write area → 201/200 (and the writer reads its new resource);
  outside → 403 (create, take, update-as-create, transaction as a whole), 403 or 404
  (update/patch of a hidden row); a delete of a hidden row answers word for word as a delete of
  an unknown id and deletes nothing. Every write is checked as the administrator: what was
  refused stored or changed nothing;
- every request adds exactly one AuditEvent naming the caller (with the break-the-glass policy
  exactly for the ETREAT token) and its HTTP status, checked at each request; the chain
  verifies at the end (``test_audit_trail``).

Speed: the world is built once per backend (about 2 s); cells run interaction by interaction
(all callers of one interaction in a row, reads before writes) so that the administrator's
answer to a read — the ground truth — is asked once until the next write. Password hashing is
made cheap and PostgreSQL commits do not wait for the WAL flush: neither is under test here.

Disagreements between this specification and the implementation are marked
``xfail(strict=True)`` in ``XFAIL`` with the request and the answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from argon2 import PasswordHasher
from starlette.testclient import TestClient

from songkhoe.auth import Auth, ScopeSet, passwords
from songkhoe.auth.audit import BREAK_GLASS
from songkhoe.rest import create_app

from ..conftest import pg_schema
from .conftest import PASSWORD, add_orgs, password_token

FHIR_JSON = "application/fhir+json"
MX = "urn:songkhoe:test:matrix"  # identifier system of everything the write cells create

# --- the world -----------------------------------------------------------------------------

PATIENTS = {"p4": ("tyt-00004", "Pham"), "ps": ("so-04", "Son"), "pc": ("tyt-00004", "Cao"),
            "pt": ("tyt-00004", "Ta"), "p8": ("tyt-00008", "Tran")}
UNKNOWN = "nope-404"
ORGS = ("moh", "so-04", "so-08", "tyt-00004", "tyt-00008")
#: the Organizations above each one (itself included): "in the subtree of X"
ANCESTORS = {"moh": {"moh"}, "so-04": {"so-04", "moh"}, "so-08": {"so-08", "moh"},
             "tyt-00004": {"tyt-00004", "so-04", "moh"}, "tyt-00008": {"tyt-00008", "so-08", "moh"}}
CONSULTS = {"pc", "pt"}  # people with a consultation assigned to Practitioner/pr-1
LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

ROLES = ("health_worker", "doctor", "programme_manager", "specialist", "researcher",
         "administrator", "system", "citizen", "lab", "break_glass")

#: who sees whose records, by the seeded Patients (the human-readable form of ``visible``)
SEES = {
    "health_worker": {"p4", "pc", "pt"},
    "doctor": {"p4", "pc", "pt"},
    "programme_manager": {"p4", "ps", "pc", "pt"},
    "specialist": {"pc", "pt", "p8"},
    "researcher": set(),
    "administrator": set(PATIENTS),
    "system": {"p4", "ps", "pc", "pt"},
    "citizen": {"p4"},
    "lab": {"p4", "pc", "pt"},  # their laboratory Observations only
    "break_glass": set(PATIENTS),
}

#: the Organization subtree whose people a caller reads (None: everyone) ...
READ_AREA: dict[str, str | None] = {
    "health_worker": "tyt-00004", "doctor": "tyt-00004", "programme_manager": "so-04",
    "specialist": "so-08", "researcher": "moh", "administrator": None, "system": "so-04",
    "citizen": None, "lab": "tyt-00004", "break_glass": None}
#: ... and changes (None: everyone)
WRITE_AREA = {**READ_AREA, "break_glass": "tyt-00004"}

OWNED = frozenset({"Patient", "Observation", "Encounter", "ServiceRequest", "Task"})
TYPES = ("Patient", "Observation", "Encounter", "Organization")

#: what the scopes allow (c r u d s) per caller and type; a researcher gets no person-owned
#: type at all, and only administrators and system clients write directory data. Other person-owned types go as Encounter, other directory types as Organization.
CAN = {  #                Patient  Observation Encounter Organization
    "health_worker":     ("cruds", "cruds",    "cruds",  "rs"),
    "doctor":            ("cruds", "cruds",    "cruds",  "rs"),
    "programme_manager": ("rs",    "rs",       "rs",     "rs"),
    "specialist":        ("rs",    "rscu",     "rs",     "rs"),
    "researcher":        ("",      "",         "",       "rs"),
    "administrator":     ("cruds", "cruds",    "cruds",  "cruds"),
    "system":            ("rs",    "rs",       "rs",     "rs"),
    "citizen":           ("rs",    "rs",       "rs",     "rs"),
    "lab":               ("",      "rs",       "",       ""),
    "break_glass":       ("cruds", "cruds",    "cruds",  "rs"),
}


def can(role: str, rtype: str, action: str) -> bool:
    """Whether the caller's scopes (and the researcher rule) allow ``action`` on ``rtype``."""
    column = rtype if rtype in TYPES else "Encounter" if rtype in OWNED else "Organization"
    return action in CAN[role][TYPES.index(column)]


#: the Patient / Organization a caller writes for at home and elsewhere
HOME = {role: ("p4", "tyt-00004") for role in ROLES} | {"specialist": ("p8", "tyt-00008")}
FOREIGN = {role: ("p8", "tyt-00008") for role in ROLES} | {"specialist": ("p4", "tyt-00004")}


def _coding(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _ident(value: str) -> list[dict[str, str]]:
    return [{"system": MX, "value": value}]


def _obs(pid: str, kind: str, **more: Any) -> dict[str, Any]:
    code, category = ("8480-6", "vital-signs") if kind == "vs" else ("718-7", "laboratory")
    return {"resourceType": "Observation", "id": f"{pid}-{kind}", "status": "final",
            "category": [_coding(CATEGORY, category)], "code": _coding(LOINC, code),
            "subject": {"reference": f"Patient/{pid}"}, **more}


def _encounter(pid: str, id_: str | None = None, cls: str = "AMB", **more: Any) -> dict[str, Any]:
    body = {"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls},
            "subject": {"reference": f"Patient/{pid}"}, **more}
    if id_:
        body["id"] = id_
    return body


def seed(store: Any) -> None:
    add_orgs(store)
    store.update("Practitioner", "pr-1", {"resourceType": "Practitioner", "id": "pr-1",
                                          "name": [{"family": "Le"}]})
    for pid, (org, family) in PATIENTS.items():
        store.update("Patient", pid, {
            "resourceType": "Patient", "id": pid, "name": [{"family": family, "given": ["An"]}],
            "managingOrganization": {"reference": f"Organization/{org}"}})
        store.update("Encounter", f"{pid}-enc", _encounter(pid, f"{pid}-enc"))
    store.update("Patient", "p4", {  # a second version: vread of 1 and history have two
        "resourceType": "Patient", "id": "p4", "name": [{"family": "Pham", "given": ["An"]}],
        "telecom": [{"system": "phone", "value": "0900000004"}],
        "managingOrganization": {"reference": "Organization/tyt-00004"}})
    cross = {"p4": "p8", "p8": "p4"}
    for pid in PATIENTS:
        vs: dict[str, Any] = {}
        lab: dict[str, Any] = {}
        if pid in cross:
            other = cross[pid]
            vs = {"focus": [{"reference": f"Patient/{other}"}]}
            lab = {"derivedFrom": [{"reference": f"Observation/{other}-lab"}],
                   "encounter": {"reference": f"Encounter/{other}-enc"}}
        store.update("Observation", f"{pid}-vs", _obs(pid, "vs", **vs))
        store.update("Observation", f"{pid}-lab", _obs(pid, "lab", **lab))
    store.update("ServiceRequest", "sr-c", {
        "resourceType": "ServiceRequest", "id": "sr-c", "status": "active", "intent": "order",
        "subject": {"reference": "Patient/pc"}, "performer": [{"reference": "Practitioner/pr-1"}]})
    store.update("Task", "task-t", {
        "resourceType": "Task", "id": "task-t", "status": "requested", "intent": "order",
        "for": {"reference": "Patient/pt"}, "owner": {"reference": "Practitioner/pr-1"}})


#: the resources read by id (and the first and last in a batch): every kind of Patient, and
#: both categories of Observation, across the types
PROBES = {
    "Patient": [*PATIENTS],
    "Observation": ["p4-vs", "p4-lab", "ps-lab", "pc-vs", "p8-lab"],
    "Encounter": ["p4-enc", "ps-enc", "pt-enc", "p8-enc"],
    "Organization": ["moh", "so-04", "tyt-00008"],
}
#: the Patients of compartment searches and $everything (and an unknown one)
COMPARTMENTS = ["p4", "ps", "pc", "p8", UNKNOWN]


# --- the caller's view, as a function ---------------------------------------------------------


def _ref_id(ref: Any, rtype: str) -> str | None:
    if isinstance(ref, dict):
        ref = ref.get("reference")
    if isinstance(ref, str) and ref.startswith(f"{rtype}/"):
        return ref[len(rtype) + 1:].split("/")[0]
    return None


def owners(resource: dict[str, Any]) -> list[str]:
    """The Patients a resource of the types used here belongs to (its Patient compartment)."""
    rtype = resource["resourceType"]
    if rtype == "Patient":
        return [resource["id"]]
    field_ = {"Observation": "subject", "Encounter": "subject", "ServiceRequest": "subject",
              "Task": "for"}.get(rtype)
    found = _ref_id(resource.get(field_), "Patient") if field_ else None
    return [found] if found else []


@dataclass
class Sent:
    method: str
    url: str
    status: int
    body: Any


@dataclass
class World:
    backend: str
    store: Any
    auth: Auth
    http: TestClient
    tokens: dict[str, str] = field(default_factory=dict)
    subjects: dict[str, str] = field(default_factory=dict)  # role → the token's sub
    requests: int = 0  # FHIR requests sent by the cells
    baseline: int = 0  # audit entries before the first cell
    _orgs: dict[str, str | None] = field(default_factory=dict)
    writes: int = 0  # writes so far: the administrator's answers are reused until the next
    _answers: dict[tuple[str, int], Sent] = field(default_factory=dict)

    # -- HTTP, with the audit check at every request --

    def call(self, role: str, method: str, url: str, body: Any = None,
             content_type: str = FHIR_JSON) -> Sent:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        if method != "GET":
            self.writes += 1
        content = None
        if body is not None:
            headers["content-type"] = content_type
            content = orjson.dumps(body)
        before = self._last_audit()[0]
        r = self.http.request(method, url, headers=headers, content=content)
        self.requests += 1
        seq, entry = self._last_audit()
        assert seq == before + 1, f"{method} {url}: {seq - before} AuditEvents, not one"
        assert entry["outcomeDesc"].startswith(f"HTTP {r.status_code}"), entry["outcomeDesc"]
        agent = entry["agent"][0]
        assert agent["who"]["identifier"]["value"] == self.subjects[role]
        assert (BREAK_GLASS in agent.get("policy", [])) == (role == "break_glass")
        try:
            parsed = r.json() if r.content else None
        except ValueError:
            parsed = r.text
        return Sent(method, url, r.status_code, parsed)

    def _last_audit(self) -> tuple[int, dict[str, Any]]:
        # reads are answered before their AuditEvent is committed: commit the queue first
        self.auth.audit.flush()
        row = self.auth.audit.db.one("SELECT seq, content FROM audit_log ORDER BY seq DESC LIMIT 1")
        return (int(row[0]), orjson.loads(row[1])) if row else (0, {})

    def get(self, role: str, url: str) -> Sent:
        if role != "administrator":
            return self.call(role, "GET", url)
        key = (url, self.writes)  # the ground truth, asked once between two writes
        if key not in self._answers:
            if len(self._answers) > 200:
                self._answers.clear()
            self._answers[key] = self.call(role, "GET", url)
        return self._answers[key]

    def pages(self, role: str, url: str) -> tuple[int, list[dict[str, Any]], list[int]]:
        """Follow ``next`` links: the status, every entry, and each page's entry count."""
        first = self.get(role, url)
        if first.status != 200:
            return first.status, [], []
        entries, sizes, page = [], [], first.body
        while True:
            entries += page.get("entry", [])
            sizes.append(len(page.get("entry", [])))
            nxt = next((link["url"] for link in page.get("link", [])
                        if link["relation"] == "next"), None)
            if nxt is None:
                return 200, entries, sizes
            parts = urlsplit(nxt)
            r = self.get(role, parts.path + (f"?{parts.query}" if parts.query else ""))
            assert r.status == 200, (nxt, r.body)
            page = r.body

    # -- ground truth, read without an access context (unrestricted, not audited) --

    def patient_org(self, pid: str) -> str | None:
        if pid not in self._orgs:
            try:  # a deleted Patient's history stays where it was
                versions = self.store.history("Patient", pid, count=1000).versions
            except Exception:  # unknown: no one's
                return None
            p = next((v.resource for v in versions if not v.deleted), {})
            self._orgs[pid] = _ref_id(p.get("managingOrganization"), "Organization")
        return self._orgs[pid]

    def sees_patient(self, role: str, pid: str, area: dict[str, str | None] = READ_AREA) -> bool:
        if role == "citizen":
            return pid == "p4"
        top = area[role]
        if top is None:
            return True
        org = self.patient_org(pid)
        if org is not None and top in ANCESTORS.get(org, {org}):
            return True
        return role == "specialist" and pid in CONSULTS

    def visible(self, role: str, resource: dict[str, Any], action: str = "s") -> bool:
        """Whether ``role`` may see ``resource`` (the specification, not the implementation)."""
        rtype = resource["resourceType"]
        if not can(role, rtype, action):
            return False
        if rtype not in OWNED:
            return True  # directory data
        if role == "lab":
            codes = {c.get("code") for cat in resource.get("category", [])
                     for c in cat.get("coding", [])}
            if "laboratory" not in codes:
                return False
        return any(self.sees_patient(role, pid) for pid in owners(resource))


# --- the world fixture: built once per backend ------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    from songkhoe.store import open_store

    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('matrix') / 'songkhoe.db'}"
        else:
            # no wait for the WAL flush at each commit: durability is not what this module tests
            url = stack.enter_context(pg_schema("%20-csynchronous_commit%3Doff"))
        store = open_store(url)
        stack.callback(store.close)
        seed(store)
        auth = Auth(store)
        http = stack.enter_context(TestClient(create_app(store, auth=auth),
                                              raise_server_exceptions=True))
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        # argon2 at its cheapest: password hashing is not what this module tests
        mp.setattr(passwords, "_HASHER", PasswordHasher(time_cost=1, memory_cost=8,
                                                        parallelism=1))
        w = World(request.param, store, auth, http)
        _sign_in(w)
        w.baseline = w._last_audit()[0]
        yield w


def _sign_in(w: World) -> None:
    ids = w.auth.identities
    ids.add_user("ytx", PASSWORD, "health_worker", "tyt-00004")
    ids.add_user("bacsi", PASSWORD, "doctor", "tyt-00004")
    ids.add_user("quanly", PASSWORD, "programme_manager", "so-04")
    ids.add_user("chuyengia", PASSWORD, "specialist", "so-08", practitioner="pr-1")
    ids.add_user("nghiencuu", PASSWORD, "researcher", "moh")
    ids.add_user("quantri", PASSWORD, "administrator", None)
    ids.add_client("so-04-report", secret="s3cret-s3cret", role="system", org="so-04",
                   scope="system/*.rs")
    for role, user in [("health_worker", "ytx"), ("doctor", "bacsi"),
                       ("programme_manager", "quanly"), ("specialist", "chuyengia"),
                       ("researcher", "nghiencuu"), ("administrator", "quantri")]:
        w.tokens[role] = password_token(w.http, user)["access_token"]
    w.tokens["break_glass"] = password_token(w.http, "bacsi", purpose_of_use="ETREAT",
                                             reason="matrix test")["access_token"]
    assert w.auth.verify(w.tokens["break_glass"]).break_glass
    r = w.http.post("/auth/token", data={"grant_type": "client_credentials"},
                    auth=("so-04-report", "s3cret-s3cret"))
    assert r.status_code == 200, r.text
    w.tokens["system"] = r.json()["access_token"]
    w.tokens["citizen"] = w.auth.tokens.issue(
        subject="lan", kind="user", role="citizen", org=None,
        scope=ScopeSet.parse("patient/*.rs"), client_id=None,
        extra={"patient": "p4", "fhirUser": "Patient/p4"})[0]
    w.tokens["lab"] = w.auth.tokens.issue(
        subject="bacsi-lab", kind="user", role="doctor", org="tyt-00004",
        scope=ScopeSet.parse("user/Observation.rs?category=laboratory"), client_id=None)[0]
    assert w.auth.verify(w.tokens["citizen"]).patient == "p4"
    w.subjects = {role: w.auth.verify(token).subject for role, token in w.tokens.items()}


# --- helpers ----------------------------------------------------------------------------------


def _key(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


Keyed = dict[str, dict[str, Any]]  # resources by ``Type/id``


def _split(entries: list[dict[str, Any]]) -> tuple[Keyed, Keyed]:
    """Matches and included resources of a searchset, by ``Type/id``."""
    matches, included = {}, {}
    for e in entries:
        res = e["resource"]
        if res["resourceType"] == "OperationOutcome":
            continue
        (included if e.get("search", {}).get("mode") == "include" else matches)[_key(res)] = res
    return matches, included


def _search(w: World, role: str, url: str) -> tuple[int, Keyed, Keyed, Any]:
    if "_count=" not in url:
        url += ("&" if "?" in url else "?") + "_count=1000"
    r = w.get(role, url)
    if r.status != 200:
        return r.status, {}, {}, r.body
    m, i = _split(r.body.get("entry", []))
    return 200, m, i, r.body


def _outcome_text(body: Any, id_: str) -> list[str]:
    return [(i.get("diagnostics") or "").replace(id_, "<id>") for i in body.get("issue", [])]


def _refs(resource: dict[str, Any], path: str) -> list[str]:
    value = resource.get(path)
    items = value if isinstance(value, list) else [value] if value else []
    return [i["reference"] for i in items if isinstance(i, dict) and "reference" in i]


def _expect_denied(r: Sent, cell: str) -> None:
    assert r.status == 403, f"{cell}: {r.method} {r.url} → {r.status} {r.body}"
    assert r.body["issue"][0]["code"] == "forbidden"


# --- read interactions ------------------------------------------------------------------------


def _by_id(w: World, role: str, rtype: str, suffix: str) -> None:
    """read / vread / instance history of every probe of ``rtype`` and of an unknown id."""
    unknown = w.get(role, f"/fhir/{rtype}/{UNKNOWN}{suffix}")
    for id_ in PROBES[rtype]:
        r = w.get(role, f"/fhir/{rtype}/{id_}{suffix}")
        if not can(role, rtype, "r"):
            _expect_denied(r, "type not granted")
            continue
        truth = w.store.read(rtype, id_).resource
        if w.visible(role, truth, "r"):
            assert r.status == 200, (id_, r.status, r.body)
            if r.body["resourceType"] == "Bundle":  # instance history
                assert r.body["entry"] and all(
                    e["resource"]["id"] == id_ for e in r.body["entry"] if "resource" in e)
            else:
                assert r.body["id"] == id_
        else:
            assert r.status == 404, (f"{role} {rtype}/{id_}{suffix} is hidden", r.status, r.body)
            assert _outcome_text(r.body, id_) == _outcome_text(unknown.body, UNKNOWN), \
                "a hidden resource's 404 must read like an unknown one's"
    if not can(role, rtype, "r"):  # last: the probes above are checked either way
        _expect_denied(unknown, "type not granted, unknown id")
    else:
        assert unknown.status == 404, unknown.body


def i_read(w: World, role: str, rtype: str) -> None:
    _by_id(w, role, rtype, "")


def i_vread(w: World, role: str, rtype: str) -> None:
    _by_id(w, role, rtype, "/_history/1")


def i_history_instance(w: World, role: str, rtype: str) -> None:
    _by_id(w, role, rtype, "/_history")


#: a query selecting the seeded rows of each type (write cells create rows it does not select)
BASE = {"Patient": "given=An", "Observation": "code=8480-6,718-7", "Encounter": "class=AMB",
        "Organization": "name=moh,so,tyt"}


def _expected_matches(w: World, role: str, url: str,
                      ok: Callable[[dict[str, Any]], bool] = lambda r: True) -> set[str]:
    """The administrator's matches of ``url`` that ``role`` may see (and that pass ``ok``)."""
    status, matches, _, body = _search(w, "administrator", url)
    assert status == 200, body
    return {k for k, r in matches.items() if w.visible(role, r) and ok(r)}


def _check_search(w: World, role: str, rtype: str, url: str,
                  ok: Callable[[dict[str, Any]], bool] = lambda r: True) -> tuple[Any, set[str]]:
    expected = _expected_matches(w, role, url, ok)
    status, matches, _, body = _search(w, role, url)
    if not can(role, rtype, "s"):
        assert status == 403, body
        return None, set()
    assert status == 200, body
    assert set(matches) == expected, f"{role} GET {url}"
    return body, expected


def _seeded_people(w: World, keys: set[str]) -> set[str]:
    people: set[str] = set()
    for k in keys:
        rtype, id_ = k.split("/")
        people.update(p for p in owners(w.store.read(rtype, id_).resource) if p in PATIENTS)
    return people


def i_search(w: World, role: str, rtype: str) -> None:
    body, found = _check_search(w, role, rtype, f"/fhir/{rtype}?{BASE[rtype]}")
    if body is not None and rtype in OWNED:  # the matrix's SEES column, as the server has it
        assert _seeded_people(w, found) == SEES[role]


def i_search_total(w: World, role: str, rtype: str) -> None:
    body, found = _check_search(w, role, rtype, f"/fhir/{rtype}?{BASE[rtype]}&_total=accurate")
    if body is not None:
        assert body["total"] == len(found)


def i_summary_count(w: World, role: str, rtype: str) -> None:
    url = f"/fhir/{rtype}?{BASE[rtype]}"
    expected = _expected_matches(w, role, url)
    r = w.get(role, f"{url}&_summary=count")
    if not can(role, rtype, "s"):
        _expect_denied(r, "type not granted")
        return
    assert r.status == 200 and r.body["total"] == len(expected), (r.body, expected)
    assert not [e for e in r.body.get("entry", []) if e["resource"]["resourceType"] == rtype]


def i_paging(w: World, role: str, rtype: str) -> None:
    url = f"/fhir/{rtype}?{BASE[rtype]}&_count=2"
    expected = _expected_matches(w, role, url.replace("_count=2", "_count=500"))
    status, entries, sizes = w.pages(role, url)
    if not can(role, rtype, "s"):
        assert status == 403
        return
    assert status == 200
    got = [_key(e["resource"]) for e in entries]
    assert sorted(got) == sorted(expected), (got, expected)
    assert all(sizes) or sizes == [0], f"an empty page gives hidden rows away: {sizes}"
    assert len(sizes) == max(1, -(-len(expected) // 2)), sizes


INCLUDE = {"Patient": "Patient:organization",
           "Observation": "Observation:subject&_include=Observation:focus",
           "Encounter": "Encounter:subject", "Organization": "Organization:partof"}
INCLUDE_PATHS = {"Patient": ["managingOrganization"], "Observation": ["subject", "focus"],
                 "Encounter": ["subject"], "Organization": ["partOf"]}
REVINCLUDE = {"Patient": ("Observation:focus", "focus"),
              "Observation": ("Observation:derived-from", "derivedFrom"),
              "Encounter": ("Observation:encounter", "encounter"),
              "Organization": ("Patient:organization", "managingOrganization")}


def _check_includes(w: World, role: str, rtype: str, url: str,
                    linked: Callable[[dict[str, Any], dict[str, Any]], bool]) -> None:
    status, a_matches, a_included, body = _search(w, "administrator", url)
    assert status == 200, body
    status, matches, included, body = _search(w, role, url)
    if not can(role, rtype, "s"):
        assert status == 403, body
        return
    assert status == 200, body
    want = {k for k, r in a_matches.items() if w.visible(role, r)}
    assert set(matches) == want
    pool = {**a_matches, **a_included}
    want_inc = {k for k, r in pool.items() if k not in want and w.visible(role, r, "r")
                and any(linked(m, r) for m in (pool[x] for x in want))}
    assert set(included) - set(matches) == want_inc, f"{role} GET {url}"


def i_include(w: World, role: str, rtype: str) -> None:
    paths = INCLUDE_PATHS[rtype]
    _check_includes(w, role, rtype, f"/fhir/{rtype}?{BASE[rtype]}&_include={INCLUDE[rtype]}",
                    lambda m, r: _key(r) in {ref for p in paths for ref in _refs(m, p)})


def i_revinclude(w: World, role: str, rtype: str) -> None:
    param, path = REVINCLUDE[rtype]
    _check_includes(w, role, rtype, f"/fhir/{rtype}?{BASE[rtype]}&_revinclude={param}",
                    lambda m, r: _key(m) in _refs(r, path))


def _target_visible(w: World, role: str, path: str) -> Callable[[dict[str, Any]], bool]:
    def ok(row: dict[str, Any]) -> bool:
        for ref in _refs(row, path):
            t, id_ = ref.split("/")
            if w.visible(role, w.store.read(t, id_).resource):
                return True
        return False
    return ok


#: a chain and the element it walks through (the row it reaches must be visible too)
CHAIN = {"Patient": ("organization.name=tyt&given=An", "managingOrganization"),
         "Observation": ("focus:Patient.given=An", "focus"),
         "Encounter": ("subject.family=Pham,Tran,Son&class=AMB", "subject"),
         "Organization": ("partof.name=so", "partOf")}


def i_chain(w: World, role: str, rtype: str) -> None:
    query, path = CHAIN[rtype]
    _check_search(w, role, rtype, f"/fhir/{rtype}?{query}", _target_visible(w, role, path))


#: ``_has`` and the rows that must witness it: (type, query selecting them, reference element)
HAS = {"Patient": ("Observation:focus:code=8480-6", "Observation", "code=8480-6", "focus"),
       "Observation": ("Observation:derived-from:code=718-7", "Observation", "code=718-7",
                       "derivedFrom"),
       "Encounter": ("Observation:encounter:code=718-7", "Observation", "code=718-7",
                     "encounter"),
       "Organization": ("Patient:organization:given=An", "Patient", "given=An",
                        "managingOrganization")}


def i_has(w: World, role: str, rtype: str) -> None:
    query, wtype, wquery, path = HAS[rtype]
    witnesses = [s.resource for s in w.store.search(wtype, [tuple(wquery.split("="))]).matches]
    seen = {ref for wit in witnesses if w.visible(role, wit) for ref in _refs(wit, path)}
    _check_search(w, role, rtype, f"/fhir/{rtype}?_has:{query}", lambda r: _key(r) in seen)


def i_compartment(w: World, role: str, rtype: str) -> None:
    for pid in COMPARTMENTS:
        url = f"/fhir/Patient/{pid}/{rtype}"
        expected = _expected_matches(w, role, url)
        status, matches, _, body = _search(w, role, url)
        if not (can(role, rtype, "s") and can(role, "Patient", "r")):
            assert status == 403, body
            continue
        assert status == 200, body
        assert set(matches) == expected, f"{role} GET {url}"
        if pid != UNKNOWN and not w.sees_patient(role, pid):
            assert not matches


def i_everything(w: World, role: str, rtype: str) -> None:
    for pid in COMPARTMENTS:
        url = f"/fhir/Patient/{pid}/$everything?_count=500"
        r = w.get(role, url)
        if not can(role, "Patient", "r"):
            _expect_denied(r, "type not granted")
            continue
        if pid == UNKNOWN or not w.sees_patient(role, pid):
            assert r.status == 404, (url, r.status, r.body)
            continue
        assert r.status == 200, r.body
        a = w.get("administrator", url)
        m, i = _split(a.body.get("entry", []))
        want = {k for k, res in {**m, **i}.items() if w.visible(role, res, "r")}
        got = {_key(e["resource"]) for e in r.body.get("entry", [])}
        assert got == want, f"{role} GET {url}"


def _history_keys(w: World, role: str, url: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """The resources a history answer shows, each with its newest content."""
    status, entries, _ = w.pages(role, url)
    keys: dict[str, dict[str, Any]] = {}
    for e in entries:  # newest first
        if "resource" in e:
            if not keys.get(_key(e["resource"])):
                keys[_key(e["resource"])] = e["resource"]
        else:  # a deletion: Type/id from request.url
            keys.setdefault("/".join(e["request"]["url"].split("/")[:2]), {})
    return status, keys


def _check_history(w: World, role: str, url: str, allowed: bool) -> None:
    status, admin = _history_keys(w, "administrator", url)
    assert status == 200
    assert all(admin.values()), "every resource's history has a version with content"
    status, got = _history_keys(w, role, url)
    if not allowed:
        assert status == 403
        return
    assert status == 200
    assert set(got) == {k for k, r in admin.items() if w.visible(role, r)}, f"{role} GET {url}"


def i_history_type(w: World, role: str, rtype: str) -> None:
    _check_history(w, role, f"/fhir/{rtype}/_history?_count=1000", can(role, rtype, "s"))


def i_history_system(w: World, role: str, rtype: str) -> None:
    # system history needs a scope on every type (``*``): the lab token names Observation only
    _check_history(w, role, "/fhir/_history?_count=1000", role != "lab")


# --- write interactions -----------------------------------------------------------------------


def _fresh(rtype: str, pid_or_org: str | None, tag: str) -> dict[str, Any]:
    """A new resource of ``rtype`` for the Patient (or, for a Patient, the Organization)."""
    if rtype == "Patient":
        return {"resourceType": "Patient", "identifier": _ident(tag),
                "managingOrganization": {"reference": f"Organization/{pid_or_org}"}}
    if rtype == "Observation":
        return {"resourceType": "Observation", "identifier": _ident(tag), "status": "final",
                "code": _coding("urn:matrix", "write"),
                "subject": {"reference": f"Patient/{pid_or_org}"}}
    if rtype == "Encounter":
        return _encounter(str(pid_or_org), cls="IMP", identifier=_ident(tag))
    return {"resourceType": "Organization", "identifier": _ident(tag), "name": "matrix-org"}


def _target(role: str, rtype: str, where: str) -> str | None:
    """The Patient (Organization for a Patient) a write ``where`` (home/foreign/consult) names."""
    if rtype == "Organization":
        return None
    pid, org = {"home": HOME, "foreign": FOREIGN}[where][role] if where != "consult" else ("pc", "")
    return org if rtype == "Patient" else pid


def _writable(w: World, role: str, rtype: str, action: str, where: str) -> bool:
    if not can(role, rtype, action):
        return False
    if rtype == "Organization":
        return True
    pid = {"home": HOME, "foreign": FOREIGN}[where][role][0] if where != "consult" else "pc"
    return w.sees_patient(role, pid, WRITE_AREA)


def _stored(w: World, rtype: str, tag: str) -> list[dict[str, Any]]:
    r = w.get("administrator", f"/fhir/{rtype}?identifier={MX}|{tag}")
    assert r.status == 200
    return [e["resource"] for e in r.body.get("entry", [])]


def _create(w: World, role: str, rtype: str, where: str) -> None:
    tag = uuid.uuid4().hex
    r = w.call(role, "POST", f"/fhir/{rtype}", _fresh(rtype, _target(role, rtype, where), tag))
    if _writable(w, role, rtype, "c", where):
        assert r.status == 201, (r.status, r.body)
        assert len(_stored(w, rtype, tag)) == 1
        if can(role, rtype, "r"):  # and the writer sees what it wrote
            assert w.get(role, f"/fhir/{rtype}/{r.body['id']}").status == 200
    else:
        _expect_denied(r, f"create {where}")
        assert _stored(w, rtype, tag) == [], "a refused create stored something"


def i_create(w: World, role: str, rtype: str) -> None:
    _create(w, role, rtype, "home")


def i_create_foreign(w: World, role: str, rtype: str) -> None:
    _create(w, role, rtype, "foreign")


def i_create_consult(w: World, role: str, rtype: str) -> None:
    _create(w, role, rtype, "consult")


def _existing(w: World, role: str, rtype: str, where: str) -> tuple[str, dict[str, Any]]:
    """A new resource stored directly (no access context) for an update/patch/delete cell."""
    tag = uuid.uuid4().hex
    w.writes += 1
    stored = w.store.create(_fresh(rtype, _target(role, rtype, where), tag)).stored
    return stored.id, stored.resource


def _unchanged(w: World, rtype: str, id_: str, before: dict[str, Any]) -> None:
    r = w.get("administrator", f"/fhir/{rtype}/{id_}")
    assert r.status == 200, "a refused write deleted the resource"
    assert r.body["meta"]["versionId"] == before["meta"]["versionId"], "a refused write stored"


def _update(w: World, role: str, rtype: str, where: str, how: str, take: bool = False) -> None:
    id_, before = _existing(w, role, rtype, where)
    new_owner = _target(role, rtype, "foreign") if take else None
    if how == "put":
        body = {k: v for k, v in before.items() if k != "meta"}
        body["language"] = "vi"
        if take:
            body[_OWNER_FIELD[rtype]] = {"reference": f"{_OWNER_TYPE[rtype]}/{new_owner}"}
        r = w.call(role, "PUT", f"/fhir/{rtype}/{id_}", body)
    else:
        ops: list[dict[str, Any]] = [{"op": "add", "path": "/language", "value": "vi"}]
        if take:
            ops.append({"op": "replace", "path": f"/{_OWNER_FIELD[rtype]}/reference",
                        "value": f"{_OWNER_TYPE[rtype]}/{new_owner}"})
        r = w.call(role, "PATCH", f"/fhir/{rtype}/{id_}", ops, "application/json-patch+json")
    ok = _writable(w, role, rtype, "u", where) and (
        not take or _writable(w, role, rtype, "u", "foreign"))
    if ok:
        assert r.status == 200, (r.status, r.body)
        w._orgs.pop(id_, None)  # a Patient may have moved
        after = w.get("administrator", f"/fhir/{rtype}/{id_}").body
        assert after["meta"]["versionId"] == "2" and after["language"] == "vi"
        return
    if not can(role, rtype, "u") or take:
        _expect_denied(r, f"{how} {where} take={take}")
    else:  # a hidden resource: 403 or 404, never written
        assert r.status in (403, 404), (r.status, r.body)
    _unchanged(w, rtype, id_, before)


_OWNER_FIELD = {"Patient": "managingOrganization", "Observation": "subject", "Encounter": "subject"}
_OWNER_TYPE = {"Patient": "Organization", "Observation": "Patient", "Encounter": "Patient"}


def i_update(w: World, role: str, rtype: str) -> None:
    _update(w, role, rtype, "home", "put")


def i_update_hidden(w: World, role: str, rtype: str) -> None:
    _update(w, role, rtype, "foreign", "put")


def i_update_take(w: World, role: str, rtype: str) -> None:
    _update(w, role, rtype, "home", "put", take=True)


def i_patch(w: World, role: str, rtype: str) -> None:
    _update(w, role, rtype, "home", "patch")


def i_patch_hidden(w: World, role: str, rtype: str) -> None:
    _update(w, role, rtype, "foreign", "patch")


def i_patch_take(w: World, role: str, rtype: str) -> None:
    _update(w, role, rtype, "home", "patch", take=True)


def i_update_create_foreign(w: World, role: str, rtype: str) -> None:
    """PUT to a new id (update as create) of a resource in another commune."""
    tag = uuid.uuid4().hex
    id_ = f"mx-{tag[:20]}"
    body = {**_fresh(rtype, _target(role, rtype, "foreign"), tag), "id": id_}
    r = w.call(role, "PUT", f"/fhir/{rtype}/{id_}", body)
    if _writable(w, role, rtype, "c", "foreign") or _writable(w, role, rtype, "u", "foreign"):
        assert r.status == 201, (r.status, r.body)
        return
    _expect_denied(r, "update-as-create foreign")
    assert _stored(w, rtype, tag) == []


def _delete(w: World, role: str, rtype: str, where: str) -> None:
    id_, before = _existing(w, role, rtype, where)
    r = w.call(role, "DELETE", f"/fhir/{rtype}/{id_}")
    if _writable(w, role, rtype, "d", where):
        assert r.status in (200, 204), (r.status, r.body)
        assert w.get("administrator", f"/fhir/{rtype}/{id_}").status == 410
        return
    if not can(role, rtype, "d"):
        _expect_denied(r, "delete")
    else:  # hidden: answered as for an absent resource, word for word
        assert r.status in (200, 204), (r.status, r.body)
        absent = w.call(role, "DELETE", f"/fhir/{rtype}/{UNKNOWN}")
        assert (r.status, _outcome_text(r.body, id_)) == \
            (absent.status, _outcome_text(absent.body, UNKNOWN))
    _unchanged(w, rtype, id_, before)


def i_delete(w: World, role: str, rtype: str) -> None:
    _delete(w, role, rtype, "home")


def i_delete_hidden(w: World, role: str, rtype: str) -> None:
    _delete(w, role, rtype, "foreign")


def i_batch(w: World, role: str, rtype: str) -> None:
    """A batch of reads and creates: each entry answers as the same request alone would."""
    home, foreign = uuid.uuid4().hex, uuid.uuid4().hex
    reads = PROBES[rtype][:1] + PROBES[rtype][-1:]  # p4's and p8's (or moh and tyt-00008)
    entries = [{"request": {"method": "GET", "url": f"{rtype}/{id_}"}} for id_ in reads]
    entries += [{"resource": _fresh(rtype, _target(role, rtype, where), tag),
                 "request": {"method": "POST", "url": rtype}}
                for where, tag in (("home", home), ("foreign", foreign))]
    r = w.call(role, "POST", "/fhir", {"resourceType": "Bundle", "type": "batch",
                                       "entry": entries})
    assert r.status == 200, r.body
    got = [int(e["response"]["status"].split()[0]) for e in r.body["entry"]]
    want = []
    for id_ in reads:
        truth = w.store.read(rtype, id_).resource
        want.append(403 if not can(role, rtype, "r") else
                    200 if w.visible(role, truth, "r") else 404)
    for where in ("home", "foreign"):
        want.append(201 if _writable(w, role, rtype, "c", where) else 403)
    assert got == want, (got, want)
    for tag, status in ((home, want[2]), (foreign, want[3])):
        assert len(_stored(w, rtype, tag)) == (1 if status == 201 else 0)


def _transaction(w: World, role: str, where: str, patient_last: bool) -> None:
    tag = uuid.uuid4().hex
    purl = f"urn:uuid:{uuid.uuid4()}"
    org = HOME[role][1] if where == "home" else FOREIGN[role][1]
    patient = {"fullUrl": purl, "resource": {**_fresh("Patient", org, tag)},
               "request": {"method": "POST", "url": "Patient"}}
    rest = []
    for rtype in ("Observation", "Observation", "Encounter"):
        res = _fresh(rtype, "x", tag)
        res["subject"] = {"reference": purl}
        rest.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": res,
                     "request": {"method": "POST", "url": rtype}})
    entries = [*rest, patient] if patient_last else [patient, *rest]
    r = w.call(role, "POST", "/fhir", {"resourceType": "Bundle", "type": "transaction",
                                       "entry": entries})
    ok = all(_writable(w, role, t, "c", where) for t in ("Patient", "Observation", "Encounter"))
    if where == "foreign" and role != "administrator":
        ok = False
    stored = {t: _stored(w, t, tag) for t in ("Patient", "Observation", "Encounter")}
    if ok:
        assert r.status == 200, (r.status, r.body)
        assert [len(stored[t]) for t in stored] == [1, 2, 1]
        pid = stored["Patient"][0]["id"]
        assert all(o["subject"]["reference"] == f"Patient/{pid}"
                   for t in ("Observation", "Encounter") for o in stored[t])
    else:
        _expect_denied(r, f"transaction {where}")
        assert stored == {t: [] for t in stored}, "a failed transaction stored something"


def i_transaction(w: World, role: str, rtype: str) -> None:
    _transaction(w, role, "home", patient_last=False)


def i_transaction_patient_last(w: World, role: str, rtype: str) -> None:
    _transaction(w, role, "home", patient_last=True)


def i_transaction_foreign(w: World, role: str, rtype: str) -> None:
    _transaction(w, role, "foreign", patient_last=False)


# --- the matrix -------------------------------------------------------------------------------

ALL4 = TYPES
PEOPLE = ("Patient", "Observation", "Encounter")
SYSTEM = ("*",)

#: interaction → (its check, the columns it applies to)
INTERACTIONS: dict[str, tuple[Callable[[World, str, str], None], tuple[str, ...]]] = {
    "read": (i_read, ALL4),
    "vread": (i_vread, ALL4),
    "history-instance": (i_history_instance, ALL4),
    "search": (i_search, ALL4),
    "search-total": (i_search_total, ALL4),
    "summary-count": (i_summary_count, ALL4),
    "paging": (i_paging, ALL4),
    "include": (i_include, ALL4),
    "revinclude": (i_revinclude, ALL4),
    "chain": (i_chain, ALL4),
    "has": (i_has, ALL4),
    "compartment": (i_compartment, ("Observation", "Encounter")),
    "everything": (i_everything, ("Patient",)),
    "history-type": (i_history_type, ALL4),
    "history-system": (i_history_system, SYSTEM),
    "create": (i_create, ALL4),
    "create-foreign": (i_create_foreign, PEOPLE),
    "create-consult": (i_create_consult, ("Observation",)),
    "update": (i_update, ALL4),
    "update-hidden": (i_update_hidden, PEOPLE),
    "update-take": (i_update_take, PEOPLE),
    "update-create-foreign": (i_update_create_foreign, PEOPLE),
    "patch": (i_patch, ALL4),
    "patch-hidden": (i_patch_hidden, PEOPLE),
    "patch-take": (i_patch_take, PEOPLE),
    "delete": (i_delete, ALL4),
    "delete-hidden": (i_delete_hidden, PEOPLE),
    "batch": (i_batch, ALL4),
    "transaction": (i_transaction, SYSTEM),
    "transaction-patient-last": (i_transaction_patient_last, SYSTEM),
    "transaction-foreign": (i_transaction_foreign, SYSTEM),
}

#: (role, column, interaction) → why the implementation disagrees with the specification
#: cells known to disagree with the spec: (caller, column, interaction) → the request and the
#: answer (none at present)
XFAIL: dict[tuple[str, str, str], str] = {}


def _cases() -> list[Any]:
    """Every cell; all callers of one interaction in a row, reads before writes (the
    administrator's answer to a read is then asked once for all callers)."""
    cases = []
    for name, (_, columns) in INTERACTIONS.items():
        for column in columns:
            for role in ROLES:
                marks = []
                reason = XFAIL.get((role, column, name))
                if reason:
                    marks.append(pytest.mark.xfail(strict=True, reason=reason))
                cases.append(pytest.param(role, column, name, marks=marks,
                                          id=f"{role}-{column}-{name}"))
    return cases


@pytest.mark.parametrize(("role", "column", "interaction"), _cases())
def test_matrix(world: World, role: str, column: str, interaction: str) -> None:
    INTERACTIONS[interaction][0](world, role, column)


def test_audit_trail(world: World) -> None:
    """Every request of the cells left exactly one AuditEvent, and the chain holds."""
    entries = world.auth.audit.entries()
    assert len(entries) == world._last_audit()[0]
    assert len(entries) - world.baseline == world.requests
    assert world.auth.audit.verify() is None
