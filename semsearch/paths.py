"""Where semsearch keeps things on disk: per-user cache (model exports, converted word vectors) and collections."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """Per-user cache for derived files (ONNX exports, binary word tables); `SEMSEARCH_CACHE` overrides it."""
    path = Path(os.environ.get("SEMSEARCH_CACHE") or platformdirs.user_cache_dir("semsearch"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_db() -> Path:
    """The collection used when `--db` is not given; `SEMSEARCH_DB` overrides it."""
    return Path(os.environ.get("SEMSEARCH_DB") or platformdirs.user_data_dir("semsearch")) / "default"


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Make `path` appear whole or not at all: `write` fills a temp file beside it, which is synced and renamed.

    Readers (and a crash at any moment) see either the old file or the new one, never a half-written one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
