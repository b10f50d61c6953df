"""semsearch.media: every supported format decodes; bad files raise DecodeError with a reason."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
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
