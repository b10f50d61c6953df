"""The web page end to end in a real headless browser (Debian's chromium + chromium-driver, driven by
Selenium), at a desktop and a phone width, on one small real collection served once for the module.

Each state (start page, search, detail, more like this, keyboard, words, map, error, /docs) is saved as a
screenshot, ``<state>-<width>.png``, in the folder named by ``SEMSEARCH_SCREENSHOTS`` (default
``build/screenshots`` in the checkout) for people to look at; the tests assert behaviour, not pixels.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_details_search import PHOTOS
from test_metadata import photo_bytes

from semsearch.collection import Collection

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(
    os.environ.get("SEMSEARCH_SCREENSHOTS") or Path(__file__).resolve().parents[1] / "build" / "screenshots"
)
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
TOKEN = "tok3n"
#: a photo whose folder and file names are long enough to wrap in the detail view at both widths
LONG_FOLDER = "Family archive/Trips/Paris/Summer holidays 2019 (the best ones)"
LONG_NAME = "Crocodile_sunbathing_on_the_riverbank-near_the_old_bridge_IMG_20190614_101500.jpg"

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

# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def page_photos(caltech, tmp_path_factory) -> Path:
    """12 real photos: the EXIF set of the details tests (dates, cameras, GPS, folders Trips/… and home),
    one of them under a long folder and file name, and 3 accordions without EXIF (a fourth kind of photo)."""
    root = tmp_path_factory.mktemp("page-photos")
    for n, (folder, cls, i, exif) in enumerate(PHOTOS):
        source = sorted((caltech / cls).iterdir())[i]
        if n == 0:
            target = root / LONG_FOLDER / LONG_NAME
        else:
            target = root / "Family archive" / folder / f"{cls}-{i}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(photo_bytes(source, **exif) if isinstance(exif, dict) else source.read_bytes())
        os.utime(target, ns=(1_600_000_000 * 10**9,) * 2)
    for src in sorted((caltech / "accordion").iterdir())[:3]:
        (root / "Family archive" / "music").mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, root / "Family archive" / "music" / src.name)
    return root


@pytest.fixture(scope="module")
def page_db(page_photos, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("page-db") / "db"
    with Collection(db, writable=True) as c:
        assert c.sync(page_photos).added == len(PHOTOS) + 3
    return db


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
def server(page_db) -> Iterator[str]:
    with serving(page_db, token=TOKEN) as address:
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
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    d.set_page_load_timeout(30)
    yield d
    d.quit()


@pytest.fixture(scope="module", params=list(WIDTHS))
def width(request) -> str:
    return request.param


class Page:
    """The page in the browser at one width: open a state, wait, read geometry, keep a screenshot."""

    def __init__(self, driver, address: str, width: str) -> None:
        self.driver, self.address, self.width = driver, address, width
        self.wait = WebDriverWait(driver, 30)
        w, h = WIDTHS[width]  # a desktop window, or a phone's (mobile layout)
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": width == "phone"},
        )

    def open(self, query: str = "") -> None:
        sep = "&" if query else ""
        self.driver.get(f"{self.address}/?token={TOKEN}{sep}{query.lstrip('?')}")
        self.wait.until(
            lambda d: (
                "token=" not in d.current_url and d.execute_script("return document.readyState") == "complete"
            )
        )

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def find(self, css: str):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def thumbnails(self, css: str = "#grid .card img") -> int:
        return self.js(
            "return [...document.querySelectorAll(arguments[0])]"
            ".filter(i => i.complete && i.naturalWidth > 0 && i.offsetParent).length",
            css,
        )

    def search(self, text: str) -> None:
        box = self.find("#q")
        box.clear()
        box.send_keys(text, Keys.ENTER)

    def lines(self, css: str) -> list[str]:
        """The text of an element as the browser laid it out, one string per line."""
        text, starts = self.js(LINES, self.find(css))
        return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)])]

    def overflow(self) -> int:
        """How many pixels the page is wider than the viewport (0: nothing sticks out sideways)."""
        return self.js("return document.documentElement.scrollWidth - window.innerWidth")

    def shot(self, state: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{state}-{self.width}.png"
        self.driver.save_screenshot(str(path))
        assert _non_blank(path) > 100, f"{path} looks blank"
        return path

    def errors(self, allow: tuple[str, ...] = ()) -> list[dict]:
        """Console errors since the last call, but for failed requests to the URLs in `allow`."""
        return [
            e
            for e in self.driver.get_log("browser")
            if e["level"] == "SEVERE" and not any(a in e["message"] for a in allow)
        ]


@pytest.fixture
def page(driver, server, width) -> Iterator[Page]:
    p = Page(driver, server, width)
    p.errors()  # drop what earlier tests left
    yield p
    assert not p.errors(), "the page logged errors"


# An element's text and where each of its lines starts in it (characters grouped by the line box they sit on).
LINES = """
const node = arguments[0], starts = [], range = document.createRange();
let text = "", top = null;
const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
for (let t = walker.nextNode(); t; t = walker.nextNode()) {
  for (let i = 0; i < t.length; i++, text += t.data[i - 1]) {
    range.setStart(t, i); range.setEnd(t, i + 1);
    const r = range.getClientRects()[0];
    if (!r || !r.width) continue;
    if (top === null || r.top > top + r.height / 2) { starts.push(text.length); top = r.top; }
  }
}
return [text, starts];
"""


def _non_blank(path: Path) -> float:
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        pixels = np.asarray(img.convert("L"), dtype=np.float32)
    return float(pixels.var())


def _mid_word_breaks(lines: list[str]) -> list[tuple[str, str]]:
    """Line ends that cut a word: a letter or digit on both sides of the break."""
    return [(a, b) for a, b in zip(lines, lines[1:]) if a[-1:].isalnum() and b[:1].isalnum()]


def _overlaps(a: dict, b: dict) -> bool:
    return (
        a["left"] < b["right"]
        and b["left"] < a["right"]
        and a["top"] < b["bottom"]
        and b["top"] < a["bottom"]
    )


RECTS = """
return [...document.querySelectorAll(arguments[0])].filter(e => e.offsetParent).map(e => {
  const r = e.getBoundingClientRect(), x = scrollX, y = scrollY;  // page coordinates: scrolling moves none
  return {left: r.left + x, top: r.top + y, right: r.right + x, bottom: r.bottom + y, id: e.dataset.id || null,
          text: e.textContent};
}).filter(r => r.right > r.left && r.bottom > r.top);
"""


def _open_long_photo(page: Page) -> str:
    """Search for crocodiles, open the photo with the long name; returns its id."""
    page.open("q=crocodile")
    page.wait.until(lambda d: page.thumbnails() >= 4)
    card = next(c for c in page.all("#grid .card") if LONG_NAME in (c.get_attribute("title") or ""))
    card.click()
    page.wait.until(EC.visibility_of_element_located((By.ID, "modal")))
    page.wait.until(lambda d: page.find("#detail-name").text.replace("\n", "") == LONG_NAME)
    return card.get_attribute("data-id")


# ------------------------------------------------------------------------------------------ states


def test_start_page_shows_the_collection_and_invites_a_query(page):
    page.open()
    hero = page.find("#hero")
    page.wait.until(lambda d: "12 photos" in page.find("#hero-title").text)
    assert hero.is_displayed() and page.find("#q").is_displayed()
    page.wait.until(lambda d: page.thumbnails("#recent .card img") >= 6)
    examples = page.all("#examples .example")
    assert examples and all(e.is_displayed() and e.text.strip() for e in examples)
    dates = [e.text[:10] for e in page.all("#recent .card .when")]
    assert len(dates) == 12 and dates == sorted(dates, reverse=True), dates  # the newest first
    assert page.overflow() <= 0
    page.shot("start")
    query = examples[0].text
    examples[0].click()
    page.wait.until(lambda d: page.js("return new URLSearchParams(location.search).get('q')") == query)
    page.wait.until(lambda d: page.thumbnails() >= 1)


def test_search_shows_thumbnails_and_a_shareable_address(page):
    page.open()
    page.search("crocodile")
    page.wait.until(lambda d: page.thumbnails() >= 4)
    assert "q=crocodile" in page.driver.current_url
    scores = [e.text for e in page.all("#grid .card .score")]
    assert scores and all(0 < float(s) <= 1 for s in scores)
    assert page.overflow() <= 0, "the page is wider than the screen"
    if page.width == "phone":  # two photos a row, not one huge one
        rects = page.js(RECTS, "#grid .card")
        assert len({round(r["top"]) for r in rects[:2]}) == 1
    page.shot("search")
    first = page.find("#grid .card").get_attribute("data-id")
    page.driver.get(page.driver.current_url)  # the address gives the same results again
    page.wait.until(lambda d: page.thumbnails() >= 4)
    assert page.find("#grid .card").get_attribute("data-id") == first


def test_detail_shows_the_photo_large_with_its_details(page):
    _open_long_photo(page)
    page.wait.until(
        lambda d: page.js(
            "const i = document.getElementById('detail-img');"
            "return i.complete && i.naturalWidth > 0 && i.currentSrc.includes('/original')"
        )
    )
    natural_w, natural_h, box_w, box_h, view_w, view_h = page.js(
        "const i = document.getElementById('detail-img');"
        "return [i.naturalWidth, i.naturalHeight, i.clientWidth, i.clientHeight, innerWidth, innerHeight]"
    )
    scale = min(box_w / natural_w, box_h / natural_h)  # object-fit: contain
    assert natural_w < 400 and scale > 1.2, "a small original is shown at its own size, not scaled up"
    assert box_w * box_h >= 0.25 * view_w * view_h, "the photo's panel is small"

    name_lines, path_lines = page.lines("#detail-name"), page.lines("#detail-path")
    assert "".join(name_lines) == LONG_NAME and not _mid_word_breaks(name_lines), name_lines
    assert "".join(path_lines).endswith(LONG_FOLDER + "/" + LONG_NAME)
    assert not _mid_word_breaks(path_lines), path_lines
    file_start = next(i for i, line in enumerate(path_lines) if line.startswith(LONG_NAME[:10]))
    assert "".join(path_lines[file_start:]) == LONG_NAME and path_lines[file_start - 1].endswith("/")

    info = page.find("#detail-info").text
    assert "2019" in info and "Canon EOS 5D" in info and " × " in info, info
    page.wait.until(lambda d: len(page.all("#detail-tags li.tag")) >= 3)
    tags = page.js(RECTS, "#detail-tags li.tag a")
    heights = {round(t["bottom"] - t["top"]) for t in tags}
    assert len(heights) == 1, "a tag wraps onto two lines"
    assert all(t["text"].strip() for t in tags)
    for css in ("#detail-more", "#detail-original", "#modal-close"):
        assert page.find(css).is_displayed()
    assert page.overflow() <= 0
    page.shot("detail")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    folders=st.lists(
        st.lists(
            st.text("abcdefghijkmnopqrstuvwxyzé0123456789", min_size=1, max_size=11), min_size=1, max_size=4
        ),
        min_size=1,
        max_size=5,
    ),
    stem=st.lists(
        st.text("abcdefghijkmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=11),
        min_size=1,
        max_size=8,
    ),
    separators=st.lists(st.sampled_from("_- ."), min_size=8, max_size=8),
)
def test_names_and_paths_wrap_between_words(page, folders, stem, separators):
    """Any path: the detail view breaks lines only at separators, and the file name starts a line."""
    if page.js("return document.getElementById('modal').hidden"):
        _open_long_photo(page)
    name = "".join(w + separators[i % 8] for i, w in enumerate(stem[:-1])) + stem[-1] + ".jpeg"
    path = "/" + "/".join(" ".join(words) if len(words) > 1 else words[0] for words in folders) + "/" + name
    page.js(
        "document.getElementById('detail-name').replaceChildren(...breakable(arguments[0]));"
        "document.getElementById('detail-path').replaceChildren(...pathNodes(arguments[1]));",
        name,
        path,
    )
    name_lines, path_lines = page.lines("#detail-name"), page.lines("#detail-path")
    assert "".join(name_lines) == name and not _mid_word_breaks(name_lines), name_lines
    assert "".join(path_lines) == path and not _mid_word_breaks(path_lines), path_lines
    assert any("".join(path_lines[i:]) == name for i in range(len(path_lines))), (
        "the name does not start a line"
    )


def test_more_like_this_shows_the_query_photo(page):
    photo = _open_long_photo(page)
    page.find("#detail-more").click()
    page.wait.until(lambda d: f"similar={photo}" in d.current_url)
    page.wait.until(lambda d: page.thumbnails() >= 5)
    page.wait.until(lambda d: page.thumbnails("#status .query-photo img") == 1)
    heading = page.find("#status")
    assert f"/api/images/{photo}/thumb" in page.find("#status .query-photo img").get_attribute("src")
    assert LONG_NAME in heading.text.replace("\n", "") and "similar" in heading.text
    assert f"#{photo}" not in heading.text
    assert photo not in [c.get_attribute("data-id") for c in page.all("#grid .card")]
    page.shot("similar")
    page.find("#status .query-photo").click()  # the query photo opens in the detail view
    page.wait.until(EC.visibility_of_element_located((By.ID, "modal")))
    assert page.find("#modal-card").get_attribute("data-id") == photo


def test_keyboard_moves_through_results(page):
    """Arrows walk the results (here: more like the long-named photo, 11 of them), Enter opens one, ← →
    step through them in the detail view, Esc closes it, and Esc again goes back to the search."""
    _open_long_photo(page)
    page.find("#detail-more").click()
    page.wait.until(lambda d: page.thumbnails() >= 11)
    cards = page.all("#grid .card")
    ids = [c.get_attribute("data-id") for c in cards]
    active = lambda: page.js("return document.activeElement.dataset.id || null")  # noqa: E731
    page.find("#q").send_keys(Keys.ARROW_DOWN)
    assert active() == ids[0]
    assert page.js("return getComputedStyle(document.activeElement).outlineStyle") != "none", (
        "focus is invisible"
    )
    page.shot("keyboard")
    page.driver.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    assert active() == ids[1]
    before = page.js(RECTS, "#grid .card")[1]
    page.driver.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    below = next(r for r in page.js(RECTS, "#grid .card") if r["id"] == active())
    assert below["top"] >= before["bottom"] - 1 and abs(below["left"] - before["left"]) < 5
    page.driver.switch_to.active_element.send_keys(Keys.ARROW_LEFT)
    chosen = active()
    page.driver.switch_to.active_element.send_keys(Keys.ENTER)
    page.wait.until(EC.visibility_of_element_located((By.ID, "modal")))
    assert page.find("#modal-card").get_attribute("data-id") == chosen
    page.driver.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)  # the next result, in the detail view
    following = ids[ids.index(chosen) + 1]
    page.wait.until(lambda d: page.find("#modal-card").get_attribute("data-id") == following)
    page.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    page.wait.until(EC.invisibility_of_element_located((By.ID, "modal")))
    assert active() == following, "focus does not return to the results"
    page.driver.switch_to.active_element.send_keys(Keys.ESCAPE)  # Esc again: back to the search
    page.wait.until(lambda d: "similar=" not in d.current_url and "q=crocodile" in d.current_url)


def test_words_are_a_readable_column(page):
    page.open()
    page.find("#tab-words").click()
    page.search("ocean")
    page.wait.until(lambda d: len(page.all("#words li")) >= 5)
    assert "tab=words" in page.driver.current_url
    box = page.js(RECTS, "#words")[0]
    view = page.js("return innerWidth")
    assert box["right"] - box["left"] <= (640 if page.width == "desktop" else view)
    assert box["left"] >= 0 and box["right"] <= view  # not scrolled sideways: overflow() is 0
    words = page.js(RECTS, "#words .word")
    assert all(w["right"] - w["left"] > 20 for w in words)
    assert page.overflow() <= 0
    page.shot("words")
    page.find("#words .to-photos").click()  # a word's photos
    page.wait.until(lambda d: "tab=words" not in d.current_url and "q=" in d.current_url)


def test_map_labels_never_cover_photos(page):
    page.open()
    started = time.monotonic()
    page.find("#tab-map").click()
    page.wait.until(lambda d: len(page.all("#map-inner img.dot")) == 12)
    page.wait.until(lambda d: len(page.all("#legend .group")) >= 2)
    page.wait.until(lambda d: page.thumbnails("#map-inner img.dot") == 12)
    shown_in = time.monotonic() - started
    labels = page.js(RECTS, "#legend .group")
    assert all(label["text"].strip() for label in labels)
    page.find("#map-in").click()  # labels stay clear of photos at any zoom
    page.find("#map-out").click()
    dots = page.js(RECTS, "#map-inner img.dot")
    assert len(dots) == 12
    covered = [(label["text"], d["id"]) for label in labels for d in dots if _overlaps(label, d)]
    assert not covered, covered
    stacked = [(a["id"], b["id"]) for i, a in enumerate(dots) for b in dots[i + 1 :] if _overlaps(a, b)]
    assert not stacked, f"thumbnails cover each other: {stacked}"
    assert shown_in < 10, f"the map took {shown_in:.1f} s"
    page.shot("map")
    group = page.find("#legend .group")
    scale = page.js("return document.getElementById('map-inner').style.transform")
    group.click()  # a group's name zooms to its photos
    page.wait.until(lambda d: page.js("return document.getElementById('map-inner').style.transform") != scale)


def test_errors_are_explained(page):
    page.open("tab=words&q=" + quote("zzqqxv"))
    notice = page.wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#notice.error")))
    assert notice.get_attribute("role") == "alert"
    assert "zzqqxv" in page.find("#notice .notice-title").text
    assert "not in the vocabulary" in page.find("#notice .notice-detail").text
    assert "try" in page.find("#notice .notice-hint").text.lower()
    box = page.js(RECTS, "#notice")[0]
    assert box["bottom"] - box["top"] > 60 and box["right"] <= page.js("return innerWidth")
    page.shot("error")
    page.open("q=" + quote("crocodile after:someday"))  # a filter the server cannot read
    page.wait.until(lambda d: "after:someday" in page.find("#notice .notice-detail").text.lower())
    assert page.find("#notice .notice-hint").is_displayed()
    page.find("#notice a.button").click()  # back to the start page
    page.wait.until(lambda d: page.find("#hero").is_displayed())
    assert not page.errors(allow=("/api/words", "/api/search", "/api/facets"))  # the expected 400s only


def test_docs_render_offline(page):
    """/docs lists the API's operations with no network (this machine has none)."""
    page.driver.get(page.address + "/docs")
    try:
        WebDriverWait(page.driver, 10).until(lambda d: len(page.all(".opblock")) >= 8)
        assert any("/api/search" in e.text for e in page.all(".opblock-summary-path"))
        page.shot("docs")
    finally:
        problems = page.errors()
    assert not problems


