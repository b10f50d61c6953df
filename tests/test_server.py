"""API tests for `semsearch serve` (FastAPI TestClient) on a small real collection."""

from __future__ import annotations

import http.client
import io
import json
import math
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from semsearch.collection import Collection  # noqa: E402

CALTECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "caltech-dev"
CLASSES = ("crocodile", "laptop", "soccer_ball", "accordion")
PER_CLASS = 5
LOCAL = "http://127.0.0.1:8000"
IMAGE_ROW = {"rank", "id", "path", "score", "also", "taken", "taken_from", "camera", "gps"}  # also: copies
TRAVERSALS = ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd", "/etc/passwd")

has_search = pytest.mark.skipif(
    not hasattr(Collection, "search"), reason="Collection.search (text → images) has not landed yet"
)
has_tags = pytest.mark.skipif(
    not hasattr(Collection, "tags"), reason="Collection.tags (image → words) has not landed yet"
)


def build_collection(tmp_path_factory) -> tuple[Path, Path]:
    """(db, photos): 4 classes x 5 real caltech photos (or the skimage demo photos), indexed."""
    photos = tmp_path_factory.mktemp("server-photos")
    if CALTECH.is_dir():
        for name in CLASSES:
            (photos / name).mkdir()
            for src in sorted((CALTECH / name).iterdir())[:PER_CLASS]:
                shutil.copy2(src, photos / name / src.name)
    else:
        from semsearch.demo import demo_photos

        demo_photos(photos)
    db = tmp_path_factory.mktemp("server-db")
    try:
        with Collection(db, writable=True) as collection:
            report = collection.sync(photos)
    except ImportError as exc:  # the image pipeline is not importable in this checkout
        pytest.skip(f"cannot index photos: {exc}")
    assert report.added >= 10
    return db, photos


@pytest.fixture(scope="session")
def served_collection(tmp_path_factory) -> tuple[Path, Path]:
    return build_collection(tmp_path_factory)


@pytest.fixture(scope="session")
def db(served_collection) -> Path:
    return served_collection[0]


def local(app, **kwargs) -> TestClient:
    """A client talking to `app` as a browser on this machine does (Host: 127.0.0.1:8000)."""
    return TestClient(app, base_url=LOCAL, **kwargs)


@pytest.fixture(scope="module")
def client(db):
    from semsearch.server.app import create_app

    with local(create_app(db, max_upload=2 * 1024 * 1024)) as c:
        yield c


@pytest.fixture(scope="module")
def ids(db) -> list[int]:
    with Collection(db) as c:
        return sorted(r.id for r in c.store.records().values())


@pytest.fixture(scope="module")
def photo_bytes(served_collection) -> bytes:
    return next(p for p in sorted(served_collection[1].rglob("*")) if p.is_file()).read_bytes()


def _check_rows(rows, keys):
    assert isinstance(rows, list) and rows
    for rank, row in enumerate(rows, start=1):
        assert set(row) == set(keys)
        assert row["rank"] == rank
        assert isinstance(row["score"], float)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)


# ------------------------------------------------------------------------------------------ meta


def test_health_stats_classes_schema(client, ids):
    assert client.get("/api/health").json() == {"status": "ok", "images": len(ids)}
    stats = client.get("/api/stats").json()
    assert stats["images"] == len(ids) and stats["model"]
    classes = client.get("/api/classes").json()
    assert len(classes) == 1000 and classes[0] == {"index": 0, "name": classes[0]["name"]}
    schema = client.get("/openapi.json").json()
    for path in (
        "/api/search",
        "/api/similar/{image_id}",
        "/api/similar",
        "/api/images/{image_id}/tags",
        "/api/words",
        "/api/classes",
        "/api/images/{image_id}/thumb",
        "/api/images/{image_id}/original",
        "/api/stats",
        "/api/health",
        "/api/map",
        "/api/overview",
    ):
        assert path in schema["paths"], path
    for operations in schema["paths"].values():  # refusals are documented as they are sent: 400, one sentence
        for operation in operations.values():
            assert "422" not in operation["responses"]
            if operation.get("parameters"):
                error = operation["responses"]["400"]["content"]["application/json"]["schema"]
                assert schema["components"]["schemas"][error["$ref"].rsplit("/", 1)[1]]["properties"] == {
                    "detail": {"type": "string", "description": "What is wrong, in one sentence."}
                }


def test_page_and_static(client):
    page = client.get("/")
    assert page.status_code == 200 and "semsearch" in page.text and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert "http" not in client.get("/static/app.js").text.replace("http-equiv", "")  # nothing from a CDN


