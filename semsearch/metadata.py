"""What a photo's file says about it besides its pixels: when it was taken, with which camera, where, and
its size, read from the bytes the indexing pipeline has already read (never a second read of the file).

Dates are wall-clock times, as cameras record them (EXIF DateTimeOriginal), with the UTC offset where the
photo gives one (OffsetTimeOriginal); without a usable date taken, the file's modification time in the
indexing machine's local time stands in, and `taken_source` says which ("exif" or "file"). Filters such as
``after:2019-06`` compare wall-clock times, so "June 2019" means June where the photo was taken.

EXIF is untrusted input: a value out of range (a latitude of 95°, 75 minutes, an unknown hemisphere, a
zero denominator) is ignored with a note, and a block that cannot be parsed gives no metadata at all, never
an error; the photo is indexed either way.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal, TypeVar

from PIL import Image

#: Bumped when extraction learns something new, so existing rows are read again (lazily) on the next run.
VERSION = 1
EPOCH = datetime(1970, 1, 1)

_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_DATE_TAKEN, _OFFSET_TAKEN, _MAKE, _MODEL, _ORIENTATION = 36867, 36881, 271, 272, 274
_DATE = re.compile(r"(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")
_LONGEST_NAME = 64  # camera make/model characters kept

T = TypeVar("T")


@dataclass(frozen=True)
class PhotoMetadata:
    """A photo's date taken, camera, position and displayed size; None where the file does not say."""

    taken: datetime  # wall-clock time, naive
    taken_source: Literal["exif", "file"]
    taken_offset: int | None = None  # minutes east of UTC, where known
    width: int | None = None
    height: int | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    lat: float | None = None
    lon: float | None = None
    notes: tuple[str, ...] = field(default=())  # what was ignored, and why

    @property
    def camera(self) -> str | None:
        """Make and model as people say it: "Canon EOS 5D", not "Canon Canon EOS 5D"."""
        make, model = self.camera_make or "", self.camera_model or ""
        if model.lower().startswith(make.lower()):
            return model or None
        return f"{make} {model}".strip() or None

    def columns(self) -> dict[str, object]:
        """The catalog's detail columns (`semsearch.store.DETAIL_COLUMNS`) for this photo."""
        return {
            "width": self.width,
            "height": self.height,
            "taken": wall_seconds(self.taken),
            "taken_offset": self.taken_offset,
            "taken_source": self.taken_source,
            "camera_make": self.camera_make,
            "camera_model": self.camera_model,
            "lat": self.lat,
            "lon": self.lon,
            "details": VERSION,
        }


def wall_seconds(moment: datetime) -> int:
    """A naive wall-clock time as the catalog stores it: seconds since 1970-01-01 00:00 of the same clock."""
    return int((moment - EPOCH).total_seconds())


def wall_time(seconds: int) -> datetime:
    """The inverse of `wall_seconds`."""
    return EPOCH + timedelta(seconds=seconds)


def describe(columns: Mapping[str, object] | None) -> dict[str, object]:
    """What results show of a photo's stored details (every key present, None where unknown): the date
    taken in ISO 8601 (with its UTC offset where known) and where it came from, camera, [lat, lon]."""
    columns = columns or {}
    taken, offset = columns.get("taken"), columns.get("taken_offset")
    when = None
    if isinstance(taken, int):
        moment = wall_time(taken)
        if isinstance(offset, int):
            moment = moment.replace(tzinfo=timezone(timedelta(minutes=offset)))
        when = moment.isoformat()
    make, model = columns.get("camera_make"), columns.get("camera_model")
    camera = PhotoMetadata(EPOCH, "file", camera_make=make, camera_model=model).camera  # type: ignore[arg-type]
    lat, lon = columns.get("lat"), columns.get("lon")
    return {
        "taken": when,
        "taken_from": columns.get("taken_source"),
        "camera": camera,
        "gps": [round(lat, 6), round(lon, 6)] if lat is not None and lon is not None else None,  # type: ignore[arg-type]
    }