# ------------------------------------------------------------------------------------------ flows


def test_upload_finds_similar_photos(driver, server, page_photos):
    page = Page(driver, server, "desktop")
    page.open()
    photo = next(p for p in sorted(page_photos.rglob("*.jpg")) if "music" in p.parts)
    upload = page.find("#file")
    page.js("arguments[0].hidden = false", upload)
    upload.send_keys(str(photo))
    page.wait.until(lambda d: photo.name in page.find("#status").text.replace("\n", ""))
    page.wait.until(lambda d: page.thumbnails() >= 5)
    assert float(page.find("#grid .card .score").text) > 0.99  # itself
    assert page.thumbnails("#status .query-photo img") == 1  # the uploaded photo heads its results
    assert not page.errors()


def test_filters_timeline_and_places_in_browser(driver, server):
    """Filters as chips, a date histogram whose bars filter, a scatter of GPS positions, and a photo's
    details, on real photos with EXIF dates, cameras and positions."""
    page = Page(driver, server, "desktop")
    page.open("q=" + quote("crocodile in:Trips"))
    page.wait.until(lambda d: len(page.all("#grid .card")) == 3)
    assert [c.text for c in page.all("#chips .chip")] == ["in:Trips\n×"]
    page.wait.until(lambda d: len(page.all("#places circle.place")) == 3)
    bars = page.all("#timeline rect.tbar")
    assert [b.get_attribute("data-start") for b in bars][0] == "2019-06"
    page.shot("filters")

    bars[0].click()  # June 2019 only
    page.wait.until(lambda d: "after%3A2019-06" in d.current_url and "before%3A2019-07" in d.current_url)
    page.wait.until(lambda d: len(page.all("#grid .card")) == 2)
    whens = [e.text for e in page.all("#grid .card .when")]
    assert all(w.startswith("2019-06-1") and "Canon EOS 5D" in w for w in whens), whens

    chip = next(c for c in page.all("#chips .chip") if "in:Trips" in c.text)
    chip.find_element(By.TAG_NAME, "button").click()  # the folder filter goes, the dates stay
    page.wait.until(lambda d: "in%3ATrips" not in d.current_url and "after%3A2019-06" in d.current_url)

    page.open("q=" + quote("camera:google") + "&sort=newest")
    page.wait.until(lambda d: len(page.all("#grid .card")) == 2)
    assert page.find("#sort").get_attribute("value") == "newest"
    page.all("#places circle.place")[0].click()  # opens that photo
    page.wait.until(EC.visibility_of_element_located((By.ID, "modal")))
    page.wait.until(lambda d: "Google Pixel 4" in page.find("#detail-info").text)
    assert not page.errors()
