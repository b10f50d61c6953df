"""ImageNet-1k class names, kept by the project (the model packages ship only weights).

Each class has a WordNet id and a comma-separated list of synonyms; the first synonym is its display name.
"""

from __future__ import annotations

import difflib
from functools import cache
from importlib import resources

from semsearch.errors import UnknownClassError


@cache
def class_synonyms() -> tuple[tuple[str, ...], ...]:
    """Synonyms of each class, in model output order (index 0-999)."""
    text = resources.files("semsearch.data").joinpath("imagenet_classes.tsv").read_text("utf-8")
    rows = [line.split("\t", 1)[1] for line in text.splitlines() if line]
    return tuple(tuple(s.strip() for s in row.split(",")) for row in rows)


def class_names() -> list[str]:
    """The display name of each class (its first synonym)."""
    return [syn[0] for syn in class_synonyms()]


@cache
def _lookup() -> dict[str, int]:
    table: dict[str, int] = {}
    for index, synonyms in enumerate(class_synonyms()):
        for name in synonyms:
            table.setdefault(name.lower(), index)
    return table


def resolve_class(query: str | int) -> int:
    """Class index for a name (case-insensitive, any synonym) or an index 0-999."""
    text = str(query).strip()
    if text.isdigit():
        index = int(text)
        if 0 <= index < len(class_synonyms()):
            return index
        raise UnknownClassError(f"class index {index} is out of range: use 0-{len(class_synonyms()) - 1}")
    table = _lookup()
    key = text.lower()
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, table.keys(), n=3, cutoff=0.6)
    whole_word = [name for name in table if key in name.split()][:3]
    suggestions = list(dict.fromkeys(whole_word + close))[:4]
    hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    raise UnknownClassError(f"focus class {text!r} is not an ImageNet class{hint}")
