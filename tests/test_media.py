"""semsearch.media: every supported format decodes; bad files raise DecodeError with a reason."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data

from semsearch import media
from semsearch.errors import DecodeError
from semsearch.media import SUPPORTED_SUFFIXES, load_image

CHELSEA = data.chelsea()  # (300, 451, 3) real photo


def _asymmetric() -> np.ndarray:
    """A photo-sized image whose left half is red and right half blue (to see rotations)."""
    arr = np.zeros((200, 300, 3), np.uint8)
    arr[:, :150, 0] = 255
    arr[:, 150:, 2] = 255
    return arr


@pytest.mark.parametrize(
    "suffix, fmt, mode",
    [
        (".jpg", "JPEG", "RGB"),
        (".jpeg", "JPEG", "L"),
        (".png", "PNG", "RGBA"),
        (".png", "PNG", "P"),
        (".webp", "WEBP", "RGB"),
        (".gif", "GIF", "P"),
        (".bmp", "BMP", "RGB"),
        (".tif", "TIFF", "CMYK"),
        (".tiff", "TIFF", "RGB"),
    ],
)
def test_formats_decode(tmp_path: Path, suffix: str, fmt: str, mode: str) -> None:
    img = Image.fromarray(CHELSEA)
    img = img.convert(mode) if mode != "P" else img.quantize(64)
    path = tmp_path / f"chelsea{suffix}"
    img.save(path, fmt)
    assert suffix in SUPPORTED_SUFFIXES
    out = load_image(path, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    # it is the photo, not a blank: compare with a direct squash of the original
    ref = np.asarray(Image.fromarray(CHELSEA).resize((224, 224), Image.Resampling.BILINEAR), np.float32)
    if mode == "L":
        ref = ref.mean(axis=2, keepdims=True)
    assert np.abs(out.astype(np.float32) - ref).mean() < 25
    assert out.std() > 20
    # bytes work too
    assert np.array_equal(load_image(path.read_bytes(), 224), out)


def test_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = load_image(path, 32)
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


def test_exif_orientation(tmp_path: Path) -> None:
    img = Image.fromarray(_asymmetric())  # 300 wide, 200 high; red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = tmp_path / "rotated.jpg"
    img.save(path, "JPEG", exif=exif.tobytes(), quality=95)
    out = load_image(path, 64, geometry="crop")
    # displayed upright, the former left (red) side is now at the top
    assert out[:16, :, 0].mean() > 200 and out[:16, :, 2].mean() < 60
    assert out[-16:, :, 2].mean() > 200 and out[-16:, :, 0].mean() < 60
    # without the tag, red stays on the left
    plain = tmp_path / "plain.jpg"
    img.save(plain, "JPEG", quality=95)
    out = load_image(plain, 64, geometry="crop")
    assert out[:, :16, 0].mean() > 200 and out[:, -16:, 2].mean() > 200


def test_crop_geometry_keeps_aspect(tmp_path: Path) -> None:
    arr = np.zeros((100, 400, 3), np.uint8)
    arr[:, :100] = 255  # white strip at the far left: cropped away by centre crop, kept by squash
    path = tmp_path / "wide.png"
    Image.fromarray(arr).save(path)
    assert load_image(path, 50, geometry="crop").max() == 0
    assert load_image(path, 50, geometry="squash")[:, :10].min() > 200


def test_jpeg_draft_large_photo(tmp_path: Path) -> None:
    big = Image.fromarray(CHELSEA).resize((1804, 1200))
    path = tmp_path / "big.jpg"
    big.save(path, "JPEG", quality=90)
    out = load_image(path, 224)
    ref = np.asarray(Image.fromarray(CHELSEA).resize((224, 224), Image.Resampling.BILINEAR), np.float32)
    assert np.abs(out.astype(np.float32) - ref).mean() < 20


def _reason(source, size: int = 224) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PIL warning may leak out either
        with pytest.raises(DecodeError) as info:
            load_image(source, size)
    return str(info.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert _reason(path) == "empty file"
    assert _reason(b"") == "empty file"


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n" * 50)
    assert _reason(path) == "not an image"


def test_truncated_jpeg(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(CHELSEA).save(buf, "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert "truncated" in _reason(path)


def test_truncated_png(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(CHELSEA).save(buf, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert "truncated" in _reason(path)


def test_corrupt_jpeg(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(CHELSEA).save(buf, "JPEG", quality=90)
    raw = bytearray(buf.getvalue())
    raw[200:] = bytes(len(raw) - 200)  # header survives, the rest is zeros
    path = tmp_path / "corrupt.jpg"
    path.write_bytes(bytes(raw))
    reason = _reason(path)
    assert reason and ("corrupt" in reason or "truncated" in reason)


def test_over_pixel_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 9000x8000 = 72 Mpx, over our 64 Mpx limit but under PIL's own guard: our message, from the header.
    path = tmp_path / "big.png"
    Image.new("1", (9000, 8000)).save(path)
    assert path.stat().st_size < 1_000_000
    assert _reason(path) == "image too large (9000x8000 pixels, limit 64 Mpx)"
    # A 31000x31000 bomb (961 Mpx claimed in a tiny file) trips PIL's guard first: still our error.
    bomb = tmp_path / "bomb.png"
    Image.new("1", (31000, 31000)).save(bomb)
    assert _reason(bomb) == "image too large (961 Mpx, limit 64 Mpx)"
    # the limit is a module constant
    monkeypatch.setattr(media, "MAX_PIXELS", 1000)
    assert "too large" in _reason(_png_bytes(CHELSEA))


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_unsupported_format(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(CHELSEA).save(buf, "PPM")
    assert _reason(buf.getvalue()).startswith("unsupported image format")


def test_missing_file(tmp_path: Path) -> None:
    assert _reason(tmp_path / "nope.jpg") == "file not found"


# ------------------------------------------------------------------ every mode and bit depth, bounded


def _png_header(width: int, height: int, depth: int, colour: int, idat: bytes | None = None) -> bytes:
    """A PNG that claims width x height at a bit depth and colour type; its pixel data is `idat`, or absent."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    palette = chunk(b"PLTE", bytes(range(48))) if colour == 3 else b""
    pixels = chunk(b"IDAT", idat) if idat is not None else b""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + palette + pixels + chunk(b"IEND", b"")