def test_docs_page_needs_nothing_from_outside(client):
    """/docs renders offline: the page and every script, stylesheet and icon it names (and whatever those
    stylesheets import) are served here; nothing points to another host."""
    import re
    from urllib.parse import urljoin, urlsplit

    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    found = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\s*:\s*["']([^"']+)["']""", page.text)
    assets = {urljoin(LOCAL + "/docs", a or b) for a, b in found}
    assert len(assets) >= 4, assets  # script, stylesheet, icon, the OpenAPI schema
    for url in sorted(assets):
        assert urlsplit(url).netloc == "127.0.0.1:8000", url
        response = client.get(url)
        assert response.status_code == 200 and response.content, url
        if url.endswith(".css"):  # fonts or images a stylesheet pulls in
            for ref in re.findall(r"url\(\s*['\"]?(https?:[^'\")]+)", response.text):
                raise AssertionError(f"{url} loads {ref}")
    assert "https://" not in page.text


# ------------------------------------------------------------------------------------------ search


def test_similar_by_id_matches_collection(client, db, ids):
    rows = client.get(f"/api/similar/{ids[0]}", params={"k": 5}).json()
    _check_rows(rows, IMAGE_ROW)
    with Collection(db) as c:
        assert rows == [h.to_dict() for h in c.similar(ids[0], k=5)]
    assert ids[0] not in [r["id"] for r in rows]


def test_similar_with_focus(client, ids):
    rows = client.get(f"/api/similar/{ids[0]}", params={"k": 3, "focus": "laptop"}).json()
    _check_rows(rows, IMAGE_ROW)
    bad = client.get(f"/api/similar/{ids[0]}", params={"focus": "no such class at all"})
    assert bad.status_code == 400 and "class" in bad.json()["detail"]


def test_similar_by_upload_raw_and_multipart(client, photo_bytes):
    raw = client.post(
        "/api/similar", params={"k": 3}, content=photo_bytes, headers={"content-type": "image/jpeg"}
    )
    assert raw.status_code == 200, raw.text
    _check_rows(raw.json(), IMAGE_ROW)
    assert raw.json()[0]["score"] > 0.99  # the same photo is in the collection
    form = client.post(
        "/api/similar", params={"k": 3}, files={"file": ("x.jpg", io.BytesIO(photo_bytes), "image/jpeg")}
    )
    assert form.status_code == 200 and form.json() == raw.json()


def test_upload_bad_cases(client, db):
    from semsearch.server.app import create_app

    not_image = client.post(
        "/api/similar", content=b"this is not an image", headers={"content-type": "image/png"}
    )
    assert not_image.status_code == 400 and "image" in not_image.json()["detail"]
    truncated = client.post("/api/similar", content=b"\xff\xd8\xff\xe0" + b"\0" * 100)
    assert truncated.status_code == 400
    assert client.post("/api/similar", content=b"").status_code == 400
    assert client.post("/api/similar", files={"other": ("a.txt", b"hi", "text/plain")}).status_code == 400
    big = b"\xff\xd8" + b"\0" * (3 * 1024 * 1024)
    assert client.post("/api/similar", content=big).status_code == 413
    assert client.post("/api/similar", files={"file": ("big.jpg", big, "image/jpeg")}).status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield b"\0" * 100_000

    assert client.post("/api/similar", content=chunks()).status_code == 413
    with local(create_app(db, max_upload=1024)) as small:
        assert small.post("/api/similar", content=b"\0" * 5000).status_code == 413


@has_search
def test_search_text(client, db):
    rows = client.get("/api/search", params={"q": "crocodile", "k": 5}).json()
    _check_rows(rows, IMAGE_ROW)
    with Collection(db) as c:
        assert rows == [h.to_dict() for h in c.search("crocodile", k=5)]
    empty = client.get("/api/search", params={"q": ""})
    assert empty.status_code == 400 and empty.json() == {
        "detail": "query parameter 'q' must be text of 1 to 500 characters, not ''"
    }


@has_tags
def test_tags(client, ids):
    rows = client.get(f"/api/images/{ids[0]}/tags", params={"k": 5}).json()
    _check_rows(rows, {"rank", "word", "score"})
    assert len(rows) <= 5


def test_words_match_cli_fields(client):
    rows = client.get("/api/words", params={"q": "cat", "k": 5}).json()
    _check_rows(rows, {"rank", "word", "score"})
    assert "cat" not in [r["word"] for r in rows] and "dog" in [r["word"] for r in rows]
    unknown = client.get("/api/words", params={"q": "cat qqqzzzxx"})
    assert unknown.status_code == 200 and unknown.headers["x-unknown-words"] == "qqqzzzxx"
    assert client.get("/api/words", params={"q": "qqqzzzxx"}).status_code == 400
    assert client.get("/api/words", params={"q": "123 !!"}).status_code == 400


# ------------------------------------------------------------------------------------------ images


def test_image_info_thumb_original(client, db, ids):
    with Collection(db) as c:
        record = c.store.get(ids[1])
    info = client.get(f"/api/images/{ids[1]}").json()
    assert info["id"] == ids[1] and info["path"] == record.path
    first = client.get(f"/api/images/{ids[1]}/thumb")
    assert first.status_code == 200 and first.headers["content-type"] == "image/webp"
    from PIL import Image

    with Image.open(io.BytesIO(first.content)) as img:
        assert max(img.size) <= 256 and img.format == "WEBP"
    cached = list((db / "thumbs").glob(f"{ids[1]}-*.webp"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    second = client.get(f"/api/images/{ids[1]}/thumb")
    assert second.content == first.content and cached[0].stat().st_mtime_ns == stamp  # made once
    assert not list((db / "thumbs").glob(".tmp-*"))
    original = client.get(f"/api/images/{ids[1]}/original")
    assert original.status_code == 200 and original.content == Path(record.path).read_bytes()


def test_unknown_ids_are_404(client, ids):
    missing = max(ids) + 1000
    for url in (
        f"/api/similar/{missing}",
        f"/api/images/{missing}",
        f"/api/images/{missing}/thumb",
        f"/api/images/{missing}/original",
        f"/api/images/{missing}/tags",
    ):
        response = client.get(url)
        assert response.status_code in (404, 501) if url.endswith("tags") else response.status_code == 404, (
            url
        )
    for bad in ("-1", "abc", "1.5"):
        response = client.get(f"/api/images/{bad}/thumb")
        assert response.status_code == 400 and response.json() == {
            "detail": f"path parameter 'image_id' must be a whole number from 0 to {2**63 - 1}, not '{bad}'"
        }


@pytest.mark.parametrize("evil", TRAVERSALS)
def test_path_traversal_is_refused(client, ids, evil):
    responses = [
        client.get(f"/api/images/{evil}/thumb"),
        client.get(f"/api/images/{evil}/original"),
        client.get(f"/api/images/{evil}"),
        client.get(f"/api/similar/{evil}"),
        client.get(f"/static/{evil}"),
        client.get(f"/static/..%2f..%2f{evil}"),
        client.get(f"/{evil}"),
        client.get(f"/api/similar/{ids[0]}", params={"focus": evil}),
        client.get("/api/words", params={"q": evil}),
        client.get(f"/api/images/{ids[0]}/thumb", params={"path": evil}),
    ]
    if hasattr(Collection, "search"):
        responses.append(client.get("/api/search", params={"q": evil}))
    responses.append(client.get(f"/api/images/{ids[0]}/original", params={"path": evil, "id": evil}))
    for response in responses:
        assert b"root:" not in response.content
    assert all(r.status_code in (200, 400, 404, 405) for r in responses)
    # The id-addressed endpoints ignore extra parameters and serve only the catalog's own file.
    assert responses[-1].content == Path(client.get(f"/api/images/{ids[0]}").json()["path"]).read_bytes()


# ------------------------------------------------------------------------------------------ token


def test_token_required_on_every_api_call(db, ids, photo_bytes):
    from semsearch.server.app import create_app

    with local(create_app(db, token="s3cret")) as c:
        urls = [
            "/api/health",
            "/api/stats",
            "/api/classes",
            f"/api/similar/{ids[0]}",
            f"/api/images/{ids[0]}",
            f"/api/images/{ids[0]}/thumb",
            f"/api/images/{ids[0]}/original",
            f"/api/images/{ids[0]}/tags",
            "/api/words?q=cat",
            "/api/search?q=cat",
            "/api/map",
        ]
        for url in urls:
            assert c.get(url).status_code == 401, url
            assert c.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401, url
            assert c.get(url, headers={"Authorization": "Basic s3cret"}).status_code == 401, url
        assert c.post("/api/similar", content=photo_bytes).status_code == 401
        assert c.post("/api/similar", content=b"\0" * (30 * 1024 * 1024)).status_code == 401  # before reading
        ok = {"Authorization": "Bearer s3cret"}
        assert c.get("/api/health", headers=ok).status_code == 200
        assert c.get(f"/api/similar/{ids[0]}", headers=ok).status_code == 200
        assert c.post("/api/similar", content=photo_bytes, headers=ok).status_code == 200
        assert (
            c.get(f"/api/images/{ids[0]}/thumb", params={"token": "s3cret"}).status_code == 200
        )  # for <img>
        assert c.get("/").status_code == 200  # the page itself holds no data


# ------------------------------------------------------------------------------------------ map


#: What each class's photos are, as a WordNet group: their region's name must be this group or inside it.
KINDS = {
    "crocodile": "reptile",
    "laptop": "computer",
    "soccer_ball": "ball",
    "accordion": "musical instrument",
}


def _classes_of(db: Path) -> dict[int, str]:
    with Collection(db) as c:
        return {r.id: Path(r.path).parent.name for r in c.store.records().values()}


@pytest.mark.skipif(not CALTECH.is_dir(), reason="needs the caltech-dev photos")
def test_map_regions_are_named_by_what_they_show(client, db, ids):
    """Each class's photos lie together, in one region named by a class or group of that kind ('computer'
    for laptops), never a list of fragments; every name is a query the search understands."""
    from semsearch.classes import resolve_group

    data = client.get("/api/map").json()
    assert sorted(p["id"] for p in data["points"]) == ids
    assert all(0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 for p in data["points"])
    clusters = data["clusters"]
    assert sum(c["size"] for c in clusters) == len(ids)
    assert [c["size"] for c in clusters] == sorted((c["size"] for c in clusters), reverse=True)
    for c in clusters:
        x0, y0, x1, y1 = c["box"]
        assert 0 <= x0 <= c["x"] <= x1 <= 1 and 0 <= y0 <= c["y"] <= y1 <= 1, c
        resolve_group(c["label"])  # a class or group name, not 'tent, sarong'
    of = _classes_of(db)
    where = {p["id"]: (p["x"], p["y"], p["cluster"]) for p in data["points"]}
    for name, kind in KINDS.items():
        members = [where[i] for i in ids if of[i] == name]
        region = Counter(c for _, _, c in members).most_common(1)[0][0]
        assert sum(c == region for _, _, c in members) >= len(members) - 1, (name, members)
        label = clusters[region]["label"]
        assert set(resolve_group(label).classes) <= set(resolve_group(kind).classes), (name, label)
        # alike photos lie together: closer to their own class than to the others, on average
        own = [math.dist(a[:2], b[:2]) for a in members for b in members if a is not b]
        others = [math.dist(a[:2], where[i][:2]) for a in members for i in ids if of[i] != name]
        assert sum(own) / len(own) < sum(others) / len(others), name


def test_map_is_computed_once_per_collection_version(db, ids, monkeypatch):
    """Concurrent first requests share one computation; later ones, and the overview, reuse it."""
    from semsearch.server import routes
    from semsearch.server.app import create_app

    calls: list[int] = []

    def counted(collection):
        calls.append(1)
        return real(collection)

    real = routes.collection_map
    monkeypatch.setattr(routes, "collection_map", counted)
    with local(create_app(db)) as c, ThreadPoolExecutor(6) as pool:
        bodies = list(pool.map(lambda _: c.get("/api/map").content, range(6)))
        assert len(calls) == 1 and len(set(bodies)) == 1
        assert c.get("/api/map").content == bodies[0] and c.get("/api/overview").status_code == 200
        assert len(calls) == 1


# ------------------------------------------------------------------------------------------ overview


def test_overview_shows_the_collection_and_queries_that_find_photos(client, db, ids):
    from semsearch.classes import resolve_group

    data = client.get("/api/overview").json()
    assert set(data) == {"count", "model", "recent", "examples"}
    stats = client.get("/api/stats").json()
    assert data["count"] == len(ids) and data["model"] == stats["model"]
    assert len(data["recent"]) == min(12, len(ids))
    for row in data["recent"]:
        assert set(row) == IMAGE_ROW
    taken = [row["taken"] for row in data["recent"]]
    assert taken == sorted(taken, reverse=True)
    with Collection(db) as c:
        assert data["recent"] == [h.to_dict() for h in c.search("after:1900", k=12, sort="newest")]
    assert client.get("/api/overview", params={"k": 3}).json()["recent"] == data["recent"][:3]
    assert 1 <= len(data["examples"]) <= 6 and len(set(data["examples"])) == len(data["examples"])
    for query in data["examples"]:
        resolve_group(query)
        assert client.get("/api/search", params={"q": query, "k": 5}).json(), query


# ------------------------------------------------------------------------------------------ concurrency


def test_collection_version_changes_with_each_index_run(served_collection, tmp_path):
    """What a running server polls (through `Collection`, as the CLI reads) to notice new index runs."""
    db = tmp_path / "db"
    shutil.copytree(served_collection[0], db)
    extra = tmp_path / "extra"
    extra.mkdir()
    source = next(p for p in sorted(served_collection[1].rglob("*")) if p.is_file())
    shutil.copy2(source, extra / "copy.jpg")
    with Collection(db) as reader:
        first = reader.version()
        assert reader.version() == first  # reading changes nothing
        with Collection(db, writable=True) as writer:
            writer.sync(extra)
        second = reader.version()
        assert second != first
        with Collection(db) as other:
            other.stats()
        assert reader.version() == second  # other readers change nothing


def test_concurrent_reads_during_index_run(served_collection, tmp_path):
    """Readers never fail while `index` adds images; the server then notices the new ones."""
    from semsearch.server.app import create_app

    db_src, photos_src = served_collection
    db = tmp_path / "db"
    shutil.copytree(db_src, db)
    extra = tmp_path / "extra"
    extra.mkdir()
    source = CALTECH / "chair" if CALTECH.is_dir() else None
    files = (
        sorted(source.iterdir())[:6]
        if source
        else sorted(p for p in photos_src.rglob("*") if p.is_file())[:6]
    )
    for i, f in enumerate(files):
        if source:
            shutil.copy2(f, extra / f"new{i}{f.suffix}")
        else:  # mirrored: new content, not byte-identical copies (those fold into one result)
            Image.open(f).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(extra / f"new{i}.png")
    with local(create_app(db)) as client:
        before = client.get("/api/stats").json()["images"]
        first_id = client.get("/api/map").json()["points"][0]["id"]
        stop = threading.Event()
        statuses: list[int] = []

        def reader() -> None:
            while not stop.is_set():
                for url in (f"/api/similar/{first_id}?k=5", "/api/stats", f"/api/images/{first_id}/thumb"):
                    r = client.get(url)
                    statuses.append(r.status_code)
                    if r.status_code == 200 and url.startswith("/api/similar"):
                        assert all(row["id"] != first_id for row in r.json())

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(reader) for _ in range(4)]
            with Collection(db, writable=True) as writer:
                report = writer.sync(extra)
            stop.set()
            for f in futures:
                f.result()
        assert report.added == len(files)
        assert statuses and set(statuses) == {200}
        assert client.get("/api/stats").json()["images"] == before + len(files)
        assert len(client.get("/api/map").json()["points"]) == before + len(files)
        new = client.get(f"/api/similar/{first_id}", params={"k": 200}).json()
        assert len(new) == before + len(files) - 1


# ------------------------------------------------------------------------------------------ confinement


def _outside_paths(photo: Path, db: Path) -> list[str]:
    """Paths a client might try: files that exist (an indexed photo, the catalog, system files, a folder)
    and files that do not, written absolute, relative, from home, or as a bare image name."""
    here = Path.cwd()
    real = [photo, db / "catalog.sqlite", Path("/etc/passwd"), Path("/root/.bashrc"), Path("/tmp")]
    missing = [p.with_name(p.name + "-missing") for p in real]
    spelled = []
    for p in real + missing:
        spelled += [str(p), os.path.relpath(p, here), "~/" + p.name, "./" + p.name]
    return spelled + ["~", ".", "..", "photo.jpg", "../../etc/passwd", "..\\..\\win.ini", "C:\\photo.png"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_search_never_reads_a_server_path(client, served_collection, data) -> None:
    """Over HTTP an image term is an id: every path-like term, existing or not, gets the same 400 (no file is
    read, nothing tells whether it exists)."""
    from semsearch.query import NO_PATHS

    db, photos = served_collection
    photo = next(p for p in sorted(photos.rglob("*")) if p.is_file())
    path = data.draw(st.sampled_from(_outside_paths(photo, db)))
    weight = data.draw(st.sampled_from(["", "2:", "0.5:"]))
    template = data.draw(st.sampled_from(["{}", "cat + {}", "{} - dog", "- {}", "beach + {} + sunset"]))
    response = client.get("/api/search", params={"q": template.format(weight + path)})
    assert response.status_code == 400 and response.json() == {"detail": NO_PATHS}, (path, response.text)


def test_image_terms_are_ids_over_http(client, db, ids):
    mixed = client.get("/api/search", params={"q": f"crocodile + 2:id:{ids[0]}", "k": 5})
    assert mixed.status_code == 200, mixed.text
    with Collection(db) as c:
        assert mixed.json() == [h.to_dict() for h in c.search(f"crocodile + 2:id:{ids[0]}", k=5)]
    alone = client.get("/api/search", params={"q": f"id:{ids[3]}", "k": 3}).json()
    assert alone[0]["id"] == ids[3] and alone[0]["score"] > 0.99
    for missing in (max(ids) + 1000, 2**63, 10**30):
        response = client.get("/api/search", params={"q": f"cat + id:{missing}"})
        assert response.status_code == 400 and "no image" in response.json()["detail"], response.text


# ------------------------------------------------------------------------------------------ no 500


@pytest.mark.parametrize("huge", [2**63, 2**64, 10**30])
def test_ids_beyond_sqlite_are_400(client, huge):
    for url in ("/api/images/{}", "/api/images/{}/thumb", "/api/images/{}/original", "/api/images/{}/tags"):
        assert client.get(url.format(huge)).status_code == 400, url
    assert client.get(f"/api/similar/{huge}").status_code == 400


@settings(max_examples=40, deadline=None)
@given(focus=st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=8))
def test_focus_digits_of_any_script(client, ids, focus):
    """'²' and '٣' pass str.isdigit(); only ASCII digits 0-999 are a class index, anything else a 400."""
    response = client.get(f"/api/similar/{ids[0]}", params={"focus": focus, "k": 3})
    if focus.isascii() and int(focus) < 1000:
        assert response.status_code == 200
    else:
        assert response.status_code == 400 and "class" in response.json()["detail"], response.text


def _weights() -> st.SearchStrategy[str]:
    """Weights as people and fuzzers write them: plain, decimals, exponents, 76 ones, huge integers."""
    return st.one_of(
        st.floats(0, 100).map(lambda w: f"{w:g}"),
        st.floats(0, 1e300).map(lambda w: f"{w:e}"),
        st.integers(0, 10**90).map(str),
        st.sampled_from(["1" * 76, "2e19", "1e400", "100.0000001", "0", ".5"]),
    )


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_query_grammar_never_500(client, ids, data):
    """Any mix of weighted words and ids answers 200 with finite scores, or a 400 saying what is wrong."""
    term = st.one_of(
        st.sampled_from(["cat", "beach", "a red car", "crocodile", "qqzzxxy"]),
        st.sampled_from(ids).map(lambda i: f"id:{i}"),
        st.integers(0, 2**70).map(lambda i: f"id:{i}"),
    )
    terms = data.draw(st.lists(st.tuples(st.one_of(st.just(""), _weights()), term), min_size=1, max_size=4))
    signs = data.draw(st.lists(st.sampled_from([" + ", " - "]), min_size=len(terms), max_size=len(terms)))
    query = "".join(f"{sign}{w + ':' if w else ''}{t}" for sign, (w, t) in zip(signs, terms)).lstrip(" +")
    response = client.get("/api/search", params={"q": query[:500], "k": 5})
    assert response.status_code in (200, 400), (query, response.text)
    if response.status_code == 200:
        assert all(math.isfinite(row["score"]) and abs(row["score"]) <= 1.0001 for row in response.json())
    else:
        assert isinstance(response.json()["detail"], str)


def test_out_of_range_weights_are_400(client):
    for query in ("1" * 76 + ":cat", "2e19:cat", "cat + 1e400:dog", "101:cat"):
        response = client.get("/api/search", params={"q": query})
        assert response.status_code == 400 and "weight" in response.json()["detail"], (query, response.text)


@pytest.fixture(scope="module")
def fuzz_schema(db):
    """The app's own OpenAPI schema, for schemathesis (its test client says Host: testserver)."""
    schemathesis = pytest.importorskip("schemathesis")
    from semsearch.server.app import create_app

    app = create_app(db, max_upload=2 * 1024 * 1024, hosts=("testserver",))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_endpoint_survives_fuzzing(fuzz_schema, ids):
    """Schema-driven fuzzing of every endpoint (valid and schema-violating inputs, uploads of generated
    images and junk, real and absurd ids): never a 5xx, and every refusal is one plain sentence,
    ``{"detail": "..."}`` (no validation dump, no 422)."""
    from schemathesis import GenerationMode

    operations = [result.ok() for result in fuzz_schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        strategies = [
            operation.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        ]
        if "{image_id}" in operation.path:  # also real ids: the fuzzer alone rarely hits one
            strategies += [operation.as_strategy(path_parameters={"image_id": i}) for i in (ids[0], ids[-1])]

        @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=st.one_of(strategies))
        def call(case) -> None:
            response = case.call()
            seen = (response.status_code, response.content[:300], case.as_curl_command())
            assert response.status_code < 500, seen
            if response.status_code >= 400:
                assert response.status_code != 422, seen
                body = json.loads(response.text)
                assert set(body) == {"detail"} and isinstance(body["detail"], str), seen
                assert body["detail"].strip() and "\n" not in body["detail"], seen

        call()


