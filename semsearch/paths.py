"""Where semsearch keeps things on disk: per-user cache (model exports, converted word vectors) and collections."""

from __future__ import annotations

import os
import re
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


def shown(text: str) -> str:
    """A path (or a message naming one) as text that prints and encodes anywhere: bytes of a name that are
    not UTF-8 (held by Python as surrogate escapes) appear as `\\xff`. For display only: the path itself
    opens the file."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no file name decodes to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


_TEMP_SUFFIX = ".tmp"


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Make `path` appear whole or not at all: `write` fills a temp file beside it, which is synced and renamed.

    Readers (and a crash at any moment) see either the old file or the new one, never a half-written one;
    a process killed mid-write leaves its temp file (`.<name>.<random>.tmp`) for `sweep_temporaries`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
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


def sweep_temporaries(folder: Path, name: str | None = None) -> None:
    """Delete the temp files that killed `write_atomically` calls left in `folder` (only those of `name`, if
    given). Call it only where no other process can be writing the same files at that moment."""
    target = re.escape(name) if name is not None else r".+"
    pattern = re.compile(rf"\.{target}\.[^.]+{re.escape(_TEMP_SUFFIX)}")
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