def _decode_memory(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as img:
        return media.decode_memory(img)


#: Every (colour type, bit depth) PNG allows: gray, RGB, palette, gray+alpha, RGBA.
PNG_KINDS = [(0, d) for d in (1, 2, 4, 8, 16)] + [(2, 8), (2, 16), (3, 1), (3, 2), (3, 4), (3, 8)]
PNG_KINDS += [(4, 8), (4, 16), (6, 8), (6, 16)]
SIDES = st.one_of(st.integers(1, 64), st.integers(1000, 40_000))


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(PNG_KINDS), width=SIDES, height=SIDES)
def test_too_large_is_refused_from_the_header(kind, width, height) -> None:
    """Whatever the mode and bit depth, an image whose decoding would take more than the limit is refused
    from its header alone (no pixel data is needed to say so); one within it is decoded (and found
    truncated, having none)."""
    colour, depth = kind
    data = _png_header(width, height, depth, colour)
    too_large = width * height > media.MAX_PIXELS or _decode_memory(data) > media.MAX_DECODE_BYTES
    reason = _reason(data)
    assert ("too large" in reason) == too_large, (kind, width, height, reason)


# The pixel-count limit alone let these through: each decoded to more than twice the bytes per pixel.
@pytest.mark.parametrize(
    "mode, fmt, size",
    [("RGBA", "PNG", (5800, 5800)), ("P", "GIF", (8000, 8000)), ("LA", "PNG", (6000, 6000))],
)
def test_decode_memory_limit_holds_for_wide_modes(mode: str, fmt: str, size: tuple[int, int]) -> None:
    img = Image.new(mode, size)
    buf = io.BytesIO()
    img.save(buf, fmt)
    del img
    assert size[0] * size[1] <= media.MAX_PIXELS
    assert "too large to decode" in _reason(buf.getvalue())


