"""A collection whose vectors live in Milvus Lite, as a user runs it: real processes, real photos.

The catalog stays the source of truth: after every run (including one killed with SIGKILL) the Milvus
collections hold exactly the catalog's ids, and queries answer as they do with in-process indexes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "semsearch.cli", *args], capture_output=True, text=True, timeout=600
    )


def ok(*args: str):
    done = run(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def catalog_ids(db: Path) -> set[int]:
    with sqlite3.connect(f"file:{db / 'catalog.sqlite'}?mode=ro", uri=True) as con:
        return {i for (i,) in con.execute("SELECT id FROM images")}


def milvus_ids(lite: Path) -> dict[str, set[int]]:
    """The ids in every Milvus collection of a Lite file, read with pymilvus itself (not semsearch), then
    the file is released so that the next semsearch process can open it."""
    from milvus_lite.server_manager import server_manager_instance
    from pymilvus import MilvusClient

    client = MilvusClient(str(lite))
    try:
        found = {}
        for name in client.list_collections():
            client.load_collection(name)
            rows = client.query(name, filter="id >= 0", output_fields=["id"], limit=16384)
            found[name] = {row["id"] for row in rows}
        return found
    finally:
        client.close()
        server_manager_instance.release_server(str(lite))


def assert_matches_catalog(db: Path, lite: Path) -> None:
    held = milvus_ids(lite)
    assert len(held) == 2, held.keys()  # image features and the joint space
    for name, ids in held.items():
        assert ids == catalog_ids(db), name


@pytest.mark.slow
def test_index_reindex_query_and_remove_with_milvus_lite(small_photos, tmp_path):
    db, lite, plain = tmp_path / "db", tmp_path / "vectors.db", tmp_path / "plain"
    report = ok("index", str(small_photos), "--db", str(db), "--vectors", f"milvus-lite:{lite}")
    assert report["added"] == 12
    assert_matches_catalog(db, lite)
    assert ok("stats", "--db", str(db))["vectors"] == f"milvus-lite:{lite}"
    assert ok("index", str(small_photos), "--db", str(plain))["added"] == 12
    assert ok("stats", "--db", str(plain))["vectors"] == "auto"

    # Queries need no flag (the collection recorded where its vectors are) and answer as in-process ones.
    query = str(sorted((small_photos / "laptop").iterdir())[0])
    for args in (["similar", query, "-k", "5"], ["search", "soccer ball", "-k", "5"]):
        got, want = ok(*args, "--db", str(db)), ok(*args, "--db", str(plain))
        assert [h["path"] for h in got] == [h["path"] for h in want]
        assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], abs=1e-4)

    # Changes: one photo added, one rewritten with other content, one deleted.
    croc = sorted((small_photos / "crocodile").iterdir())
    shutil.copy2(sorted((small_photos / "laptop").iterdir())[1], small_photos / "crocodile" / "new.jpg")
    shutil.copyfile(sorted((small_photos / "soccer_ball").iterdir())[0], croc[0])
    croc[1].unlink()
    report = ok("index", str(small_photos), "--db", str(db))
    assert (report["added"], report["updated"], report["removed"]) == (1, 1, 1)
    assert_matches_catalog(db, lite)
    hits = ok("similar", str(croc[0]), "--db", str(db), "-k", "3")
    assert Path(hits[0]["path"]).parent.name == "soccer_ball"  # its new content, not its old

    shutil.rmtree(small_photos / "laptop")
    assert ok("index", str(small_photos), "--db", str(db))["removed"] == 4
    assert_matches_catalog(db, lite)
    found = ok("search", "laptop", "--db", str(db), "-k", "20")
    assert found and not any("/laptop/" in h["path"] for h in found)

    # A lost Milvus Lite file is rebuilt from the catalog, by a query as by the next index run.
    query = str(sorted((small_photos / "soccer_ball").iterdir())[1])
    before = ok("similar", query, "--db", str(db), "-k", "4")
    shutil.rmtree(lite)
    assert ok("similar", query, "--db", str(db), "-k", "4") == before
    assert ok("index", str(small_photos), "--db", str(db))["unchanged"] == 8
    assert_matches_catalog(db, lite)


def test_the_http_api_answers_as_with_in_process_indexes(small_photos, tmp_path):
    from fastapi.testclient import TestClient

    from semsearch.collection import Collection
    from semsearch.server.app import create_app

    answers = {}
    for name, vectors in (("milvus", f"milvus-lite:{tmp_path / 'vectors.db'}"), ("plain", "auto")):
        with Collection(tmp_path / name, writable=True) as collection:
            collection.use_vectors(vectors)
            collection.sync(small_photos)
        with TestClient(create_app(tmp_path / name), base_url="http://127.0.0.1:8000") as client:
            responses = [client.get(url) for url in ("/api/similar/3?k=5", "/api/search?q=laptop&k=5")]
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        answers[name] = [r.json() for r in responses]
    for got, want in zip(answers["milvus"], answers["plain"]):
        assert got and [h["path"] for h in got] == [h["path"] for h in want]
        assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], abs=1e-4)


@pytest.mark.slow
def test_kill_9_while_writing_to_milvus_lite_then_rerun(caltech_collection, caltech, tmp_path):
    """Moving a collection's vectors into Milvus writes 2 x 1,184 of them; a SIGKILL lands in that write."""
    db, lite = tmp_path / "db", tmp_path / "vectors.db"
    shutil.copytree(caltech_collection, db)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "semsearch.cli",
            "index",
            str(caltech),
            "--db",
            str(db),
            "--vectors",
            f"milvus-lite:{lite}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wal = lite / "collections" / "semsearch_features" / "wal"
    deadline = time.time() + 300
    while time.time() < deadline and not any(wal.glob("wal_data_*")):  # the first vectors are being written
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    query = str(sorted((caltech / "okapi").iterdir())[0])
    hits = ok("similar", query, "--db", str(db), "-k", "3")  # answers from what the catalog holds
    assert len(hits) == 3 and all("/okapi/" in h["path"] for h in hits[:2])

    report = ok("index", str(caltech), "--db", str(db))
    assert report["unchanged"] == 1184 and report["added"] == 0
    assert_matches_catalog(db, lite)
    again = ok("similar", query, "--db", str(db), "-k", "3")
    assert [h["id"] for h in again] == [h["id"] for h in hits]  # the same answer (scores to float noise)
    assert [h["score"] for h in again] == pytest.approx([h["score"] for h in hits], abs=1e-5)


def test_bad_vectors_values_are_one_line_errors_before_any_photo_is_embedded(small_photos, tmp_path, capsys):
    from semsearch.cli import main

    db = tmp_path / "db"
    for value in (
        "faiss",
        "milvus-lite:/tmp/no-suffix",
        "milvus://:99",
        f"milvus-lite:{tmp_path}/missing/dir/v.db",
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["index", str(small_photos), "--db", str(db), "--vectors", value])
        lines = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code != 0 and len(lines) == 1 and lines[0].startswith("error: "), (value, lines)
        assert not (db / "features.0.f32").exists()
