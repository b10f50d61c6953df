"""HEIC/HEIF, AVIF and camera RAW files: real photos in each format decode upright within the memory limits;
corrupt ones, RAW files without a preview and missing optional decoders give one clear reason."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, features

from semsearch import media
from semsearch.errors import DecodeError
from semsearch.media import HEIF_MISSING, RAW_MISSING, load_image

needs_heif = pytest.mark.skipif(find_spec("pillow_heif") is None, reason=HEIF_MISSING)
needs_raw = pytest.mark.skipif(find_spec("rawpy") is None, reason=RAW_MISSING)
needs_avif = pytest.mark.skipif(not features.check("avif"), reason=media.AVIF_MISSING)

ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def photo(caltech) -> Image.Image:
    """A real photo, wider than high (so a wrong turn shows)."""
    with Image.open(caltech / "okapi" / "image_0001.jpg") as im:
        out = im.convert("RGB")
    assert out.width > out.height
    return out


def _upright(photo: Image.Image, size: int = 224) -> np.ndarray:
    """The photo turned as EXIF orientation 6 says (90 degrees clockwise), squashed as load_image does."""
    turned = photo.transpose(Image.Transpose.ROTATE_270)
    return np.asarray(turned.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def _assert_upright(out: np.ndarray, photo: Image.Image) -> None:
    """`out` shows the photo turned upright, and not as stored."""
    unturned = np.asarray(photo.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32)
    right, wrong = np.abs(out - _upright(photo)).mean(), np.abs(out - unturned).mean()
    assert right < 12 and wrong > 2 * right, (right, wrong)


def _saved(photo: Image.Image, fmt: str, orientation: int | None = None, **options) -> bytes:
    """The photo in `fmt`, with an EXIF orientation tag when given."""
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
        options.setdefault("enc_params", {"preset": "ultrafast"})
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        options["exif"] = exif.tobytes()
    buf = io.BytesIO()
    photo.save(buf, fmt, quality=80, **options)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ HEIC and AVIF


@pytest.mark.parametrize(
    "fmt", [pytest.param("HEIF", marks=needs_heif), pytest.param("AVIF", marks=needs_avif)]
)
def test_heic_and_avif_decode_upright(photo, fmt, tmp_path) -> None:
    """A real photo saved as HEIC (pillow-heif writes the tag as the container's rotation) or AVIF with EXIF
    orientation 6 comes out turned upright, exactly once, from a file and from bytes."""
    data = _saved(photo, fmt, orientation=6)
    path = tmp_path / ("photo.heic" if fmt == "HEIF" else "photo.avif")
    path.write_bytes(data)
    out = load_image(path, 224)
    _assert_upright(out.astype(np.float32), photo)
    assert np.array_equal(load_image(data, 224), out)
    plain = load_image(_saved(photo, fmt), 224).astype(np.float32)  # no tag: as stored
    assert np.abs(plain - np.asarray(photo.resize((224, 224)), dtype=np.float32)).mean() < 12


@needs_heif
def test_heic_photos_are_indexed_searched_and_thumbnailed(photo, caltech, tmp_path) -> None:
    """End to end: a HEIC copy of a photo is indexed, is the photo's nearest neighbour, and gets an upright
    thumbnail."""
    from semsearch.collection import Collection
    from semsearch.thumbs import render_thumbnail

    folder = tmp_path / "photos"
    folder.mkdir()
    for src in sorted((caltech / "okapi").iterdir())[:3]:
        shutil.copy2(src, folder)
    (folder / "copy.HEIC").write_bytes(_saved(photo, "HEIF"))
    with Collection(tmp_path / "db", writable=True) as collection:
        report = collection.sync(folder)
        assert (report.added, report.skipped) == (4, 0), report.skipped_files
        hits = collection.similar(folder / "image_0001.jpg", k=1)
    assert Path(hits[0].path).name == "copy.HEIC" and hits[0].score > 0.95
    with Image.open(io.BytesIO(render_thumbnail(folder / "copy.HEIC"))) as thumb:
        assert thumb.width == 256 and thumb.height < 256


def _ispe_claims(data: bytes, width: int, height: int) -> bytes:
    """A HEIC whose every image-size property (ispe) claims width x height: the header lies, the pixels
    stay small."""
    out = bytearray(data)
    at = out.find(b"ispe")
    assert at > 0
    while at > 0:
        out[at + 8 : at + 16] = struct.pack(">II", width, height)  # after the box's version and flags
        at = out.find(b"ispe", at + 4)
    return bytes(out)


@needs_heif
@pytest.mark.parametrize(
    "size, reason",
    [
        ((12_000, 6_000), "image too large (12000x6000 pixels, limit 64 Mpx)"),
        ((9_000, 7_000), "image too large to decode (9000x7000 RGB needs 720 MiB, limit 256 MiB)"),
        ((5_000, 5_000), "image too large to decode (5000x5000 RGB needs 286 MiB, limit 256 MiB)"),
    ],
)
def test_large_heic_headers_are_refused_before_decoding(photo, size, reason) -> None:
    even = photo.resize((300, 234))  # even sides: no clean-aperture box, so the size is what ispe says
    data = _ispe_claims(_saved(even, "HEIF"), *size)
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == size  # pillow-heif believes the header, as the memory check must
    with pytest.raises(DecodeError) as info:
        load_image(data, 224)
    assert str(info.value) == reason


PEAK_SCRIPT = """
import resource, sys
from PIL import Image
from semsearch import media
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
media.load_image(sys.argv[1], 224)
with Image.open(sys.argv[1]) as img:
    allowed = media.decode_memory(img)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024, allowed)
