"""The web app's server side behind the real guard, on both backends: which routes are public,
cookie sessions with CSRF and refresh, the shell and its assets, registering a person
(citizen ID checks, duplicates), the interim indicators and who may read them."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from starlette.testclient import TestClient

from songkhoe.auth import Auth
from songkhoe.programs.apply import Online
from songkhoe.programs.checkup import record
from songkhoe.programs.cli import definitions
from songkhoe.rest import create_app
from songkhoe.web.app import routes
from songkhoe.web.citizen_id import problems
from songkhoe.web.indicators import periods

PASSWORD = "correct horse battery"
PROGRAMMES = definitions()
TODAY = date(2026, 11, 23)


def add_orgs(store: Any) -> None:
    for id_, parent in [("moh", None), ("so-a", "moh"), ("so-c", "moh"), ("tyt-a", "so-a"),
                        ("tyt-b", "so-a"), ("tyt-c", "so-c")]:
        body: dict[str, Any] = {"resourceType": "Organization", "id": id_,
                                "name": f"Trạm {id_}"}
        if parent:
            body["partOf"] = {"reference": f"Organization/{parent}"}
        store.update("Organization", id_, body)


def person(store: Any, id_: str, org: str, born: str = "1965-03-01", gender: str = "male",
           name: str = "Lê Văn Tám") -> None:
    family, _, given = name.partition(" ")
    store.update("Patient", id_, {
        "resourceType": "Patient", "id": id_, "gender": gender, "birthDate": born,
        "name": [{"text": name, "family": family, "given": given.split()}],
        "managingOrganization": {"reference": f"Organization/{org}"}})


@pytest.fixture
def setup(store: Any) -> tuple[Any, Auth]:
    store.derive = Online(PROGRAMMES)
    add_orgs(store)
    auth = Auth(store)
    for user, role, org in [("ytx-a", "health_worker", "tyt-a"), ("ytx-b", "health_worker",
                            "tyt-b"), ("quanly", "programme_manager", "so-a")]:
        auth.identities.add_user(user, PASSWORD, role, org)
    return store, auth


@pytest.fixture
def http(setup: tuple[Any, Auth]) -> Iterator[TestClient]:
    store, auth = setup
    app = create_app(store, auth=auth, extra_routes=routes(store, PROGRAMMES))
    with TestClient(app) as client:
        yield client


def sign_in(http: TestClient, user: str = "ytx-a") -> str:
    """Sign in as the browser does; the CSRF token to send with changes."""
    assert http.get("/app/").status_code == 200
    csrf = http.cookies["sk_csrf"]
    answer = http.post("/app/session", data={"username": user, "password": PASSWORD},
                       headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 200, answer.text
    return str(http.cookies["sk_csrf"])


def bearer(http: TestClient, user: str) -> dict[str, str]:
    token = http.post("/auth/token", data={"grant_type": "password", "username": user,
                                           "password": PASSWORD}).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


# --- public routes ----------------------------------------------------------------------------


def test_only_the_shell_assets_and_sign_in_are_public(http: TestClient) -> None:
    """A walk of the route table: the app API needs a token, the web app's own routes and the
    FHIR/auth public routes do not."""
    public_prefixes = ("/app", "/health", "/auth/", "/fhir/metadata", "/fhir/.well-known/")
    seen = set()
    for route in http.app.routes:  # type: ignore[attr-defined]
        path = route.path.replace("{path:path}", "people/x").replace("{version}", "v1") \
            .replace("{patient}", "pa").replace("{kind}", "due")
        for method in ("GET", "POST"):
            status = http.request(method, path, headers={"Accept": "application/json"}
                                  ).status_code
            if path == "/" or path.startswith(public_prefixes):
                seen.add(path)
                assert status != 401, (method, path)
            else:
                assert status == 401, (method, path, status)
    assert {"/", "/app", "/app/people/x", "/app/session", "/app/logout",
            "/app/static/v1/people/x"} <= seen
    api = [r.path for r in http.app.routes if r.path.startswith("/api/")]  # type: ignore[attr-defined]
    assert {"/api/me", "/api/people", "/api/indicators", "/api/checkups"} <= set(api)


# --- sessions ---------------------------------------------------------------------------------


def test_sign_in_sets_http_only_cookies_and_the_api_answers_by_cookie(http: TestClient) -> None:
    http.get("/app/")
    refused = http.post("/app/session", data={"username": "ytx-a", "password": PASSWORD})
    assert refused.status_code == 403  # no CSRF header: not even a sign-in
    csrf = http.cookies["sk_csrf"]
    answer = http.post("/app/session", data={"username": "ytx-a", "password": PASSWORD},
                       headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 200 and answer.json()["role"] == "health_worker"
    cookies = answer.headers.get_list("set-cookie")
    access = next(c for c in cookies if c.startswith("sk_access="))
    assert "HttpOnly" in access and "SameSite=Strict" in access and "Path=/" in access
    assert any(c.startswith("sk_refresh=") and "HttpOnly" in c for c in cookies)
    csrf_cookie = next(c for c in cookies if c.startswith("sk_csrf="))
    assert "HttpOnly" not in csrf_cookie  # the page's script reads it
    me = http.get("/api/me").json()
    assert me["user"] == "ytx-a" and me["org"] == "tyt-a" and me["org_level"] == "commune"
    assert http.get("/fhir/Organization/tyt-a").status_code == 200
    wrong = http.post("/app/session", data={"username": "ytx-a", "password": "nope"},
                      headers={"X-CSRF-Token": http.cookies["sk_csrf"]})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"


def test_changes_by_cookie_need_the_csrf_header(setup: tuple[Any, Auth],
                                                http: TestClient) -> None:
    store, auth = setup
    person(store, "pa", "tyt-a")
    csrf = sign_in(http)
    body = {"patient": "pa", "date": "2026-11-20", "values": {"sbp": 120, "dbp": 80}}
    assert http.post("/api/checkups", json=body).status_code == 403
    assert http.post("/api/checkups", json=body,
                     headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert http.post("/api/checkups", json=body, headers={
        "X-CSRF-Token": csrf, "Origin": "https://evil.example"}).status_code == 403
    assert not store.search("Observation", [("_count", "1")]).matches
    refusals = [e for e in auth.audit.entries() if "X-CSRF-Token" in str(e)]
    assert len(refusals) == 3  # each refusal audited
    done = http.post("/api/checkups", json=body, headers={"X-CSRF-Token": csrf})
    assert done.status_code == 201, done.text
    # a bearer client is not affected: no cookie session, no CSRF
    other = TestClient(http.app)
    assert other.post("/api/checkups", json=body, headers=bearer(other, "ytx-a")
                      ).status_code == 201


def test_an_expiring_access_token_is_refreshed_from_the_cookie(store: Any) -> None:
    store.derive = Online(PROGRAMMES)
    add_orgs(store)
    auth = Auth(store, access_ttl=10)  # always within the 15 s the middleware refreshes ahead
    auth.identities.add_user("ytx-a", PASSWORD, "health_worker", "tyt-a")
    with TestClient(create_app(store, auth=auth, extra_routes=routes(store, PROGRAMMES))
                    ) as http:
        sign_in(http)
        first_access, first_refresh = http.cookies["sk_access"], http.cookies["sk_refresh"]
        answer = http.get("/api/me")
        assert answer.status_code == 200
        assert any(c.startswith("sk_access=") for c in answer.headers.get_list("set-cookie"))
        assert http.cookies["sk_access"] != first_access
        assert http.cookies["sk_refresh"] != first_refresh  # rotated
        # sign out: both revoked and cleared; the old cookies no longer work
        csrf = http.cookies["sk_csrf"]
        old = dict(http.cookies)
        assert http.post("/app/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert "sk_access" not in http.cookies
        http.cookies.update(old)
        gone = http.get("/api/me")
        assert gone.status_code == 401
        assert any(c.startswith("sk_refresh=;") for c in gone.headers.get_list("set-cookie"))


@pytest.mark.parametrize("access_left", [0, 10])
def test_two_server_processes_refreshing_one_session_do_not_sign_it_out(
        store: Any, access_left: int) -> None:
    """A page's requests reach two server processes at once, both with the expiring session:
    the first refreshes it; the second is refused without revoking anything and leaves the
    cookies alone — it goes on with the old access token while that has not expired, else it
    answers 401 marked ``X-Session-Refreshing`` (the page sends it again). With the first
    one's new cookies the session goes on."""
    add_orgs(store)
    # an access token of ``access_left`` seconds: always within the 15 s refreshed ahead
    processes = [Auth(store, access_ttl=access_left) for _ in range(2)]
    processes[0].identities.add_user("ytx-a", PASSWORD, "health_worker", "tyt-a")
    apps = [create_app(store, auth=a, extra_routes=routes(store, PROGRAMMES)) for a in processes]
    with TestClient(apps[0]) as first, TestClient(apps[1]) as second:
        sign_in(first)
        second.cookies.update(first.cookies)
        assert first.get("/api/me").status_code == 200  # refreshed and rotated here
        lost = second.get("/api/me")
        assert not lost.headers.get_list("set-cookie")
        if access_left:
            assert lost.status_code == 200 and "x-session-refreshing" not in lost.headers
        else:
            assert lost.status_code == 401
            assert lost.headers.get("x-session-refreshing") == "1"
        second.cookies.update(first.cookies)  # one browser: one cookie jar
        assert second.get("/api/me").status_code == 200
        first.cookies.update(second.cookies)
        assert first.get("/api/me").status_code == 200


