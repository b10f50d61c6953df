"""Decode images in a thread pool while the encoder runs, and hand back encoded batches.

PIL releases the GIL while decoding and ONNX Runtime while inferring, so a few decode threads
work ahead of inference and both cores stay busy. Only a bounded window of decoded images is
kept in memory (`lookahead` batches), never the whole input.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from semsearch.encoders.base import ImageModel, PixelInput
from semsearch.errors import DecodeError, MissingCodecError
from semsearch.media import OWN_FILE_DECODE_BYTES, is_raw_name, load_image


@dataclass(frozen=True)
class FileState:
    """The very bytes that were decoded: their hash, and the file's size and mtime when they were read.

    The file is read once and those bytes are both hashed and decoded, so a file that changes while it is
    indexed is recorded as what was embedded, never as a mix of two versions.
    """

    sha256: str
    size: int
    mtime_ns: int


Analyse = Callable[[Path, bytes, "FileState"], Any]
"""Work on a file's bytes besides decoding for the model (its metadata, its text), done in the decode
threads from the same bytes: `analyse(path, data, state)`; its result travels with the file."""

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str
    file: FileState | None = None  # None where the file could not be read at all


@dataclass(frozen=True)
class EncodedBatch:
    paths: list[Path]
    vectors: dict[str, np.ndarray]  # space name -> (n, dim) float32, as the model's encode gives them
    files: list[FileState]
    analysed: list[Any] = field(default_factory=list)  # what `analyse` gave for each file (if given)


class Encode(Protocol):
    """How `Collection.sync` turns the paths it decided to embed into results: each path comes back
    exactly once, in an `EncodedBatch` (with what `analyse` gave for it) or as `Skipped`, in any order.
    `encode_paths` is the in-process one; `semsearch.scale.raydata.RayEncode` spreads the same per-file
    work over a Ray cluster (so `analyse` must pickle)."""

    def __call__(
        self,
        paths: Sequence[Path],
        encoder: ImageModel,
        batch_size: int = 32,
        *,
        analyse: Analyse | None = None,
    ) -> Iterator[EncodedBatch | Skipped]: ...


def default_decode_threads() -> int:
    """Decode threads: as many as cores (they mostly wait on ORT's threads), at least 1, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def read_file(path: Path) -> tuple[bytes, FileState]:
    """A file's bytes and their state; size and mtime are taken before reading, so a write during the read
    leaves a newer mtime on disk than the one recorded, and the next index run looks again."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        data = f.read()
    return data, FileState(hashlib.sha256(data).hexdigest(), st.st_size, st.st_mtime_ns)


def _read(path: Path) -> tuple[bytes, FileState] | Skipped:
    try:
        return read_file(path)
    except FileNotFoundError:  # deleted since the scan
        return Skipped(path, "file not found")
    except OSError as exc:
        return Skipped(path, f"unreadable ({exc.strerror})")


def _decode(
    path: Path, pixels: PixelInput, analyse: Analyse | None
) -> tuple[np.ndarray, FileState, Any] | Skipped:
    read = _read(path)
    if isinstance(read, Skipped):
        return read
    data, state = read
    try:
        decoded = load_image(
            data, pixels.size, pixels.geometry, raw=is_raw_name(path), max_bytes=OWN_FILE_DECODE_BYTES
        )
    except MissingCodecError as exc:  # not remembered: tried again once the decoder is installed
        return Skipped(path, str(exc))
    except DecodeError as exc:
        return Skipped(path, str(exc), state)
    return decoded, state, analyse(path, data, state) if analyse is not None else None


def _analyse(path: Path, analyse: Analyse) -> tuple[FileState, Any] | Skipped:
    read = _read(path)
    if isinstance(read, Skipped):
        return read
    data, state = read
    return state, analyse(path, data, state)


def analyse_paths(
    paths: Sequence[Path], analyse: Analyse, threads: int | None = None, window: int = 64
) -> Iterator[tuple[Path, FileState, Any] | Skipped]:
    """`analyse` each file's bytes (read once) without decoding it for the model, in input order: the
    metadata and text of photos already embedded. At most `window` results are held at once."""
    with ThreadPoolExecutor(threads or default_decode_threads(), "semsearch-analyse") as pool:
        for path, result in _ahead(pool, lambda p: _analyse(p, analyse), map(Path, paths), window):
            yield result if isinstance(result, Skipped) else (path, *result)


_DONE = object()


def _ahead(
    pool: ThreadPoolExecutor, work: Callable[[T], R], items: Iterable[T], window: int
) -> Iterator[tuple[T, R]]:
    """(item, work(item)) in input order, with up to `window` items worked on ahead of the consumer;
    what is still pending when the consumer stops is cancelled."""
    pending: deque[tuple[T, Future]] = deque()
    todo = iter(items)

    def refill() -> None:
        while len(pending) < window:
            item = next(todo, _DONE)
            if item is _DONE:
                return
            pending.append((item, pool.submit(work, item)))

    try:
        refill()
        while pending:
            item, future = pending.popleft()
            refill()
            yield item, future.result()
    finally:
        for _, future in pending:
            future.cancel()


def encode_paths(
    paths: Sequence[Path],
    encoder: ImageModel,
    batch_size: int = 32,
    decode_threads: int | None = None,
    lookahead: int = 2,
    encode_workers: int | None = None,
    analyse: Analyse | None = None,
) -> Iterator[EncodedBatch | Skipped]:
    """Encode every image in `paths`; each path comes back exactly once, in a batch or as `Skipped`.

    Batches come in input order; a `Skipped` is yielded as soon as its decode fails, ahead of the
    batches around it. `encode_workers` batches are inferred at once (default: cores divided by the
    encoder's threads, so a 1-thread encoder runs one batch per core; ORT sessions are thread-safe).
    On 2 cores, one 2-thread run and two 1-thread runs measured within noise of each other
    (bench/embed.py), so the default encoder (2 threads) runs one batch at a time. `analyse` runs on
    each decodable file's bytes in the decode threads; its results come in `EncodedBatch.analysed`.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    threads = decode_threads or default_decode_threads()
    cores = os.cpu_count() or 1
    workers = encode_workers or max(1, cores // max(1, encoder.threads))
    window = max(1, lookahead) * batch_size
    encoding: deque[Future] = deque()
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="semsearch-decode")
    infer = None
    if workers > 1:
        infer = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="semsearch-encode")

    def submit(batch: list[tuple[Path, np.ndarray, FileState, Any]]) -> Iterator[EncodedBatch]:
        if infer is None:
            yield _encode(encoder, batch)
            return
        encoding.append(infer.submit(_encode, encoder, batch))
        while len(encoding) >= workers:
            yield encoding.popleft().result()

    try:
        batch: list[tuple[Path, np.ndarray, FileState, Any]] = []
        decode = lambda path: _decode(path, encoder.pixels, analyse)  # noqa: E731
        for path, result in _ahead(pool, decode, (Path(p) for p in paths), window):
            if isinstance(result, Skipped):
                yield result
                continue
            batch.append((path, *result))
            if len(batch) == batch_size:
                yield from submit(batch)
                batch = []
        if batch:
            yield from submit(batch)
        while encoding:
            yield encoding.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if infer is not None:
            infer.shutdown(wait=True, cancel_futures=True)


def _encode(encoder: ImageModel, batch: list[tuple[Path, np.ndarray, FileState, Any]]) -> EncodedBatch:
    paths, pixels, files, analysed = zip(*batch)
    return EncodedBatch(
        paths=list(paths),
        vectors=encoder.encode(np.stack(pixels)),
        files=list(files),
        analysed=list(analysed),
    )
