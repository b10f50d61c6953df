"""Duplicates: byte-identical copies and edited copies of real photos are grouped; different photos of the
same subject are not; bad thresholds are refused; search shows identical files as one result."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance

from semsearch.collection import Collection
from semsearch.dupes import DEFAULT_THRESHOLD, neighbour_graph
from semsearch.errors import QueryError
from semsearch.index import create_index

CLASSES = ("crocodile", "laptop", "soccer_ball")


@pytest.fixture(scope="module")
def library(caltech, tmp_path_factory) -> dict[str, object]:
    """3 classes x 4 real photos, plus copies as a photo library gets them: the first crocodile twice more,
    byte for byte (another folder); the first laptop resized to half and re-saved at JPEG quality 50; the
    first soccer ball cropped by 5 % and brightened."""
    photos = tmp_path_factory.mktemp("dupes-photos")
    for name in CLASSES:
        (photos / name).mkdir()
        for src in sorted((caltech / name).iterdir())[:4]:
            shutil.copy2(src, photos / name / src.name)
    first = {name: sorted((photos / name).iterdir())[0] for name in CLASSES}
    (photos / "backup").mkdir()
    (photos / "backup" / "old").mkdir()
    copies = [photos / "backup" / first["crocodile"].name, photos / "backup" / "old" / "croc.jpg"]
    for copy in copies:
        shutil.copy2(first["crocodile"], copy)
    with Image.open(first["laptop"]) as im:
        im.convert("RGB").resize((im.width // 2, im.height // 2)).save(
            photos / "backup" / "laptop.jpg", quality=50
        )
    with Image.open(first["soccer_ball"]) as im:
        w, h = im.size
        crop = im.convert("RGB").crop((round(w * 0.05), round(h * 0.03), w, h - round(h * 0.02)))
        ImageEnhance.Brightness(crop).enhance(1.15).save(photos / "backup" / "ball.png")
    db = tmp_path_factory.mktemp("dupes-db")
    with Collection(db, writable=True) as collection:
        collection.sync(photos)
        ids = {r.path: r.id for r in collection.store.records().values()}
    expected = [
        {ids[str(first["crocodile"])], *(ids[str(c)] for c in copies)},
        {ids[str(first["laptop"])], ids[str(photos / "backup" / "laptop.jpg")]},
        {ids[str(first["soccer_ball"])], ids[str(photos / "backup" / "ball.png")]},
    ]
    return {"db": db, "photos": photos, "ids": ids, "expected": expected, "first": first}


def test_copies_are_grouped_and_other_photos_are_not(library) -> None:
    with Collection(library["db"]) as collection:
        groups = collection.duplicates()
    assert sorted(map(set, (g.ids for g in groups)), key=min) == sorted(library["expected"], key=min)
    croc = next(g for g in groups if len(g.ids) == 3)
    assert [set(ids) for ids in croc.identical] == [set(croc.ids)]
    assert all(not g.identical for g in groups if g is not croc)
    for group in groups:
        assert len(group.pairs) == math.comb(len(group.ids), 2)  # every pair's score, best first
        assert [s for *_, s in group.pairs] == sorted((s for *_, s in group.pairs), reverse=True)
        assert all(s >= DEFAULT_THRESHOLD for *_, s in group.pairs)
        assert [Path(p).name for p in group.paths] == [Path(p).name for p in group.paths]
        assert {library["ids"][p] for p in group.paths} == set(group.ids)
    record = croc.to_dict()
    assert set(record) == {"ids", "paths", "identical", "pairs"}
    assert all(p["score"] == pytest.approx(1.0, abs=1e-5) for p in record["pairs"])


def test_threshold_one_keeps_only_identical_files(library) -> None:
    with Collection(library["db"]) as collection:
        groups = collection.duplicates(1.0)
    assert [set(g.ids) for g in groups] == [library["expected"][0]]


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.0001, 2, float("nan"), float("inf"), -float("inf")])
def test_thresholds_outside_0_1_are_refused(library, bad) -> None:
    with (
        Collection(library["db"]) as collection,
        pytest.raises(QueryError, match="threshold must be above 0"),
    ):
        collection.duplicates(bad)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(low=st.floats(0.01, 1.0), high=st.floats(0.01, 1.0))
def test_a_higher_threshold_only_splits_groups(library, low, high) -> None:
    """Whatever the thresholds, the groups at the higher one lie inside groups at the lower one, and every
    member of a group is linked to another at or above its threshold (or is an identical file)."""
    low, high = sorted((low, high))
    with Collection(library["db"]) as collection:
        graph = collection.neighbour_graph()
        read = lambda rows: collection.store.vectors_at(collection.image_space, rows)  # noqa: E731
        coarse, fine = graph.groups(low, read), graph.groups(high, read)
    assert any(library["expected"][0] == set(g.ids) or library["expected"][0] <= set(g.ids) for g in fine)
    for group in fine:
        assert any(set(group.ids) <= set(c.ids) for c in coarse)
    for group in coarse:
        same = {i for ids in group.identical for i in ids}
        linked = {i for a, b, s in group.pairs if s >= low for i in (a, b)}
        assert set(group.ids) <= linked | same


def test_empty_and_single_photo_collections(tmp_path, caltech) -> None:
    with Collection(tmp_path / "empty", writable=True) as collection:
        assert collection.duplicates() == []
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy2(sorted((caltech / "laptop").iterdir())[0], one)
    with Collection(tmp_path / "db", writable=True) as collection:
        collection.sync(one)
        assert collection.duplicates(0.01) == []


def test_ann_index_gives_the_same_groups(library) -> None:
    """Above the ANN threshold the neighbours come from the ANN backend; the groups are the same here."""
    with Collection(library["db"]) as collection:
        records = sorted(collection.store.records().values(), key=lambda r: r.id)
        space = collection.image_space
        read = lambda rows: collection.store.vectors_at(space, rows)  # noqa: E731
        rows = np.array([r.row for r in records])
        ann = create_index("auto", read(rows).shape[1], ann_threshold=4)  # the collections' default policy
        ann.add(np.array([r.id for r in records]), read(rows))
        assert ann.stage.name in ("scann", "hnsw")
        graph = neighbour_graph(
            np.array([r.id for r in records]),
            [r.path for r in records],
            [r.sha256 for r in records],
            rows,
            read,
            ann,
        )
        groups = graph.groups(DEFAULT_THRESHOLD, read)
    assert sorted(map(set, (g.ids for g in groups)), key=min) == sorted(library["expected"], key=min)


def test_identical_files_are_one_search_result(library) -> None:
    """A search that reaches a photo with byte-identical copies shows it once, naming the other paths, and
    still fills k with other photos."""
    croc = library["expected"][0]
    with Collection(library["db"]) as collection:
        n = collection.store.count()
        query = next(i for i in library["ids"].values() if i not in croc)
        hits = collection.similar(query, k=n)
        text = collection.search("crocodile", k=n, min_score=0)
    for found in (hits, text):
        at = [h for h in found if h.id in croc]
        assert len(at) == 1 and len(at[0].also) == 2
        assert {at[0].path, *at[0].also} == {p for p, i in library["ids"].items() if i in croc}
        assert all(h.also == () for h in found if h.id not in croc)
        assert [h.rank for h in found] == list(range(1, len(found) + 1))
    assert len(hits) == n - 1 - 2  # every other photo, the two extra copies folded in
    assert len(text) == n - 2
    assert hits[0].to_dict()["also"] == [] and set(at[0].to_dict()) >= {"rank", "id", "path", "score", "also"}


def test_similar_to_a_photo_with_copies_lists_them_but_not_itself(library) -> None:
    original = min(library["expected"][0])
    with Collection(library["db"]) as collection:
        hits = collection.similar(original, k=3)
        own = collection.store.get(original).path
    assert hits[0].score == pytest.approx(1.0, abs=1e-5) and hits[0].id in library["expected"][0]
    assert own not in hits[0].also and len(hits[0].also) == 1
    assert len(hits) == 3


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}  # wide enough that the table shows whole paths
    return subprocess.run(
        [sys.executable, "-m", "semsearch.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_cli_json_and_table(library) -> None:
    run = _cli("dupes", "--db", str(library["db"]), "--json")
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert found["threshold"] == DEFAULT_THRESHOLD
    assert sorted(map(set, (g["ids"] for g in found["groups"])), key=min) == sorted(
        library["expected"], key=min
    )
    table = _cli("dupes", "--db", str(library["db"]), "--threshold", "0.99")
    assert table.returncode == 0, table.stderr
    assert "1 group, 3 photos (threshold 0.99)" in table.stdout and "croc.jpg" in table.stdout


@pytest.mark.parametrize("bad", ["0", "1.5", "-1", "nan", "abc"])
def test_cli_bad_threshold_is_one_line(library, bad) -> None:
    run = _cli("dupes", "--db", str(library["db"]), "--threshold", bad)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "threshold" in run.stderr.lower()
    if bad != "abc":  # a float that is not in (0, 1]: our message
        assert run.stderr.strip().splitlines() == [run.stderr.strip()] and run.stderr.startswith("error: ")


def test_cli_empty_collection(tmp_path) -> None:
    Collection(tmp_path / "db", writable=True).close()
    run = _cli("dupes", "--db", str(tmp_path / "db"))
    assert run.returncode == 0, run.stderr
    assert "no duplicates" in run.stdout and "has no images yet" in run.stderr


# ------------------------------------------------------------------------------------------ HTTP and page


def _client(db: Path):
    from fastapi.testclient import TestClient

    from semsearch.server.app import create_app

    return TestClient(create_app(db), base_url="http://127.0.0.1:8000")


def test_http_duplicates_match_the_library_api(library) -> None:
    with Collection(library["db"]) as collection:
        expected = [g.to_dict() for g in collection.duplicates()]
    with _client(library["db"]) as c:
        found = c.get("/api/duplicates").json()
        assert found == {"threshold": DEFAULT_THRESHOLD, "total": len(expected), "groups": expected}
        first = c.get("/api/duplicates", params={"limit": 1}).json()
        assert first["total"] == 3 and first["groups"] == expected[:1]
        strict = c.get("/api/duplicates", params={"threshold": 1}).json()
        assert [set(g["ids"]) for g in strict["groups"]] == [library["expected"][0]]
        hits = c.get("/api/search", params={"q": "crocodile", "k": 30, "min_score": 0}).json()
        assert sorted(len(h["also"]) for h in hits)[-1] == 2  # the crocodile's two copies, folded in


@pytest.mark.parametrize(
    "params",
    [
        {"threshold": 0},
        {"threshold": -1},
        {"threshold": 1.5},
        {"threshold": "nan"},
        {"threshold": "x"},
        {"limit": 0},
        {"limit": 501},
        {"limit": "many"},
    ],
)
def test_http_bad_parameters_are_4xx(library, params) -> None:
    with _client(library["db"]) as c:
        response = c.get("/api/duplicates", params=params)
    assert 400 <= response.status_code < 500 and response.json()["detail"]


def test_http_compares_once_per_collection_version(caltech, tmp_path) -> None:
    """Another threshold regroups the same neighbour graph; a new index run makes a new one."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for src in sorted((caltech / "laptop").iterdir())[:3]:
        shutil.copy2(src, photos)
    with Collection(tmp_path / "db", writable=True) as collection:
        collection.sync(photos)
    with _client(tmp_path / "db") as c:
        assert c.get("/api/duplicates").json() == {"threshold": DEFAULT_THRESHOLD, "total": 0, "groups": []}
        epoch = c.app.state.served.epoch()
        graph = epoch.cached(("neighbours", "features"), lambda: None)
        assert graph is not None and len(graph.ids) == 3
        c.get("/api/duplicates", params={"threshold": 0.5})
        assert c.app.state.served.epoch() is epoch and epoch.cached(("neighbours", "features"), None) is graph
        shutil.copy2(next(photos.iterdir()), photos / "copy.jpg")
        with Collection(tmp_path / "db", writable=True) as collection:
            collection.sync(photos)
        found = c.get("/api/duplicates").json()
        assert found["total"] == 1 and len(found["groups"][0]["identical"]) == 1