# --- the shell and its assets -----------------------------------------------------------------


def test_the_shell_and_versioned_assets(http: TestClient) -> None:
    page = http.get("/app/people/abc/checkup")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    start = html.index("/app/static/") + len("/app/static/")
    version = html[start:html.index("/", start)]
    assert f'<script type="module" src="/app/static/{version}/js/main.js">' in html
    assert f'rel="modulepreload" href="/app/static/{version}/js/pages/checkup.js"' in html
    js = http.get(f"/app/static/{version}/js/main.js", headers={"Accept-Encoding": "gzip"})
    assert js.status_code == 200 and js.headers["content-encoding"] == "gzip"
    assert "immutable" in js.headers["cache-control"]
    assert js.headers["content-type"].startswith("text/javascript")
    stale = http.get("/app/static/0000/js/main.js")
    assert stale.status_code == 200 and stale.headers["cache-control"] == "no-cache"
    assert http.get(f"/app/static/{version}/js/nothing.js").status_code == 404
    assert http.get(f"/app/static/{version}/i18n/vi.json").json()["app.name"] == "Sống khỏe"
    assert http.get("/", follow_redirects=False).headers["location"] == "/app/"


def test_the_front_end_stays_small() -> None:
    from songkhoe.web.shell import STATIC

    size = sum(p.stat().st_size for p in STATIC.rglob("*") if p.suffix in (".js", ".css"))
    assert size < 100_000, size


