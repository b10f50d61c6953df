"""Open any supported image safely and turn it into model-ready pixels.

Every failure (corrupt, truncated, empty, not an image, too large, unsupported format) becomes a
`DecodeError` with a short reason; PIL's own exceptions and warnings never leak out.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from semsearch.errors import DecodeError

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)

#: PIL format names accepted (whatever the file suffix says).
SUPPORTED_FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF"})

#: Decompression-bomb guard, checked from the header before any pixel is decoded.
MAX_PIXELS: int = 64_000_000

#: How a non-square photo becomes the model's square input: "squash" (resize the whole photo to a
#: square, aspect not kept) or "crop" (resize the shorter side, centre crop). Squash keeps the whole
#: photo and measured better on caltech-dev image->image precision@10 with lite0: 0.902 vs 0.895
#: (`python bench/embed.py --geometry`).
Geometry = Literal["crop", "squash"]
DEFAULT_GEOMETRY: Geometry = "squash"

# Truncated files are an error, never silently grey. (Our MAX_PIXELS check runs before PIL's own.)
ImageFile.LOAD_TRUNCATED_IMAGES = False


def load_image(source: Path | bytes, size: int, geometry: Geometry = DEFAULT_GEOMETRY) -> np.ndarray:
    """Decode `source` (a path or the file's bytes) to a uint8 RGB array of shape (size, size, 3)."""
    if geometry not in ("crop", "squash"):
        raise ValueError(f"unknown geometry {geometry!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _load(source, size, geometry)
    except DecodeError:
        raise
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except IsADirectoryError:
        raise DecodeError("is a directory") from None
    except PermissionError:
        raise DecodeError("permission denied") from None
    except UnidentifiedImageError:
        raise DecodeError("not an image") from None
    except Image.DecompressionBombError as exc:
        # PIL's own guard (2x Image.MAX_IMAGE_PIXELS) fired inside Image.open, before ours could.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        claimed = f"{int(found.group(1)) / 1e6:.0f} Mpx, " if found else ""
        raise DecodeError(f"image too large ({claimed}limit {MAX_PIXELS // 1_000_000} Mpx)") from None
    except Exception as exc:
        text = str(exc).lower()
        if "truncated" in text or "premature end" in text or isinstance(exc, EOFError):
            raise DecodeError("truncated image") from None
        raise DecodeError(f"corrupt image ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:80]


def _load(source: Path | bytes, size: int, geometry: Geometry) -> np.ndarray:
    data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).read_bytes()
    if not data:
        raise DecodeError("empty file")
    with Image.open(io.BytesIO(data)) as img:
        if img.format not in SUPPORTED_FORMATS:
            raise DecodeError(f"unsupported image format ({img.format})")
        width, height = img.size
        if width <= 0 or height <= 0:
            raise DecodeError("image has no pixels")
        if width * height > MAX_PIXELS:
            raise DecodeError(
                f"image too large ({width}x{height} pixels, limit {MAX_PIXELS // 1_000_000} Mpx)"
            )
        if img.format == "JPEG" or img.format == "MPO":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale while the result stays >= size on the
            # side that matters (the shorter side for crop, both sides for squash).
            img.draft("RGB", _draft_request(width, height, size, geometry))
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img) or img
        img = _to_rgb(img)
        img = _fit(img, size, geometry)
        arr = np.asarray(img, dtype=np.uint8)
    if arr.shape != (size, size, 3):
        raise DecodeError("corrupt image (unexpected pixel layout)")
    return arr


def _draft_request(width: int, height: int, size: int, geometry: Geometry) -> tuple[int, int]:
    if geometry == "squash":
        return (size, size)
    # draft keeps the scale >= requested on both axes; ask for the aspect-preserving size whose
    # shorter side equals `size`.
    short = min(width, height)
    return (max(1, width * size // short), max(1, height * size // short))


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def _fit(img: Image.Image, size: int, geometry: Geometry) -> Image.Image:
    width, height = img.size
    if geometry == "squash":
        return img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (new_w - size) / 2, (new_h - size) / 2
    # resize straight to the crop box (one resample, no intermediate image)
    box = (left / scale, top / scale, (left + size) / scale, (top + size) / scale)
    return img.resize((size, size), Image.Resampling.BILINEAR, box=box)
