"""Text in photos: words rendered onto real photos are read back, odd images never crash the reader,
and `search` lifts photos whose text holds the query's words while leaving other queries unchanged."""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFont

from semsearch.collection import Analysis, Collection
from semsearch.errors import UnknownWordError
from semsearch.pipeline import FileState

pytest.importorskip("rapidocr_onnxruntime", reason="OCR needs the ocr extra: pip install 'semsearch[ocr]'")

from semsearch.ocr import TextReader  # noqa: E402


@pytest.fixture(scope="module")
def reader() -> TextReader:
    return TextReader()


def with_text(source: Path, text: str, size: int = 36, sign: bool = False) -> bytes:
    """A real photo with `text` written across it (smaller where it would not fit), as JPEG bytes: white
    with a black outline, or black on a white board (`sign`)."""
    with Image.open(source) as img:
        img = img.convert("RGB")
    font = ImageFont.load_default(size=size)
    while font.getlength(text) > img.width - 40 and size > 12:
        size -= 2
        font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(img)
    where = (20, img.height // 3)
    if sign:
        left, top, right, bottom = draw.textbbox(where, text, font=font)
        draw.rectangle((left - 8, top - 8, right + 8, bottom + 8), fill="white")
        draw.text(where, text, font=font, fill="black")
    else:
        draw.text(where, text, font=font, fill="white", stroke_width=2, stroke_fill="black")
    out = io.BytesIO()
    img.save(out, "JPEG", quality=92)
    return out.getvalue()


def test_words_rendered_on_photos_are_read(caltech, reader):
    for cls, word in (("ferry", "RECEIPT"), ("chair", "Danger"), ("wrench", "Exit 42")):
        source = sorted((caltech / cls).iterdir())[1]
        read = set(re.findall(r"\w+", reader.read(with_text(source, word)).lower()))
        assert set(word.lower().split()) <= read, read
    assert reader.read((sorted((caltech / "okapi").iterdir())[0]).read_bytes()) == ""  # nothing written


def test_the_index_analysis_pickles_to_a_fresh_reader(caltech, reader):
    """A Ray worker gets the analysis by pickle: it must arrive as a working reader, not a shared one."""
    source = sorted((caltech / "ferry").iterdir())[1]
    data = with_text(source, "RECEIPT")
    reader.read(data)  # the engine loaded here is not what travels
    sent = pickle.loads(pickle.dumps(Analysis(reader)))
    assert sent.reader is not reader
    file = FileState(size=len(data), mtime_ns=0, sha256="")
    details, text = sent(source, data, file)
    assert "receipt" in text.lower() and details.columns()["width"] > 0


def _png(width: int, height: int, colour: int = 128) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (colour, colour, colour)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    "data",
    [_png(1, 1), _png(1, 900), _png(900, 2), _png(15, 15), b"", b"not an image", _png(64, 64)[:40]],
    ids=["1x1", "1x900", "900x2", "15x15", "empty", "not-an-image", "truncated"],
)
def test_odd_images_give_no_text_and_no_error(reader, data):
    assert reader.read(data) == ""


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 60), st.booleans())
def test_any_thin_or_small_image_is_read_quickly(reader, long_side, short_side, tall):
    """The engine scales a photo's shorter side up to its minimum: a strip must not become huge."""
    import time

    size = (short_side, long_side) if tall else (long_side, short_side)
    start = time.perf_counter()
    assert isinstance(reader.read(_png(*size, colour=37)), str)
    assert time.perf_counter() - start < 10


@pytest.fixture(scope="module")
def text_photos(caltech, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """3 classes x 3 real photos; one soccer ball photo says 'crocodile', one laptop 'Zorblax' (a word
    in no vocabulary), and a 1x1 image."""
    root = tmp_path_factory.mktemp("text-photos")
    for cls in ("crocodile", "laptop", "soccer_ball"):
        (root / cls).mkdir()
        for src in sorted((caltech / cls).iterdir())[:3]:
            shutil.copy2(src, root / cls / src.name)
    marked = {
        "crocodile": root / "soccer_ball" / "says-crocodile.jpg",
        "zorblax": root / "laptop" / "says-zorblax.jpg",
    }
    ball, laptop = sorted((caltech / "soccer_ball").iterdir())[5], sorted((caltech / "laptop").iterdir())[5]
    marked["crocodile"].write_bytes(with_text(ball, "CROCODILE", sign=True))
    marked["zorblax"].write_bytes(with_text(laptop, "Zorblax", sign=True))
    (root / "tiny.png").write_bytes(_png(1, 1))
    return root, {word: str(path) for word, path in marked.items()}


def test_search_blends_text_in_photos(text_photos, tmp_path):
    photos, marked = text_photos
    db = tmp_path / "db"
    with Collection(db, writable=True) as c:
        c.sync(photos)  # no OCR yet
        before = {q: c.search(q, k=12, min_score=0) for q in ("crocodile", "laptop", "soccer ball")}
        with pytest.raises(UnknownWordError):
            c.search("zorblax")
        ranks = [h.path for h in before["crocodile"]]
        assert ranks.index(marked["crocodile"]) >= 3  # the real crocodiles come first
    run = subprocess.run(
        [sys.executable, "-m", "semsearch.cli", "index", str(photos), "--db", str(db), "--ocr", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(run.stdout)
    assert report["text_read"] == 12 and report["added"] == report["updated"] == 0  # read, not embedded
    with Collection(db) as c:
        after = {q: c.search(q, k=12, min_score=0) for q in ("crocodile", "laptop", "soccer ball")}
        assert after["crocodile"][0].path == marked["crocodile"]  # lifted to the top
        assert after["laptop"] == before["laptop"]  # no photo's text says it: nothing changes
        assert after["soccer ball"] == before["soccer ball"]
        notes: list[str] = []
        found = c.search("zorblax", k=3, notes=notes)
        assert [h.path for h in found] == [marked["zorblax"]] and "zorblax" in notes[0]
        with pytest.raises(UnknownWordError):  # filters hold for text matches too: none is left
            c.search("zorblax camera:canon", k=3)
        ids = {r.path: r.id for r in c.store.records().values()}
        assert "zorblax" in c.image_details(ids[marked["zorblax"]])["text"].lower()
        assert c.image_details(ids[str(photos / "tiny.png")])["text"] == ""
        assert c.stats()["ocr"] == "rapidocr-onnxruntime"
    Path(marked["zorblax"]).unlink()
    (photos / "laptop" / "new.jpg").write_bytes(
        with_text(sorted((photos / "laptop").iterdir())[0], "Zorblax")
    )
    with Collection(db, writable=True) as c:
        report = c.sync(photos)  # the collection remembers --ocr: the new photo is read too
        assert report.text_read == 1 and report.removed == 1
        assert [Path(h.path).name for h in c.search("zorblax", k=3)] == ["new.jpg"]
    (photos / "laptop" / "new.jpg").rename(photos / "laptop" / "moved.jpg")
    with Collection(db, writable=True) as c:
        report = c.sync(photos)  # a move keeps its text and details: nothing is read again
        assert (report.moved, report.text_read, report.details) == (1, 0, 0)
        assert [Path(h.path).name for h in c.search("zorblax", k=3)] == ["moved.jpg"]