def test_message_catalogs_have_the_same_keys() -> None:
    import json

    from songkhoe.web.shell import STATIC

    vi = json.loads((STATIC / "i18n" / "vi.json").read_text())
    en = json.loads((STATIC / "i18n" / "en.json").read_text())
    assert vi.keys() == en.keys()


# --- registering a person ---------------------------------------------------------------------


@pytest.mark.parametrize("number, year, gender, codes", [
    ("001065012345", 1965, "male", []),
    ("001165012345", 1965, "female", []),
    ("079301012345", 2001, "female", []),
    ("001065012345", 1966, "male", ["birth-year"]),
    ("001065012345", 1965, "female", ["sex"]),
    ("003065012345", 1965, "male", ["province"]),
    ("001765012345", 1965, "male", ["century"]),
    ("00106501234", 1965, "male", ["format"]),
    ("0010650123ab", 1965, "male", ["format"]),
])
def test_citizen_id_checks(number: str, year: int, gender: str, codes: list[str]) -> None:
    assert [p[0] for p in problems(number, year, gender)] == codes


def test_register_checks_the_citizen_id_and_warns_of_duplicates(
        setup: tuple[Any, Auth], http: TestClient) -> None:
    store, _ = setup
    me = bearer(http, "ytx-a")
    form = {"name": "Nguyễn Thị Lan", "gender": "female", "birthDate": "1970-05-02",
            "cccd": "001170123456", "phone": "+84 912 345 678"}
    bad = http.post("/api/people", json={**form, "gender": "male"}, headers=me)
    assert bad.status_code == 422
    assert [(i["expression"], i["diagnostics"][-5:]) for i in bad.json()["issue"]] == \
        [(["cccd"], "[sex]")]
    missing = http.post("/api/people", json={"gender": "x"}, headers=me).json()["issue"]
    assert {i["expression"][0] for i in missing} == {"name", "gender", "birthDate"}
    made = http.post("/api/people", json=form, headers=me)
    assert made.status_code == 201, made.text
    patient = store.read("Patient", made.json()["id"]).resource
    assert patient["managingOrganization"]["reference"] == "Organization/tyt-a"
    assert patient["telecom"][0]["value"] == "0912345678"
    assert patient["identifier"][0] == {**patient["identifier"][0], "system": "urn:vn:cccd",
                                        "value": "001170123456"}
    assert patient["name"][0]["family"] == "Nguyễn" and patient["name"][0]["given"] == \
        ["Thị", "Lan"]
    # the programmes engine derived their status in the same transaction
    assert http.get(f"/api/people/{patient['id']}/programmes", headers=me).json()["status"]

    same_id = http.post("/api/people", json={**form, "name": "Nguyen Thi Lan Anh"}, headers=me)
    assert same_id.status_code == 409 and same_id.json()["duplicate"] == "cccd"
    assert http.post("/api/people", json={**form, "confirm": True},
                     headers=me).status_code == 409  # the same citizen ID cannot be confirmed
    unaccented = {k: v for k, v in form.items() if k != "cccd"} | {"name": "nguyen thi lan"}
    similar = http.post("/api/people", json=unaccented, headers=me)
    assert similar.status_code == 409 and similar.json()["duplicate"] == "similar"
    assert similar.json()["candidates"][0]["id"] == patient["id"]
    assert http.post("/api/people", json={**unaccented, "confirm": True},
                     headers=me).status_code == 201
    # another commune's worker sees no such person (hidden is absent): no warning
    other = http.post("/api/people", json=unaccented, headers=bearer(http, "ytx-b"))
    assert other.status_code == 201
    assert store.read("Patient", other.json()["id"]).resource["managingOrganization"] == \
        {"reference": "Organization/tyt-b"}


