"""Photo metadata read at index time (date taken, camera, GPS, pixel size) from real photos with EXIF
written by PIL, including corrupt EXIF blocks and out-of-range GPS tags."""

from __future__ import annotations

import io
import os
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, TiffImagePlugin

from semsearch.metadata import extract

EXIF_IFD, GPS_IFD = 0x8769, 34853
DATE_TAKEN, OFFSET_TAKEN, MAKE, MODEL, ORIENTATION = 36867, 36881, 271, 272, 274


def photo_bytes(
    source: Path,
    *,
    taken: str | None = None,
    offset: str | None = None,
    make: str | None = None,
    model: str | None = None,
    gps: tuple | None = None,
    orientation: int | None = None,
) -> bytes:
    """A real photo re-saved as JPEG with the EXIF tags given; gps = (lat_ref, lat, lon_ref, lon) where
    lat and lon are (degrees, minutes, seconds)."""
    exif = Image.Exif()
    if make is not None:
        exif[MAKE] = make
    if model is not None:
        exif[MODEL] = model
    if orientation is not None:
        exif[ORIENTATION] = orientation
    if taken is not None:
        exif.get_ifd(EXIF_IFD)[DATE_TAKEN] = taken
    if offset is not None:
        exif.get_ifd(EXIF_IFD)[OFFSET_TAKEN] = offset
    if gps is not None:
        lat_ref, lat, lon_ref, lon = gps
        exif.get_ifd(GPS_IFD).update({1: lat_ref, 2: lat, 3: lon_ref, 4: lon})
    out = io.BytesIO()
    with Image.open(source) as img:
        img.convert("RGB").save(out, "JPEG", exif=exif, quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def photo(caltech) -> Path:
    return sorted((caltech / "ferry").iterdir())[0]


PARIS = ("N", (48.0, 51.0, 29.0), "E", (2.0, 21.0, 8.0))


def test_exif_date_camera_gps_and_size(photo):
    data = photo_bytes(
        photo, taken="2019:06:14 10:03:07", offset="+02:00", make="Canon", model="Canon EOS 5D", gps=PARIS
    )
    meta = extract(data, mtime_ns=0)
    assert meta.taken == datetime(2019, 6, 14, 10, 3, 7)
    assert meta.taken_offset == 120 and meta.taken_source == "exif"
    assert meta.camera_make == "Canon" and meta.camera_model == "Canon EOS 5D"
    assert meta.lat == pytest.approx(48 + 51 / 60 + 29 / 3600) and meta.lon == pytest.approx(
        2 + 21 / 60 + 8 / 3600
    )
    with Image.open(photo) as img:
        assert (meta.width, meta.height) == img.size
    assert meta.notes == ()


def test_southern_and_western_positions_are_negative(photo):
    meta = extract(photo_bytes(photo, gps=("S", (33.0, 52.0, 0.0), "W", (151.0, 12.0, 36.0))), mtime_ns=0)
    assert meta.lat == pytest.approx(-(33 + 52 / 60)) and meta.lon == pytest.approx(-(151 + 12.6 / 60))


def test_without_exif_the_file_time_is_used_and_said(photo):
    mtime_ns = 1_500_000_000 * 10**9
    meta = extract(photo_bytes(photo), mtime_ns=mtime_ns)
    assert meta.taken_source == "file"
    assert meta.taken == datetime.fromtimestamp(mtime_ns / 1e9)  # local wall-clock time, as EXIF's
    assert meta.camera_make is meta.lat is meta.lon is None


def test_rotated_photos_report_their_displayed_size(photo):
    with Image.open(photo) as img:
        width, height = img.size
    meta = extract(photo_bytes(photo, orientation=6), mtime_ns=0)
    assert (meta.width, meta.height) == (height, width)


@pytest.mark.parametrize(
    "gps",
    [
        ("N", (95.0, 0.0, 0.0), "E", (2.0, 0.0, 0.0)),  # latitude beyond the pole
        ("N", (48.0, 0.0, 0.0), "W", (181.0, 0.0, 0.0)),  # longitude beyond the antimeridian
        ("N", (48.0, 75.0, 0.0), "E", (2.0, 0.0, 0.0)),  # 75 minutes
        ("X", (48.0, 0.0, 0.0), "E", (2.0, 0.0, 0.0)),  # no such hemisphere
    ],
)
def test_gps_out_of_range_is_ignored_with_a_note(photo, gps):
    meta = extract(photo_bytes(photo, taken="2020:01:02 03:04:05", make="Nikon", gps=gps), mtime_ns=0)
    assert meta.lat is None and meta.lon is None
    assert any("GPS" in note for note in meta.notes)
    assert meta.taken == datetime(2020, 1, 2, 3, 4, 5) and meta.camera_make == "Nikon"  # the rest is kept


def test_gps_with_a_zero_denominator_is_ignored(photo):
    zero = TiffImagePlugin.IFDRational(1, 0)
    meta = extract(photo_bytes(photo, gps=("N", (zero, 0.0, 0.0), "E", (2.0, 0.0, 0.0))), mtime_ns=0)
    assert meta.lat is None and any("GPS" in note for note in meta.notes)


@pytest.mark.parametrize("taken", ["2019:13:45 99:00:00", "0000:00:00 00:00:00", "yesterday", "    "])
def test_unreadable_dates_fall_back_to_the_file_time(photo, taken):
    meta = extract(photo_bytes(photo, taken=taken), mtime_ns=10**18)
    assert meta.taken_source == "file" and meta.taken == datetime.fromtimestamp(1e9)


@pytest.mark.parametrize("offset", ["+25:00", "junk", "+02"])
def test_unreadable_offsets_are_left_out(photo, offset):
    meta = extract(photo_bytes(photo, taken="2019:06:14 10:03:07", offset=offset), mtime_ns=0)
    assert meta.taken == datetime(2019, 6, 14, 10, 3, 7) and meta.taken_offset is None


def _exif_span(data: bytes) -> tuple[int, int]:
    """Start and end of the EXIF (TIFF) block inside a JPEG's APP1 segment."""
    start = data.index(b"Exif\x00\x00") + 6
    length = int.from_bytes(data[start - 8 : start - 6], "big") - 8
    return start, start + length


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_corrupt_exif_blocks_never_raise(photo, data):
    """Any bytes of the EXIF block overwritten: metadata is whatever can still be read, never an error."""
    good = photo_bytes(photo, taken="2019:06:14 10:03:07", make="Canon", model="EOS", gps=PARIS)
    start, end = _exif_span(good)
    damaged = bytearray(good)
    for _ in range(data.draw(st.integers(1, 12))):
        where = data.draw(st.integers(start, end - 1))
        damaged[where] = data.draw(st.integers(0, 255))
    meta = extract(bytes(damaged), mtime_ns=0)
    assert meta.taken_source in ("exif", "file")
    assert meta.lat is None or -90 <= meta.lat <= 90
    assert meta.lon is None or -180 <= meta.lon <= 180


@settings(max_examples=60, deadline=None)
@given(
    st.tuples(*[st.floats(0, 1e4)] * 3),  # EXIF rationals are unsigned
    st.tuples(st.integers(0, 400), st.integers(0, 5)),
    st.sampled_from(["N", "S", "E", "W", "", "NN"]),
)
def test_any_gps_values_give_a_valid_position_or_none(caltech, lat, denominators, ref):
    source = sorted((caltech / "ferry").iterdir())[0]
    numerator, denominator = denominators
    lon = (TiffImagePlugin.IFDRational(numerator, denominator), 0.0, 0.0)
    meta = extract(photo_bytes(source, gps=(ref, lat, "E", lon)), mtime_ns=0)
    assert (meta.lat is None) == (meta.lon is None)
    if meta.lat is not None:
        assert -90 <= meta.lat <= 90 and -180 <= meta.lon <= 180


def test_a_truncated_exif_header_gives_no_metadata(photo):
    good = photo_bytes(photo, taken="2019:06:14 10:03:07", make="Canon")
    start, end = _exif_span(good)
    damaged = good[:start] + b"II*\x00\xff\xff\xff\x7f" + b"\x00" * (end - start - 8) + good[end:]
    meta = extract(damaged, mtime_ns=0)
    assert meta.taken_source == "file" and meta.camera_make is None


def test_not_an_image_gives_file_time_only():
    meta = extract(b"not an image at all", mtime_ns=0)
    assert meta.taken_source == "file" and meta.width is None


def test_fraction_gps_values_from_real_cameras(photo):
    """Cameras write rationals such as 2921/100 seconds."""
    lat = (Fraction(48), Fraction(51), Fraction(2921, 100))
    meta = extract(photo_bytes(photo, gps=("N", lat, "E", (2.0, 21.0, 8.0))), mtime_ns=0)
    assert meta.lat == pytest.approx(48 + 51 / 60 + 29.21 / 3600)


def test_environment_time_zone_is_used_for_file_times(photo, monkeypatch):
    """The fallback is local time where the photos are indexed (as a camera's clock would be)."""
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        meta = extract(photo_bytes(photo), mtime_ns=0)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert meta.taken == datetime(1970, 1, 1, 9, 0) and meta.taken_offset == 540
    assert os.environ.get("TZ") != "Asia/Tokyo"
