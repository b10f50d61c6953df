"""Where semsearch keeps things on disk: per-user cache (model exports, converted word vectors) and collections."""

from __future__ import annotations

import os
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
