"""``mscsim explore`` in a real browser (headless Chromium driven by Selenium): the page loads offline, changing
the dose changes the plotted data, bad input (a dose of -1, text in a number field) shows a message in the page
and never a traceback, and the server keeps serving. Skips, with the reason in the test summary, only where no
browser can be had (.ci/run installs Debian's chromium and chromium-driver)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mscsim.explore import free_port

BROWSER = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
SCREENSHOT_DIR = os.environ.get("MSCSIM_SCREENSHOT_DIR")  # keep the screenshot somewhere (CI artefact, README)

_FIND = """
function find(root, sel) {
  const el = root.querySelector(sel);
  if (el) return el;
  for (const n of root.querySelectorAll('*')) {
    if (n.shadowRoot) { const f = find(n.shadowRoot, sel); if (f) return f; }
  }
  return null;
}
const host = find(document, arguments[0]);
return host === null ? null : (host.shadowRoot || host).querySelector('input');
"""


def _model(driver, name: str, field: str):
    """A property of a Bokeh model in the page (``text``), or a column of a data source (``data:total``)."""
    prop, _, column = field.partition(":")
    return driver.execute_script(
        "const m = Bokeh.documents[0].get_model_by_name(arguments[0]); let v = m[arguments[1]];"
        "if (arguments[2]) { v = (v instanceof Map) ? v.get(arguments[2]) : v[arguments[2]]; }"
        "return (v && v.length !== undefined && typeof v !== 'string') ? Array.from(v) : v;", name, prop, column)


def _wait(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - the page is still loading
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture(scope="module")
def driver():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install '.[test]'")
    if BROWSER is None or DRIVER is None:
        pytest.skip("NO BROWSER: the explorer's browser test needs Chromium and chromedriver (Debian: apt-get install "
                    "-y chromium chromium-driver; .ci/run does this); it was NOT run")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = BROWSER
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--disable-extensions", "--no-first-run", "--window-size=1400,1150"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mscsim.cli", "explore", "--port", str(port), "--no-browser",
                             "--scenario", "human_iv_2e6_per_kg"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    url = f"http://127.0.0.1:{port}/"

    def up():
        if proc.poll() is not None:
            raise AssertionError(f"mscsim explore exited: {proc.stdout.read()}")
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200

    try:
        _wait(lambda: up(), 60, "the explorer to serve")
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_explorer_page_is_served_offline_from_127_0_0_1(server):
    url, _ = server
    html = urllib.request.urlopen(url, timeout=10).read().decode()
    scripts = [line for line in html.splitlines() if "<script src=" in line]
    assert scripts and all('src="/static/' in s for s in scripts), scripts  # BokehJS from this server, no CDN
    assert "http://" not in "".join(scripts) and "https://" not in "".join(scripts)


def test_explorer_dose_change_updates_the_plot_and_bad_input_is_a_message(server, driver, tmp_path):
    url, proc = server
    driver.get(url)
    done = lambda: "done" in (_model(driver, "status", "text") or "")  # noqa: E731
    _wait(done, 120, "the first run")
    before = _model(driver, "cells", "data:total")
    assert before and max(v for v in before if v is not None) > 1e6

    dose = driver.execute_script(_FIND, ".mscsim-dose")
    assert dose is not None, "the dose field is not on the page"

    from selenium.webdriver.common.keys import Keys

    def enter(text):  # delete what is there, type, then Enter, as a person does
        old = dose.get_attribute("value") or ""
        dose.send_keys(Keys.END, *([Keys.BACKSPACE] * len(old)), text, Keys.ENTER)

    enter("1e6")
    changed = _wait(lambda: (lambda a: a if a != before and done() else None)(_model(driver, "cells",
                                                                                     "data:total")),
                    120, "the plot's data to change after the dose changed")
    assert max(v for v in changed if v is not None) < max(v for v in before if v is not None) / 10

    enter("-1")
    msg = _wait(lambda: (lambda m: m if "-1" in (m or "") else None)(_model(driver, "message", "text")), 30,
                "a message about the dose of -1")
    assert "regimen.dose.cells" in msg and "greater than or equal to 1" in msg and "Traceback" not in msg
    assert _model(driver, "cells", "data:total") == changed  # the plot keeps the last valid run
    enter("lots")
    msg = _wait(lambda: (lambda m: m if "lots" in (m or "") else None)(_model(driver, "message", "text")), 30,
                "a message about text in the dose field")
    assert "dose" in msg and "a number" in msg and "Traceback" not in msg
    page_text = driver.execute_script("return document.body.innerText") or ""
    assert "Traceback" not in page_text

    enter("2e6")  # the server keeps serving
    _wait(lambda: (lambda a: a if a != changed and done() else None)(_model(driver, "cells", "data:total")),
          120, "the plot to update after valid input again")
    assert not _model(driver, "message", "text")
    assert proc.poll() is None
    shot = tmp_path / "explore.png"
    driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:4] == b"\x89PNG"
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(SCREENSHOT_DIR) / "explore.png")


def test_qc_report_interactive_histograms_render_in_a_browser(driver, tmp_path):
    """The QC report's zoomable histograms (one Bokeh document for all, BokehJS inline) draw in Chromium from a
    file: URL: one plot per marker, each with a size, and no error in the console."""
    from mscsim.cli import main

    examples = Path(__file__).resolve().parents[1] / "src" / "mscsim" / "data" / "examples"
    assert main(["qc", str(examples / "lot_passing.yaml"), "--out", str(tmp_path / "qc")]) in (0, None)
    html = (tmp_path / "qc" / "qc_report.html").read_text(encoding="utf-8")
    n = html.count("<figure class='interactive'>")
    assert n >= 5  # one per marker histogram of the example lot
    driver.get((tmp_path / "qc" / "qc_report.html").as_uri())
    sizes = _wait(lambda: (s := driver.execute_script(
        "return Array.from(document.querySelectorAll('.bk-Figure')).map(e => e.getBoundingClientRect().height)"))
        and len(s) == n and s, 30, f"{n} Bokeh figures drawn")
    assert all(h > 100 for h in sizes), sizes
    assert driver.execute_script("return Bokeh.documents.length") == 1
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
