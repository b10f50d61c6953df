"""Calibrates `semsearch dupes`: how alike (cosine of stored image features) an edited copy of a photo is to
the photo, against how alike two different photos of the same subject are.

Positives: real caltech-dev photos and copies made of them the ways people's libraries make copies
(resized, re-encoded at JPEG quality 30-95, cropped 2-10 %, brightened, darkened, re-coloured, a burst-like
second frame, and mirrored, reported apart). Hard negatives: every pair of *different* photos of the same
class (two crocodiles, two laptops). Prints, per threshold, the share of copies found (recall) and the
share of pairs at or above it that are copies (precision), then recall per kind of edit at the default
threshold, and the most alike negative pairs (caltech has a few true near-duplicates of its own).

    python bench/dupes.py [--per-class 10] [--sheet negatives.png]

`--sheet` draws the hard-negative pairs at or above the default threshold side by side: many of them are
the same picture posted twice in Caltech-101 (or a burst-like second shot), i.e. true duplicates counted as
false ones, so the precision printed is a lower bound.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from semsearch.dupes import DEFAULT_THRESHOLD
from semsearch.encoders.registry import DEFAULT_MODEL, load_image_model
from semsearch.media import load_image

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "caltech-dev"
THRESHOLDS = (0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96, 0.98)


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def _crop(image: Image.Image, fraction: float, rnd: random.Random) -> Image.Image:
    """`fraction` of the width and of the height cut off, split at random between the two sides."""
    w, h = image.size
    cut_w, cut_h = round(w * fraction), round(h * fraction)
    left, top = rnd.randint(0, cut_w), rnd.randint(0, cut_h)
    return image.crop((left, top, left + w - cut_w, top + h - cut_h))


def _burst(image: Image.Image, rnd: random.Random) -> Image.Image:
    """A next frame of a burst: the window moved by ~4 %, tilted by up to 1.5 degrees, light changed a bit."""
    w, h = image.size
    shifted = _crop(image, 0.06, rnd).rotate(rnd.uniform(-1.5, 1.5), Image.Resampling.BILINEAR)
    return ImageEnhance.Brightness(shifted.resize((w, h))).enhance(rnd.uniform(0.93, 1.07))


def _half(image: Image.Image) -> Image.Image:
    return image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.LANCZOS)


#: Each edit makes a copy that a person would call the same photo (mirroring is reported apart).
EDITS: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "resized to 50%": lambda im, r: _half(im),
    "resized to 200%": lambda im, r: im.resize((im.width * 2, im.height * 2), Image.Resampling.BICUBIC),
    "JPEG quality 30": lambda im, r: _jpeg(im, 30),
    "JPEG quality 60": lambda im, r: _jpeg(im, 60),
    "JPEG quality 95": lambda im, r: _jpeg(im, 95),
    "cropped 2%": lambda im, r: _crop(im, 0.02, r),
    "cropped 5%": lambda im, r: _crop(im, 0.05, r),
    "cropped 10%": lambda im, r: _crop(im, 0.10, r),
    "brighter 20%": lambda im, r: ImageEnhance.Brightness(im).enhance(1.2),
    "darker 20%": lambda im, r: ImageEnhance.Brightness(im).enhance(0.8),
    "more contrast 25%": lambda im, r: ImageEnhance.Contrast(im).enhance(1.25),
    "saturation 140%": lambda im, r: ImageEnhance.Color(im).enhance(1.4),
    "warmer (R+8%, B-8%)": lambda im, r: Image.merge(
        "RGB", [b.point(lambda v, g=g: min(255, round(v * g))) for b, g in zip(im.split(), (1.08, 1, 0.92))]
    ),
    "grayscale": lambda im, r: ImageOps.grayscale(im).convert("RGB"),
    "50% + q50 + cropped 5%": lambda im, r: _jpeg(_crop(_half(im), 0.05, r), 50),
    "burst-like next frame": _burst,
    "mirrored (apart)": lambda im, r: ImageOps.mirror(im),
}
APART = {"mirrored (apart)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=10, help="photos per class that get edited copies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sheet", type=Path, help="write the hard negatives above the default here (PNG)")
    args = parser.parse_args()
    if not PHOTOS.is_dir():
        sys.exit(f"the benchmark photos are missing: {PHOTOS}")
    model = load_image_model(DEFAULT_MODEL)
    space = model.spaces[0].name
    size, geometry = model.pixels.size, model.pixels.geometry
    rnd = random.Random(args.seed)

    def encode(images: list[Image.Image]) -> np.ndarray:
        out = []
        for a in range(0, len(images), 32):
            batch = []
            for im in images[a : a + 32]:
                buf = io.BytesIO()
                im.save(buf, "PNG")  # lossless: the edit itself is all that changes
                batch.append(load_image(buf.getvalue(), size, geometry))
            out.append(model.encode(np.stack(batch))[space])
        return np.concatenate(out)

    started = time.perf_counter()
    paths = sorted(PHOTOS.rglob("*.jpg"))
    labels = np.array([p.parent.name for p in paths])
    features = np.concatenate(
        [
            model.encode(np.stack([load_image(p, size, geometry) for p in paths[a : a + 32]]))[space]
            for a in range(0, len(paths), 32)
        ]
    )
    chosen = [i for label in sorted(set(labels)) for i in np.flatnonzero(labels == label)[: args.per_class]]
    positives: dict[str, np.ndarray] = {}
    for name, edit in EDITS.items():
        copies = []
        for i in chosen:
            with Image.open(paths[i]) as im:
                copies.append(edit(im.convert("RGB"), rnd).convert("RGB"))
        positives[name] = np.einsum("ij,ij->i", encode(copies), features[chosen])
    same_class = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same_class), k=1)
    a, b = np.nonzero(same_class & upper)
    negatives = np.einsum("ij,ij->i", features[a], features[b])
    seconds = time.perf_counter() - started

    kept = np.concatenate([s for name, s in positives.items() if name not in APART])
    print(
        f"{len(paths)} caltech-dev photos ({model.name}, {model.describe_runtime()}); {len(chosen)} photos x "
        f"{len(EDITS) - len(APART)} edits = {len(kept)} copy pairs; {len(negatives)} hard negative pairs "
        f"(different photos, same class); {seconds:.0f} s\n"
    )
    print(
        f"{'threshold':>9}  {'recall':>7}  {'precision':>9}  {'false pairs':>11}  {'recall incl. mirrored':>21}"
    )
    everything = np.concatenate(list(positives.values()))
    for t in sorted({*THRESHOLDS, DEFAULT_THRESHOLD}):
        found, wrong = int((kept >= t).sum()), int((negatives >= t).sum())
        precision = found / max(1, found + wrong)
        mark = "  <- default" if t == DEFAULT_THRESHOLD else ""
        print(
            f"{t:>9.2f}  {found / len(kept):>7.3f}  {precision:>9.3f}  {wrong:>11d}  "
            f"{(everything >= t).mean():>21.3f}{mark}"
        )
    print(f"\nrecall per edit at the default threshold {DEFAULT_THRESHOLD}:")
    print(f"{'edit':<26}{'recall':>7}  {'min cos':>7}  {'median cos':>10}")
    for name, scores in positives.items():
        print(
            f"{name:<26}{(scores >= DEFAULT_THRESHOLD).mean():>7.3f}  {scores.min():>7.3f}  {np.median(scores):>10.3f}"
        )
    top = np.argsort(-negatives)[:5]
    print("\nmost alike different photos (hard negatives):")
    for j in top:
        print(f"  {negatives[j]:.3f}  {paths[a[j]].relative_to(PHOTOS)}  {paths[b[j]].relative_to(PHOTOS)}")
    if args.sheet:
        above = [j for j in np.argsort(-negatives) if negatives[j] >= DEFAULT_THRESHOLD]
        _sheet(args.sheet, [(paths[a[j]], paths[b[j]], float(negatives[j])) for j in above])
        print(f"\n{len(above)} pairs drawn in {args.sheet}")


def _sheet(out: Path, pairs: list[tuple[Path, Path, float]], side: int = 96, across: int = 4) -> None:
    """Pairs of photos side by side with their score, `across` pairs a row."""
    cell = 2 * side + 70
    sheet = Image.new("RGB", (across * cell, max(1, -(-len(pairs) // across)) * (side + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (left, right, score) in enumerate(pairs):
        x, y = (n % across) * cell, (n // across) * (side + 4)
        for c, path in enumerate((left, right)):
            with Image.open(path) as im:
                small = im.convert("RGB")
                small.thumbnail((side, side))
                sheet.paste(small, (x + c * side, y))
        draw.text((x + 2 * side + 4, y + side // 3), f"{n}: {score:.3f}", fill="black")
    sheet.save(out)


if __name__ == "__main__":
    main()