def file_time(mtime_ns: int) -> tuple[datetime, int]:
    """A modification time as local wall-clock time and its UTC offset in minutes."""
    local = datetime.fromtimestamp(mtime_ns / 1e9).astimezone()
    offset = local.utcoffset() or timedelta(0)
    return local.replace(tzinfo=None), int(offset.total_seconds() // 60)


def extract(data: bytes, mtime_ns: int) -> PhotoMetadata:
    """The metadata of a photo's bytes (`mtime_ns`: the file's modification time, the date's fallback)."""
    notes: list[str] = []
    found: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL warns about odd EXIF; the notes say what matters
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                exif = _guarded("EXIF block", img.getexif, notes)
        except Exception:  # noqa: BLE001 - not an image PIL opens: only the file time is known
            exif, width, height = None, None, None
        if exif is not None:
            found = _from_exif(exif, notes)
    if width is not None and found.pop("turned", False):
        width, height = height, width
    taken = found.pop("taken", None)
    source: Literal["exif", "file"] = "exif"
    if taken is None:
        taken, offset = file_time(mtime_ns)
        found["taken_offset"], source = offset, "file"
    return PhotoMetadata(
        taken=taken, taken_source=source, width=width, height=height, notes=tuple(notes), **found
    )


def _guarded(what: str, read: Callable[[], T], notes: list[str]) -> T | None:
    """`read()`, or None with a note: PIL's EXIF parser raises many kinds of errors on corrupt data."""
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - untrusted bytes; any failure means "unreadable"
        notes.append(f"unreadable {what} ({type(exc).__name__}): ignored")
        return None


def _from_exif(exif: Image.Exif, notes: list[str]) -> dict[str, object]:
    found: dict[str, object] = {}
    orientation = _guarded("orientation", lambda: exif.get(_ORIENTATION), notes)
    found["turned"] = orientation in (5, 6, 7, 8)
    for key, tag in (("camera_make", _MAKE), ("camera_model", _MODEL)):
        found[key] = _guarded("camera name", lambda tag=tag: _text(exif.get(tag)), notes)
    details = _guarded("EXIF details", lambda: exif.get_ifd(_EXIF_IFD), notes) or {}
    taken = _guarded("date taken", lambda: _date(details.get(_DATE_TAKEN) or exif.get(_DATE_TAKEN)), notes)
    if taken is not None:
        found["taken"] = taken
        found["taken_offset"] = _guarded("UTC offset", lambda: _offset(details.get(_OFFSET_TAKEN)), notes)
    gps = _guarded("GPS block", lambda: exif.get_ifd(_GPS_IFD), notes)
    if gps:
        position = _guarded("GPS position", lambda: _position(gps, notes), notes)
        if position is not None:
            found["lat"], found["lon"] = position
    return found


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    cleaned = "".join(c for c in value if c.isprintable()).strip()[:_LONGEST_NAME].strip()
    return cleaned or None


def _date(value: object) -> datetime | None:
    text = _text(value)
    match = _DATE.match(text) if text else None
    if match is None:
        return None
    try:
        return datetime(*(int(g) for g in match.groups()))
    except ValueError:  # month 13, day 0, hour 99...
        return None


def _offset(value: object) -> int | None:
    text = _text(value)
    match = _OFFSET.fullmatch(text) if text else None
    if match is None:
        return None
    sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3))
    if hours > 14 or minutes >= 60:
        return None
    return (-1 if sign == "-" else 1) * (60 * hours + minutes)


def _position(gps: dict, notes: list[str]) -> tuple[float, float] | None:
    """(lat, lon) in degrees; None where the block has no position or an out-of-range one (noted)."""
    if 2 not in gps and 4 not in gps:
        return None
    problems: list[str] = []
    lat = _degrees(gps.get(2), gps.get(1), {"N": 1, "S": -1}, 90, "latitude", problems)
    lon = _degrees(gps.get(4), gps.get(3), {"E": 1, "W": -1}, 180, "longitude", problems)
    if lat is None or lon is None:
        notes.append(f"GPS position ignored: {'; '.join(problems)}")
        return None
    return lat, lon


def _degrees(
    value: object, ref: object, signs: dict[str, int], limit: float, what: str, problems: list[str]
) -> float | None:
    hemisphere = (_text(ref) or "").upper()
    if hemisphere not in signs:
        problems.append(f"{what} hemisphere {hemisphere!r} is not one of {'/'.join(signs)}")
        return None
    parts = [float(v) for v in (value if isinstance(value, tuple) else (value,))]
    if not 1 <= len(parts) <= 3 or not all(math.isfinite(p) and p >= 0 for p in parts):
        problems.append(f"{what} {parts} is not degrees, minutes and seconds")
        return None
    if any(p >= 60 for p in parts[1:]):
        problems.append(f"{what} has 60 or more minutes or seconds")
        return None
    degrees = sum(p / 60**i for i, p in enumerate(parts))
    if degrees > limit:
        problems.append(f"{what} {degrees:.4f} is out of range (at most {limit})")
        return None
    return signs[hemisphere] * degrees
