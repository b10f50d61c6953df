"""A 10,000-photo collection for latency benchmarks, made from the 1,184 real photos of caltech-dev.

Every photo carries EXIF as a camera writes it, so filters have realistic selectivity: a date taken
spread evenly over 2015-2024, one of six cameras, and for 60% of them a GPS position near one of five
cities (within ~30 km); the class folders serve `in:`.

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
from datetime import datetime, timedelta
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


CAMERAS = [("Canon", "Canon EOS 5D"), ("Canon", "Canon EOS R6"), ("NIKON", "NIKON D750"),
           ("Google", "Pixel 7"), ("Apple", "iPhone 13"), ("SONY", "ILCE-7M3")]  # fmt: skip
CITIES = [
    (48.8566, 2.3522),
    (40.7128, -74.0060),
    (35.6762, 139.6503),
    (-33.8688, 151.2093),
    (51.5074, -0.1278),
]


def _exif(i: int, rnd: random.Random) -> Image.Exif:
    """Plausible camera EXIF for the i-th photo: date taken, camera, and (60% of photos) a position."""
    exif = Image.Exif()
    make, model = CAMERAS[i % len(CAMERAS)]
    exif[271], exif[272] = make, model
    taken = datetime(2015, 1, 1) + timedelta(seconds=rnd.randrange(10 * 365 * 86400))
    exif.get_ifd(0x8769)[36867] = taken.strftime("%Y:%m:%d %H:%M:%S")
    if rnd.random() < 0.6:
        lat, lon = CITIES[rnd.randrange(len(CITIES))]
        lat, lon = lat + rnd.uniform(-0.25, 0.25), lon + rnd.uniform(-0.25, 0.25)

        def dms(x: float) -> tuple[float, float, float]:
            x = abs(x)
            return (float(int(x)), float(int(x * 60 % 60)), round(x * 3600 % 60, 2))

        exif.get_ifd(0x8825).update(
            {1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W", 4: dms(lon)}
        )
    return exif


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
                shot = im if i < len(sources) else _variant(im, rnd)
                shot.save(dst, quality=90, exif=_exif(i, rnd))
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
