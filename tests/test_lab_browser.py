"""End to end, as a student works (issue 10, point 6): ./lab.sh serves the notebooks,
a real headless Chromium opens notebook 02 in JupyterLab and runs it, the explorer's
widgets render, a click on a similar filter's "open" button and on "use this filter"
change the lab choice file.

Runs on a copy of notebooks/ (JupyterLab autosaves what it opens) with a cheap lab
choice (few probe images, few ascent steps) so that notebook 02 runs in seconds.
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from lab_utils import choice as C
from test_lab_command import lab_server
from test_pages_browser import browser  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.weights]
CHEAP = {"probe_limit": 24, "steps": 2, "vis_size": 32, "n_neighbours": 2, "top_n": 5}


def wait_for(driver, xpath: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = driver.find_elements("xpath", xpath)
        if found:
            return found
        time.sleep(0.5)
    errors = driver.find_elements("css selector", ".jp-OutputArea-output[data-mime-type*='error']")
    shown = [e.text[:500] for e in errors]
    raise AssertionError(f"nothing matched {xpath} in {timeout:.0f} s; errors shown: {shown}")


def test_explorer_in_jupyterlab_writes_the_lab_choice(tmp_path, browser, vgg16):  # noqa: F811
    books = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", books)
    choice_file = tmp_path / "lab-choice.yaml"
    C.save_lab_choice(CHEAP, choice_file)
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # every cell in the DOM (JupyterLab 4 may leave cells out of view unrendered)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    with lab_server(tmp_path, f"--ServerApp.root_dir={books}", "--LabApp.expose_app_in_browser=True",
                    f"--LabApp.user_settings_dir={tmp_path / 'lab-settings'}",
                    LAB_CHOICE_FILE=str(choice_file)) as (base, token, _runtime):
        browser.set_window_size(1400, 1000)
        browser.get(f"{base}/lab/tree/02_filter_selection.ipynb?token={token}")
        wait_for(browser, "//div[contains(@class,'jp-Notebook')]", 60)
        deadline = time.monotonic() + 60
        while not browser.execute_script(
                "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                "return !!(w && w.sessionContext && w.sessionContext.session"
                " && w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === 'idle')"):
            assert time.monotonic() < deadline, "the notebook's kernel did not start"
            time.sleep(0.5)
        browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        use = wait_for(browser, "//button[contains(., 'use this filter')]", 240)[0]
        opens = wait_for(browser, "//button[starts-with(normalize-space(.), 'open ')]", 30)
        target = int(re.search(r"\d+", opens[0].text).group())
        assert target != 31
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", opens[0])
        opens[0].click()
        wait_for(browser, f"//b[contains(., 'block3_conv1 filter {target}')]", 30)
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", use)
        use.click()
        deadline = time.monotonic() + 30
        while C.load_lab_choice(choice_file, create=False).chosen.get("filter_index") != target:
            assert time.monotonic() < deadline, choice_file.read_text()
            time.sleep(0.5)
        wait_for(browser, f"//*[contains(., 'Saved: block3_conv1 filter {target} is your lab choice')]", 30)
        browser.save_screenshot(str(tmp_path / "jupyterlab-explorer.png"))  # kept for a person to look at
        again = wait_for(browser, "//button[starts-with(normalize-space(.), 'open ')]", 30)  # new filter, new tiles
        browser.execute_script("arguments[0].scrollIntoView({block: 'end'})", again[-1])
        browser.save_screenshot(str(tmp_path / "jupyterlab-explorer-similar.png"))
    assert C.load_lab_choice(choice_file, create=False).chosen == {**CHEAP, "layer_name": "block3_conv1",
                                                                  "filter_index": target}
