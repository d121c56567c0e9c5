"""Real Chromium in a child process: log in through the form, open pages, screenshot them.

tests/reports itself uses the shared `browser` fixture of tests/conftest.py (one Chromium per
module).  This runner stays only for tests/e2e/test_district_reports.py, which another area
owns: there is no reason left for a child process (Playwright's fixture is per module and closed
at its end), so that test can move to the shared fixture and this file can go.

    shots = run(base_url, "direktor", "password", [
        {"path": "/summaries/2026-W48?lang=ky", "width": 1366, "height": 768, "locale": "ky",
         "file": "test-artifacts/x.png"}])
    shots[0] == {"landed": "https://…/summaries/2026-W48", "h1": "…", "main": "…", "svgs": 9}
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(base: str, username: str, password: str, shots: list[dict], timeout: float = 180) -> list[dict]:
    job = {"base": base, "username": username, "password": password, "shots": shots}
    done = subprocess.run([sys.executable, "-m", "tests.reports.chromium"], input=json.dumps(job),
                          capture_output=True, text=True, cwd=REPO, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"chromium child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def _main() -> None:
    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM, CHROMIUM_ARGS

    job = json.loads(sys.stdin.read())
    out = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for shot in job["shots"]:
            context = browser.new_context(ignore_https_errors=True, locale=shot.get("locale", "ky"),
                                          viewport={"width": shot["width"], "height": shot["height"]})
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto(job["base"] + "/login")
            page.fill("#username", job["username"])
            page.fill("#password", job["password"])
            page.click("form.card button[type=submit]")
            page.wait_for_load_state()
            landed = page.url
            page.goto(job["base"] + shot["path"])
            page.screenshot(path=shot["file"], full_page=True)
            out.append({"landed": landed, "h1": page.locator("h1").first.inner_text(),
                        "main": page.locator("main").inner_text(), "svgs": page.locator("svg").count()})
            context.close()
        browser.close()
    print(json.dumps(out))


if __name__ == "__main__":
    _main()
