"""`semsearch index --ray`: the Ray Data pipeline gives the collection the in-process pipeline gives.

One local Ray instance (2 CPUs, no dashboard) serves the module; the kill test starts its own, in the CLI
process it kills.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.data", reason="the scale extra (Ray Data) is not installed")

from test_cli import run  # noqa: E402 -- the CLI in a new process

from semsearch.collection import Collection  # noqa: E402
from semsearch.scale.raydata import RayEncode, quiet  # noqa: E402

CLASSES = ("crocodile", "laptop", "okapi", "soccer_ball", "stapler", "wrench")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    quiet(ray)
    yield
    ray.shutdown()


def _photos(caltech: Path, folder: Path, per_class: int) -> Path:
    for name in CLASSES:
        (folder / name).mkdir(parents=True)
        for src in sorted((caltech / name).iterdir())[:per_class]:
            shutil.copy2(src, folder / name / src.name)
    return folder


@pytest.fixture
def photos(caltech, tmp_path) -> Path:
    """60 real photos and the bad files every index run meets."""
    folder = _photos(caltech, tmp_path / "photos", 10)
    bad = folder / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.png").write_bytes(b"not an image at all")
    whole = (folder / "okapi").iterdir().__next__().read_bytes()
    (bad / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (bad / "readme.txt").write_text("unsupported")
    return folder


def contents(db: Path) -> dict[str, tuple]:
    """Every indexed path with its size, hash, photo details and vectors in every space."""
    with Collection(db) as collection:
        store = collection.store
        spaces = [s.name for s in collection.model.spaces]
        records = store.records()
        rows = np.array([r.row for r in records.values()])
        vectors = {s: store.vectors_at(s, rows) for s in spaces}
        details = store.details_of([r.id for r in records.values()])
        return {
            path: (r.size, r.sha256, details[r.id], {s: vectors[s][i] for s in spaces})
            for i, (path, r) in enumerate(records.items())
        }


def assert_same(a: dict[str, tuple], b: dict[str, tuple]) -> None:
    assert sorted(a) == sorted(b)
    for path in a:
        assert a[path][:3] == b[path][:3], path
        assert a[path][2]["width"] > 0, path  # details were read on the workers
        for space, vector in a[path][3].items():
            np.testing.assert_allclose(b[path][3][space], vector, atol=1e-6, rtol=0, err_msg=path)


def index_both(folder: Path, local: Path, distributed: Path, workers: int) -> tuple[dict, dict]:
    with Collection(local, writable=True) as collection:
        here = collection.sync(folder).to_dict()
    with Collection(distributed, writable=True) as collection:
        there = collection.sync(folder, encode=RayEncode(workers=workers, threads=1)).to_dict()
    for report in (here, there):
        report["skipped_files"].sort(key=lambda f: f["path"])
    return here, there


def test_ray_and_local_pipelines_make_identical_collections(photos, tmp_path):
    """Two 1-thread sessions on Ray, one 2-thread session here: the same numbers."""
    here, there = index_both(photos, tmp_path / "local", tmp_path / "ray", workers=2)
    assert there == here
    assert here["added"] == 60
    reasons = {Path(f["path"]).name: f["reason"] for f in there["skipped_files"]}
    assert sorted(reasons) == ["empty.jpg", "notes.png", "readme.txt", "truncated.jpg"]
    assert_same(contents(tmp_path / "local"), contents(tmp_path / "ray"))


def test_reindexing_with_changes_through_ray_matches_local(photos, caltech, tmp_path):
    index_both(photos, tmp_path / "local", tmp_path / "ray", workers=2)
    laptops = sorted((photos / "laptop").iterdir())
    shutil.copy(sorted((caltech / "okapi").iterdir())[-1], laptops[0])  # changed content
    laptops[1].unlink()  # removed
    shutil.copy2(sorted((caltech / "ferry").iterdir())[0], photos / "ferry.jpg")  # new
    (photos / "laptop" / "moved.jpg").write_bytes(laptops[2].read_bytes())  # a move: no embedding
    laptops[2].unlink()
    (photos / "bad" / "empty.jpg").unlink()  # a bad file gone
    here, there = index_both(photos, tmp_path / "local", tmp_path / "ray", workers=2)
    assert there == here
    assert (here["added"], here["updated"], here["moved"], here["removed"]) == (1, 1, 1, 1)
    assert here["unchanged"] == 57
    assert_same(contents(tmp_path / "local"), contents(tmp_path / "ray"))


def test_nothing_new_starts_no_ray_work(photos, tmp_path):
    """Unchanged files are decided in the writer, before dispatch: a second run sends Ray nothing."""
    sent: list[int] = []

    class Counting(RayEncode):
        def __call__(self, paths, model, batch_size=32, *, analyse=None):
            sent.append(len(paths))
            return super().__call__(paths, model, batch_size, analyse=analyse)

    db = tmp_path / "db"
    for _ in range(2):
        with Collection(db, writable=True) as collection:
            collection.sync(photos, encode=Counting(workers=1))
    assert sent == [63]  # 60 photos and the 3 bad image files, once


def _count(db: Path) -> int:
    with sqlite3.connect(f"file:{db / 'catalog.sqlite'}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]


@pytest.mark.slow
def test_kill_9_of_the_ray_driver_then_rerun(caltech, tmp_path):
    folder = _photos(caltech, tmp_path / "photos", 40)
    total = sum(1 for _ in folder.rglob("*.jpg"))  # 238: not every class has 40
    db = tmp_path / "db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "semsearch.cli", "index", str(folder), "--db", str(db), "--ray"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its Ray processes share its group, so none outlives the test
    )
    try:
        deadline = time.time() + 300
        partial = 0
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
            try:
                partial = _count(db)
            except sqlite3.OperationalError:  # the catalog is still being created
                continue
            if partial >= 32:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    partial = _count(db)
    assert 32 <= partial < total

    done = subprocess.run(
        [sys.executable, "-m", "semsearch.cli", "similar", "id:1", "--db", str(db), "-k", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 3

    with Collection(db, writable=True) as collection:
        report = collection.sync(folder, encode=RayEncode(workers=2, threads=1))
    assert (report.unchanged, report.added) == (partial, total - partial)
    with Collection(tmp_path / "local", writable=True) as collection:
        collection.sync(folder)
    assert_same(contents(tmp_path / "local"), contents(db))


def test_without_ray_installed_ray_says_how_to_install_it(photos, tmp_path):
    hidden = tmp_path / "no-ray"
    (hidden / "ray").mkdir(parents=True)
    (hidden / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(hidden), os.environ.get("PYTHONPATH", "")])}
    done = run("index", str(photos), "--db", str(tmp_path / "db"), "--ray", env=env)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --ray needs Ray Data: pip install 'semsearch[scale]'"
    assert not (tmp_path / "db").exists()  # refused before anything was made


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ray", "127.0.0.1:1"], "error: cannot reach the Ray cluster at 127.0.0.1:1: Connection refused"),
        (["--ray", "ray://host:port"], "error: Ray address 'ray://host:port' is not HOST:PORT, "),
        (["--ray-workers", "2"], "error: --ray-workers needs --ray"),
    ],
)
def test_bad_ray_options_are_one_line_errors(photos, tmp_path, args, message):
    done = run("index", str(photos), "--db", str(tmp_path / "db"), *args)
    assert done.returncode == 2
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "db").exists()