def _invalid(schema: dict) -> st.SearchStrategy[str]:
    """Values a parameter's schema refuses: the wrong kind, out of its bounds, too long, not listed."""
    kind = next(s for s in schema.get("anyOf", [schema]) if s.get("type") != "null")
    if "enum" in kind:
        return st.text(min_size=1, max_size=12).filter(lambda v: v not in kind["enum"])
    if kind["type"] == "string":
        longest = kind.get("maxLength")
        return st.integers(longest + 1, longest + 50).map(lambda n: "x" * n) if longest else st.nothing()
    wrong = st.sampled_from(["abc", "", "1e", "--1", "½", "0x10"])
    if kind["type"] == "integer":
        wrong = st.one_of(wrong, st.sampled_from(["1.5", "2.5e3"]))
    if "minimum" in kind:
        wrong = st.one_of(wrong, st.integers(-(10**20), int(kind["minimum"]) - 1).map(str))
    if "maximum" in kind:
        wrong = st.one_of(wrong, st.integers(int(kind["maximum"]) + 1, 10**30).map(str))
    return wrong


def test_bad_parameters_are_named_in_one_sentence(client, ids):
    """Every declared parameter of every GET endpoint, given a value its schema refuses: a 400 whose one
    line names that parameter (and, for words, quotes no more than a short value)."""
    schema = client.get("/openapi.json").json()
    cases = [
        (path, parameter)
        for path, operations in schema["paths"].items()
        for parameter in operations.get("get", {}).get("parameters", [])
    ]
    assert len(cases) >= 15

    @settings(max_examples=120, deadline=None, database=None)
    @given(case=st.sampled_from(cases), data=st.data())
    def check(case, data) -> None:
        path, parameter = case
        value = data.draw(_invalid(parameter["schema"]))
        params = {"q": "cat"} if path in ("/api/search", "/api/words") else {}
        if parameter["in"] == "path":
            url = path.replace("{" + parameter["name"] + "}", quote(value, safe="") or "%20")
        else:
            url = path.replace("{image_id}", str(ids[0]))
            params[parameter["name"]] = value
        response = client.get(url, params=params)
        detail = response.json()["detail"]
        assert response.status_code == 400 and isinstance(detail, str), (url, params, response.text)
        assert f"'{parameter['name']}'" in detail and "\n" not in detail and len(detail) < 200, detail

    check()


