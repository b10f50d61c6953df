"""Mixed queries: text and image terms with weights and minus signs, combined into one vector.

Grammar (operators need spaces around them, so "t-shirt" stays one word)::

    query  := term (("+" | "-") term)*      a leading "-" negates the first term
    term   := [weight ":"] (image-path | text)
    "cat + ./photo.jpg - grass"     "2:beach + sunset"     "a dog on the beach"

A term is an image when it names an existing file or ends in an image extension. A text term of stop words
only ("the a of") has nothing to search for and is refused like an empty query.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semsearch.encoders.words import function_words, tokenize
from semsearch.errors import EmptyQueryError

_OPERATOR = re.compile(r"(?:^|\s+)([+-])\s+|^([+-])(?=\S)")
_WEIGHT = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*:\s*(.+)$")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Term:
    """One part of a query: its signed weight and either text or an image path."""

    weight: float
    text: str | None = None
    image: str | None = None


def parse_query(query: str) -> list[Term]:
    """Split a query into signed, weighted text and image terms."""
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
        match = _WEIGHT.match(piece)
        if match:
            weight, body = float(match.group(1)), match.group(2).strip()
        if _is_image(body):
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


def _is_image(text: str) -> bool:
    return text.lower().endswith(_IMAGE_SUFFIXES) or ("/" in text and Path(text).expanduser().is_file())


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
