"""Decode images in a thread pool while the encoder runs, and hand back encoded batches.

PIL releases the GIL while decoding and ONNX Runtime while inferring, so a few decode threads
work ahead of inference and both cores stay busy. Only a bounded window of decoded images is
kept in memory (`lookahead` batches), never the whole input.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

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


def _decode(path: Path, pixels: PixelInput) -> tuple[np.ndarray, FileState] | Skipped:
    try:
        data, state = read_file(path)
    except FileNotFoundError:  # deleted since the scan
        return Skipped(path, "file not found")
    except OSError as exc:
        return Skipped(path, f"unreadable ({exc.strerror})")
    try:
        return load_image(
            data, pixels.size, pixels.geometry, raw=is_raw_name(path), max_bytes=OWN_FILE_DECODE_BYTES
        ), state
    except MissingCodecError as exc:  # not remembered: tried again once the decoder is installed
        return Skipped(path, str(exc))
    except DecodeError as exc:
        return Skipped(path, str(exc), state)


def encode_paths(
    paths: Sequence[Path],
    encoder: ImageModel,
    batch_size: int = 32,
    decode_threads: int | None = None,
    lookahead: int = 2,
    encode_workers: int | None = None,
) -> Iterator[EncodedBatch | Skipped]:
    """Encode every image in `paths`; each path comes back exactly once, in a batch or as `Skipped`.

    Batches come in input order; a `Skipped` is yielded as soon as its decode fails, ahead of the
    batches around it. `encode_workers` batches are inferred at once (default: cores divided by the
    encoder's threads, so a 1-thread encoder runs one batch per core; ORT sessions are thread-safe).
    On 2 cores, one 2-thread run and two 1-thread runs measured within noise of each other
    (bench/embed.py), so the default encoder (2 threads) runs one batch at a time.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    threads = decode_threads or default_decode_threads()
    cores = os.cpu_count() or 1
    workers = encode_workers or max(1, cores // max(1, encoder.threads))
    window = max(1, lookahead) * batch_size
    pending: deque[tuple[Path, Future]] = deque()
    encoding: deque[Future] = deque()
    todo = iter(Path(p) for p in paths)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="semsearch-decode")
    infer = None
    if workers > 1:
        infer = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="semsearch-encode")

    def submit(batch: list[tuple[Path, np.ndarray, FileState]]) -> Iterator[EncodedBatch]:
        if infer is None:
            yield _encode(encoder, batch)
            return
        encoding.append(infer.submit(_encode, encoder, batch))
        while len(encoding) >= workers:
            yield encoding.popleft().result()

    try:

        def refill() -> None:
            while len(pending) < window:
                path = next(todo, None)
                if path is None:
                    return
                pending.append((path, pool.submit(_decode, path, encoder.pixels)))

        refill()
        batch: list[tuple[Path, np.ndarray, FileState]] = []
        while pending:
            path, future = pending.popleft()
            refill()
            result = future.result()
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
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        if infer is not None:
            infer.shutdown(wait=True, cancel_futures=True)


def _encode(encoder: ImageModel, batch: list[tuple[Path, np.ndarray, FileState]]) -> EncodedBatch:
    paths, pixels, files = zip(*batch)
    return EncodedBatch(paths=list(paths), vectors=encoder.encode(np.stack(pixels)), files=list(files))
