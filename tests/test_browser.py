"""The page in a real browser: a Streamlit server on 127.0.0.1 driven by Debian's headless chromium.

Installs nothing: `make test` (or `make chromium`) installs chromium and chromium-driver when missing.
The screenshot of the neighbours grid is saved to test-artifacts/browser-neighbours.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.common import free_port
from storage.dataset import FASHION_MNIST
from storage.home import HOME_ENV
from storage.releases import latest_release_id
from tests.conftest import REPO
from tests.test_app import publish_reindex

pytestmark = pytest.mark.browser

SCREENSHOT = REPO / "test-artifacts" / "browser-neighbours.png"
START_TIMEOUT_S = 90
PAGE_TIMEOUT_S = 150  # the first page view loads the release's model (TensorFlow import included)
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--window-size=1600,1200")


@contextmanager
def streamlit_server(home_root: Path, log_path: Path):
    """`streamlit run ui/app.py` on a free 127.0.0.1 port; always terminated, its log kept for failures."""
    port = free_port()
    env = {**os.environ, HOME_ENV: str(home_root)}
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "ui/app.py", "--server.address", "127.0.0.1",
             "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                assert server.poll() is None, f"streamlit exited early:\n{log_path.read_text()[-3000:]}"
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                        if answer.read().strip() == b"ok":
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, f"streamlit did not start:\n{log_path.read_text()[-3000:]}"
                time.sleep(0.5)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@pytest.fixture
def browser(tmp_path):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("Debian's chromium and chromium-driver are not installed (`make chromium` installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=Service(chromedriver, log_output=str(tmp_path / "chromedriver.log")))
    try:
        yield driver
    finally:
        driver.quit()


def test_picking_a_gallery_image_shows_the_neighbours_grid(published_home, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    first = json.loads((published_home.gallery / "index.json").read_text())[0]
    query_class = FASHION_MNIST.label_name(first["label"])
    old_id = latest_release_id(published_home)
    log_path = tmp_path / "streamlit.log"
    with streamlit_server(published_home.root, log_path) as url:
        try:
            browser.get(url)
            pick = WebDriverWait(browser, PAGE_TIMEOUT_S).until(EC.element_to_be_clickable(
                (By.CSS_SELECTOR, f".st-key-pick-test-{first['test_index']} button")))
            pick.click()
            grid = WebDriverWait(browser, PAGE_TIMEOUT_S).until(EC.visibility_of_element_located(
                (By.CSS_SELECTOR, ".st-key-neighbours")))
            WebDriverWait(browser, 30).until(lambda _: grid.text.count(" · d=") == 8 and all(
                image.get_property("naturalWidth") > 0 for image in grid.find_elements(By.TAG_NAME, "img")))
            SCREENSHOT.parent.mkdir(exist_ok=True)
            browser.save_screenshot(str(SCREENSHOT))

            page = browser.find_element(By.TAG_NAME, "body").text
            captions = [line for line in grid.text.splitlines() if " · d=" in line]
            assert len(grid.find_elements(By.TAG_NAME, "img")) == 8
            assert captions[0].startswith(f"✓ #1 {query_class}"), captions  # same class marked
            assert f"Query: {query_class}" in page and f"Live release {old_id}" in page

            # a release published while the page is open replaces it without a reload
            new_id = publish_reindex(published_home)
            WebDriverWait(browser, PAGE_TIMEOUT_S).until(
                lambda _: f"Live release {new_id}" in browser.find_element(By.TAG_NAME, "body").text)
        except Exception:
            print(f"--- streamlit log\n{log_path.read_text()[-3000:]}")
            raise


def neighbour_tiles(browser):
    """(rank, top, left) of each neighbour image, in the order a reader meets them on screen."""
    from selenium.webdriver.common.by import By

    tiles = []
    for figure in browser.find_elements(By.CSS_SELECTOR, ".st-key-neighbours [data-testid='stImage']"):
        caption = figure.text.strip()
        rank = int(caption.split("#", 1)[1].split()[0])
        box = figure.rect
        tiles.append((rank, round(box["y"]), round(box["x"])))
    return sorted(tiles, key=lambda tile: (tile[1], tile[2]))


def answer_in_view(browser) -> bool:
    """The answer's top and its first neighbours are inside the window."""
    return browser.execute_script(
        "const answer = document.querySelector('.st-key-neighbours img');"
        "if (!answer) return false; const box = answer.getBoundingClientRect();"
        "return box.top >= 0 && box.bottom <= window.innerHeight;")


@pytest.mark.parametrize("width", [1400, 390])
def test_answers_read_in_order_and_come_into_view_at_every_width(published_home, browser, tmp_path, width):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(width, 900)
    log_path = tmp_path / "streamlit.log"
    with streamlit_server(published_home.root, log_path) as url:
        try:
            browser.get(url)
            WebDriverWait(browser, PAGE_TIMEOUT_S).until(EC.presence_of_all_elements_located(
                (By.CSS_SELECTOR, "[class*='st-key-pick-'] button")))
            buttons = [b for b in browser.find_elements(By.CSS_SELECTOR, "[class*='st-key-pick-'] button")
                       if b.is_displayed()]  # (a button with help text has a hidden twin)
            for button in buttons:  # no button's words cut off
                assert browser.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth + 1",
                                              button), button.text
            far = buttons[9]  # a pick made further down the gallery (at 390 px, far below the answer)
            browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", far)
            WebDriverWait(browser, 30).until(EC.element_to_be_clickable(far)).click()
            WebDriverWait(browser, PAGE_TIMEOUT_S).until(
                lambda _: len(neighbour_tiles(browser)) == 8 and answer_in_view(browser))
            assert [rank for rank, _, _ in neighbour_tiles(browser)] == list(range(1, 9))

            photo = tmp_path / "upload.png"
            photo.write_bytes((published_home.gallery / json.loads(
                (published_home.gallery / "index.json").read_text())[3]["path"]).read_bytes())
            browser.execute_script("window.parent.document.querySelector('[data-testid=\"stMain\"]')?.scrollTo(0, 99999)")
            browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(photo))
            WebDriverWait(browser, PAGE_TIMEOUT_S).until(
                lambda _: "Your photo" in browser.find_element(By.TAG_NAME, "body").text and answer_in_view(browser))
            browser.save_screenshot(str(REPO / "test-artifacts" / f"browser-{width}px.png"))
        except Exception:
            print(f"--- streamlit log\n{log_path.read_text()[-3000:]}")
            raise
