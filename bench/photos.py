"""A 10,000-photo collection for latency benchmarks, made from the 1,184 real photos of caltech-dev.

Search cost depends on the vectors: exact search prunes by a projection bound that works on real image
features and not on random ones. So the benches index real photos with the real pipeline: every photo
of `../shared/data/caltech-dev` plus randomly cropped, flipped, rotated and re-coloured copies of them
until there are `n`, written as JPEGs beside the collection and indexed by `Collection.sync` (about a
minute for 10,000 on 2 cores, once: a collection already at `db` is reused).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from semsearch.collection import Collection

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "caltech-dev"


def _variant(image: Image.Image, rnd: random.Random) -> Image.Image:
    """A plausible second shot of the same scene: another framing, side, tilt and light."""
    w, h = image.size
    scale = rnd.uniform(0.6, 1.0)
    cw, ch = max(16, int(w * scale)), max(16, int(h * scale))
    left, top = rnd.randint(0, w - cw), rnd.randint(0, h - ch)
    out = image.crop((left, top, left + cw, top + ch))
    if rnd.random() < 0.5:
        out = ImageOps.mirror(out)
    out = out.rotate(rnd.uniform(-15, 15), resample=Image.Resampling.BILINEAR, expand=False)
    out = ImageEnhance.Brightness(out).enhance(rnd.uniform(0.7, 1.3))
    return ImageEnhance.Color(out).enhance(rnd.uniform(0.6, 1.4))


def write_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """`n` JPEGs under `folder`: the real photos first, then variants of them (class folders kept)."""
    if not PHOTOS.is_dir():
        raise SystemExit(f"the benchmark photos are missing: {PHOTOS}")
    sources = sorted(p for p in PHOTOS.rglob("*.jpg"))
    rnd = random.Random(seed)
    written = []
    for i in range(n):
        src = sources[i % len(sources)]
        dst = folder / src.parent.name / f"{src.stem}-{i // len(sources)}.jpg"
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(src) as im:
                im = im.convert("RGB")
                (im if i < len(sources) else _variant(im, rnd)).save(dst, quality=90)
        written.append(dst)
    return written


def photo_collection(db: Path, n: int) -> str:
    """Index `n` photos (written beside `db`) into the collection at `db`; returns one indexed path."""
    photos = write_photos(db.parent / f"{db.name}-photos", n)
    with Collection(db, writable=True) as collection:
        collection.sync(photos[0].parents[1])
    return str(photos[42])


def add_collection_options(parser: argparse.ArgumentParser) -> None:
    """--images and --db, the same for every bench that runs on this collection."""
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument(
        "--db",
        type=Path,
        help="Reuse/keep the collection (and its photos, beside it) here (default: a temp dir).",
    )


@contextmanager
def bench_collection(args: argparse.Namespace) -> Iterator[tuple[Path, str]]:
    """(db, one indexed photo path) of the collection at --db (kept), or in a temporary folder that is
    removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="semsearch-bench-") as tmp:
        db = args.db or Path(tmp) / "db"
        t = time.perf_counter()
        indexed = photo_collection(db, args.images)
        print(f"collection: {args.images} photos at {db} ({time.perf_counter() - t:.1f} s)", file=sys.stderr)
        yield db, indexed
