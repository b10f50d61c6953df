"""Text in photos (receipts, street signs, slides), read at index time by an offline OCR engine.

The engine is RapidOCR on ONNX Runtime (``pip install 'semsearch[ocr]'``): PP-OCRv4 detection, direction
and recognition models that ship inside the ``rapidocr-onnxruntime`` wheel, so nothing is downloaded.
A photo is decoded within `media`'s memory bounds and its longer side brought between `SMALLEST` and
`SIDE` pixels (small photos are enlarged: on 300 px caltech photos with rendered words, enlarging to 736
px read 26 of 26 words where the photo as it is read 23); a photo too small to hold readable text is not
read at all, and a long strip is padded to at most `ASPECT` to 1, because the engine scales the shorter
side up to its minimum (a 1x500 strip took two minutes).
"""

from __future__ import annotations

import logging
import threading
from functools import cached_property

import numpy as np

from semsearch.errors import DecodeError, SettingError
from semsearch.media import decode, to_rgb

ENGINE = "rapidocr-onnxruntime"
#: Longer side the engine reads at most, in pixels (its own default reads photos at up to 2000 px and
#: scales the shorter side up to 736, which costs seconds a photo).
SIDE = 1280
#: Longer side small photos are enlarged to (by at most `MAX_ENLARGE`).
SMALLEST = 736
MAX_ENLARGE = 4.0
#: Photos whose shorter side is under this many pixels hold no readable text.
MIN_SIDE = 16
#: Longest aspect ratio handed to the engine; longer strips are padded.
ASPECT = 8
#: Lines the engine scores under this are left out.
MIN_CONFIDENCE = 0.5


class TextReader:
    """Reads the text of a photo's bytes; one engine, used by one thread at a time (its pre- and
    post-processing keep state between calls). Load it once and share it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __reduce__(self):
        """Pickled (to a Ray worker) as a new reader: its engine loads where it is used."""
        return TextReader, ()

    @staticmethod
    def unavailable() -> str | None:
        """Why OCR cannot run here, or None."""
        try:
            import rapidocr_onnxruntime  # noqa: F401
        except ImportError:
            return f"text recognition needs {ENGINE}: pip install 'semsearch[ocr]'"
        return None

    @cached_property
    def _engine(self):
        reason = self.unavailable()
        if reason:
            raise SettingError(reason)
        from rapidocr_onnxruntime import RapidOCR

        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        return RapidOCR(det_limit_type="max", det_limit_side_len=SIDE, text_score=MIN_CONFIDENCE)

    def read(self, data: bytes) -> str:
        """The lines of text found in an image's bytes, top to bottom ('' where none, or where the bytes
        are not a usable image)."""
        try:
            image = decode(data, lambda w, h: _fitted(w, h), lambda img: img.resize(_fitted(*img.size)))
        except DecodeError:
            return ""
        pixels = _padded(np.asarray(to_rgb(image), dtype=np.uint8))
        if pixels is None:
            return ""
        with self._lock:
            found, _ = self._engine(np.ascontiguousarray(pixels[:, :, ::-1]))  # the models read BGR
        return "\n".join(text.strip() for _, text, _ in found or () if text.strip())


def _fitted(width: int, height: int) -> tuple[int, int]:
    longest = max(width, height, 1)
    scale = min(SIDE / longest, max(1.0, min(MAX_ENLARGE, SMALLEST / longest)))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _padded(pixels: np.ndarray) -> np.ndarray | None:
    """The photo with its shorter side padded (white) to at least 1/ASPECT of the longer; None when
    it is too small to read."""
    height, width = pixels.shape[:2]
    if min(height, width) < MIN_SIDE:
        return None
    need_h, need_w = max(height, -(-width // ASPECT)), max(width, -(-height // ASPECT))
    if (need_h, need_w) == (height, width):
        return pixels
    out = np.full((need_h, need_w, 3), 255, dtype=np.uint8)
    out[:height, :width] = pixels
    return out
