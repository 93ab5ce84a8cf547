"""The HTML report in a real browser: headless Chromium (Debian's chromium + chromium-driver,
installed by `make test`) driven by Selenium opens the report of a tiny run from the file
system and checks what a reader relies on: no console message, no request leaving the file
system, every image loaded, one card per (target, method), a click on a per-target cell opens
that card, a click on a headline cell opens that column's per-target table, and sorting a
column reorders the rows. Screenshots of the index and of one card are saved as test
artefacts in build/test-artifacts/."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
CHROMIUM = ("chromium", "chromium-browser")


def _binary(names) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(f"none of {names} is installed; `make test` installs Debian's chromium and "
                         "chromium-driver (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-background-networking", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(_binary(("chromedriver",))), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _open(driver, path: Path) -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get_log("performance")
    driver.get(path.resolve().as_uri())


def _problems(driver) -> tuple[list, list, list]:
    """(console messages, requests outside file:, images that did not load) of the page."""
    console = driver.get_log("browser")
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    remote = [u for u in urls if not u.startswith("file://")]
    broken = driver.execute_script(
        "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
    return console, remote, broken


def test_every_page_loads_clean_offline(browser, tiny_run):
    report = tiny_run / "report"
    pages = [report / "index.html", *sorted((report / "cards").glob("*.html"))]
    images = 0
    for page in pages:
        _open(browser, page)
        console, remote, broken = _problems(browser)
        assert console == [] and remote == [] and broken == [], page.name
        images += browser.execute_script("return document.images.length")
    assert images > 0
    units = pd.read_csv(tiny_run / "results.csv").query("target != '*'")
    n_units = len(units.drop_duplicates(["track", "target", "method"]))
    _open(browser, report / "index.html")
    links = browser.execute_script(
        "return new Set(Array.from(document.querySelectorAll('a.card-link')).map(a => a.getAttribute('href'))).size")
    assert links == n_units == len(pages) - 1


def test_clicks_open_the_card_and_the_per_target_table(browser, tiny_run):
    from selenium.webdriver.common.by import By

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    index = tiny_run / "report" / "index.html"
    _open(browser, index)
    browser.save_screenshot(str(ARTIFACTS / "report_index.png"))
    cell = browser.find_element(By.CSS_SELECTOR, "#track-planted table.headline tbody td a")
    grid = cell.get_attribute("href").split("#", 1)[1]
    cell.click()
    assert browser.current_url.endswith("#" + grid)
    assert browser.execute_script(f"return document.getElementById('{grid}').open") is True
    link = browser.find_element(By.CSS_SELECTOR, f"#{grid} a.card-link")
    target = link.find_element(By.XPATH, "./ancestor::tr/th").text
    link.click()
    assert "/report/cards/" in browser.current_url and target in browser.title
    assert browser.find_elements(By.CSS_SELECTOR, "article.card h1") and browser.find_elements(By.CSS_SELECTOR,
                                                                                              "figure.ref img")
    browser.save_screenshot(str(ARTIFACTS / "report_card.png"))
    assert (ARTIFACTS / "report_index.png").stat().st_size > 10_000


def test_sorting_a_column_reorders_the_rows(browser, tiny_run):
    from selenium.webdriver.common.by import By

    _open(browser, tiny_run / "report" / "index.html")
    table = browser.find_element(By.CSS_SELECTOR, "#track-planted table.headline")
    read = ("return Array.from(arguments[0].tBodies[0].rows).map(r => "
            "[r.cells[0].textContent.trim(), r.cells[arguments[1]].getAttribute('data-value')])")
    before = browser.execute_script(read, table, 2)
    head = table.find_elements(By.CSS_SELECTOR, "thead th")[2]
    head.click()
    after = browser.execute_script(read, table, 2)
    has = [(n, float(v)) for n, v in before if v not in ("", None)]
    expected = [n for n, _ in sorted(has, key=lambda nv: -nv[1])] + [n for n, v in before if v in ("", None)]
    assert [n for n, _ in after] == expected and sorted(after) == sorted(before)  # stable, blanks last
    assert expected != [n for n, _ in before]  # the fixture's rows do move
    head.click()
    again = [float(v) for _, v in browser.execute_script(read, table, 2) if v not in ("", None)]
    assert again == sorted(v for _, v in has)
