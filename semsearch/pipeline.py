"""Decode images in a thread pool while the encoder runs, and hand back encoded batches.

PIL releases the GIL while decoding and ONNX Runtime while inferring, so a few decode threads
work ahead of inference and both cores stay busy. Only a bounded window of decoded images is
kept in memory (`lookahead` batches), never the whole input.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semsearch.encoders.image import ImageEncoder
from semsearch.errors import DecodeError
from semsearch.media import load_image


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass(frozen=True)
class EncodedBatch:
    paths: list[Path]
    features: np.ndarray  # (n, feature_dim) float32 L2-normalised
    logits: np.ndarray  # (n, 1000) float32


def default_decode_threads() -> int:
    """Decode threads: as many as cores (they mostly wait on ORT's threads), at least 1, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def _decode(path: Path, size: int) -> np.ndarray | Skipped:
    try:
        return load_image(path, size)
    except DecodeError as exc:
        return Skipped(path, str(exc))


def encode_paths(
    paths: Sequence[Path],
    encoder: ImageEncoder,
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
    size = encoder.input_size
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

    def submit(batch_paths: list[Path], batch_pixels: list[np.ndarray]) -> Iterator[EncodedBatch]:
        if infer is None:
            yield _encode(encoder, batch_paths, batch_pixels)
            return
        encoding.append(infer.submit(_encode, encoder, batch_paths, batch_pixels))
        while len(encoding) >= workers:
            yield encoding.popleft().result()

    try:

        def refill() -> None:
            while len(pending) < window:
                path = next(todo, None)
                if path is None:
                    return
                pending.append((path, pool.submit(_decode, path, size)))

        refill()
        batch_paths: list[Path] = []
        batch_pixels: list[np.ndarray] = []
        while pending:
            path, future = pending.popleft()
            refill()
            result = future.result()
            if isinstance(result, Skipped):
                yield result
                continue
            batch_paths.append(path)
            batch_pixels.append(result)
            if len(batch_paths) == batch_size:
                yield from submit(batch_paths, batch_pixels)
                batch_paths, batch_pixels = [], []
        if batch_paths:
            yield from submit(batch_paths, batch_pixels)
        while encoding:
            yield encoding.popleft().result()
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        if infer is not None:
            infer.shutdown(wait=True, cancel_futures=True)


def _encode(encoder: ImageEncoder, paths: list[Path], pixels: list[np.ndarray]) -> EncodedBatch:
    features, logits = encoder.encode(np.stack(pixels))
    return EncodedBatch(paths=list(paths), features=features, logits=logits)
