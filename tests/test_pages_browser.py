"""Pages in a real browser (issue 9): a crafted hand-in full of script payloads is
rendered by the real command line, served from 127.0.0.1 and opened in headless
Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium).

Every payload would change the document title, write to localStorage and fetch a
``/beacon`` URL from the test's server. A control page without the kit's
protections proves that the harness sees a payload that runs. Skipped where no
browser is installed, unless ``LAB_REQUIRE_BROWSER=1`` (``.ci/run`` installs one
and sets it), where that is a failure.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from test_submissions import results, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")

JS = "document.title='PWNED';localStorage.setItem('pwned','1');new Image().src='/beacon-js'"


def _browser_or_skip():
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing = "selenium"
    else:
        missing = "" if CHROMIUM and CHROMEDRIVER else "chromium / chromedriver"
    if missing:
        if os.environ.get("LAB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"LAB_REQUIRE_BROWSER=1 but {missing} is not installed")
        pytest.skip(f"{missing} not installed (apt-get install chromium chromium-driver)")


def crafted_notebook() -> nbformat.NotebookNode:
    md = "\n\n".join([
        "# Payloads",
        f'<img src=x onerror="{JS}">',
        f"<script>{JS}</script>",
        f'<svg onload="{JS}"><circle r="5"/></svg>',
        f'<a href="javascript:{JS}">click me</a>',
        f'<iframe srcdoc="<script>{JS}</script>"></iframe>',
        f'<meta http-equiv="refresh" content="0;url=javascript:{JS}">',
        f'<details open ontoggle="{JS}"><summary>s</summary>d</details>',
        '<img src="/beacon-img">',
        "<style>@import url(/beacon-css); body{background:url(/beacon-bg)}</style>",
        '<form action="/beacon-form"><input name=q autofocus onfocus="' + JS + '"></form>',
        '<object data="/beacon-object"></object><embed src="/beacon-embed">',
    ])
    nb = new_notebook(cells=[
        new_markdown_cell(md),
        new_code_cell("x", outputs=[
            new_output("display_data", data={"text/html": f"<b>html</b><script>{JS}</script>"
                                                          f'<img src=x onerror="{JS}">',
                                             "text/plain": "html"}),
            new_output("display_data", data={"image/svg+xml": f'<svg xmlns="http://www.w3.org/2000/svg" '
                                                              f'onload="{JS}"><script>{JS}</script></svg>'}),
            new_output("display_data", data={"application/javascript": JS}),
            new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "png"},
                       metadata={"width": f'1 onload="{JS}"'}),
            new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {
                "model_id": "m1", "version_major": 2, "version_minor": 0}}),
        ]),
    ])
    nb.cells[1].execution_count = f'"><script>{JS}</script>'
    nb.metadata["title"] = f"</title><script>{JS}</script>"
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "version_major": 2, "version_minor": 0,
        "state": {"m1": {"model_name": "HTMLModel", "model_module": "@jupyter-widgets/controls",
                         "model_module_version": "*", "state": {"value": f'<img src=x onerror="{JS}">'}}}}}
    return nb


class _Server:
    """http.server on 127.0.0.1 serving *folder*, recording every path asked for."""

    def __init__(self, folder: Path):
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(folder), **kw)

            def do_GET(self):  # noqa: N802
                requests.append(self.path)
                return super().do_GET()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def browser(tmp_path):
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def open_page(driver, url: str) -> tuple[str, int]:
    """Load *url*, click every link that would run script, let timers fire; (title, localStorage size)."""
    import time

    driver.get(url)
    for link in driver.find_elements("css selector", "a[href^='javascript:' i]"):
        try:
            link.click()
        except Exception:  # noqa: BLE001 - not clickable is fine: it must not exist anyway
            pass
    time.sleep(1.0)
    return driver.title, driver.execute_script("return window.localStorage.length")


def test_crafted_student_page_runs_no_script_and_fetches_nothing(tmp_path, browser):
    root = tmp_path / "hand-ins"
    (root / "mallory").mkdir(parents=True)
    # Written as JSON: nbformat.write would refuse the crafted execution count.
    (root / "mallory" / "lab.ipynb").write_text(json.dumps(crafted_notebook()))
    hostile_dir = root / "<img src=x onerror=\"document.title='PWNED';localStorage.setItem('n',1)\">"
    hostile_dir.mkdir()
    nbformat.write(new_notebook(cells=[new_code_cell("1")]), hostile_dir / "lab.ipynb")
    out = tmp_path / "out"
    proc = run_cli("--submissions", str(root), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    page = results(out)["mallory/lab.ipynb"]["page"]
    # The control: the same payload, without the kit's page writer, does run here.
    (out / "control.html").write_text(f"<!DOCTYPE html><html><head><title>c</title></head><body>"
                                      f"<script>{JS}</script></body></html>")
    server = _Server(out)
    try:
        title, stored = open_page(browser, f"{server.url}/control.html")
        assert title == "PWNED" and stored == 1, "the harness must see a payload that runs"
        assert "/beacon-js" in server.requests
        browser.execute_script("window.localStorage.clear()")
        server.requests.clear()
        for name in (page, "index.html"):
            title, stored = open_page(browser, f"{server.url}/{name}")
            assert title != "PWNED", name  # a payload sets exactly this; the text may appear escaped
            assert stored == 0, f"{name}: a payload wrote to localStorage"
            body = browser.find_element("css selector", "body").text
            assert body.strip(), f"{name} shows nothing"
        beacons = [p for p in server.requests if "beacon" in p]
        assert beacons == [], f"the pages fetched {beacons}"
    finally:
        server.close()
    # The page is still readable: the heading and the output text are there.
    browser.get(f"file://{out / page}")
    text = browser.find_element("css selector", "body").text
    assert "Payloads" in text and "html" in text and "click me" in text