MODES = ["1", "L", "P", "PA", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"]
#: Formats that store each mode without changing it.
STORES = {
    "1": ["PNG", "BMP", "TIFF"],
    "L": ["PNG", "JPEG", "TIFF", "BMP"],
    "P": ["PNG", "GIF", "BMP", "TIFF"],
    "PA": ["PNG", "WEBP"],
    "LA": ["PNG", "TIFF"],
    "RGB": ["PNG", "JPEG", "WEBP", "TIFF", "BMP"],
    "RGBA": ["PNG", "WEBP", "TIFF"],
    "CMYK": ["JPEG", "TIFF"],
    "YCbCr": ["TIFF"],
    "I;16": ["PNG", "TIFF"],
    "I": ["TIFF"],
    "F": ["TIFF"],
}


def _picture(mode: str, width: int, height: int, seed: int) -> Image.Image:
    """A smooth random picture (gradients and blobs, no pixel noise) in `mode`."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    bands = [np.cos(rng.uniform(1, 6) * xx + rng.uniform(1, 6) * yy + rng.uniform(0, 6)) for _ in range(4)]
    arr = np.stack(bands, axis=-1) * 0.5 + 0.5
    rgba = Image.fromarray((arr * 255).astype(np.uint8), "RGBA")
    if mode == "P":
        return rgba.convert("RGB").quantize(32)
    if mode == "PA":  # a palette with alpha: stored as P plus a transparency table
        return rgba.quantize(32, method=Image.Quantize.FASTOCTREE)
    if mode == "I;16":
        return Image.fromarray((arr[..., 0] * 60000).astype(np.uint16))
    if mode == "I":
        return Image.fromarray((arr[..., 0] * 1e6).astype(np.int32))
    if mode == "F":
        return Image.fromarray((arr[..., 0] * 1e3).astype(np.float32))
    return rgba.convert(mode) if mode != "RGBA" else rgba


def _convert_first(img: Image.Image, size: int) -> np.ndarray:
    """The picture converted to RGB at full size, then squashed (what shrinking first must match)."""
    if img.mode in ("I;16", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        arr = (arr - arr.min()) * (255.0 / max(arr.max() - arr.min(), 1e-9))
        img = Image.fromarray(arr.astype(np.uint8), "L")
    if "A" in img.getbands() or "transparency" in img.info:
        img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img.convert("RGBA"))
    out = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(out, dtype=np.float32)


@settings(max_examples=120, deadline=None)
@given(
    mode_format=st.sampled_from([(m, f) for m, fs in STORES.items() for f in fs]),
    width=st.integers(8, 96),
    height=st.integers(8, 96),
    seed=st.integers(0, 2**16),
)
def test_every_mode_and_bit_depth_decodes(mode_format, width: int, height: int, seed: int) -> None:
    """Shrinking in the decoded mode (to spare full-size copies) gives the picture converting first gives."""
    mode, fmt = mode_format
    img = _picture(mode, width, height, seed)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}))
    with Image.open(io.BytesIO(buf.getvalue())) as stored:
        stored.draft("RGB", (32, 32))  # JPEGs decode at a reduced scale either way
        stored.load()
        expected = _convert_first(stored, 32)
    out = load_image(buf.getvalue(), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(np.float32) - expected).mean() < 4, (mode, fmt)


PEAK_SCRIPT = """
import resource, sys
from semsearch.media import load_image
from semsearch.errors import DecodeError
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[1:]:
    try:
        load_image(path, 224)
        outcome = "decoded"
    except DecodeError as exc:
        outcome = str(exc)
    print(outcome, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024, flush=True)
"""


def _black_gray16_png(width: int, height: int) -> bytes:
    """A real, all-black 16-bit grayscale PNG of any size, compressed on the fly (8000x8000: ~120 KB)."""
    row = bytes(1 + width * 2)
    packer = zlib.compressobj(6)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return _png_header(width, height, 16, 0, idat)


def test_bomb_memory_is_bounded(tmp_path: Path) -> None:
    """The issue's 141 KB 16-bit 8000x8000 PNG cost +1.5 GB to decode; a 16-bit RGBA one would cost more.
    Peak memory, measured in a fresh process, stays within what `decode_memory` allows."""
    gray = tmp_path / "gray16.png"
    gray.write_bytes(_black_gray16_png(8000, 8000))
    rgba = tmp_path / "rgba16.png"  # refused from its header: its pixel data need not even be there
    rgba.write_bytes(_png_header(8000, 8000, 16, 6))
    assert gray.stat().st_size < 200_000
    run = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(rgba), str(gray)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    (refused, refused_mib), (decoded, decoded_mib) = (line.rsplit(" ", 1) for line in run.stdout.splitlines())
    assert "too large to decode" in refused and int(refused_mib) < 16
    allowed = _decode_memory(gray.read_bytes()) >> 20  # 2 bytes a pixel: 122 MiB
    assert decoded == "decoded" and int(decoded_mib) < allowed + 24, run.stdout
