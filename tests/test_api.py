"""The README's Python API example runs as written (doctest), on real photos."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example_runs(small_photos: Path, tmp_path: Path) -> None:
    section = README.read_text("utf-8").split("## Python API", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```pycon\n(.*?)```", section, flags=re.S)
    test = doctest.DocTestParser().get_doctest(
        example, {"db": tmp_path / "db", "folder": small_photos}, "README API", str(README), 0
    )
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0 and runner.tries >= 6


def test_the_public_names_are_importable() -> None:
    import semsearch

    for name in semsearch.__all__:
        assert getattr(semsearch, name) is not None
    assert issubclass(semsearch.CollectionError, semsearch.SemsearchError)


def test_an_open_collection_loads_its_index_once_and_sees_new_photos(
    small_photos: Path, tmp_path: Path
) -> None:
    """A program that keeps a collection open and queries in a loop: the index is kept between queries,
    and photos another writer adds are found at the next query, without reopening."""
    import shutil

    from semsearch import Collection

    moved = tmp_path / "later"
    shutil.move(small_photos / "laptop", moved)
    db = tmp_path / "db"
    with Collection(db, writable=True) as writer:
        writer.sync(small_photos)
    with Collection(db) as reader:
        first = reader.search("laptop", k=20, min_score=0)
        assert reader.vector_index(reader.text_space) is reader.vector_index(reader.text_space)
        assert len(first) == 8 and not any("laptop" in hit.path for hit in first)
        shutil.move(moved, small_photos / "laptop")
        with Collection(db, writable=True) as writer:
            writer.sync(small_photos)
        again = reader.search("laptop", k=20, min_score=0)
        assert len(again) == 12 and "laptop" in again[0].path


def test_single_queries_run_on_one_blas_thread_and_batches_on_all() -> None:
    import numpy as np
    from threadpoolctl import threadpool_info

    from semsearch.index import create_index
    from semsearch.vectors import FEW_QUERIES, few_threads

    def blas_threads() -> int:
        return min(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")

    before = blas_threads()
    with few_threads(1):
        assert blas_threads() == 1
    with few_threads(FEW_QUERIES):
        assert blas_threads() == before
    assert blas_threads() == before
    index = create_index("exact", 8)
    index.add(np.arange(50), np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32))
    ids, _ = index.search(np.ones((1, 8), dtype=np.float32), 5)
    assert ids.shape == (1, 5) and blas_threads() == before
