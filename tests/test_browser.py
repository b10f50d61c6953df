"""End to end in a real headless browser (Debian's chromium + chromium-driver, driven by Selenium)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
from test_details_search import exif_db, exif_photos  # noqa: F401 - photos with EXIF dates, cameras, GPS
from test_server import build_collection  # same small real collection as the API tests

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): "
        "apt-get install chromium chromium-driver",
    ),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser_collection(tmp_path_factory):
    return build_collection(tmp_path_factory)


@contextmanager
def serving(db: Path, token: str | None = None) -> Iterator[str]:
    """The app over `db` on a free loopback port, in a thread of this process; yields its address."""
    import uvicorn

    from semsearch.server.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(db, token=token)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def server(browser_collection):
    with serving(browser_collection[0], token="tok3n") as address:
        yield address


@pytest.fixture(scope="module")
def driver():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def _loaded_thumbnails(driver) -> int:
    return driver.execute_script(
        "return [...document.querySelectorAll('#grid .card img')].filter(i => i.complete && i.naturalWidth > 0).length"
    )


def _non_blank(path: Path) -> float:
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        pixels = np.asarray(img.convert("L"), dtype=np.float32)
    return float(pixels.var())


def test_search_upload_detail_in_browser(server, driver, browser_collection, tmp_path):
    wait = WebDriverWait(driver, 30)
    driver.get(server + "/?token=tok3n")  # token goes to sessionStorage, then leaves the address bar
    wait.until(lambda d: "token=" not in d.current_url)
    wait.until(lambda d: d.find_element(By.ID, "stats").text.strip() != "")

    # 1. type a query, see thumbnails with scores; the URL reflects the query
    box = driver.find_element(By.ID, "q")
    box.send_keys("crocodile", Keys.ENTER)
    wait.until(lambda d: _loaded_thumbnails(d) >= 5)
    assert "q=crocodile" in driver.current_url
    scores = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#grid .card .score")]
    assert scores and all(float(s) for s in scores)
    shot = tmp_path / "search.png"
    driver.save_screenshot(str(shot))
    assert _non_blank(shot) > 100, "the screenshot looks blank"

    # 2. the URL can be shared: reloading it gives the same results
    first = driver.find_element(By.CSS_SELECTOR, "#grid .card").get_attribute("data-id")
    driver.get(driver.current_url)
    wait.until(lambda d: _loaded_thumbnails(d) >= 5)
    assert driver.find_element(By.CSS_SELECTOR, "#grid .card").get_attribute("data-id") == first

    # 3. upload an image, see similar ones
    photo = next(p for p in sorted(browser_collection[1].rglob("*.jpg")))
    upload = driver.find_element(By.ID, "file")
    driver.execute_script("arguments[0].hidden = false", upload)
    upload.send_keys(str(photo))
    wait.until(lambda d: "similar to " + photo.name in d.find_element(By.ID, "status").text)
    wait.until(lambda d: _loaded_thumbnails(d) >= 5)
    assert float(driver.find_element(By.CSS_SELECTOR, "#grid .card .score").text) > 0.99  # itself
    driver.save_screenshot(str(tmp_path / "upload.png"))

    # 4. click a result, see it larger with its tags and a "more like this" link
    driver.find_elements(By.CSS_SELECTOR, "#grid .card")[1].click()
    wait.until(EC.visibility_of_element_located((By.ID, "modal")))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#detail-tags li.tag")) > 0)
    tags = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#detail-tags li.tag")]
    assert all(tags)
    wait.until(
        lambda d: d.execute_script(
            "const i = document.getElementById('detail-img'); return i.complete && i.naturalWidth > 0"
        )
    )
    detail = tmp_path / "detail.png"
    driver.save_screenshot(str(detail))
    assert _non_blank(detail) > 100
    driver.find_element(By.ID, "detail-more").click()
    wait.until(lambda d: "similar=" in d.current_url)
    wait.until(lambda d: _loaded_thumbnails(d) >= 5)

    # 5. word search and the map
    driver.find_element(By.ID, "tab-words").click()
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys("ocean", Keys.ENTER)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#words li")) >= 5)
    assert "tab=words" in driver.current_url
    driver.save_screenshot(str(tmp_path / "words.png"))
    driver.find_element(By.ID, "tab-map").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#map-inner img.dot")) >= 10)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#map-inner .cluster")) >= 1)
    time.sleep(0.5)
    driver.save_screenshot(str(tmp_path / "map.png"))
    assert _non_blank(tmp_path / "map.png") > 100
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_filters_timeline_and_places_in_browser(exif_db, driver, tmp_path):  # noqa: F811
    """Filters as chips, a date histogram whose bars filter, a scatter of GPS positions, and a photo's
    details, on real photos with EXIF dates, cameras and positions."""
    wait = WebDriverWait(driver, 30)
    with serving(exif_db[0]) as address:
        driver.get(address + "/?q=" + quote("crocodile in:Trips"))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .card")) == 3)
        assert [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#chips .chip")] == ["in:Trips\n×"]
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#places circle.place")) == 3)
        bars = driver.find_elements(By.CSS_SELECTOR, "#timeline rect.tbar")
        assert [b.get_attribute("data-start") for b in bars][0] == "2019-06"
        driver.save_screenshot(str(tmp_path / "filters.png"))

        bars[0].click()  # June 2019 only
        wait.until(lambda d: "after%3A2019-06" in d.current_url and "before%3A2019-07" in d.current_url)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .card")) == 2)
        whens = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#grid .card .when")]
        assert all(w.startswith("2019-06-1") and "Canon EOS 5D" in w for w in whens), whens

        chip = next(c for c in driver.find_elements(By.CSS_SELECTOR, "#chips .chip") if "in:Trips" in c.text)
        chip.find_element(By.TAG_NAME, "button").click()  # the folder filter goes, the dates stay
        wait.until(lambda d: "in%3ATrips" not in d.current_url and "after%3A2019-06" in d.current_url)

        driver.get(address + "/?q=" + quote("camera:google") + "&sort=newest")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .card")) == 2)
        assert driver.find_element(By.ID, "sort").get_attribute("value") == "newest"
        driver.find_elements(By.CSS_SELECTOR, "#places circle.place")[0].click()  # opens that photo
        wait.until(EC.visibility_of_element_located((By.ID, "modal")))
        wait.until(lambda d: "Google Pixel 4" in d.find_element(By.ID, "detail-info").text)
        driver.save_screenshot(str(tmp_path / "details.png"))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