# ------------------------------------------------------------------------------------------ host, origin


def test_host_header_must_name_this_server(db):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    from semsearch.server.app import create_app

    with local(create_app(db)) as c:
        for host in ("127.0.0.1:8000", "localhost:8000", "localhost", "[::1]:8000"):
            assert c.get("/api/health", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "[::2]:8000"):
            assert c.get("/api/health", headers={"Host": host}).status_code == 400, host
            assert c.get("/", headers={"Host": host}).status_code == 400, host
    with local(create_app(db, hosts=("photos.lan",))) as c:
        assert c.get("/api/health", headers={"Host": "photos.lan:8000"}).status_code == 200
        assert c.get("/api/health", headers={"Host": "evil.example"}).status_code == 400
    with local(create_app(db, hosts=("*",))) as c:  # --host 0.0.0.0: any name
        assert c.get("/api/health", headers={"Host": "evil.example"}).status_code == 200


def test_cross_origin_posts_are_refused(client, photo_bytes):
    """A form on another site can POST text/plain here without a CORS preflight: refused."""
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:9999"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://photos.127.0.0.1:8000"},
    ):
        response = client.post(
            "/api/similar", content=photo_bytes, headers={"Content-Type": "text/plain", **headers}
        )
        assert response.status_code == 403 and "cross-origin" in response.json()["detail"], headers
    for headers in (
        {},
        {"Origin": LOCAL},
        {"Origin": LOCAL, "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
    ):
        response = client.post(
            "/api/similar", content=photo_bytes, headers={"Content-Type": "image/jpeg", **headers}
        )
        assert response.status_code == 200, (headers, response.text)
    assert (
        client.get("/api/health", headers={"Origin": "http://evil.example"}).status_code == 200
    )  # reads: CORS


def test_token_is_never_printed_and_empty_ones_are_refused(db, tmp_path, monkeypatch):
    from semsearch.cli import TOKEN_ENV, _serve_token
    from semsearch.errors import SettingError

    secret, blank = tmp_path / "token", tmp_path / "blank"
    secret.write_text("file-s3cret\n")
    blank.write_text("\n")
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert _serve_token(None, None) is None
    assert _serve_token(None, secret) == "file-s3cret"
    assert _serve_token("cli-s3cret", secret) == "cli-s3cret"
    for cli_token, path in (("", None), ("  ", None), (None, blank)):
        with pytest.raises(SettingError, match="empty"):
            _serve_token(cli_token, path)
    monkeypatch.setenv(TOKEN_ENV, "env-s3cret")
    assert _serve_token(None, None) == "env-s3cret"
    monkeypatch.setenv(TOKEN_ENV, " \n")
    with pytest.raises(SettingError, match=TOKEN_ENV):
        _serve_token(None, None)
    monkeypatch.delenv(TOKEN_ENV)
    done = subprocess.run(
        [sys.executable, "-m", "semsearch.cli", "serve", "--db", str(db), "--token", ""],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: the token from --token is empty: give a real token, or none for no token"
    ]

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "semsearch.cli", "serve", "--db", str(db), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SEMSEARCH_TOKEN": "env-s3cret"},
    )
    try:
        banner = server.stderr.readline()
        assert f"127.0.0.1:{port}" in banner and "token required" in banner and "s3cret" not in banner
        _wait_for(port)
        assert _get(port, "/api/health")[0] == 401
        assert _get(port, "/api/health", {"Authorization": "Bearer env-s3cret"})[0] == 200
    finally:
        server.terminate()
        out, err = server.communicate(timeout=20)
    assert "s3cret" not in out + err


