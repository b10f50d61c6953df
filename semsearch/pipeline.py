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
) -> Iterator[EncodedBatch | Skipped]:
    """Encode every image in `paths`; each path comes back exactly once, in a batch or as `Skipped`.

    Results come in input order, except that a `Skipped` is yielded as soon as its decode fails,
    ahead of the batch being filled around it.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    size = encoder.input_size
    threads = decode_threads or default_decode_threads()
    window = max(1, lookahead) * batch_size
    pending: deque[tuple[Path, Future]] = deque()
    todo = iter(Path(p) for p in paths)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="semsearch-decode")
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
                yield _encode(encoder, batch_paths, batch_pixels)
                batch_paths, batch_pixels = [], []
        if batch_paths:
            yield _encode(encoder, batch_paths, batch_pixels)
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _encode(encoder: ImageEncoder, paths: list[Path], pixels: list[np.ndarray]) -> EncodedBatch:
    features, logits = encoder.encode(np.stack(pixels))
    return EncodedBatch(paths=list(paths), features=features, logits=logits)
