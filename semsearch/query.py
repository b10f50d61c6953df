"""Mixed queries: text and image terms with weights and minus signs, combined into one vector.

Grammar (operators need spaces around them, so "t-shirt" stays one word)::

    query  := term (("+" | "-") term)*      a leading "-" negates the first term
    term   := [weight ":"] ("id:" image-id | image-path | text)      weight: a number from 0 to 100
    "cat + id:12 - grass"     "cat + ./photo.jpg"     "2:beach + sunset"     "a dog on the beach"

Filters narrow any query to photos by when, where and how they were taken, and are not text terms::

    after:2019-06   before:2020   in:Trips   camera:canon   near:48.85,2.35,20km   in:"My Trips"

``after:`` keeps photos taken at or after the start of a year, month or day, ``before:`` those taken before
the start of one (both in the photo's wall-clock time); ``in:`` a folder of that name anywhere in the
path; ``camera:`` a make or model containing the words; ``near:`` a position within a radius (km, m or mi;
10 km by default). A key repeated means any of its values (``in:2019 in:2020``); different keys must all
hold. Anything else spelled ``word:value`` is refused as an unknown filter, except image ids (``id:12``)
and paths or addresses (``C:\\photo.png``, ``http://...``), which stay terms.

``id:12`` is the indexed image with id 12. Where paths are allowed (the command line), a term is an image
file when it ends in an image extension or names an existing file. Where they are not (over HTTP), a term
that looks like a path is refused from its spelling alone, so the answer never depends on which files exist.
A text term of stop words only ("the a of") has nothing to search for and is refused like an empty
query.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from semsearch.encoders.words import function_words, tokenize
from semsearch.errors import EmptyQueryError, QueryError

_OPERATOR = re.compile(r"(?:^|\s+)([+-])\s+|^([+-])(?=\S)")
_WEIGHT = re.compile(r"((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*:\s*(.+)", re.DOTALL)
_IMAGE_ID = re.compile(r"id:([0-9]+)", re.IGNORECASE)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
_FILTER = re.compile(r'(?<!\S)([+-]?)([A-Za-z]+):("[^"]*"?|\S*)')
_DATE = re.compile(r"(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?")
_RADIUS = re.compile(r"(.*?)\s*(km|m|mi)?", re.IGNORECASE)
DEFAULT_RADIUS_KM = 10.0
MAX_RADIUS_KM = 20_040.0  # half the Earth's circumference: every place is nearer than that
_UNITS_KM = {"km": 1.0, "m": 0.001, "mi": 1.609344}
FILTER_KEYS = ("after", "before", "in", "camera", "near")
MAX_WEIGHT = 100.0
NO_PATHS = "image terms here are indexed ids such as id:12 (or an uploaded image), never file paths"


@dataclass(frozen=True)
class Term:
    """One part of a query: its signed weight and either text, an image path or an indexed image's id."""

    weight: float
    text: str | None = None
    image: str | None = None
    image_id: int | None = None


@dataclass(frozen=True)
class Place:
    """A circle on the Earth: centre in degrees, radius in km."""

    lat: float
    lon: float
    radius_km: float


@dataclass(frozen=True)
class Filters:
    """Which photos a query may return; the empty `Filters()` allows every photo (and is falsy)."""

    after: datetime | None = None  # taken at or after (wall-clock time)
    before: datetime | None = None  # taken before
    folders: tuple[str, ...] = ()  # any of these folder names in the path
    cameras: tuple[str, ...] = ()  # any of these in the camera's make and model
    near: Place | None = None

    def __bool__(self) -> bool:
        return self != Filters()


def split_filters(query: str) -> tuple[str, Filters]:
    """(the query without its filters, the filters); a bad filter is a one-line `QueryError`."""
    filters = Filters()
    kept: list[str] = []
    last = 0
    for match in _FILTER.finditer(query):
        sign, key, value = match.group(1), match.group(2).lower(), match.group(3)
        if key not in FILTER_KEYS:
            if value and key != "id" and not value.startswith(("/", "\\")):  # C:\x, http://: not filters
                raise QueryError(
                    f"unknown filter {match.group(2)[:20] + ':'!r}: filters are "
                    + ", ".join(f"{k}:" for k in FILTER_KEYS)
                )
            continue
        if sign:
            raise QueryError(f"filters cannot be negated ({sign}{key}:): leave the sign out")
        if value.startswith('"'):
            if len(value) < 2 or not value.endswith('"'):
                raise QueryError(f'{key}: has an unclosed quote: write {key}:"two words"')
            value = value[1:-1]
        if not value.strip():
            raise QueryError(f"{key}: needs a value, e.g. {_EXAMPLES[key]}")
        filters = _with(filters, key, value.strip())
        kept.append(query[last : match.start()])
        last = match.end()
    if filters.after and filters.before and filters.after >= filters.before:
        raise QueryError(
            f"after:{filters.after:%Y-%m-%d} and before:{filters.before:%Y-%m-%d} leave an empty range"
        )
    if not kept:
        return query, filters
    kept.append(query[last:])
    return " ".join(" ".join(kept).split()), filters


def parse_filters(text: str) -> Filters:
    """Filters alone (the `--filter` option of image searches): anything else is a `QueryError`."""
    rest, filters = split_filters(text)
    if rest.strip():
        raise QueryError(f"not a filter: {rest.strip()[:40]!r} (filters look like after:2020 or in:Trips)")
    return filters


_EXAMPLES = {
    "after": "after:2019-06",
    "before": "before:2020",
    "in": "in:Trips",
    "camera": "camera:canon",
    "near": "near:48.85,2.35,20km",
}