# ------------------------------------------------------------------------------------------ empty, k


def test_empty_collection_answers_sensibly(tmp_path, photo_bytes):
    """What a kill before the first batch leaves: a catalog (the model claimed) and no image."""
    from semsearch.server.app import create_app

    nothing = tmp_path / "nothing"
    nothing.mkdir()
    with Collection(tmp_path / "db", writable=True) as collection:
        collection.sync(nothing)
    with local(create_app(tmp_path / "db")) as c:
        assert c.get("/api/health").json()["images"] == 0
        assert c.get("/api/stats").json()["images"] == 0
        assert c.get("/api/map").json() == {"points": [], "clusters": []}
        overview = c.get("/api/overview").json()
        assert overview["count"] == 0 and overview["recent"] == [] and overview["examples"] == []
        assert c.get("/api/search", params={"q": "cat", "k": 200}).json() == []
        upload = c.post("/api/similar", params={"k": 200}, content=photo_bytes)
        assert upload.status_code == 200 and upload.json() == []
        assert c.post("/api/similar", content=b"not an image").status_code == 400
        for url in ("/api/similar/0", "/api/images/0", "/api/images/0/tags", "/api/images/0/thumb"):
            response = c.get(url)
            assert response.status_code == 404 and "no image with id 0" in response.json()["detail"], url
        assert c.get("/api/search", params={"q": "cat + id:0"}).status_code == 400


