"""A screenshot of ``mscsim explore`` for the README and the docs: starts the explorer on a free port, opens it in
headless Chromium (Debian's chromium and chromium-driver), waits for the runs to finish and saves the page.

    python scripts/explorer_screenshot.py [--scenario knee_oa_ia_5e7] [--out docs/img/explore.png]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="knee_oa_ia_5e7")
    ap.add_argument("--out", default="docs/img/explore.png")
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from mscsim.explore import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mscsim.cli", "explore", "--port", str(port), "--no-browser",
                             "--scenario", args.scenario])
    url = f"http://127.0.0.1:{port}/"
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--window-size=1420,1120", "--hide-scrollbars"):
        opts.add_argument(a)
    driver = None
    try:
        end = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.5)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        driver.get(url)
        end = time.monotonic() + args.timeout
        while "done" not in (driver.execute_script(
                "return Bokeh.documents.length ? Bokeh.documents[0].get_model_by_name('status').text : ''") or ""):
            if time.monotonic() > end:
                raise TimeoutError("the explorer did not finish its first run")
            time.sleep(1)
        time.sleep(1)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
        print(f"wrote {args.out}")
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