def _with(filters: Filters, key: str, value: str) -> Filters:
    if key in ("in", "camera"):
        field = "folders" if key == "in" else "cameras"
        return replace(filters, **{field: (*getattr(filters, field), value[:200])})
    field = key
    if getattr(filters, field) is not None:
        raise QueryError(f"{key}: is given twice: use it once")
    parsed = _place(value) if key == "near" else _date(key, value)
    return replace(filters, **{field: parsed})


def _date(key: str, value: str) -> datetime:
    match = _DATE.fullmatch(value)
    if match is None:
        raise QueryError(f"{key}:{value[:20]} is not a date: use YYYY, YYYY-MM or YYYY-MM-DD")
    year, month, day = (int(g) if g else 1 for g in match.groups())
    try:
        return datetime(year, month, day)
    except ValueError:
        raise QueryError(f"{key}:{value[:20]} is not a date (no such month or day)") from None


def _place(value: str) -> Place:
    parts = value.split(",")
    usage = f"near:{value[:40]} is not a place: use near:LAT,LON or near:LAT,LON,RADIUS (km, m or mi)"
    if len(parts) not in (2, 3):
        raise QueryError(usage)
    try:
        lat, lon = float(parts[0]), float(parts[1])
        radius = DEFAULT_RADIUS_KM
        if len(parts) == 3:
            number, unit = _RADIUS.fullmatch(parts[2].strip()).groups()  # type: ignore[union-attr]
            radius = float(number) * _UNITS_KM[(unit or "km").lower()]
    except ValueError:
        raise QueryError(usage) from None
    if not math.isfinite(lat) or not -90 <= lat <= 90:
        raise QueryError(f"near: latitude {parts[0].strip()[:20]} is out of range (-90 to 90)")
    if not math.isfinite(lon) or not -180 <= lon <= 180:
        raise QueryError(f"near: longitude {parts[1].strip()[:20]} is out of range (-180 to 180)")
    if not math.isfinite(radius) or not 0 < radius <= MAX_RADIUS_KM:
        raise QueryError(f"near: radius must be more than 0 and at most {MAX_RADIUS_KM:g} km")
    return Place(lat, lon, radius)


def parse_query(query: str, *, allow_paths: bool = True, images: bool = True) -> list[Term]:
    """Split a query into signed, weighted text and image terms; without `allow_paths`, a term spelled like
    a file path is a `QueryError` (whether or not that file exists); without `images` (word arithmetic)
    every term is text."""
    if not query or not query.strip():
        raise EmptyQueryError("the query is empty: give words, a phrase or an image path")
    pieces = _OPERATOR.split(" " + query.strip() if query.strip()[0] not in "+-" else query.strip())
    terms: list[Term] = []
    sign = 1.0
    for piece in pieces:
        if piece is None or not piece.strip():
            continue
        piece = piece.strip()
        if piece in "+-":
            sign = -1.0 if piece == "-" else 1.0
            continue
        weight, body = 1.0, piece
        match = _WEIGHT.fullmatch(piece)
        if match:
            weight, body = float(match.group(1)), match.group(2).strip()
            if not weight <= MAX_WEIGHT:
                raise QueryError(f"weight {match.group(1)[:20]} is out of range: use a number from 0 to 100")
        image_id = parse_image_id(body) if images else None
        if image_id is not None:
            terms.append(Term(sign * weight, image_id=image_id))
        elif images and not allow_paths and _looks_like_path(body):
            raise QueryError(NO_PATHS)
        elif images and allow_paths and _is_image(body):
            terms.append(Term(sign * weight, image=body))
        else:
            _refuse_stop_words_only(body)
            terms.append(Term(sign * weight, text=body))
        sign = 1.0
    if not terms:
        raise EmptyQueryError("the query has no terms to search for")
    return terms


def _refuse_stop_words_only(text: str) -> None:
    words = tokenize(text)
    if words and function_words().issuperset(words):
        raise EmptyQueryError(
            f"{text!r} has only stop words (such as 'the', 'a', 'of'): say what the photos should show"
        )


def parse_image_id(text: str) -> int | None:
    """The id in an ``id:12`` image reference, or None when `text` is not one."""
    match = _IMAGE_ID.fullmatch(text.strip())
    if match is None:
        return None
    if len(match.group(1)) > 19:  # ids are 64-bit integers: never more than 19 digits
        raise QueryError(f"no image has the id {match.group(1)[:20]}...")
    return int(match.group(1))


def image_ref(text: str) -> int | str:
    """A command-line image argument: an indexed id (``id:12``, or a bare number as the result tables show
    ids, unless a file has that name) or a file path."""
    image_id = parse_image_id(text)
    if image_id is None and text.isascii() and text.isdigit() and not Path(text).exists():
        image_id = parse_image_id(f"id:{text}")
    return text if image_id is None else image_id


def _is_image(text: str) -> bool:
    return text.lower().endswith(_IMAGE_SUFFIXES) or ("/" in text and Path(text).expanduser().is_file())


def _looks_like_path(text: str) -> bool:
    """Spelled like a file path (absolute, home, relative with a separator, the current or parent
    folder, or an image file name)."""
    return (
        text in (".", "..")
        or text.lower().endswith(_IMAGE_SUFFIXES)
        or text.startswith(("/", "~", "\\", "./", "../"))
        or (not any(c.isspace() for c in text) and ("/" in text or "\\" in text))
    )


def combine(terms: list[Term], embed: Callable[[Term], np.ndarray]) -> np.ndarray:
    """Weighted sum of each term's unit vector, normalised; refuses terms that cancel out."""
    total = sum(term.weight * _unit(embed(term)) for term in terms)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise EmptyQueryError("the query terms cancel each other out")
    return (total / norm).astype(np.float32)


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