def test_k_larger_than_the_collection(client, ids, photo_bytes):
    n = len(ids)
    assert len(client.get(f"/api/similar/{ids[0]}", params={"k": 200}).json()) == n - 1
    assert len(client.get(f"/api/similar/{ids[0]}", params={"k": 200, "focus": "laptop"}).json()) == n - 1
    assert len(client.post("/api/similar", params={"k": 200}, content=photo_bytes).json()) == n
    assert 1 <= len(client.get("/api/search", params={"q": "crocodile", "k": 200}).json()) <= n
    assert len(client.get(f"/api/images/{ids[0]}/tags", params={"k": 200}).json()) == 200


# ------------------------------------------------------------------------------------------ real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, url: str, headers: dict | None = None) -> tuple[int, float]:
    """(status, milliseconds) of one GET on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    start = time.perf_counter()
    conn.request("GET", url, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, (time.perf_counter() - start) * 1000


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            _get(port, "/api/health")
            return
        except OSError:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)


@contextmanager
def _uvicorn(app, **deadlines: float) -> Iterator[int]:
    """`app` under real uvicorn, configured as `semsearch serve` runs it, on a free loopback port."""
    import uvicorn

    from semsearch.server.guards import server_config

    port = _free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, **deadlines))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_for(port)
    yield port
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def live(db):
    """A real server with 1 s deadlines for headers and bodies."""
    from semsearch.server.app import create_app

    with _uvicorn(create_app(db), header_timeout=1.0, body_timeout=1.0) as port:
        yield port


@pytest.fixture(scope="module")
def live_queue(db):
    """A real server (default deadlines) with room for one upload at work and one queued."""
    from semsearch.server.app import create_app
    from semsearch.server.guards import Gate

    with _uvicorn(create_app(db, uploads=Gate(1, 1))) as port:
        yield port


def _closed_by_server(sock: socket.socket, until: float) -> bool:
    """Whether the server closes `sock` before the monotonic time `until` (whatever it answered first)."""
    try:
        while (left := until - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def _post_head(port: int, length: int, content_type: str = "image/jpeg") -> bytes:
    return (
        f"POST /api/similar HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_half_sent_requests_are_closed_and_never_block_health(live):
    """Slowloris: sockets that never finish their headers, or their body, or send nothing at all."""
    socks = []
    for i in range(300):
        s = socket.create_connection(("127.0.0.1", live))
        if i % 3 == 0:
            s.sendall(f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{live}\r\nX-Slow: ".encode())
        elif i % 3 == 1:
            s.sendall(_post_head(live, 1_000_000) + b"\xff\xd8\xff")
        socks.append(s)
    try:
        assert max(_get(live, "/api/health")[1] for _ in range(10)) < 1000
        until = time.monotonic() + 4.0  # deadlines: 1 s for headers, 1 s more for a body
        held = [s for s in socks if not _closed_by_server(s, until)]
        assert not held, f"{len(held)} of {len(socks)} half-sent connections still open after their deadlines"
        assert max(_get(live, "/api/health")[1] for _ in range(5)) < 1000
    finally:
        for s in socks:
            s.close()


def test_oversized_headers_are_refused(live):
    with socket.create_connection(("127.0.0.1", live)) as s:
        s.sendall(f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{live}\r\nX-Big: ".encode() + b"a" * 100_000)
        s.settimeout(5)
        assert s.recv(100).startswith(b"HTTP/1.1 4")


def test_health_answers_while_a_huge_multipart_upload_is_parsed(live):
    """The issue's 19 MB body of 383,133 parts: refused after a few parts, parsed off the event loop."""
    boundary = "x7"
    body = b'--x7\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n' * 383_133 + b"--x7--\r\n"
    assert 18_000_000 < len(body) < 20 * 1024 * 1024
    result: dict[str, object] = {}

    def upload() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", live, timeout=60)
        conn.request(
            "POST",
            "/api/similar",
            body=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        response = conn.getresponse()
        result.update(status=response.status, body=response.read())

    thread = threading.Thread(target=upload)
    thread.start()
    latencies = []
    while thread.is_alive() or not latencies:
        latencies.append(_get(live, "/api/health")[1])
    thread.join()
    assert result["status"] == 400 and b"more than 8 parts" in result["body"], result
    assert max(latencies) < 1000, latencies


def _upload(port: int, photo: bytes) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/api/similar?k=3", body=photo, headers={"Content-Type": "image/jpeg"})
    response = conn.getresponse()
    response.read()
    return response.status, response.getheader("Retry-After")


def test_uploads_beyond_the_queue_get_503(live_queue, photo_bytes):
    """Room for one upload at work and one queued: of five slow uploads, two take the places and wait for
    their bodies, three are told at once to retry; the two are answered once their bodies arrive."""
    socks = [socket.create_connection(("127.0.0.1", live_queue)) for _ in range(5)]
    try:
        for s in socks:
            s.sendall(_post_head(live_queue, len(photo_bytes)) + photo_bytes[:1000])
        refused: set[socket.socket] = set()
        deadline = time.monotonic() + 20
        while len(refused) < 3 and time.monotonic() < deadline:
            readable, _, _ = select.select([s for s in socks if s not in refused], [], [], 1.0)
            refused.update(readable)
        assert len(refused) == 3, "expected three uploads refused at once"
        for s in refused:
            head = s.recv(4096).decode("latin-1")
            assert head.startswith("HTTP/1.1 503") and "\r\nretry-after: 2\r\n" in head.lower(), head
        for s in socks:
            if s not in refused:
                s.sendall(photo_bytes[1000:])
                s.settimeout(20)
                assert s.recv(100).startswith(b"HTTP/1.1 200"), "a queued upload was not answered"
    finally:
        for s in socks:
            s.close()
    assert _upload(live_queue, photo_bytes)[0] == 200  # the places are given back


def test_concurrent_uploads_are_bounded(live_queue, photo_bytes):
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _upload(live_queue, photo_bytes), range(24)))
    assert {status for status, _ in answers} <= {200, 503} and (200, None) in answers
    assert all(retry == "2" for status, retry in answers if status == 503)


