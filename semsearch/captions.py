"""Captioned photos: a TSV of `image path<TAB>caption` lines, matched to embedded images and encoded.

Several lines may name one photo (several captions) and one caption may describe several photos. Both
`semsearch train` (targets to learn) and `semsearch eval` (queries to measure) read captions through here.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semsearch.errors import SemsearchError


class CaptionsError(SemsearchError):
    """A captions file that cannot be read or holds no usable caption."""


def read_captions(tsv: Path) -> list[tuple[str, str]]:
    """(absolute image path, caption) rows of a TSV; relative paths are relative to the TSV's folder.

    Blank lines and lines starting with '#' are skipped, and so is a first line without a caption (a
    header); any other line without a tab and a caption is an error naming the line.
    """
    tsv = Path(tsv).expanduser().absolute()
    rows: list[tuple[str, str]] = []
    try:
        with open(tsv, encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
                if not row or not "".join(row).strip() or row[0].startswith("#"):
                    continue
                if len(row) < 2 or not row[1].strip():
                    if n == 1:
                        continue
                    raise CaptionsError(f"{tsv}:{n}: expected 'image path<TAB>caption'")
                path = Path(row[0].strip()).expanduser()
                path = path if path.is_absolute() else tsv.parent / path
                rows.append((os.path.abspath(path), " ".join("\t".join(row[1:]).split())))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CaptionsError(f"cannot read captions {tsv}: {exc}") from None
    if not rows:
        raise CaptionsError(f"{tsv} has no 'image path<TAB>caption' rows")
    return rows


def encode_texts(space, texts: Sequence[str]) -> list[np.ndarray | None]:
    """Each text's vector in `space` (None where it has no known word): in batches for a sentence
    encoder, word by word for a word table."""
    encode = getattr(space, "encode", None)
    if encode is not None:
        return list(encode(list(texts)))
    out: list[np.ndarray | None] = []
    for text in texts:
        try:
            out.append(space.embed_query(text))
        except SemsearchError:
            out.append(None)
    return out


@dataclass
class CaptionSet:
    """Captions matched to rows of an embedded image set: unique caption texts and their vectors, and
    (image row, caption index) pairs."""

    texts: list[str]
    vectors: np.ndarray  # (len(texts), d), normalised
    image_rows: np.ndarray  # (pairs,) row of each pair's image
    caption_ids: np.ndarray  # (pairs,) index into texts
    missing_images: list[str] = field(default_factory=list)  # paths not among the embedded images
    dropped_captions: list[str] = field(default_factory=list)  # captions with no known word

    def to_dict(self) -> dict[str, object]:
        """What was used and left out, for reports (a few examples of each, and the counts)."""
        return {
            "captions": len(self.texts),
            "caption_pairs": len(self.caption_ids),
            "caption_images": len(np.unique(self.image_rows)),
            "missing_images": len(self.missing_images),
            "missing_image_examples": self.missing_images[:5],
            "dropped_captions": len(self.dropped_captions),
            "dropped_caption_examples": self.dropped_captions[:5],
        }


def match_captions(pairs: Sequence[tuple[str, str]], paths: Sequence[str], space) -> CaptionSet:
    """Match TSV rows to embedded image `paths` and encode the captions in `space`."""
    row_of = {p: i for i, p in enumerate(paths)}
    missing = sorted({p for p, _ in pairs if p not in row_of})
    found = [(p, c) for p, c in pairs if p in row_of]
    texts = sorted({c for _, c in found})
    vectors = encode_texts(space, texts)
    kept = {t: v for t, v in zip(texts, vectors, strict=True) if v is not None}
    dropped = [t for t in texts if t not in kept]
    found = list(dict.fromkeys((p, c) for p, c in found if c in kept))
    if not found:
        raise CaptionsError(
            "no caption both names an image found under the folder and has a known word"
            + (f" (e.g. missing {missing[0]})" if missing else "")
        )
    names = sorted(kept)
    index = {t: i for i, t in enumerate(names)}
    return CaptionSet(
        texts=names,
        vectors=np.stack([kept[t] for t in names]).astype(np.float32),
        image_rows=np.array([row_of[p] for p, _ in found], dtype=np.int64),
        caption_ids=np.array([index[c] for _, c in found], dtype=np.int64),
        missing_images=missing,
        dropped_captions=dropped,
    )
