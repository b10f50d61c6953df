"""The `semsearch` command as a user runs it: real processes, real photos, exit codes and JSON."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def run(
    *args: str | bytes, env: dict | None = None, limit: tuple[str, int] | None = None
) -> subprocess.CompletedProcess:
    """The CLI in a new process; `limit` = (resource, value) runs it under that resource limit."""
    return subprocess.run(
        [sys.executable, "-m", "semsearch.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
        preexec_fn=None if limit is None else _limited(*limit),
    )


def _limited(resource_name: str, limit: int) -> Callable[[], None]:
    """preexec_fn: run the child under a resource limit (RLIMIT_FSIZE: writes past `limit` bytes fail with
    EFBIG, as on a full disk: Python ignores SIGXFSZ; RLIMIT_AS: allocations past it fail)."""
    import resource

    def apply() -> None:
        resource.setrlimit(getattr(resource, resource_name), (limit, limit))

    return apply


def _count(db: Path) -> int:
    with sqlite3.connect(f"file:{db / 'catalog.sqlite'}?mode=ro", uri=True) as con:  # never creates it
        return con.execute("SELECT COUNT(*) FROM images").fetchone()[0]


def test_index_json_report_and_similar_json(small_photos):
    db = small_photos.parent / "db"
    (small_photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    done = run("index", str(small_photos), "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {k: report[k] for k in ("added", "updated", "unchanged", "removed", "skipped")} == {
        "added": 12,
        "updated": 0,
        "unchanged": 0,
        "removed": 0,
        "skipped": 1,
    }
    assert report["skipped_files"][0]["path"].endswith("broken.jpg") and report["skipped_files"][0]["reason"]

    query = sorted((small_photos / "soccer_ball").iterdir())[0]
    done = run("similar", str(query), "--db", str(db), "-k", "3", "--json")
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert all(isinstance(h["score"], float) and Path(h["path"]).exists() for h in hits)
    assert Path(hits[0]["path"]).parent.name == "soccer_ball"

    query.rename(small_photos / "laptop" / "moved.jpg")  # a move keeps its vectors and says so
    done = run("index", str(small_photos), "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert "added 0, updated 0, unchanged 11, moved 1, removed 0, skipped 1" in done.stdout


def test_words_json_and_unknown_word():
    done = run("words", "frog", "-k", "5", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 5 and {"rank", "word", "score"} <= set(rows[0])
    assert "frog" not in {r["word"] for r in rows} and "toad" in {r["word"] for r in rows}

    done = run("words", "fwjwiwejiu")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: word 'fwjwiwejiu' is not in the vocabulary"]
    assert done.stdout == ""


def test_errors_are_one_line_and_leave_the_collection_intact(small_photos, tmp_path):
    db = small_photos.parent / "db"
    assert run("index", str(small_photos), "--db", str(db)).returncode == 0
    before = _count(db)

    cases = [
        ("index", str(tmp_path / "missing"), "--db", str(db)),
        ("similar", str(tmp_path / "missing.jpg"), "--db", str(db)),
        ("similar", str(sorted((small_photos / "laptop").iterdir())[0]), "--db", str(tmp_path / "no-db")),
        ("similar", str(sorted((small_photos / "laptop").iterdir())[0]), "--db", str(db), "--focus", "zzzq"),
    ]
    for args in cases:
        done = run(*args)
        assert done.returncode != 0, args
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, done.stderr)
    assert _count(db) == before

    not_a_db = tmp_path / "file-not-dir"
    not_a_db.write_text("x")
    done = run("index", str(small_photos), "--db", str(not_a_db))
    assert done.returncode != 0 and done.stderr.strip().startswith("error: ")

    garbage = tmp_path / "garbage-db"
    garbage.mkdir()
    (garbage / "catalog.sqlite").write_bytes(b"this is not a database" * 100)
    done = run("similar", str(sorted((small_photos / "laptop").iterdir())[0]), "--db", str(garbage))
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1


def test_queries_on_indexed_photos_never_load_the_cnn(small_photos):
    db = small_photos.parent / "db"
    assert run("index", str(small_photos), "--db", str(db)).returncode == 0
    query = sorted((small_photos / "crocodile").iterdir())[0]
    probe = (
        "import sys; from semsearch.cli import main\n"
        "try: main(sys.argv[1:])\n"
        "except SystemExit: pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'onnxruntime') if m in sys.modules), file=sys.stderr)\n"
    )
    for args in (
        ["similar", str(query), "--db", str(db)],
        ["words", "cat"],
        ["similar", str(query), "--db", str(db), "--focus", "laptop"],
        ["similar", str(query), "--db", str(db), "--focus", "dogs"],  # a WordNet group: 118 classes
    ):
        done = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "HEAVY []" in done.stderr, (args, done.stderr)
    # an everyday word focuses on its WordNet group of classes
    done = run("similar", str(query), "--db", str(db), "--focus", "dogs", "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 10


def _answers_queries(db: Path, query: Path) -> None:
    done = run("similar", str(query), "--db", str(db), "-k", "3", "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 3


def test_kill_9_during_indexing_leaves_a_working_collection(caltech, tmp_path):
    db = tmp_path / "db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "semsearch.cli", "index", str(caltech), "--db", str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        time.sleep(0.2)
        try:
            if _count(db) >= 100:
                break
        except sqlite3.OperationalError:  # the catalog is still being created
            continue
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _count(db)
    assert 100 <= partial < 1184

    _answers_queries(db, sorted((caltech / "okapi").iterdir())[0])

    done = run("index", str(caltech), "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["unchanged"] == partial and report["added"] == 1184 - partial
    assert _count(db) == 1184


def test_demo_runs_on_bundled_photos(tmp_path):
    done = run("demo", "--json", "--db", str(tmp_path / "demo"))
    assert done.returncode == 0, done.stderr
    sections = json.loads(done.stdout)
    assert sections["index"]["added"] >= 15 and sections["index"]["skipped"] == 0

    def top(section: str) -> str:
        return Path(sections[section][0]["path"]).stem

    assert top("similar to cat-and-coffee.jpg, focus 'tabby cat'") == "chelsea"
    assert top("similar to cat-and-coffee.jpg, focus 'espresso'") == "coffee"
    assert top("search 'a cup of coffee'") in ("coffee", "cat-and-coffee")


def test_a_full_disk_is_a_one_line_error_and_the_collection_still_answers(small_photos, caltech):
    db = small_photos.parent / "db"
    assert run("index", str(small_photos), "--db", str(db)).returncode == 0
    shutil.copytree(caltech / "okapi", small_photos / "okapi", ignore=lambda d, names: sorted(names)[8:])
    limit = (db / "features.0.f32").stat().st_size + 3 * 5120 + 100  # room for 3 of 8 rows, and a bit
    done = run("index", str(small_photos), "--db", str(db), limit=("RLIMIT_FSIZE", limit))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: cannot write to collection {db}: File too large"]
    for name, dim in (("features.0.f32", 1280), ("logits.0.f32", 1000)):  # no partial row left behind
        assert (db / name).stat().st_size % (dim * 4) == 0
    assert _count(db) == 12

    _answers_queries(db, sorted((small_photos / "laptop").iterdir())[0])
    done = run("index", str(small_photos), "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == 8 and _count(db) == 20


def test_a_huge_k_is_clamped_to_what_exists(small_photos):
    """-k 1000000000 once allocated 21 GB; here the process may use 3 GiB of address space at most."""
    db = small_photos.parent / "db"
    assert run("index", str(small_photos), "--db", str(db)).returncode == 0
    query = str(sorted((small_photos / "laptop").iterdir())[0])
    for args, expected in (
        (["similar", query], 11),
        (["similar", query, "--focus", "laptop"], 11),
        (["search", "laptop", "--min-score", "0"], 12),
    ):
        done = run(*args, "--db", str(db), "-k", "1000000000", "--json", limit=("RLIMIT_AS", 3 * 2**30))
        assert done.returncode == 0, (args, done.stderr)
        assert len(json.loads(done.stdout)) == expected
    done = run("tags", query, "--db", str(db), "-k", "40000", "--json")
    assert done.returncode == 0, done.stderr
    assert 100 < len(json.loads(done.stdout)) < 40000


def test_an_empty_collection_says_so(small_photos, tmp_path):
    """A catalog with no images (a kill before the first batch leaves one): queries answer nothing, exit 0."""
    (tmp_path / "nothing").mkdir()
    db = tmp_path / "db"
    assert run("index", str(tmp_path / "nothing"), "--db", str(db)).returncode == 0
    query = str(sorted((small_photos / "laptop").iterdir())[0])
    for args in (["similar", query], ["similar", query, "--focus", "laptop"], ["search", "laptop"]):
        done = run(*args, "--db", str(db), "--json")
        assert done.returncode == 0, (args, done.stderr)
        assert json.loads(done.stdout) == []
        assert done.stderr.strip().splitlines() == [
            f"note: the collection {db} has no images yet: run `semsearch index FOLDER --db {db}`"
        ]


def test_names_that_are_not_utf8_are_indexed_shown_and_queried(small_photos):
    db = small_photos.parent / "db"
    bad = os.fsencode(small_photos) + b"/bad-\xff\xfe.jpg"
    shutil.copyfile(sorted((small_photos / "laptop").iterdir())[0], bad)
    (small_photos / "notes.txt").write_text("not a photo")
    os.symlink(b"nowhere-\xff.jpg", os.fsencode(small_photos) + b"/dangling-\xff.jpg")
    done = run("index", str(small_photos), "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert f"skipped {small_photos}/dangling-\\xff.jpg: broken symlink" in done.stdout
    done = run("index", str(small_photos), "--db", str(db), "--json")
    assert json.loads(done.stdout)["unchanged"] == 13
    done = run("similar", bad, "--db", str(db), "-k", "1", "--json")  # the name as a shell passes it: bytes
    assert done.returncode == 0, done.stderr
    assert Path(json.loads(done.stdout)[0]["path"]).parent.name == "laptop"
    done = run("similar", bad, "--db", str(db), "-k", "1", env={"COLUMNS": "500"})  # the title names it
    assert done.returncode == 0 and "bad-\\xff\\xfe.jpg" in done.stdout, done.stderr
    done = run("similar", str(sorted((small_photos / "laptop").iterdir())[0]), "--db", str(db), "--json")
    assert f"{small_photos}/bad-\\xff\\xfe.jpg" in {h["path"] for h in json.loads(done.stdout)}
    done = run("similar", bad.replace(b"bad", b"missing"), "--db", str(db))
    assert done.stderr.splitlines() == [f"error: image {small_photos}/missing-\\xff\\xfe.jpg does not exist"]


def test_queries_with_nothing_to_find_and_files_that_are_not_images(small_photos):
    db = small_photos.parent / "db"
    assert run("index", str(small_photos), "--db", str(db)).returncode == 0
    done = run("search", "the a of", "--db", str(db))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and "stop words" in done.stderr
    notes = small_photos / "notes.txt"
    notes.write_text("not a photo")
    done = run("similar", str(notes), "--db", str(db))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: {notes}: not an image"]


def test_indexed_images_by_id_wherever_an_image_goes(small_photos, tmp_path, capsys):
    """`id:12` names an indexed image for similar, tags and mixed searches, as over HTTP; paths still work."""
    from semsearch.cli import main
    from semsearch.collection import Collection

    db = tmp_path / "db"
    with Collection(db, writable=True) as collection:
        collection.sync(small_photos)
        records = sorted(collection.store.records().values(), key=lambda r: r.id)
    first = records[0]

    def cli(*args: str) -> tuple[int, str, str]:
        try:
            main([*args, "--db", str(db)])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = cli("similar", f"id:{first.id}", "-k", "3", "--json")
    assert code == 0 and first.id not in [h["id"] for h in json.loads(out)]
    code, out, _ = cli("tags", f"id:{first.id}", "-k", "3", "--json")
    assert code == 0 and len(json.loads(out)) == 3
    code, out, _ = cli("search", f"id:{first.id}", "-k", "1", "--json")
    assert code == 0 and json.loads(out)[0]["id"] == first.id
    code, out, _ = cli("search", f"crocodile + 2:id:{first.id} - {first.path}", "-k", "3", "--json")
    assert code == 0 and len(json.loads(out)) == 3
    for bad in ("similar", "tags"):
        code, out, err = cli(bad, "id:987654", "--json")
        assert (
            code != 0
            and out == ""
            and err.strip().splitlines() == ["error: no image with id 987654 in the collection"]
        )


def test_words_do_vector_arithmetic():
    """'king - man + woman' is arithmetic on the word vectors, not the mean of three words."""
    done = run("words", "king - man + woman", "-k", "3", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["word"] == "queen"
    mean = run("words", "king man woman", "-k", "3", "--json")
    assert json.loads(mean.stdout) != json.loads(done.stdout)
    split = run("words", "paris", "-", "france", "+", "italy", "-k", "1", "--json")  # as separate arguments
    assert json.loads(split.stdout)[0]["word"] == "rome"
    assert run("words", "-", "-k", "1").returncode == 2  # nothing to search for: one line, exit 2


def test_ids_as_the_tables_show_them_and_titles_on_one_line(caltech_collection, tmp_path):
    """`similar 12` takes the id the tables show; a file of that name wins; titles never wrap mid-word."""
    done = run("similar", "12", "--db", str(caltech_collection), "-k", "2", "--focus", "dog")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "similar to 12, focus 'dog'"
    by_id = run("similar", "id:12", "--db", str(caltech_collection), "-k", "2", "--json")
    assert json.loads(run("similar", "12", "--db", str(caltech_collection), "-k", "2", "--json").stdout) == (
        json.loads(by_id.stdout)
    )
    (tmp_path / "12").write_bytes(b"not an image")
    as_file = subprocess.run(
        [sys.executable, "-m", "semsearch.cli", "similar", "12", "--db", str(caltech_collection)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert as_file.returncode == 1 and "not an image" in as_file.stderr
