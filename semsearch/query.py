"""Mixed queries: text and image terms with weights and minus signs, combined into one vector.

Grammar (operators need spaces around them, so "t-shirt" stays one word)::

    query  := term (("+" | "-") term)*      a leading "-" negates the first term
    term   := [weight ":"] ("id:" image-id | image-path | text)      weight: a number from 0 to 100
    "cat + id:12 - grass"     "cat + ./photo.jpg"     "2:beach + sunset"     "a dog on the beach"

``id:12`` is the indexed image with id 12. Where paths are allowed (the command line), a term is an image
file when it ends in an image extension or names an existing file. Where they are not (over HTTP), a term
that looks like a path is refused from its spelling alone, so the answer never depends on which files exist.
A text term of stop words only ("the a of") has nothing to search for and is refused like an empty
query.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semsearch.encoders.words import function_words, tokenize
from semsearch.errors import EmptyQueryError, QueryError

_OPERATOR = re.compile(r"(?:^|\s+)([+-])\s+|^([+-])(?=\S)")
_WEIGHT = re.compile(r"((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*:\s*(.+)", re.DOTALL)
_IMAGE_ID = re.compile(r"id:([0-9]+)", re.IGNORECASE)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
MAX_WEIGHT = 100.0
NO_PATHS = "image terms here are indexed ids such as id:12 (or an uploaded image), never file paths"


@dataclass(frozen=True)
class Term:
    """One part of a query: its signed weight and either text, an image path or an indexed image's id."""

    weight: float
    text: str | None = None
    image: str | None = None
    image_id: int | None = None


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
    """Spelled like a file path (absolute, home, relative with a separator, or an image file name)."""
    return (
        text.lower().endswith(_IMAGE_SUFFIXES)
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
