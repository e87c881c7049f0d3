"""The whole app in a real browser: headless Chromium (Debian's package) driven by Selenium.

Starts ``streamlit run app.py`` on a free loopback port with a fresh result cache. The Side by side
page on the default sample: every map, the screenshot for the README (``docs/side-by-side.png``, rewritten with EXPLAINERS_UPDATE_DOCS=1), a
slider that changes only its method's maps, the .npz export with what made it, and a classifier
switch mid-page after which no map or class name of the old classifier remains. An uploaded image
on the DSSR+ page: a run stopped with its Stop button leaves a "stopped — partial result" state.
The teaching tour, every step. Screenshots go to ``artifacts/browser/`` (kept as test artifacts).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import time
import json
from pathlib import Path

import numpy as np
import pytest

from streamlit_server import running_app

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "browser"
# the README's picture of the Side by side page: rewritten when EXPLAINERS_UPDATE_DOCS=1, else kept with the artifacts
SCREENSHOT = ROOT / "docs" / "side-by-side.png" if os.environ.get("EXPLAINERS_UPDATE_DOCS") == "1" else ARTIFACTS / "side-by-side.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("explainers-home")
    with running_app(home, "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
                     env={"EXPLAINERS_OFFLINE": "1"}) as (url, _):
        yield url


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
    driver.save_screenshot(str(ARTIFACTS / f"timeout_{re.sub(r'[^a-z0-9]+', '_', what.lower()).strip('_')[:40]}.png"))
    pytest.fail(f"timed out waiting for {what}")


def _idle(driver):
    """No script run in flight (Streamlit's status widget shows one) and no long work running (its
    progress bar and Stop button show that)."""
    from selenium.webdriver.common.by import By

    time.sleep(1.0)
    return not (driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
                or driver.find_elements(By.XPATH, '//*[@data-testid="stMain"]//button[.//p[text()="Stop"]]'))


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


def _main_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"]'))


def _stale(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] [data-stale="true"]')


def _maps(driver) -> int:
    """The maps on the page: each has a caption with its range."""
    return sum(" · range " in c for c in _captions(driver))


def _run_all(driver) -> None:
    """Click every Run button (work expected to take over half a minute on this machine right now)."""
    from selenium.webdriver.common.by import By

    for _ in range(20):
        buttons = driver.find_elements(By.XPATH, '//*[@data-testid="stMain"]//button[.//p[starts-with(., "Run (")]]')
        if not buttons:
            return
        buttons[0].click()
        time.sleep(2.0)  # the click's rerun starts, and with it the work
        _wait(driver, lambda: _idle(driver), 600, what="a clicked run")


def _expected_maps() -> int:
    from explainers.core import METHODS, get_method
    from ui.grid import available_methods

    get_method("occlusion")
    return sum(len(METHODS[m].maps) for m in available_methods())


def _press(driver, label_start: str, key, times: int = 1) -> None:
    """Focus the slider whose label starts with ``label_start`` and press ``key``."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    # the slider's thumb is a visually hidden <input type="range"> (react-aria): focus it, press keys
    slider = driver.find_element(By.CSS_SELECTOR, f'[data-testid="stSlider"] input[type="range"][aria-label^="{label_start}"]')
    driver.execute_script("arguments[0].focus();", slider)
    for _ in range(times):
        ActionChains(driver).send_keys(key).perform()


