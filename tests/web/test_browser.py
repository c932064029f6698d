"""The web app in a real browser: Debian's headless Chromium driven by Playwright, against a
real ``songkhoe serve --demo`` process (authentication, audit, the programmes engine).

The journey of the issue: a commune health worker signs in, finds a person typed without
diacritics, is warned that a person already exists, registers a new one (citizen ID checked
against birth year and sex), records a check-up with blood pressure 165/100 and sees its
classification and referral at once, finds the person on the referral worklist and records
a call outcome; the province manager's dashboard then counts them, down to the commune, and
its CSV downloads. Then every main screen is loaded fresh at phone (390×844) and desktop
(1366×768) size: a screenshot of each goes to ``build/screenshots/`` and the time from
navigation start to the page's ready marker (``main.js`` sets ``body[data-ready]`` and
``window.__ready`` once the page has rendered its data) to ``build/web-timings.json``;
each page must be interactive in under a second (median of 3 loads).

The demo population is ``SONGKHOE_WEB_DEMO_PEOPLE`` people in ``SONGKHOE_WEB_DEMO_COMMUNES``
communes (default 1000 in 3, to keep the run short; ``serve --demo`` itself loads 3000 in 5).
Chromium is ``/usr/bin/chromium`` (``scripts/install --test`` installs it; never
``playwright install``); without it or Playwright the tests are skipped with the reason.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import statistics
import time
import unicodedata
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import ServerProcess

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 768}
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"
TIMINGS = ROOT / "build" / "web-timings.json"
PEOPLE = int(os.environ.get("SONGKHOE_WEB_DEMO_PEOPLE", "1000"))
COMMUNES = int(os.environ.get("SONGKHOE_WEB_DEMO_COMMUNES", "3"))
READY_MS = 1000

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                               "(bash scripts/install --test)")
if not shutil.which(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (scripts/install --test does)",
                allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    where = tmp_path_factory.mktemp("web")
    proc = ServerProcess(f"sqlite:///{where / 'demo.db'}", secure=True,
                         demo=(PEOPLE, COMMUNES), output=where / "serve.log").start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def users(server: ServerProcess) -> dict[str, str]:
    """The demo users' passwords, as ``serve --demo`` printed them."""
    return {m.group(1): m.group(2) for m in
            re.finditer(r"^\s+(\S+-demo)\s+(\S+)\s", server.printed(), re.MULTILINE)}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def token(server: ServerProcess, username: str, password: str) -> str:
    r = httpx.post(f"{server.origin}/auth/token", data={
        "grant_type": "password", "username": username, "password": password})
    r.raise_for_status()
    return str(r.json()["access_token"])


def fold(text: str) -> str:
    """Vietnamese without diacritics, as people type it: Nguyễn Đức → nguyen duc."""
    text = text.replace("Đ", "D").replace("đ", "d")
    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if unicodedata.category(c) != "Mn").lower()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    page.screenshot(path=str(SHOTS / f"{name}-{size['width']}x{size['height']}.png"),
                    full_page=True)


def ready(page: Any, name: str, timeout: float = 15_000) -> float:
    """Wait for the page's ready marker; milliseconds from navigation start to it."""
    page.wait_for_selector(f"body[data-ready='{name}']", timeout=timeout)
    return float(page.evaluate("window.__ready.at"))


