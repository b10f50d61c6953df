"""Shared fixtures: real photos (caltech-dev beside the checkout, skimage samples) and indexed collections."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CALTECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "caltech-dev"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the whole session (the user's own is never touched).

    The export, its checks against torch, the int8 preparation and the word tables are made once,
    as on a user's first run, and every test and CLI subprocess shares them. `SEMSEARCH_TEST_CACHE`
    names a folder to keep them between sessions while iterating locally.
    """
    path = Path(os.environ.get("SEMSEARCH_TEST_CACHE") or tmp_path_factory.mktemp("model-cache"))
    patch = pytest.MonkeyPatch()
    patch.setenv("SEMSEARCH_CACHE", str(path))
    yield path
    patch.undo()


@pytest.fixture(scope="session")
def caltech() -> Path:
    """The caltech-dev photo set (30 class folders); tests that need it skip where it is absent."""
    if not CALTECH.is_dir():
        pytest.skip(f"caltech-dev photos not found at {CALTECH}")
    return CALTECH


@pytest.fixture(scope="session")
def caltech_collection(caltech, tmp_path_factory):
    """caltech-dev indexed once for the whole session (read-only for tests)."""
    from semsearch.collection import Collection

    db = tmp_path_factory.mktemp("caltech-db")
    with Collection(db, writable=True) as collection:
        report = collection.sync(caltech)
    assert report.added > 1000
    return db


@pytest.fixture
def small_photos(caltech, tmp_path) -> Path:
    """A writable folder with 3 classes x 4 real photos, for tests that change files."""
    folder = tmp_path / "photos"
    for name in ("crocodile", "laptop", "soccer_ball"):
        (folder / name).mkdir(parents=True)
        for src in sorted((caltech / name).iterdir())[:4]:
            shutil.copy2(src, folder / name / src.name)
    return folder
