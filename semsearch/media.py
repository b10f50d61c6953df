"""Open any supported image safely and turn it into model-ready pixels.

Every failure (corrupt, truncated, empty, not an image, too large, unsupported format) becomes a
`DecodeError` with a short reason; PIL's own exceptions and warnings never leak out.

Besides what Pillow reads itself (JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF), HEIC/HEIF photos decode through
pillow-heif and camera RAW files (DNG, CR2, NEF, ARW) through the JPEG preview their camera embedded, read by
rawpy (LibRaw); both are optional (`pip install 'semsearch[heif]'`, `'semsearch[raw]'`), and without them
such files are skipped with a `MissingCodecError` saying what to install.
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

from semsearch.errors import DecodeError, MissingCodecError

#: Camera RAW files, read through their embedded preview (rawpy).
RAW_SUFFIXES: frozenset[str] = frozenset({".dng", ".cr2", ".nef", ".arw"})

SUPPORTED_SUFFIXES: frozenset[str] = (
    frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"})
    | RAW_SUFFIXES
)

#: PIL format names accepted (whatever the file suffix says). HEIF comes from pillow-heif's opener.
SUPPORTED_FORMATS: frozenset[str] = frozenset(
    {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "HEIF", "AVIF"}
)

HEIF_MISSING = "HEIC needs pip install 'semsearch[heif]'"
AVIF_MISSING = "AVIF needs a Pillow built with AVIF support: pip install 'pillow>=11.3'"
RAW_MISSING = "RAW files need pip install 'semsearch[raw]'"

#: Decompression-bomb guards, checked from the header before any pixel is decoded: the pixel count bounds
#: the work, `decode_memory` (every full-size buffer decoding takes, whatever the mode and bit depth)
#: bounds the memory. Only the first frame of an animation is ever decoded.
MAX_PIXELS: int = 64_000_000
MAX_DECODE_BYTES: int = 256 * 1024 * 1024
#: The bound for the user's own files, decoded by the indexer and the command line a few at a time: a
#: 24 Mpx phone HEIC needs about 264 MiB and a 48 Mpx one about 530 MiB (`decode_memory`), more than an
#: upload to the server may cost.
OWN_FILE_DECODE_BYTES: int = 768 * 1024 * 1024

#: Full-size RGBA buffers a decoder holds besides PIL's image (libwebp decodes into its own canvas and
#: hands PIL a copy; measured: a 25 Mpx RGB WebP peaks at 15 bytes a pixel). libavif decodes into YCbCr
#: planes, then into an RGBA image PIL copies: at 10 or 12 bits and 4:4:4, 12 bytes a pixel, and the header
#: PIL reads does not say the depth, so that is assumed (measured at 8 bits 4:4:4: 7.5). HEIF: `_heif_bytes`.
_DECODER_FRAMES: dict[str, int] = {"WEBP": 3, "AVIF": 3}

#: How a non-square photo becomes the model's square input: "squash" (resize the whole photo to a
#: square, aspect not kept) or "crop" (resize the shorter side, centre crop). Squash keeps the whole
#: photo and measured better on caltech-dev image->image precision@10 with lite0: 0.902 vs 0.895
#: (`python bench/embed.py --geometry`).
Geometry = Literal["crop", "squash"]
DEFAULT_GEOMETRY: Geometry = "squash"

# Truncated files are an error, never silently grey. (Our MAX_PIXELS check runs before PIL's own.)
ImageFile.LOAD_TRUNCATED_IMAGES = False


def load_image(
    source: Path | bytes,
    size: int,
    geometry: Geometry = DEFAULT_GEOMETRY,
    *,
    raw: bool | None = None,
    max_bytes: int = MAX_DECODE_BYTES,
) -> np.ndarray:
    """Decode `source` (a path or the file's bytes) to a uint8 RGB array of shape (size, size, 3).
    `raw`: whether it is a camera RAW file (default: from a path's suffix, or sniffed from bytes);
    `max_bytes`: the decoding memory allowed (OWN_FILE_DECODE_BYTES for the user's own files)."""
    if geometry not in ("crop", "squash"):
        raise ValueError(f"unknown geometry {geometry!r}")
    img = decode(
        source,
        lambda w, h: _draft_request(w, h, size, geometry),
        lambda img: _fit(img, size, geometry),
        raw=raw,
        max_bytes=max_bytes,
    )
    arr = np.asarray(to_rgb(img), dtype=np.uint8)
    if arr.shape != (size, size, 3):
        raise DecodeError("corrupt image (unexpected pixel layout)")
    return arr


def decode(
    source: Path | bytes,
    draft: Callable[[int, int], tuple[int, int]],
    shrink: Callable[[Image.Image], Image.Image],
    *,
    raw: bool | None = None,
    max_bytes: int = MAX_DECODE_BYTES,
) -> Image.Image:
    """The first frame of `source`, decoded, made small by `shrink`, then turned upright as its EXIF says.

    Everything that bounds the cost is checked from the header before a pixel is decoded: the format, the
    pixel count, and the memory decoding takes (`decode_memory`). JPEGs are decoded at the smallest 1/2,
    1/4 or 1/8 scale that is still at least ``draft(width, height)``. `shrink` gets the frame in a mode PIL
    resizes by interpolation, and the only other full-size buffers are those `decode_memory` counts
    (shrinking first, then turning, spares a full-size copy). A camera RAW file (`raw`; default: from a
    path's suffix, or sniffed) is its embedded preview, decoded the same way. Every failure is a
    `DecodeError`.
    """
    with _decode_errors():
        data = (
            bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).read_bytes()
        )
        if not data:
            raise DecodeError("empty file")
        if raw is None:
            raw = is_raw_name(source) if isinstance(source, Path) else _sniff_raw(data)
        orientation = None
        allowed = SUPPORTED_FORMATS
        if raw:
            data, orientation = raw_preview(data)
            allowed = _PREVIEW_FORMATS
        try:
            opened = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            missing = _missing_codec(data)
            raise (MissingCodecError(missing) if missing else DecodeError("not an image")) from None
        with opened as img:
            if img.format not in allowed:
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
            if needed > max_bytes:
                raise DecodeError(
                    f"image too large to decode ({img.size[0]}x{img.size[1]} {img.mode} needs "
                    f"{needed >> 20} MiB, limit {max_bytes >> 20} MiB)"
                )
            img.load()
            mode = _resize_mode(img)
            small = shrink(img if mode == img.mode else img.convert(mode))
            exif = img.getexif()  # read after decoding: a PNG may keep it last
            if orientation and exif.get(_ORIENTATION, 1) == 1:  # a RAW preview turns as the RAW says
                exif[_ORIENTATION] = orientation
            small.info["exif"] = exif.tobytes()
            return ImageOps.exif_transpose(small)


_ORIENTATION = 0x0112
#: Formats a RAW file's embedded preview comes in: JPEG, or a bitmap rawpy hands over (passed on as PPM).
_PREVIEW_FORMATS = frozenset({"JPEG", "PPM"})
#: LibRaw's `flip` as an EXIF orientation: 180 degrees, 90 counter-clockwise, 90 clockwise.
_RAW_FLIP_TO_EXIF = {3: 3, 5: 8, 6: 6}


def is_raw_name(path: Path | str) -> bool:
    """Whether a file name says camera RAW (DNG, CR2, NEF, ARW)."""
    return Path(path).suffix.lower() in RAW_SUFFIXES


def _sniff_raw(data: bytes) -> bool:
    """Whether bytes of unknown name are a camera RAW file PIL would misread as a TIFF: a Canon CR2, or a
    TIFF whose first directory carries a DNGVersion tag."""
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return False
    if data[8:10] == b"CR":
        return True
    try:
        with Image.open(io.BytesIO(data)) as img:
            return 50706 in getattr(img, "tag_v2", {})
    except Exception:  # not a TIFF PIL can read: not a DNG either
        return False


def raw_preview(data: bytes) -> tuple[bytes, int | None]:
    """The preview image a camera embedded in a RAW file (JPEG, or a bitmap as PPM) and the EXIF orientation
    the RAW file gives it. LibRaw reads only the preview (never the sensor data), and refuses a preview
    larger than the file, so this costs at most a few times the file's own size; the preview is then
    checked and decoded within the limits like any image."""
    try:
        import rawpy
    except ImportError:
        raise MissingCodecError(RAW_MISSING) from None
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            flip = raw.sizes.flip
            thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        raise DecodeError("RAW file without an embedded preview") from None
    except rawpy.LibRawFileUnsupportedError:
        raise DecodeError("not a RAW file LibRaw can read") from None
    except rawpy.LibRawError as exc:
        raise DecodeError(f"corrupt RAW file ({_short(exc)})") from None
    orientation = _RAW_FLIP_TO_EXIF.get(flip)
    if thumb.format == rawpy.ThumbFormat.JPEG:
        return bytes(thumb.data), orientation
    pixels = np.ascontiguousarray(thumb.data, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise DecodeError("RAW file with an unusable preview")
    return b"P6 %d %d 255\n" % (pixels.shape[1], pixels.shape[0]) + pixels.tobytes(), orientation


_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})


def _missing_codec(data: bytes) -> str | None:
    """What to install for a file PIL cannot identify, when its ISO-BMFF brands say HEIF or AVIF."""
    if data[4:8] != b"ftyp":
        return None
    size = int.from_bytes(data[:4], "big")
    brands = {data[i : i + 4] for i in range(8, min(size, len(data), 64), 4)}
    if brands & {b"avif", b"avis"}:
        from PIL import features

        return None if features.check("avif") else AVIF_MISSING
    if brands & _HEIF_BRANDS:
        return None if "HEIF" in Image.OPEN else HEIF_MISSING
    return None


def _register_heif() -> None:
    """Teach PIL to open HEIC/HEIF where pillow-heif is installed (its thumbnails, depth and auxiliary
    images are never loaded: only the primary image is decoded)."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


_register_heif()


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
    if img.format == "HEIF":
        return total + _heif_bytes(img)
    return total + _DECODER_FRAMES.get(img.format or "", 0) * frame("RGBA")


def _heif_bytes(img: Image.Image) -> int:
    """What libheif holds while decoding, from the header pillow-heif reads: the YCbCr(A) planes and the
    interleaved image made of them, each at most a sample per band per pixel at the coded depth (2 bytes
    above 8 bits), plus 2 bytes a pixel for the HEVC decoder. Measured (6 Mpx, peak besides PIL's image):
    8-bit 4:2:0 3.7, 4:4:4 5.6, 10-bit 4:4:4 11.5 bytes a pixel; this allows 8, 8 and 14."""
    depth = 2 if int(img.info.get("bit_depth") or 8) > 8 else 1
    return img.size[0] * img.size[1] * (2 * len(img.getbands()) * depth + 2)


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