# --- indicators -------------------------------------------------------------------------------


def test_periods() -> None:
    months = periods("month", TODAY)
    assert [p.key for p in months][-2:] == ["2026-10", "2026-11"] and len(months) == 12
    assert months[0].key == "2025-12" and months[-1].end == TODAY
    quarters = periods("quarter", date(2026, 2, 10))
    assert [p.key for p in quarters][-3:] == ["2025-Q3", "2025-Q4", "2026-Q1"]
    assert quarters[-2].start == date(2025, 10, 1) and quarters[-2].end == date(2025, 12, 31)
    assert [p.key for p in periods("year", TODAY)] == ["2024", "2025", "2026"]


def test_indicators_count_people_by_unit_and_period(setup: tuple[Any, Auth],
                                                    http: TestClient) -> None:
    store, _ = setup
    for i, org in enumerate(["tyt-a", "tyt-a", "tyt-a", "tyt-b", "tyt-c"]):
        person(store, f"p{i}", org, born=f"{1950 + i}-01-01")
    person(store, "child", "tyt-a", born="2015-01-01")
    checkups = [("p0", "2026-03-10", 150, 95), ("p0", "2026-11-02", 128, 82),
                ("p1", "2026-11-05", 118, 76), ("p3", "2025-06-01", 170, 100),
                ("p4", "2026-11-01", 160, 100)]
    for patient, day, sbp, dbp in checkups:
        record(store, PROGRAMMES, patient, date.fromisoformat(day),
               {"sbp": sbp, "dbp": dbp})
    manager = bearer(http, "quanly")
    body = http.get("/api/indicators?period=year&today=2026-11-23", headers=manager).json()
    assert body["org"] == {**body["org"], "id": "so-a", "level": "province", "parent": None}
    assert [p["key"] for p in body["periods"]] == ["2024", "2025", "2026"]
    units = {u["id"]: u for u in body["units"]}
    assert set(units) == {"tyt-a", "tyt-b"}  # not tyt-c: another province
    a26, b25 = units["tyt-a"]["series"][2], units["tyt-b"]["series"][1]
    assert a26["adults"] == 3  # the child is not counted
    assert (a26["screened"], a26["bp_measured"], a26["bp_raised"]) == (2, 2, 0)  # latest wins
    assert a26["coverage"] == 66.7 and a26["raised"] == 0.0
    assert (b25["screened"], b25["bp_raised"], b25["raised"]) == (1, 1, 100.0)
    assert body["org"]["series"][2]["adults"] == 4 and body["org"]["series"][2]["screened"] == 2
    month = http.get("/api/indicators?period=month&org=tyt-a&today=2026-11-23",
                     headers=manager).json()
    assert month["org"]["level"] == "commune" and month["org"]["parent"] == "so-a"
    assert [u["id"] for u in month["units"]] == ["tyt-a"]
    march = [p["key"] for p in month["periods"]].index("2026-03")
    assert month["units"][0]["series"][march]["bp_raised"] == 1

    csv_answer = http.get("/api/indicators?period=year&today=2026-11-23&format=csv",
                          headers=manager)
    assert csv_answer.headers["content-disposition"].startswith("attachment;")
    text = csv_answer.content.decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text[1:])))
    row = next(r for r in rows if r["Mã đơn vị"] == "tyt-a" and r["Kỳ"] == "2026")
    assert row["Đã khám định kỳ"] == "2" and row["Độ bao phủ (%)"] == "66.7"

    worker = bearer(http, "ytx-a")
    assert http.get("/api/indicators?org=so-a", headers=worker).status_code == 404
    assert http.get("/api/indicators?org=tyt-c", headers=manager).status_code == 404
    mine = http.get("/api/indicators", headers=worker).json()
    assert mine["org"]["id"] == "tyt-a" and mine["org"]["parent"] is None
    assert http.get("/api/indicators?level=nation&org=so-a",
                    headers=manager).status_code == 400
    assert http.get("/api/indicators?period=week", headers=manager).status_code == 400


