"""Text in photos: how well OCR reads words rendered onto real photos, and where `search` ranks them.

    python bench/ocr.py [--photos 30] [--weights 0,0.25,0.5,1]

1. Word recall: one word from WORDS is written onto each of `--photos` caltech-dev photos (one photo
   per class, in turn), at three sizes (text height 6%, 10% and 16% of the photo's height) and three
   angles (0, 15 and 30 degrees), white with a dark outline; a word counts as read when every one of its
   tokens is in the recognised text. Seconds per photo are wall-clock on this machine.
2. Search: the photos with medium, upright text are indexed with --ocr into a collection of all of
   caltech-dev (indexed without OCR: its photos hold no such words), and each photo's word is searched.
   The table gives, per TEXT_WEIGHT, the share of text photos ranked first and in the top 10, and the
   median rank (words no vocabulary knows only ever rank through their text).
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

DATA = Path(__file__).resolve().parents[2] / "shared/data/caltech-dev"
WORDS = [
    "RECEIPT", "Total", "Exit", "Danger", "Platform", "Welcome", "STOP", "Bakery", "Museum", "Station",
    "Parking", "Open", "Sale", "Coffee", "Hotel", "Pharmacy", "Library", "Zurich", "Rivoli", "1984",
    "Garden", "Market", "Tickets", "Keynote", "Agenda", "Invoice", "Menu", "Airport", "Beach", "Harbour",
]  # fmt: skip
SIZES = {"small": 0.06, "medium": 0.10, "large": 0.16}
ANGLES = (0, 15, 30)


def render(source: Path, word: str, height_share: float, angle: float) -> bytes:
    """`word` written across a real photo at a text height of `height_share` of the photo's, turned by
    `angle` degrees about its centre; JPEG bytes."""
    with Image.open(source) as img:
        photo = img.convert("RGB")
    size = max(8, round(photo.height * height_share))
    font = ImageFont.load_default(size=size)
    while font.getlength(word) > 0.9 * photo.width and size > 8:
        size -= 1
        font = ImageFont.load_default(size=size)
    layer = Image.new("RGBA", photo.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font, stroke_width=2)
    at = ((photo.width - (right - left)) / 2 - left, (photo.height - (bottom - top)) / 2 - top)
    draw.text(at, word, font=font, fill="white", stroke_width=2, stroke_fill="black")
    photo.paste(layer.rotate(angle, resample=Image.Resampling.BICUBIC), (0, 0), layer.rotate(angle))
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=90)
    return out.getvalue()


def sources(n: int) -> list[Path]:
    """One photo per class folder, in turn, until there are `n`."""
    folders = sorted(p for p in DATA.iterdir() if p.is_dir())
    photos = [sorted(f.glob("*.jpg")) for f in folders]
    return [photos[i % len(folders)][i // len(folders) + 2] for i in range(n)]


def read_back(text: str, word: str) -> bool:
    return set(re.findall(r"\w+", word.lower())) <= set(re.findall(r"\w+", text.lower()))


def recall_table(photos: list[Path]) -> None:
    from semsearch.ocr import TextReader

    reader = TextReader()
    reader.read(render(photos[0], "warm", 0.1, 0))  # loads the engine outside the timings
    print(f"word recall on {len(photos)} caltech-dev photos, one word each (seconds per photo)")
    print(f"{'text height':<14}" + "".join(f"{f'{a} deg':>16}" for a in ANGLES))
    for name, share in SIZES.items():
        cells = []
        for angle in ANGLES:
            found, start = 0, time.perf_counter()
            for i, photo in enumerate(photos):
                word = WORDS[i % len(WORDS)]
                found += read_back(reader.read(render(photo, word, share, angle)), word)
            per_photo = (time.perf_counter() - start) / len(photos)
            cells.append(f"{found / len(photos):6.2f} ({per_photo:4.2f}s)")
        print(f"{f'{name} {share:.0%}':<14}" + "".join(f"{c:>16}" for c in cells))


def search_table(photos: list[Path], weights: list[float]) -> None:
    from semsearch.collection import Collection
    from semsearch.errors import EmptyQueryError, UnknownWordError

    with tempfile.TemporaryDirectory() as tmp:
        db, marked = Path(tmp) / "db", Path(tmp) / "with-text"
        marked.mkdir()
        words = {}
        for i, photo in enumerate(photos):
            path = marked / f"{i:03d}-{photo.parent.name}.jpg"
            path.write_bytes(render(photo, WORDS[i % len(WORDS)], SIZES["medium"], 0))
            words[str(path)] = WORDS[i % len(WORDS)]
        with Collection(db, writable=True) as c:
            start = time.perf_counter()
            c.sync(DATA, ocr=False)
            c.sync(marked, ocr=True)
            print(
                f"\nindexed {c.store.count()} photos ({time.perf_counter() - start:.0f} s), OCR on the {len(photos)} with text"
            )
            print(f"{'TEXT_WEIGHT':<12} {'rank 1':>7} {'top 10':>7} {'median rank':>12}")
            for weight in weights:
                c.TEXT_WEIGHT = weight
                ranks = []
                for path, word in words.items():
                    try:
                        found = [h.path for h in c.search(word.lower(), k=c.store.count(), min_score=0)]
                    except (UnknownWordError, EmptyQueryError):  # no vocabulary word: text is all there is
                        found = []
                    ranks.append(found.index(path) + 1 if path in found else c.store.count())
                first = sum(r == 1 for r in ranks) / len(ranks)
                top = sum(r <= 10 for r in ranks) / len(ranks)
                print(f"{weight:<12g} {first:7.2f} {top:7.2f} {statistics.median(ranks):12g}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=30)
    parser.add_argument("--weights", default="0,0.25,0.5,1")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"caltech-dev not found at {DATA}: skipping the OCR benchmark")
        return 0
    photos = sources(args.photos)
    recall_table(photos)
    search_table(photos, [float(w) for w in args.weights.split(",")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
