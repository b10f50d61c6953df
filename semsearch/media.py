"""Open any supported image safely and turn it into model-ready pixels.

Every failure (corrupt, truncated, empty, not an image, too large, unsupported format) becomes a
`DecodeError` with a short reason; PIL's own exceptions and warnings never leak out.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFile, ImageMode, ImageOps, UnidentifiedImageError

from semsearch.errors import DecodeError

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)

#: PIL format names accepted (whatever the file suffix says).
SUPPORTED_FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF"})

#: Decompression-bomb guards, checked from the header before any pixel is decoded: the pixel count bounds
#: the work, `decode_memory` (every full-size buffer decoding takes, whatever the mode and bit depth)
#: bounds the memory. Only the first frame of an animation is ever decoded.
MAX_PIXELS: int = 64_000_000
MAX_DECODE_BYTES: int = 256 * 1024 * 1024

#: Full-size RGBA buffers a decoder holds besides PIL's image (libwebp decodes into its own canvas and
#: hands PIL a copy; measured: a 25 Mpx RGB WebP peaks at 15 bytes a pixel).
_DECODER_FRAMES: dict[str, int] = {"WEBP": 3}

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
    img = decode(
        source, lambda w, h: _draft_request(w, h, size, geometry), lambda img: _fit(img, size, geometry)
    )
    arr = np.asarray(to_rgb(img), dtype=np.uint8)
    if arr.shape != (size, size, 3):
        raise DecodeError("corrupt image (unexpected pixel layout)")
    return arr


def decode(
    source: Path | bytes,
    draft: Callable[[int, int], tuple[int, int]],
    shrink: Callable[[Image.Image], Image.Image],
) -> Image.Image:
    """The first frame of `source`, decoded, made small by `shrink`, then turned upright as its EXIF says.

    Everything that bounds the cost is checked from the header before a pixel is decoded: the format, the
    pixel count, and the memory decoding takes (`decode_memory`). JPEGs are decoded at the smallest 1/2,
    1/4 or 1/8 scale that is still at least ``draft(width, height)``. `shrink` gets the frame in a mode PIL
    resizes by interpolation, and the only other full-size buffers are those `decode_memory` counts
    (shrinking first, then turning, spares a full-size copy). Every failure is a `DecodeError`.
    """
    with _decode_errors():
        data = (
            bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).read_bytes()
        )
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
            if img.format in ("JPEG", "MPO"):
                img.draft("RGB", draft(width, height))
            needed = decode_memory(img)
            if needed > MAX_DECODE_BYTES:
                raise DecodeError(
                    f"image too large to decode ({img.size[0]}x{img.size[1]} {img.mode} needs "
                    f"{needed >> 20} MiB, limit {MAX_DECODE_BYTES >> 20} MiB)"
                )
            img.load()
            mode = _resize_mode(img)
            small = shrink(img if mode == img.mode else img.convert(mode))
            small.info["exif"] = img.getexif().tobytes()  # read after decoding: a PNG may keep it last
            return ImageOps.exif_transpose(small)


@contextmanager
def _decode_errors() -> Iterator[None]:
    """PIL's exceptions and warnings become one `DecodeError` with a short reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
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


def frame_bytes(mode: str, size: tuple[int, int]) -> int:
    """Bytes PIL allocates for one frame: one-band modes store each pixel as its type (1, 2 or 4 bytes),
    multi-band modes always take 4 bytes a pixel."""
    info = ImageMode.getmode(mode)
    per_pixel = np.dtype(info.typestr).itemsize if len(info.bands) == 1 else 4
    return size[0] * size[1] * per_pixel


def decode_memory(img: Image.Image) -> int:
    """Peak bytes `decode` takes for an opened, not yet decoded image, known from its header.

    It adds up every full-size buffer: the frame in its mode, the copy in the mode it is resized in, the
    premultiplied copy PIL resizes alpha in, and the decoder's own buffers."""
    frame = partial(frame_bytes, size=img.size)
    mode = _resize_mode(img)
    total = frame(img.mode) + (frame(mode) if mode != img.mode else 0)
    if mode in ("RGBA", "LA"):
        total += frame(mode)
    return total + _DECODER_FRAMES.get(img.format or "", 0) * frame("RGBA")


def _resize_mode(img: Image.Image) -> str:
    """The mode to shrink `img` in: PIL resizes bilevel and palette images by nearest neighbour only."""
    if img.mode == "1":
        return "L"
    if img.mode in ("P", "PA"):
        return "RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB"
    return img.mode


def _draft_request(width: int, height: int, size: int, geometry: Geometry) -> tuple[int, int]:
    if geometry == "squash":
        return (size, size)
    # draft keeps the scale >= requested on both axes; ask for the aspect-preserving size whose
    # shorter side equals `size`.
    short = min(width, height)
    return (max(1, width * size // short), max(1, height * size // short))


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB pixels of a shrunk image: alpha over white, 16/32-bit and float values stretched to 0-255."""
    if img.mode == "RGB":
        return img
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
