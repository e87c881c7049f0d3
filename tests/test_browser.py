"""The whole app in a real browser: headless Chromium (Debian's package) driven by Selenium.

Starts ``streamlit run app.py`` on a free loopback port with a fresh result cache, picks a
classifier, uploads an image, opens the comparison page, waits for every map, moves a slider and
checks that the affected maps change while no exception shows. Screenshots go to
``artifacts/browser/`` (kept as test artifacts).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    home = tmp_path_factory.mktemp("explainers-home")
    env = {**os.environ, "EXPLAINERS_HOME": str(home), "EXPLAINERS_OFFLINE": "1"}
    log = open(home / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start: " + (home / "streamlit.log").read_text()[-2000:])
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1600,2400"):
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    downloads = tmp_path_factory.mktemp("downloads")
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, cond, timeout=240, poll=0.5, what=""):
    end = time.time() + timeout
    while time.time() < end:
        try:
            v = cond()
            if v:
                return v
        except Exception:  # noqa: BLE001 - elements come and go while Streamlit re-renders
            pass
        time.sleep(poll)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "timeout.png"))
    pytest.fail(f"timed out waiting for {what}")


def _idle(driver):
    """Streamlit shows its status widget (Running…) while a script run is in flight."""
    from selenium.webdriver.common.by import By

    time.sleep(1.0)
    return not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')


def _no_exception(driver):
    from selenium.webdriver.common.by import By

    exc = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert not exc, exc[0].text[:500]


def _pick(driver, select_label: str, option_text: str):
    """Open a Streamlit selectbox by its label and click the option whose text contains ``option_text``."""
    from selenium.webdriver.common.by import By

    # Streamlit's selectbox is a combobox input labelled like the widget (react-aria since 1.6x)
    box = driver.find_element(By.XPATH, f'//div[@data-testid="stSelectbox"][.//label[contains(., "{select_label}")]]//input[@role="combobox"]')
    box.click()
    opt = _wait(driver, lambda: [o for o in driver.find_elements(By.CSS_SELECTOR, '[role="option"]') if option_text in o.text], 20, what=f"option {option_text}")
    opt[0].click()


def _captions(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [c.text for c in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stCaptionContainer"]')]


def test_compare_page_end_to_end(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from explainers.data import load_dataset

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    img = tmp_path / "upload.png"
    load_dataset("shapes", "test", limit=3)[2].image.save(img)

    d = browser
    d.get(server)
    _wait(d, lambda: d.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebar"]'), 90, what="the sidebar")
    _wait(d, lambda: _idle(d), 120, what="the first run")
    _no_exception(d)

    # pick a classifier
    _pick(d, "Model", "VGG-style")
    _wait(d, lambda: _idle(d), 120, what="the model switch")
    # upload an image
    d.find_element(By.XPATH, '//label[.//p[text()="Upload"]]').click()
    _wait(d, lambda: d.find_elements(By.CSS_SELECTOR, 'input[type="file"]'), 30, what="the uploader")
    d.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(str(img))
    _wait(d, lambda: "upload.png" in d.page_source and _idle(d), 60, what="the upload")
    _no_exception(d)

    # the comparison page, every map
    d.find_element(By.XPATH, '//a[.//span[contains(., "Side by side")]]').click()
    from explainers.core import METHODS, get_method
    get_method("occlusion")
    from ui.grid import available_methods

    expected = sum(len(METHODS[m].maps) for m in available_methods())
    _wait(d, lambda: len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) >= expected and _idle(d), 600, what=f"{expected} maps")
    _no_exception(d)
    d.save_screenshot(str(ARTIFACTS / "compare.png"))
    before = _captions(d)

    # move the controller's η slider (any value works; PMI's K needs a fitted PatchSampler per K)
    # and check that only what depends on it changes
    from selenium.webdriver.common.action_chains import ActionChains

    # the slider's thumb is a visually hidden <input type="range"> (react-aria): focus it, press keys
    slider = d.find_element(By.CSS_SELECTOR, '[data-testid="stSlider"] input[type="range"][aria-label^="η"]')
    d.execute_script("arguments[0].focus();", slider)
    for _ in range(4):
        ActionChains(d).send_keys(Keys.ARROW_LEFT).perform()
    time.sleep(1.5)
    _wait(d, lambda: len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) >= expected and _idle(d), 600, what="the maps after the slider")
    _no_exception(d)
    after = _captions(d)
    d.save_screenshot(str(ARTIFACTS / "compare_after_slider.png"))
    changed = [a for a, b in zip(after, before) if re.sub(r" · [\d.]+ s.*", "", a) != re.sub(r" · [\d.]+ s.*", "", b)]
    assert changed, "moving the slider changed no map"
    assert len(changed) < len(after), "every map changed: the slider should only affect its own method"
    assert sum("cached" in a for a in after) >= len(after) - len(changed) - 1

    # the export is made on click (deferred): download it and check it holds every map
    d.find_element(By.XPATH, '//button[.//p[contains(., "(.npz)")]]').click()
    npz = _wait(d, lambda: [p for p in d.downloads.glob("*.npz")], 60, what="the .npz download")
    with np.load(npz[0], allow_pickle=False) as z:
        assert len([k for k in z.files if k != "meta"]) == expected
    _no_exception(d)


def test_tour_page_every_step(server, browser):
    """The teaching tour: open it from the navigation, walk every step with Next, each step's live
    figures render and neither an exception nor an error shows."""
    from selenium.webdriver.common.by import By

    from ui.tour import STEPS

    d = browser
    d.get(server)
    _wait(d, lambda: d.find_elements(By.XPATH, '//a[.//span[contains(., "Teaching tour")]]'), 90, what="the navigation")
    _wait(d, lambda: _idle(d), 120, what="the first run")
    d.find_element(By.XPATH, '//a[.//span[contains(., "Teaching tour")]]').click()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for k, step in enumerate(STEPS):
        if k:
            d.find_element(By.XPATH, '//button[.//p[text()="Next"]]').click()
        heading = f'//*[@data-testid="stHeading"][contains(., "{step.title}")]'
        _wait(d, lambda: d.find_elements(By.XPATH, heading) and d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot") and _idle(d),
              300, what=f"tour step {k + 1}")
        _no_exception(d)
        errors = d.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]')
        assert not errors, errors[0].text[:300]
        d.save_screenshot(str(ARTIFACTS / f"tour_{k + 1}_{step.key}.png"))
