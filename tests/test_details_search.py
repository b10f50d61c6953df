"""Photo details end to end on real photos with EXIF written by PIL: indexing stores them (corrupt EXIF
and out-of-range GPS included), filters restrict `search` and `similar` inside the index search, results
sort by date, and collections made before details existed get them without re-embedding."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_metadata import _exif_span, photo_bytes

from semsearch.collection import Collection
from semsearch.errors import QueryError

PARIS = ("N", (48.0, 51.0, 29.0), "E", (2.0, 21.0, 8.0))
SYDNEY = ("S", (33.0, 52.0, 0.0), "E", (151.0, 12.0, 0.0))
BAD_GPS = ("N", (95.0, 0.0, 0.0), "E", (2.0, 0.0, 0.0))

#: (folder, source class, index in the class, EXIF) for each photo of the test collection.
PHOTOS = [
    (
        "Trips/Paris",
        "crocodile",
        0,
        dict(taken="2019:06:14 10:00:00", make="Canon", model="Canon EOS 5D", gps=PARIS),
    ),
    (
        "Trips/Paris",
        "crocodile",
        1,
        dict(taken="2019:06:15 11:00:00", make="Canon", model="Canon EOS 5D", gps=PARIS),
    ),
    (
        "Trips/Sydney",
        "crocodile",
        2,
        dict(taken="2020:02:01 09:00:00", make="Google", model="Pixel 4", gps=SYDNEY),
    ),
    ("home", "crocodile", 3, dict(taken="2021:03:03 12:00:00", make="Google", model="Pixel 7")),
    ("home", "laptop", 0, dict(taken="2018:01:01 08:00:00", make="Apple", model="iPhone 8", gps=BAD_GPS)),
    ("home", "laptop", 1, dict(taken="2022:05:05 05:05:05", make="Apple", model="iPhone 13")),
    ("home", "laptop", 2, dict(taken="2017:07:07 07:07:07", make="Pixel", model="Pixel 2")),
    ("home", "soccer_ball", 0, {}),  # no EXIF: the file time stands in
    ("home", "soccer_ball", 1, "corrupt"),  # a corrupt EXIF block: no details, still indexed
]


@pytest.fixture(scope="module")
def exif_photos(caltech, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exif-photos")
    for folder, cls, i, exif in PHOTOS:
        source = sorted((caltech / cls).iterdir())[i]
        if exif == "corrupt":
            data = bytearray(photo_bytes(source, taken="2019:06:14 10:00:00", make="Canon", gps=PARIS))
            start, end = _exif_span(bytes(data))
            data[start + 4 : start + 8] = b"\xff\xff\xff\x7f"  # the first IFD lies far past the end
            data[start + 20 : end] = bytes(range(256)) * ((end - start - 20) // 256) + b"\x07" * (
                (end - start - 20) % 256
            )
        else:
            data = photo_bytes(source, **exif)
        target = root / folder / f"{cls}-{i}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(bytes(data))
        os.utime(target, ns=(1_600_000_000 * 10**9,) * 2)
    return root


@pytest.fixture(scope="module")
def exif_db(exif_photos, tmp_path_factory) -> tuple[Path, dict]:
    db = tmp_path_factory.mktemp("exif-db") / "db"
    with Collection(db, writable=True) as c:
        report = c.sync(exif_photos)
    return db, report.to_dict()


def _names(hits) -> list[str]:
    return [Path(h.path).name for h in hits]


def test_index_reads_details_and_notes_bad_gps(exif_db):
    db, report = exif_db
    assert report["added"] == len(PHOTOS) and report["skipped"] == 0  # the corrupt-EXIF photo too
    notes = {Path(n["path"]).name: n["note"] for n in report["notes"]}
    assert "laptop-0.jpg" in notes and "latitude" in notes["laptop-0.jpg"]
    with Collection(db) as c:
        by_name = {Path(r.path).name: r.id for r in c.store.records().values()}
        info = c.image_details(by_name["crocodile-0.jpg"])
        assert info["taken"] == "2019-06-14T10:00:00" and info["taken_from"] == "exif"
        assert info["camera"] == "Canon EOS 5D" and info["gps"] == pytest.approx([48.858, 2.3522], abs=1e-3)
        assert info["width"] > 0 and info["height"] > 0
        plain = c.image_details(by_name["soccer_ball-0.jpg"])
        assert plain["taken_from"] == "file" and plain["camera"] is None and plain["gps"] is None
        corrupt = c.image_details(by_name["soccer_ball-1.jpg"])
        assert corrupt["taken_from"] == "file" and corrupt["camera"] is None
        assert c.image_details(by_name["laptop-0.jpg"])["gps"] is None


@pytest.mark.parametrize(
    "filters, expected",
    [
        ("after:2019-06 before:2020", {"crocodile-0.jpg", "crocodile-1.jpg"}),
        ("in:Trips", {"crocodile-0.jpg", "crocodile-1.jpg", "crocodile-2.jpg"}),
        ("in:Sydney", {"crocodile-2.jpg"}),
        ("camera:pixel", {"crocodile-2.jpg", "crocodile-3.jpg", "laptop-2.jpg"}),
        ("camera:iphone after:2020", {"laptop-1.jpg"}),
        ("near:48.85,2.35,20km", {"crocodile-0.jpg", "crocodile-1.jpg"}),
        ("near:-33.87,151.21,50km camera:google", {"crocodile-2.jpg"}),
        ("before:2015", set()),
    ],
)
def test_filters_restrict_search_and_similar(exif_db, filters, expected):
    db, _ = exif_db
    with Collection(db) as c:
        found = c.search(f"crocodile {filters}", k=20, min_score=0)
        assert set(_names(found)) == expected
        seed = next(r.id for r in c.store.records().values() if r.path.endswith("crocodile-3.jpg"))
        from semsearch.query import parse_filters

        similar = c.similar(seed, k=20, filters=parse_filters(filters))
        assert set(_names(similar)) == expected - {"crocodile-3.jpg"}


def test_filtered_search_finds_the_allowed_photos_even_when_all_others_rank_higher(exif_db):
    """k=2 among the laptops for 'crocodile': the laptops rank last unfiltered, and come back all the
    same, because the filter restricts the index search rather than dropping its results."""
    db, _ = exif_db
    with Collection(db) as c:
        unfiltered = _names(c.search("crocodile", k=len(PHOTOS), min_score=0))
        assert set(unfiltered[:4]) == {f"crocodile-{i}.jpg" for i in range(4)}
        found = c.search("crocodile camera:apple", k=2, min_score=0)
    assert set(_names(found)) == {"laptop-0.jpg", "laptop-1.jpg"}
    assert [h.rank for h in found] == [1, 2]


def test_filters_alone_list_photos_by_date(exif_db):
    db, _ = exif_db
    with Collection(db) as c:
        newest = c.search("camera:pixel", k=10)
        oldest = c.search("camera:pixel", k=2, sort="date")
    assert _names(newest) == ["crocodile-3.jpg", "crocodile-2.jpg", "laptop-2.jpg"]
    assert _names(oldest) == ["laptop-2.jpg", "crocodile-2.jpg"]
    assert newest[0].to_dict()["taken"] == "2021-03-03T12:00:00"


def test_sort_by_date_orders_the_best_matches(exif_db):
    db, _ = exif_db
    with Collection(db) as c:
        best = c.search("crocodile in:Trips", k=3, min_score=0)
        by_date = c.search("crocodile in:Trips", k=3, min_score=0, sort="date")
        newest = c.search("crocodile in:Trips", k=3, min_score=0, sort="newest")
    assert set(_names(best)) == set(_names(by_date))
    assert _names(by_date) == ["crocodile-0.jpg", "crocodile-1.jpg", "crocodile-2.jpg"]
    assert _names(newest) == _names(by_date)[::-1]
    assert [h.rank for h in by_date] == [1, 2, 3]


def test_hits_carry_details_in_json(exif_db):
    db, _ = exif_db
    with Collection(db) as c:
        row = c.search("crocodile in:Paris", k=1, min_score=0)[0].to_dict()
    assert {"rank", "id", "path", "score", "also", "taken", "taken_from", "camera", "gps"} == set(row)
    assert row["camera"] == "Canon EOS 5D" and row["gps"] == pytest.approx([48.858, 2.3522], abs=1e-3)


def test_bad_filters_are_one_line_cli_errors(exif_db):
    db, _ = exif_db
    for args in (
        ["search", "crocodile after:2019-13", "--db", str(db)],
        ["search", "crocodile near:95,2", "--db", str(db)],
        ["similar", "id:1", "--db", str(db), "--filter", "near:1,2,-3km"],
        ["similar", "id:1", "--db", str(db), "--filter", "beach"],
    ):
        run = subprocess.run([sys.executable, "-m", "semsearch.cli", *args], capture_output=True, text=True)
        assert run.returncode == 2, run.stderr
        assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1, run.stderr
    with Collection(db) as c, pytest.raises(QueryError):
        c.search("crocodile colour:red")


def test_cli_filters_sort_and_json(exif_db):
    db, _ = exif_db
    cli = [sys.executable, "-m", "semsearch.cli"]
    run = subprocess.run(
        [
            *cli,
            "search",
            "crocodile in:Trips",
            "--db",
            str(db),
            "--sort",
            "date",
            "--json",
            "--min-score",
            "0",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(run.stdout)
    assert [Path(r["path"]).name for r in rows] == ["crocodile-0.jpg", "crocodile-1.jpg", "crocodile-2.jpg"]
    assert rows[0]["taken"] == "2019-06-14T10:00:00" and rows[0]["taken_from"] == "exif"
    run = subprocess.run(
        [*cli, "similar", "id:1", "--db", str(db), "--filter", "camera:google", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert {r["camera"] for r in json.loads(run.stdout)} <= {"Google Pixel 4", "Google Pixel 7"}


def test_collections_without_details_get_them_without_reembedding(exif_photos, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(exif_photos, photos)
    db = tmp_path / "db"
    with Collection(db, writable=True) as c:
        c.sync(photos)
        before = {r.path: (r.id, r.row) for r in c.store.records().values()}
    catalog = sqlite3.connect(db / "catalog.sqlite")  # as a collection indexed before details existed
    catalog.execute(
        "UPDATE images SET details = NULL, taken = NULL, camera_make = NULL, camera_model = NULL, lat = NULL, lon = NULL"
    )
    catalog.commit()
    catalog.close()
    vectors = sorted((p.name, p.stat().st_size) for p in db.glob("*.f32"))
    with Collection(db) as c:
        assert c.search("crocodile in:Paris", k=5, min_score=0)  # folders need no details
        assert c.search("crocodile camera:canon", k=5, min_score=0) == []
    with Collection(db, writable=True) as c:
        report = c.sync(photos)
        assert (report.added, report.updated, report.unchanged, report.details) == (
            0,
            0,
            len(PHOTOS),
            len(PHOTOS),
        )
        assert {r.path: (r.id, r.row) for r in c.store.records().values()} == before
        assert set(_names(c.search("crocodile camera:canon", k=5, min_score=0))) == {
            "crocodile-0.jpg",
            "crocodile-1.jpg",
        }
        assert c.sync(photos).details == 0  # read once
    assert sorted((p.name, p.stat().st_size) for p in db.glob("*.f32")) == vectors


# ------------------------------------------------------------------ over HTTP


@pytest.fixture(scope="module")
def client(exif_db):
    from fastapi.testclient import TestClient

    from semsearch.server.app import create_app

    with TestClient(create_app(exif_db[0]), base_url="http://127.0.0.1:8000") as c:
        yield c


def test_api_search_and_similar_take_filters_and_sort(client, exif_db):
    rows = client.get(
        "/api/search", params={"q": "crocodile in:Trips", "sort": "date", "min_score": 0}
    ).json()
    assert [Path(r["path"]).name for r in rows] == ["crocodile-0.jpg", "crocodile-1.jpg", "crocodile-2.jpg"]
    assert rows[0]["camera"] == "Canon EOS 5D" and rows[0]["taken"] == "2019-06-14T10:00:00"
    with Collection(exif_db[0]) as c:
        seed = next(r.id for r in c.store.records().values() if r.path.endswith("crocodile-3.jpg"))
    similar = client.get(f"/api/similar/{seed}", params={"filter": "near:48.85,2.35,20km"}).json()
    assert {Path(r["path"]).name for r in similar} == {"crocodile-0.jpg", "crocodile-1.jpg"}
    listed = client.get("/api/search", params={"q": "camera:pixel", "sort": "newest"}).json()
    assert [Path(r["path"]).name for r in listed] == ["crocodile-3.jpg", "crocodile-2.jpg", "laptop-2.jpg"]


@pytest.mark.parametrize(
    "url, params",
    [
        ("/api/search", {"q": "crocodile after:2019-13"}),
        ("/api/search", {"q": "crocodile near:95,2"}),
        ("/api/search", {"q": "crocodile colour:red"}),
        ("/api/similar/1", {"filter": "near:1,2,-3km"}),
        ("/api/similar/1", {"filter": "crocodile"}),
        ("/api/facets", {"filter": "before:yesterday"}),
    ],
)
def test_api_bad_filters_are_400(client, url, params):
    response = client.get(url, params=params)
    assert response.status_code == 400 and "detail" in response.json()
    assert client.get("/api/search", params={"q": "crocodile", "sort": "sideways"}).status_code == 400


def test_api_image_details(client, exif_db):
    with Collection(exif_db[0]) as c:
        ids = {Path(r.path).name: r.id for r in c.store.records().values()}
    info = client.get(f"/api/images/{ids['crocodile-2.jpg']}").json()
    assert info["camera"] == "Google Pixel 4" and info["taken"] == "2020-02-01T09:00:00"
    assert info["gps"] == pytest.approx([-33.8667, 151.2], abs=1e-3) and info["width"] > 0
    assert info["text"] is None  # no OCR on this collection


def test_api_facets_histogram_places_cameras(client):
    everything = client.get("/api/facets").json()
    assert everything["count"] == len(PHOTOS)
    assert sum(b["count"] for b in everything["dates"]["bins"]) == len(PHOTOS)
    assert everything["dates"]["unit"] == "year"  # 2017..2022 and two file times
    assert len(everything["places"]) == 3  # the out-of-range GPS tag is not a place
    cameras = {c["camera"]: c["count"] for c in everything["cameras"]}
    assert cameras["Canon EOS 5D"] == 2 and cameras["Google Pixel 4"] == 1
    trips = client.get("/api/facets", params={"filter": "in:Trips"}).json()
    assert trips["count"] == 3 and trips["dates"]["unit"] == "month"
    assert [b["start"] for b in trips["dates"]["bins"]][:2] == ["2019-06", "2019-07"]
    assert {p["id"] for p in trips["places"]} <= {p["id"] for p in everything["places"]}