"""


def _heic_10bit_444(photo: Image.Image, width: int, height: int) -> bytes:
    """The costliest HEIC to decode per pixel: 10 bits a sample, chroma not subsampled."""
    import pillow_heif

    big = np.asarray(photo.resize((width, height), Image.Resampling.BICUBIC)).astype(np.uint16) << 8
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(width, height), data=big.tobytes())
    buf = io.BytesIO()
    heif.save(buf, quality=60, chroma=444, enc_params={"preset": "ultrafast"})
    return buf.getvalue()


@pytest.mark.parametrize(
    "kind", [pytest.param("heic", marks=needs_heif), pytest.param("avif", marks=needs_avif)]
)
def test_decoding_stays_within_the_header_estimate(photo, tmp_path, kind) -> None:
    """Peak memory decoding a 6 Mpx photo (HEIC: 10-bit 4:4:4, libheif's costliest), measured in a fresh
    process, stays within what `decode_memory` allows from the header."""
    path = tmp_path / f"big.{kind}"
    if kind == "heic":
        path.write_bytes(_heic_10bit_444(photo, 3000, 2000))
    else:
        big = photo.resize((3000, 2000), Image.Resampling.BICUBIC)
        path.write_bytes(_saved(big, "AVIF", speed=10, subsampling="4:4:4"))
    run = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    peak, allowed = map(int, run.stdout.split())
    assert peak <= allowed, (peak >> 20, allowed >> 20)


def _damaged(data: bytes, draw) -> bytes:
    """The file cut short or with a few bytes overwritten."""
    out = bytearray(data)
    if draw(st.booleans()):
        return bytes(out[: draw(st.integers(0, len(out) - 1))])
    for _ in range(draw(st.integers(1, 8))):
        out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    return bytes(out)


@needs_heif
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupt_heic_is_a_decode_error(photo, data) -> None:
    """A cut or damaged HEIC decodes (a byte of padding hit) or raises DecodeError with a reason: never
    another exception, a warning, or a crash."""
    damaged = _damaged(_saved(photo.resize((160, 120)), "HEIF"), data.draw)
    try:
        out = load_image(damaged, 64)
    except DecodeError as exc:
        assert str(exc)
    else:
        assert out.shape == (64, 64, 3)


@needs_heif
def test_heic_cut_in_half_says_so(photo) -> None:
    data = _saved(photo, "HEIF")
    with pytest.raises(DecodeError, match="corrupt|truncated|not an image"):
        load_image(data[: len(data) // 2], 224)


MISSING_SCRIPT = """
import sys
sys.modules[sys.argv[1]] = None  # as if the optional package were not installed
from semsearch.media import load_image
from semsearch.errors import MissingCodecError
try:
    load_image(open(sys.argv[2], "rb").read(), 224)
except MissingCodecError as exc:
    print(exc)
"""


@needs_heif
def test_without_pillow_heif_heic_says_what_to_install(photo, tmp_path) -> None:
    path = tmp_path / "photo.heic"
    path.write_bytes(_saved(photo, "HEIF"))
    run = subprocess.run(
        [sys.executable, "-c", MISSING_SCRIPT, "pillow_heif", str(path)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "HEIC needs pip install 'semsearch[heif]'"


INDEX_WITHOUT_HEIF = """
import json, sys
sys.modules["pillow_heif"] = None
from semsearch.collection import Collection
with Collection(sys.argv[1], writable=True) as c:
    report = c.sync(sys.argv[2])
    print(json.dumps([report.to_dict(), sorted(c.store.skipped())]))
"""


@needs_heif
def test_heic_skipped_without_pillow_heif_is_indexed_once_it_is_installed(photo, caltech, tmp_path) -> None:
    """Without the decoder a HEIC is skipped with the reason, and not remembered as a bad file: the next
    run with pillow-heif indexes it."""
    from semsearch.collection import Collection

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy2(caltech / "okapi" / "image_0002.jpg", folder)
    (folder / "photo.heic").write_bytes(_saved(photo, "HEIF"))
    run = subprocess.run(
        [sys.executable, "-c", INDEX_WITHOUT_HEIF, str(tmp_path / "db"), str(folder)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    report, remembered = json.loads(run.stdout)
    assert report["added"] == 1 and report["skipped_files"] == [
        {"path": str(folder / "photo.heic"), "reason": HEIF_MISSING}
    ]
    assert remembered == []
    with Collection(tmp_path / "db", writable=True) as collection:
        again = collection.sync(folder)
    assert (again.added, again.unchanged, again.skipped) == (1, 1, 0)


# ------------------------------------------------------------------------------------------ RAW


def _ifd(entries: list[tuple[int, int, list[int] | bytes]], at: int) -> bytes:
    """One little-endian TIFF directory written at offset `at`, its out-of-line values right after it.
    Entries: (tag, type, values); types 1 BYTE, 2 ASCII, 3 SHORT, 4 LONG."""
    packing = {1: "B", 2: "B", 3: "H", 4: "I"}
    head, tail = struct.pack("<H", len(entries)), b""
    after = at + 2 + 12 * len(entries) + 4
    for tag, kind, values in sorted(entries):
        raw = bytes(values) if kind == 2 else struct.pack(f"<{len(values)}{packing[kind]}", *values)
        count = len(values)
        if len(raw) <= 4:
            head += struct.pack("<HHI", tag, kind, count) + raw.ljust(4, b"\0")
        else:
            head += struct.pack("<HHII", tag, kind, count, after + len(tail))
            tail += raw + b"\0" * (len(raw) % 2)
    return head + struct.pack("<I", 0) + tail


def make_dng(photo: Image.Image, preview: str | None = "jpeg", orientation: int = 1) -> bytes:
    """A DNG as cameras and converters write one: the sensor's Bayer mosaic (16-bit, made from the photo)
    in a sub-directory and, in the first directory, the preview (a JPEG, an 8-bit RGB bitmap, or none), a
    camera name and an orientation."""
    rgb = np.asarray(photo.convert("RGB"))
    h, w, _ = rgb.shape
    mosaic = np.zeros((h, w), np.uint16)
    for dy, dx, band in ((0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 2)):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, band].astype(np.uint16) * 64
    sensor = mosaic.tobytes()
    camera = [(271, 2, b"Canon\0"), (272, 2, b"Canon EOS 5D\0"), (274, 3, [orientation])]
    camera += [(50706, 1, [1, 4, 0, 0]), (50708, 2, b"Canon EOS 5D\0")]

    def raw_ifd(offset: int) -> list:
        return [
            (254, 4, [0]), (256, 4, [w]), (257, 4, [h]), (258, 3, [16]), (259, 3, [1]), (262, 3, [32803]),
            (273, 4, [offset]), (277, 3, [1]), (278, 4, [h]), (279, 4, [len(sensor)]),
            (33421, 3, [2, 2]), (33422, 1, [0, 1, 1, 2]), (50717, 3, [16383]),
        ]  # fmt: skip

    if preview is None:  # the first directory is the sensor data itself
        size = len(_ifd(raw_ifd(0) + camera, 8))
        return b"II*\0" + struct.pack("<I", 8) + _ifd(raw_ifd(8 + size) + camera, 8) + sensor
    if preview == "jpeg":
        buf = io.BytesIO()
        photo.save(buf, "JPEG", quality=90)
        shown, layout = buf.getvalue(), [(258, 3, [8, 8, 8]), (259, 3, [7]), (262, 3, [6])]
    else:
        shown, layout = rgb.tobytes(), [(258, 3, [8, 8, 8]), (259, 3, [1]), (262, 3, [2])]
    shown += b"\0" * (len(shown) % 2)

    def first(offset: int) -> list:
        blobs = 8 + offset
        return [
            (254, 4, [1]), (256, 4, [w]), (257, 4, [h]), (273, 4, [blobs]), (277, 3, [3]), (278, 4, [h]),
            (279, 4, [len(shown)]), (330, 4, [blobs + len(shown) + len(sensor)]), *layout, *camera,
        ]  # fmt: skip

    size = len(_ifd(first(0), 8))
    sensor_at = 8 + size + len(shown)
    sub = _ifd(raw_ifd(sensor_at), sensor_at + len(sensor))
    return b"II*\0" + struct.pack("<I", 8) + _ifd(first(size), 8) + shown + sensor + sub


@needs_raw
@pytest.mark.parametrize("preview", ["jpeg", "bitmap"])
def test_raw_decodes_through_its_preview_upright(photo, preview, tmp_path) -> None:
    """A DNG of a real photo (sensor mosaic plus preview, orientation 6 in the RAW's own tags) decodes as
    its preview, turned upright; by file name, and sniffed from bytes (an upload)."""
    data = make_dng(photo, preview, orientation=6)
    path = tmp_path / "IMG_0001.dng"
    path.write_bytes(data)
    out = load_image(path, 224)
    _assert_upright(out.astype(np.float32), photo)
    assert np.array_equal(load_image(data, 224), out)


@needs_raw
def test_raw_without_preview_is_skipped_with_a_reason(photo, tmp_path) -> None:
    path = tmp_path / "sensor-only.dng"
    path.write_bytes(make_dng(photo, preview=None))
    with pytest.raises(DecodeError, match="^RAW file without an embedded preview$"):
        load_image(path, 224)


@needs_raw
@pytest.mark.parametrize("suffix", [".cr2", ".nef", ".arw", ".dng"])
def test_files_named_raw_that_are_not(suffix, tmp_path, photo) -> None:
    """A JPEG or text under a RAW name is refused with a reason, never decoded as something else."""
    for i, data in enumerate((b"not a raw file at all\n" * 40, _saved(photo, "JPEG"), b"II*\0" + bytes(200))):
        path = tmp_path / f"file{i}{suffix}"
        path.write_bytes(data)
        with pytest.raises(DecodeError, match="RAW"):
            load_image(path, 224)


@needs_raw
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_raw_is_a_decode_error(photo, data) -> None:
    damaged = _damaged(make_dng(photo.resize((96, 64))), data.draw)
    try:
        out = load_image(damaged, 64, raw=True)
    except DecodeError as exc:
        assert str(exc)
    else:
        assert out.shape == (64, 64, 3)


@needs_raw
def test_without_rawpy_raw_says_what_to_install(photo, tmp_path) -> None:
    path = tmp_path / "photo.dng"
    path.write_bytes(make_dng(photo))
    run = subprocess.run(
        [sys.executable, "-c", MISSING_SCRIPT, "rawpy", str(path)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "RAW files need pip install 'semsearch[raw]'"


@needs_heif
def test_a_24_megapixel_phone_heic_is_indexed_but_refused_as_an_upload(tmp_path: Path) -> None:
    """A phone's own photo decodes under the own-file bound; the same bytes posted to a server do not."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 4000), (120, 160, 90)).save(buffer, "HEIF", quality=50)
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as img:
        needed = media.decode_memory(img)
    assert media.MAX_DECODE_BYTES < needed < media.OWN_FILE_DECODE_BYTES
    with pytest.raises(DecodeError, match="too large to decode"):
        load_image(data, 224)  # what an upload gets
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "phone.heic").write_bytes(data)
    from semsearch.collection import Collection

    with Collection(tmp_path / "db", writable=True) as collection:
        report = collection.sync(tmp_path / "photos")
    assert (report.added, report.skipped) == (1, 0), report.skipped_files