def sign_in(page: Any, server: ServerProcess, username: str, password: str,
            landing: str) -> None:
    page.goto(f"{server.origin}/app/")
    ready(page, "login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.press("#password", "Enter")  # Enter on the last field submits
    ready(page, landing)


def cccd(birth: date, male: bool, serial: int) -> str:
    digit = 2 * (birth.year // 100 - 19) + (0 if male else 1)
    return f"001{digit}{birth.year % 100:02d}{serial:06d}"


STATE: dict[str, Any] = {}


def test_health_worker_journey(server: ServerProcess, users: dict[str, str],
                               browser: Any) -> None:
    worker = token(server, "ytx-demo", users["ytx-demo"])
    existing = httpx.get(f"{server.base}/Patient?_count=1&birthdate=le2000",
                         headers={"Authorization": f"Bearer {worker}"}).json()["entry"][0][
        "resource"]
    name = existing["name"][0]["text"]
    me = httpx.get(f"{server.origin}/api/me", headers={"Authorization": f"Bearer {worker}"}).json()
    STATE["org"], STATE["org_name"] = me["org"], me["org_name"]
    STATE["before"] = commune_year(server, users)
    context = browser.new_context(viewport=PHONE, locale="vi-VN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(f"{server.origin}/app/")
    ready(page, "login")
    assert page.url.startswith(f"{server.origin}/app/login")
    assert page.locator("html").get_attribute("lang") == "vi"
    shot(page, "login")
    sign_in(page, server, "ytx-demo", users["ytx-demo"], "home")

    # find a person by their name typed without diacritics, plus the birth year
    page.fill("#q", f"{fold(name)} {existing['birthDate'][:4]}")
    page.press("#q", "Enter")
    ready(page, "search")
    results = page.locator("#results li")
    assert results.count() >= 1
    assert name in page.locator("#results").inner_text()
    shot(page, "search")

    # registering them again: a warning with the candidate, not a second record
    page.goto(f"{server.origin}/app/people/new")
    ready(page, "register")
    born = date.fromisoformat(existing["birthDate"])
    page.fill("#name", name)
    page.fill("#birthDate", born.strftime("%d/%m/%Y"))
    page.check(f"input[name=gender][value={existing['gender']}]")
    page.click("#register-submit")
    page.wait_for_selector("#register-anyway")
    assert name in page.locator("#duplicates").inner_text()

    # a new person: the citizen ID must agree with birth year and sex
    page.goto(f"{server.origin}/app/people/new")
    ready(page, "register")
    new_born = date(1961, 7, 14)
    page.fill("#name", "Trần Thị Hồng Nhung")
    page.fill("#birthDate", "14/07/1961")
    page.check("input[name=gender][value=female]")
    page.fill("#cccd", cccd(new_born, male=True, serial=987654))  # the male digit
    page.press("#cccd", "Tab")
    assert "giới tính" in page.locator("#cccd-error").inner_text()
    page.click("#register-submit")
    assert page.locator("#cccd").get_attribute("aria-invalid") == "true"
    page.fill("#cccd", cccd(new_born, male=False, serial=987654))
    page.fill("#phone", "0912 345 678")
    shot(page, "register")
    page.click("#register-submit")
    ready(page, "person")
    patient = page.url.rsplit("/", 1)[1]
    STATE["patient"] = patient
    assert "Trần Thị Hồng Nhung" in page.locator("h1").inner_text()

    # the check-up, entered from the paper record of a visit 35 days ago: BP 165/100
    page.click("#start-checkup")
    ready(page, "checkup")
    visit = date.today() - timedelta(days=35)
    STATE["visit"] = visit
    page.fill("#date", visit.isoformat())
    page.fill("#f-sbp", "165")
    page.press("#f-sbp", "Enter")  # Enter moves to the next field
    assert page.evaluate("document.activeElement.id") == "f-dbp"
    page.keyboard.type("100")
    page.fill("#f-weight", "62")
    page.fill("#f-height", "155")
    assert page.input_value("#f-bmi") == "25,8"  # computed as typed, vi-VN decimal comma
    page.fill("#f-heart_rate", "400")
    page.press("#f-heart_rate", "Tab")
    assert page.locator("#e-heart_rate").inner_text()  # outside the plausible range
    page.fill("#f-heart_rate", "78")
    started = time.perf_counter()
    page.click("#checkup-save")
    page.wait_for_selector("#outcome-results")
    STATE["save_ms"] = round((time.perf_counter() - started) * 1000)  # click → results shown
    results_text = page.locator("#outcome-results").inner_text()
    assert "165/100" in results_text and "THA độ 2" in results_text
    referral = page.locator("#outcome-referral").inner_text()
    assert "Huyết áp cao khi sàng lọc" in referral
    shot(page, "checkup-result")

    # the printable result sheet, in Vietnamese
    page.click("#print-sheet")
    ready(page, "result")
    assert "PHIẾU KẾT QUẢ KHÁM SỨC KHỎE" in page.locator("h1").inner_text()
    assert "165/100" in page.locator("#result-sheet").inner_text()
    shot(page, "result")

    # the person's page shows the referral and the chart
    page.goto(f"{server.origin}/app/people/{patient}")
    ready(page, "person")
    assert "Huyết áp cao khi sàng lọc" in page.locator("#referral-list").inner_text()
    assert page.locator("svg.chart").count() >= 1
    shot(page, "person")

    # the referral window (28 days) has passed: the positive screen without follow-up
    page.goto(f"{server.origin}/app/worklists/referral?programme=hypertension-screening")
    ready(page, "worklist")
    row = page.locator(f"#worklist li[data-patient='{patient}']")
    while row.count() == 0 and page.locator("text=Xem thêm").count():
        page.click("text=Xem thêm")
        page.wait_for_timeout(300)
    assert row.count() == 1
    shot(page, "worklist")
    row.locator("button[data-outcome='agreed-to-return']").click()
    page.wait_for_selector(f"li.done[data-patient='{patient}']", timeout=10_000)
    assert "Đã ghi" in row.inner_text()
    tasks = httpx.get(f"{server.base}/Task?patient={patient}",
                      headers={"Authorization": f"Bearer {worker}"}).json()
    assert tasks["entry"][0]["resource"]["businessStatus"]["coding"][0]["code"] == \
        "agreed-to-return"

    # English on request, Vietnamese again
    page.click("button[lang=en]")
    ready(page, "worklist")
    assert page.locator("html").get_attribute("lang") == "en"
    assert "Worklists" in page.locator("h1").inner_text()
    page.click("button[lang=vi]")
    ready(page, "worklist")
    assert page.locator("html").get_attribute("lang") == "vi"
    assert not errors, errors
    context.close()


def commune_year(server: ServerProcess, users: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The worker's commune's yearly indicators, by year, as the manager's API answers."""
    manager = token(server, "quanly-demo", users["quanly-demo"])
    body = httpx.get(f"{server.origin}/api/indicators?period=year",
                     headers={"Authorization": f"Bearer {manager}"}).json()
    unit = next(u for u in body["units"] if u["id"] == STATE["org"])
    return {p["key"]: unit["series"][k] for k, p in enumerate(body["periods"])}


def test_manager_dashboard_counts_them(server: ServerProcess, users: dict[str, str],
                                       browser: Any, tmp_path: Path) -> None:
    assert "patient" in STATE, "runs after the health worker's journey"
    year = str(STATE["visit"].year)
    before, after = STATE["before"][year], commune_year(server, users)[year]
    # one more registered adult, checked up, with a blood pressure ≥ 140/90
    for key in ("adults", "screened", "bp_measured", "bp_raised"):
        assert after[key] == before[key] + 1, (key, before, after)

    context = browser.new_context(viewport=PHONE, accept_downloads=True)
    page = context.new_page()
    sign_in(page, server, "quanly-demo", users["quanly-demo"], "dashboard")
    shot(page, "dashboard-province")
    page.select_option("#period", "year")
    ready(page, "dashboard")
    row = page.locator("#units tbody tr", has_text=STATE["org_name"])
    assert row.count() == 1
    cells = row.locator("td")
    assert cells.nth(1).inner_text().replace(".", "") == str(after["screened"])
    with page.expect_download() as download:
        page.click("#csv")
    path = tmp_path / "indicators.csv"
    download.value.save_as(str(path))
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    head = rows[0]
    mine = [dict(zip(head, r, strict=True)) for r in rows[1:]
            if r[head.index("Mã đơn vị")] == STATE["org"] and r[head.index("Kỳ")] == year]
    assert len(mine) == 1, rows[:3]
    assert int(mine[0]["Đã khám định kỳ"]) == after["screened"]
    assert int(mine[0]["Huyết áp cao (≥ 140/90)"]) == after["bp_raised"]
    # drill down: the province's table → the commune → its worklists
    row.locator("a").click()
    ready(page, "worklist")
    assert f"org={STATE['org']}" in page.url
    assert page.locator("#worklist li").count() >= 1
    context.close()


#: Form fields a screen reader could not name: no <label>, no aria-label(ledby).
UNLABELLED = """[...document.querySelectorAll('input, select, textarea')]
  .filter((e) => e.type !== 'hidden' && !(e.labels && e.labels.length)
    && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby'))
  .map((e) => e.id || e.name)"""

PAGES = [("login", "/app/login"), ("home", "/app/"), ("register", "/app/people/new"),
         ("person", "/app/people/{patient}"), ("checkup", "/app/people/{patient}/checkup"),
         ("result", "/app/people/{patient}/result/{visit}"),
         ("worklist", "/app/worklists/overdue"), ("dashboard", "/app/dashboard")]


def test_every_page_is_interactive_within_a_second(server: ServerProcess,
                                                   users: dict[str, str],
                                                   browser: Any) -> None:
    assert "patient" in STATE, "runs after the health worker's journey"
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               "?") if Path("/proc/cpuinfo").exists() else "?"
    figures: dict[str, Any] = {"people": PEOPLE, "communes": COMMUNES,
                               "machine": f"{os.cpu_count()} cores, {cpu}",
                               "checkup_save_ms": STATE.get("save_ms"), "pages": {}}
    slow = []
    for size_name, size in (("phone", PHONE), ("desktop", DESKTOP)):
        for who, password in (("ytx-demo", users["ytx-demo"]),
                              ("quanly-demo", users["quanly-demo"])):
            context = browser.new_context(viewport=size)
            page = context.new_page()
            sign_in(page, server, who, password, "home" if who == "ytx-demo" else "dashboard")
            pages = PAGES if who == "ytx-demo" else [("dashboard", "/app/dashboard"),
                                                     ("worklist", "/app/worklists/overdue")]
            for name, path in pages:
                url = server.origin + path.format(patient=STATE["patient"],
                                                  visit=STATE["visit"].isoformat())
                times = []
                for _ in range(3):
                    page.goto(url)
                    times.append(ready(page, name))
                assert page.evaluate(UNLABELLED) == [], (name, "fields without a label")
                label = f"{name}{'' if who == 'ytx-demo' else ' (manager)'}"
                figures["pages"].setdefault(label, {})[size_name] = {
                    "median_ms": round(statistics.median(times)), "max_ms": round(max(times)),
                    "runs_ms": [round(t) for t in times]}
                if who == "ytx-demo" or name == "dashboard":
                    shot(page, name if who == "ytx-demo" else f"{name}-province")
                if statistics.median(times) >= READY_MS:
                    slow.append((label, size_name, times))
            context.close()
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    TIMINGS.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    assert not slow, slow


def test_a_request_that_lost_a_session_refresh_race_is_sent_again(
        server: ServerProcess, users: dict[str, str], browser: Any) -> None:
    """Another server process refreshed the session a moment before (web/session.py): the
    answer is a 401 marked ``X-Session-Refreshing``; the page waits for the new cookies and
    sends the request again instead of signing out."""
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    sign_in(page, server, "ytx-demo", users["ytx-demo"], "home")
    raced: list[str] = []

    def lose_the_first(route: Any) -> None:
        if raced:
            route.continue_()
            return
        raced.append(route.request.url)
        route.fulfill(status=401, headers={"X-Session-Refreshing": "1"},
                      content_type="application/fhir+json",
                      body='{"resourceType": "OperationOutcome", "issue": []}')

    page.route("**/api/**", lose_the_first)
    page.goto(f"{server.origin}/app/")
    ready(page, "home")
    assert raced
    assert page.locator("#username").count() == 0  # not sent back to the sign-in form
    context.close()