def test_indicators_read_the_results_once_per_day_and_change(
        setup: tuple[Any, Auth], http: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The three grains share one per-person base; a check-up saved later is counted, the
    base built again for that one person only."""
    from songkhoe.analytics import indicators as ind

    built: list[tuple[date, int]] = []  # each build: its day and the people it read
    prepare = ind.prepare

    def counted_prepare(engine: Any, as_of: date, epoch: int | None = None) -> ind.Base:
        people = engine.con.execute("SELECT COUNT(*) FROM patient").fetchone()[0]
        built.append((as_of, people))
        return prepare(engine, as_of, epoch)

    monkeypatch.setattr(ind, "prepare", counted_prepare)
    store, _ = setup
    for i in range(2):
        person(store, f"q{i}", "tyt-a", born="1960-01-01")
    record(store, PROGRAMMES, "q0", date(2026, 11, 2), {"sbp": 120, "dbp": 80})
    manager = bearer(http, "quanly")

    def screened(period: str) -> int:
        body = http.get(f"/api/indicators?period={period}&org=tyt-a&today=2026-11-23",
                        headers=manager).json()
        return int(body["units"][0]["series"][-1]["screened"])

    assert [screened(p) for p in ("year", "quarter", "month")] == [1, 1, 1]
    assert built == [(date(2026, 11, 23), 2)]
    record(store, PROGRAMMES, "q1", date(2026, 11, 5), {"sbp": 150, "dbp": 95})
    assert [screened(p) for p in ("year", "month")] == [2, 2]
    assert built == [(date(2026, 11, 23), 2), (date(2026, 11, 23), 1)]


def test_hearts_control_counts_registered_patients(setup: tuple[Any, Auth],
                                                   http: TestClient) -> None:
    store, _ = setup
    for i in range(4):
        person(store, f"h{i}", "tyt-a", born="1955-01-01")
        store.update("Condition", f"c{i}", {
            "resourceType": "Condition", "id": f"c{i}",
            "subject": {"reference": f"Patient/h{i}"}, "recordedDate": "2026-01-15",
            "onsetDateTime": "2026-01-15",
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active"}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}]}})
    for patient, day, sbp, dbp in [("h0", "2026-10-01", 130, 80), ("h1", "2026-10-20", 150, 85),
                                   ("h2", "2026-05-01", 120, 70)]:
        record(store, PROGRAMMES, patient, date.fromisoformat(day), {"sbp": sbp, "dbp": dbp})
    body = http.get("/api/indicators?period=year&org=tyt-a&today=2026-11-23",
                    headers=bearer(http, "quanly")).json()
    now = body["units"][0]["series"][-1]
    registered = now["htn_registered"]
    assert registered == 4, now
    assert (now["htn_controlled"], now["htn_uncontrolled"], now["htn_no_visit"]) == (1, 1, 2)
    assert now["controlled"] == 25.0