def test_names_that_are_not_utf8_are_shown_escaped(small_photos, tmp_path) -> None:
    """An image whose file name is not UTF-8 is served like any other: its path escaped, never a 500."""
    import os

    from semsearch.server.app import create_app

    source = sorted((small_photos / "laptop").iterdir())[0]
    odd = os.path.join(os.fsencode(small_photos / "laptop"), b"bad-\xff\xfe.jpg")
    os.rename(os.fsencode(source), odd)
    db = tmp_path / "db"
    with Collection(db, writable=True) as c:
        c.sync(small_photos)
        image_id = next(
            r.id for path, r in c.store.records().items() if "\udcff" in path or "\\xff" in str(path)
        )
    with local(create_app(db)) as client:
        got = client.get(f"/api/images/{image_id}")
        assert got.status_code == 200, got.text
        assert got.json()["path"].endswith("bad-\\xff\\xfe.jpg")
        assert client.get(f"/api/images/{image_id}/thumb").status_code == 200
        assert client.get("/api/map").status_code == 200


def test_search_notes_come_in_a_header(client) -> None:
    found = client.get("/api/search", params={"q": "a crocodile lying on a purple zzqxv bank", "k": 3})
    assert found.status_code == 200
    notes = unquote(found.headers["X-Search-Notes"]).split("|")
    assert "not in the vocabulary: zzqxv" in notes
    nothing = client.get("/api/search", params={"q": "laptop", "k": 3, "min_score": 1})
    assert nothing.status_code == 200 and nothing.json() == []
    assert "matches 'laptop' well" in unquote(nothing.headers["X-Search-Notes"])
