"""ImageNet-1k class names and their WordNet groups, kept by the project (the model packages ship only weights).

Each class has a WordNet id and a comma-separated list of synonyms; the first synonym is its display name.
ImageNet's classes are WordNet 3.0 synsets, so every hypernym of a class is a group of classes: 'dog' holds
the 118 dog breeds, 'bird' 59 birds. The groups that everyday words name were derived once from WordNet by
tools/make_hierarchy.py (which says which groups and words are kept) and ship as data/imagenet_hierarchy.tsv.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from semsearch.errors import UnknownClassError


@dataclass(frozen=True)
class ClassGroup:
    """What a focus word means: a display name and the ImageNet class indices it covers (one for a class)."""

    name: str
    classes: tuple[int, ...]


def _data(name: str) -> list[str]:
    """The non-comment lines of a packaged data file."""
    text = resources.files("semsearch.data").joinpath(name).read_text("utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@cache
def class_synonyms() -> tuple[tuple[str, ...], ...]:
    """Synonyms of each class, in model output order (index 0-999)."""
    rows = [line.split("\t", 1)[1] for line in _data("imagenet_classes.tsv")]
    return tuple(tuple(s.strip() for s in row.split(",")) for row in rows)


def class_names() -> list[str]:
    """The display name of each class (its first synonym)."""
    return [syn[0] for syn in class_synonyms()]


def _indices(ranges: str) -> tuple[int, ...]:
    """'151-153 270' → (151, 152, 153, 270)."""
    out: list[int] = []
    for part in ranges.split():
        first, _, last = part.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return tuple(out)


@cache
def _group_rows() -> tuple[tuple[ClassGroup, tuple[str, ...]], ...]:
    """Each WordNet group with the words that mean it (the first word is its name)."""
    rows = []
    for line in _data("imagenet_hierarchy.tsv"):
        _, words, ranges = line.split("\t")
        names = tuple(w.strip() for w in words.split(","))
        rows.append((ClassGroup(names[0], _indices(ranges)), names))
    return tuple(rows)


def class_groups() -> tuple[ClassGroup, ...]:
    """The WordNet groups of classes that everyday words name ('dog', 'bird', 'musical instrument'...)."""
    return tuple(group for group, _ in _group_rows())


@cache
def _lookup() -> dict[str, int]:
    table: dict[str, int] = {}
    for index, synonyms in enumerate(class_synonyms()):
        for name in synonyms:
            table.setdefault(name.lower(), index)
    return table


@cache
def _meanings() -> dict[str, ClassGroup]:
    """Every focus word → what it means. A class's display name (what /api/classes lists) means that class;
    a word whose first WordNet sense is a group means the group ('wagon': not the synonym of 'beach wagon');
    then any other class synonym."""
    table = {name: ClassGroup(class_names()[index], (index,)) for name, index in _lookup().items()}
    table.update((word.lower(), group) for group, words in _group_rows() for word in words)
    table.update((name.lower(), ClassGroup(name, (index,))) for index, name in enumerate(class_names()))
    return table


@cache
def _plurals() -> dict[str, str]:
    return dict(line.split("\t") for line in _data("noun_plurals.tsv"))


# WordNet's suffix rules for nouns (morphy(7WN)): plural ending → singular ending, tried in this order.
_NOUN_SUFFIXES = (("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"))
_NOUN_SUFFIXES += (("ies", "y"), ("s", ""))


def _singulars(text: str) -> list[str]:
    """Candidate singulars of a name whose last word may be plural: 'german shepherds' → 'german shepherd'."""
    head, _, last = text.rpartition(" ")
    forms = [_plurals()[last]] if last in _plurals() else []
    if not last.endswith("ss"):  # 'glass', 'bass': not plurals
        forms += [
            last[: -len(end)] + base for end, base in _NOUN_SUFFIXES if last.endswith(end) and last != end
        ]
    return [f"{head} {form}".strip() for form in dict.fromkeys(forms)]


def resolve_class(query: str | int) -> int:
    """Class index for a name (case-insensitive, any synonym) or an index 0-999."""
    text = " ".join(str(query).split())
    if text.isascii() and text.isdigit():  # not "²" or "٣": str.isdigit() takes any script's digits
        count = len(class_synonyms())
        if len(text) <= 6 and int(text) < count:
            return int(text)
        raise UnknownClassError(f"class index {text[:12]} is out of range: use 0-{count - 1}")
    index = _find(_lookup(), text)
    if index is None:
        raise _unknown(text, "an ImageNet class", _lookup().keys())
    return index


def resolve_group(query: str | int) -> ClassGroup:
    """What a focus word means: an ImageNet class (any synonym, or 0-999) or the WordNet group that an
    everyday word names ('dog', 'birds', 'musical instrument', 'puppy'); plurals are made singular."""
    text = " ".join(str(query).split())
    if text.isascii() and text.isdigit():
        index = resolve_class(text)
        return ClassGroup(class_names()[index], (index,))
    group = find_group(text)
    if group is None:
        raise _unknown(text, "an ImageNet class or a word for a group of them", _meanings().keys())
    return group


def find_group(text: str) -> ClassGroup | None:
    """The class or group a name means, or None: the test a query's words go through, without the
    suggestions an error would carry (difflib over every name took ~12 ms a word)."""
    return _find(_meanings(), text)


def _find(table: dict, text: str):
    """A name's entry in `table` (lower-case keys), as written or with its last word made singular."""
    key = " ".join(text.split()).lower()
    for form in (key, *_singulars(key)):
        if form in table:
            return table[form]
    return None


def _unknown(text: str, what: str, names) -> UnknownClassError:
    """'focus class 'x' is not ...; did you mean ...?' with close names and names holding the word."""
    key = text.lower()
    names = list(names)
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    whole_word = [name for name in names if key in name.split()][:3]
    suggestions = list(dict.fromkeys(whole_word + close))[:4]
    hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    return UnknownClassError(f"focus class {text!r} is not {what}{hint}")