def _save_screenshot(driver, path: Path, width: int = 1280, height: int = 1500) -> None:
    """The top of the page, scaled to ``width`` px (small enough to commit)."""
    import io

    from PIL import Image

    shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    shot = shot.crop((0, 0, shot.width, min(shot.height, height)))
    shot = shot.resize((width, round(shot.height * width / shot.width)), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def test_side_by_side_slider_export_and_a_classifier_switch(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    d = browser
    d.get(server)
    _wait(d, lambda: d.find_elements(By.XPATH, '//a[.//span[contains(., "Side by side")]]'), 90, what="the navigation")
    _wait(d, lambda: _idle(d), 120, what="the first run")
    _no_exception(d)

    # the default sample and classifier, every method's maps
    d.find_element(By.XPATH, '//a[.//span[contains(., "Side by side")]]').click()
    expected = _expected_maps()
    _wait(d, lambda: _maps(d) and _idle(d), 600, what="the grid")
    _run_all(d)  # a busy machine makes more methods "long"
    _no_exception(d)
    failed = [w.text for w in d.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] [data-testid="stAlert"]')]
    # a method that fails shows one line in its cell (its maps missing); the rest of the test goes on,
    # and the failure is reported at its end
    expected -= sum(2 for f in failed if "PMI & IG" in f)
    assert "shapes-resnet" in _main_text(d)
    d.execute_script("window.scrollTo(0, 0);")
    time.sleep(0.5)
    _save_screenshot(d, SCREENSHOT if not failed else ARTIFACTS / "side-by-side-with-failures.png")  # the README's, when all ran
    d.save_screenshot(str(ARTIFACTS / "compare.png"))
    before = _captions(d)

    # the controller's η slider: only the controller's maps change, the others come from the cache
    _press(d, "η", Keys.ARROW_LEFT, 4)
    time.sleep(1.5)
    _wait(d, lambda: _idle(d), 600, what="the run after the slider")
    _run_all(d)
    _wait(d, lambda: _maps(d) >= expected and _idle(d), 120, what=f"{expected} maps after the slider")
    _no_exception(d)
    after = _captions(d)
    d.save_screenshot(str(ARTIFACTS / "compare_after_slider.png"))
    strip = lambda c: re.sub(r" · [\d.]+ s.*", "", c)  # noqa: E731
    changed = [a for a, b in zip(after, before) if strip(a) != strip(b)]
    assert changed, "moving the slider changed no map"
    assert len(changed) < len(after), "every map changed: the slider should only affect its own method"

    # the export is made on click (deferred): every map, and what made them. (A click that lands while a
    # last rerun replaces the button finds its file gone: click again.)
    npz = []
    for _ in range(3):
        d.find_element(By.XPATH, '//button[.//p[contains(., "(.npz)")]]').click()
        try:
            npz = _wait(d, lambda: [p for p in d.downloads.glob("*.npz")], 20, what="the .npz download")
            break
        except BaseException:  # noqa: BLE001 - pytest.fail raises a BaseException
            time.sleep(2)
    assert npz, "no .npz download"
    with np.load(npz[0], allow_pickle=False) as z:
        assert len([k for k in z.files if k != "meta"]) == expected
        meta = json.loads(str(z["meta"]))
    assert meta["model"] == "shapes-resnet" and meta["class"] and len(meta["commands"]) == len(meta["methods"])
    old_class = meta["class"]

    # another classifier mid-page: at once, nothing of the old one is left on the page
    _pick(d, "Model", "Digits · CNN")
    # the old classifier's name and class go on the first rerun, before any new map is made (the
    # app clears what depended on the classifier before the page draws; bounded, not timed: a
    # loaded CI machine may take a while to rerun)
    _wait(d, lambda: "shapes-resnet" not in _main_text(d) and f"{old_class} (" not in _main_text(d), 60,
          poll=0.2, what="the old classifier's maps and classes to go")
    _wait(d, lambda: _maps(d) and _idle(d), 600, what="the new classifier's maps")
    _run_all(d)
    _no_exception(d)
    text = _main_text(d)
    assert "digits-cnn" in text and "shapes-resnet" not in text and f"{old_class} (" not in text
    assert not _stale(d), "stale elements left on the page"
    d.save_screenshot(str(ARTIFACTS / "compare_after_switch.png"))
    assert not failed, failed


def test_stop_leaves_a_stopped_partial_result(server, browser, tmp_path):
    """An uploaded image on the DSSR+ page with many iterations: Run (if it waits for a click), Stop
    while it runs, and the page says "stopped — partial result" and offers to run again."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from explainers.data import load_dataset

    img = tmp_path / "upload.png"
    load_dataset("shapes", "test", limit=3)[2].image.save(img)
    d = browser
    d.get(server)
    _wait(d, lambda: d.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebar"]'), 90, what="the sidebar")
    _wait(d, lambda: _idle(d), 120, what="the first run")
    _wait(d, lambda: d.find_elements(By.XPATH, '//label[.//p[text()="Upload"]]'), 60, what="the image source")
    d.find_element(By.XPATH, '//label[.//p[text()="Upload"]]').click()
    image_input = '//div[@data-testid="stFileUploader"][.//*[normalize-space(text())="Upload an image"]]//input[@type="file"]'
    _wait(d, lambda: d.find_elements(By.XPATH, image_input), 30, what="the uploader")
    d.find_element(By.XPATH, image_input).send_keys(str(img))  # the image's, not the checkpoint uploader
    _wait(d, lambda: "upload.png" in d.page_source and _idle(d), 60, what="the upload")
    d.find_element(By.XPATH, '//a[.//span[contains(., "DSSR+")]]').click()
    _wait(d, lambda: (d.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]') or _run_all(d)) and _idle(d), 300,
          what="the DSSR+ result")
    _press(d, "Iterations", Keys.END)  # 2000 iterations
    stop = '//button[.//p[text()="Stop"]]'
    run = '//button[.//p[starts-with(., "Run (")]]'
    _wait(d, lambda: d.find_elements(By.XPATH, stop) or d.find_elements(By.XPATH, run), 120, poll=0.2,
          what="the run or its Run button")
    if not d.find_elements(By.XPATH, stop):
        d.find_element(By.XPATH, run).click()
    _wait(d, lambda: d.find_elements(By.XPATH, stop) and (d.find_elements(By.XPATH, stop)[0].click() or True), 60, poll=0.2,
          what="a click on Stop")
    _wait(d, lambda: "Stopped — partial result" in _main_text(d) and _idle(d), 120, what="the stopped state")
    _no_exception(d)
    assert d.find_elements(By.XPATH, '//button[.//p[starts-with(., "Run again")]]')
    d.save_screenshot(str(ARTIFACTS / "dssr_stopped.png"))


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