def test_http_empty_collection(tmp_path) -> None:
    Collection(tmp_path / "db", writable=True).close()
    with _client(tmp_path / "db") as c:
        assert c.get("/api/duplicates").json() == {"threshold": DEFAULT_THRESHOLD, "total": 0, "groups": []}


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver",
)
def test_page_shows_groups_side_by_side(library, tmp_path) -> None:
    """The Duplicates tab lists each group's thumbnails in a row, marks identical copies, and a stricter
    threshold typed in the page leaves only the identical files."""
    import socket
    import threading
    import time

    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from semsearch.server.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(library["db"]), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        while not server.started:
            time.sleep(0.05)
        wait = WebDriverWait(driver, 30)
        driver.get(f"http://127.0.0.1:{port}/")
        driver.find_element(By.ID, "tab-dupes").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".dupe-group")) == 3)
        assert "tab=dupes" in driver.current_url
        rows = [
            {int(c.get_attribute("data-id")) for c in g.find_elements(By.CSS_SELECTOR, ".card")}
            for g in driver.find_elements(By.CSS_SELECTOR, ".dupe-group")
        ]
        assert sorted(rows, key=min) == sorted(library["expected"], key=min)
        wait.until(
            lambda d: d.execute_script(
                "return [...document.querySelectorAll('.dupe-group img')].every(i => i.complete && i.naturalWidth > 0)"
            )
        )
        marks = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".dupe-group .score")]
        assert sum(m.startswith("= #") for m in marks) == 2  # the crocodile's two identical copies
        driver.save_screenshot(str(tmp_path / "dupes.png"))
        box = driver.find_element(By.ID, "threshold")
        box.clear()
        box.send_keys("1", Keys.ENTER)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".dupe-group")) == 1)
        assert "threshold=1" in driver.current_url
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(10)
