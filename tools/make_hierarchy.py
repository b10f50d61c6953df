"""Derive the ImageNet-1k class groups from WordNet 3.0 and write them as package data.

ImageNet-1k's classes are WordNet 3.0 noun synsets (a wnid 'n02084071' is the offset of a line in WordNet's
data.noun). Every hypernym of a class is a group of classes ('dog' holds the 118 dog breeds); this script
reads WordNet's own files (Debian's `wordnet-base`: /usr/share/wordnet/data.noun, index.noun, noun.exc),
keeps the groups a person would name, and writes:

* semsearch/data/imagenet_hierarchy.tsv: one group a line: its wnid, the words that mean it (the first is
  its display name) and the indices of the classes under it;
* semsearch/data/noun_plurals.tsv: WordNet's irregular plurals ('wolves' → 'wolf') of the words that name
  a class or a group; regular plurals are left to WordNet's suffix rules at run time.

semsearch reads only these files; it never needs WordNet at run time.

Which groups and words (measured, see the numbers in the docstrings below):

* A word means the synset of its first WordNet sense (index.noun orders senses by how often they were seen
  in tagged text): 'machine' is a lemma of the car synset, but its first sense is a machine, so 'machine'
  means the 'machine' group; 'wind' (a lemma of 'wind instrument') means no group at all.
* A group is kept when it covers at most half of the classes (not 'entity', 'object', 'artifact') and
  one of its lemmas is an everyday word: the lemma's first sense is the group and every word of it is
  among the COMMON_RANK most frequent words of GloVe 6B (its file is ordered by frequency). Its display
  name is the first such lemma. Groups named only by rare words ('placental', 'diapsid', 'colubrid') and
  single-class groups whose lemmas mostly mean something else ('work', 'point', 'area') are left out.
* A common single word whose first sense is not a class or a group but whose direct hypernym is a kept
  group also means that group when GloVe puts it near the group's name (cosine >= HYPONYM_COSINE):
  'puppy' (a young dog, cosine 0.79 to 'dog') → dog, 'ferry' → boat, 'pony' → horse; not 'queen' (0.10 to
  'insect': WordNet's first sense of 'queen' is the queen of a bee colony) or 'cup' (0.15 to 'container').
  At 0.6 the 215 words joined are kinds of their group that people use as its name; below it the share of
  such words falls (0.5-0.6: 'lover' → person, 'bull' → cattle, 'somewhere' → location at 0.47).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

WORDNET = Path("/usr/share/wordnet")
DATA = Path(__file__).resolve().parents[1] / "semsearch" / "data"
HIERARCHY = "imagenet_hierarchy.tsv"
PLURALS = "noun_plurals.tsv"
COMMON_RANK = 100000
HYPONYM_COSINE = 0.6
MAX_SHARE = 0.5  # a group holding more than this share of the classes says nothing about a photo
HYPERNYM_POINTERS = ("@", "@i")


@dataclass(frozen=True)
class Synset:
    lemmas: tuple[str, ...]  # as WordNet writes them, '_' for spaces
    hypernyms: tuple[str, ...]  # offsets


def read_synsets(wordnet: Path) -> dict[str, Synset]:
    """offset → synset, from data.noun (format: wndb(5WN))."""
    synsets: dict[str, Synset] = {}
    with open(wordnet / "data.noun", encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            count = int(fields[3], 16)
            lemmas = tuple(fields[4 + 2 * i] for i in range(count))
            at = 4 + 2 * count
            pointers = [fields[at + 1 + 4 * j : at + 5 + 4 * j] for j in range(int(fields[at]))]
            hypernyms = tuple(p[1] for p in pointers if p[0] in HYPERNYM_POINTERS and p[2] == "n")
            synsets[fields[0]] = Synset(lemmas, hypernyms)
    return synsets


def read_first_senses(wordnet: Path) -> dict[str, str]:
    """lemma (lower case, '_' for spaces) → offset of its first (most frequent) noun sense."""
    first: dict[str, str] = {}
    with open(wordnet / "index.noun", encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):
                continue
            fields = line.split()
            pointer_count = int(fields[3])
            first[fields[0]] = fields[4 + pointer_count + 2]
    return first


def read_plurals(wordnet: Path) -> dict[str, str]:
    """Irregular plural → singular, from noun.exc (the first base form where WordNet gives several)."""
    out: dict[str, str] = {}
    with open(wordnet / "noun.exc", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 2:
                out.setdefault(fields[0], fields[1])
    return out


def imagenet_wnids() -> list[str]:
    text = resources.files("semsearch.data").joinpath("imagenet_classes.tsv").read_text("utf-8")
    return [line.split("\t", 1)[0] for line in text.splitlines() if line]


def _spaced(lemma: str) -> str:
    return lemma.replace("_", " ")


@dataclass(frozen=True)
class Group:
    wnid: str
    words: tuple[str, ...]  # the first is the display name
    classes: tuple[int, ...]


def derive(wordnet: Path = WORDNET) -> tuple[list[Group], dict[str, str]]:
    """The kept groups (most classes first) and the irregular plurals of the words that name something."""
    from semsearch.encoders.joint import COMMON_RANK
    from semsearch.encoders.words import load_words, tokenize

    synsets = read_synsets(wordnet)
    first = read_first_senses(wordnet)
    glove = load_words()
    ranks = {w: i for i, w in enumerate(glove.words)}  # GloVe files are ordered by frequency
    wnids = imagenet_wnids()
    is_class = {w[1:] for w in wnids}

    members: dict[str, set[int]] = {}
    for index, wnid in enumerate(wnids):
        todo, seen = list(synsets[wnid[1:]].hypernyms), set()
        while todo:
            offset = todo.pop()
            if offset not in seen:
                seen.add(offset)
                members.setdefault(offset, set()).add(index)
                todo.extend(synsets[offset].hypernyms)

    def means(lemma: str, offset: str) -> bool:
        return first.get(lemma.lower()) == offset

    def common(lemma: str) -> bool:
        words = tokenize(_spaced(lemma))
        return bool(words) and all(ranks.get(w, COMMON_RANK) < COMMON_RANK for w in words)

    words_of: dict[str, list[str]] = {}
    for offset, classes in members.items():
        lemmas = synsets[offset].lemmas
        if len(classes) > MAX_SHARE * len(wnids):
            continue
        names = [_spaced(lemma) for lemma in lemmas if means(lemma, offset) and common(lemma)]
        if names:
            rest = [
                _spaced(lemma) for lemma in lemmas if means(lemma, offset) and _spaced(lemma) not in names
            ]
            words_of[offset] = [*names, *rest]

    def near(word: str, name: str) -> bool:
        a, b = glove.embed_words([word]), glove.embed_words(tokenize(name))
        return a is not None and b is not None and float(a @ b) >= HYPONYM_COSINE

    for lemma, offset in sorted(first.items()):
        if offset in is_class or offset in members or not lemma.isalpha() or not common(lemma):
            continue
        parent = next((h for h in synsets[offset].hypernyms if h in words_of), None)
        if parent is not None and near(lemma, words_of[parent][0]):
            words_of[parent].append(lemma)

    groups = [
        Group(f"n{offset}", tuple(words), tuple(sorted(members[offset])))
        for offset, words in words_of.items()
    ]
    groups.sort(key=lambda g: (-len(g.classes), g.wnid))

    last_words = {name.lower().split()[-1] for g in groups for name in g.words}
    last_words |= {_spaced(lemma).lower().split()[-1] for w in wnids for lemma in synsets[w[1:]].lemmas}
    plurals = {p: s for p, s in sorted(read_plurals(wordnet).items()) if s in last_words and "_" not in p}
    return groups, plurals


def _ranges(indices: tuple[int, ...]) -> str:
    """'151-268 270' for 151, 152, ..., 268, 270."""
    parts, start = [], None
    for i, index in enumerate(indices):
        if start is None:
            start = index
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            parts.append(str(start) if start == index else f"{start}-{index}")
            start = None
    return " ".join(parts)


def render(groups: list[Group], plurals: dict[str, str]) -> tuple[str, str]:
    """The text of the two data files."""
    hierarchy = [
        "# ImageNet-1k class groups from WordNet 3.0 hypernyms; made by tools/make_hierarchy.py, do not edit.",
        "# wnid<TAB>words meaning the group, comma-separated, the first is its name<TAB>class indices (a-b: a range)",
    ]
    hierarchy += [f"{g.wnid}\t{', '.join(g.words)}\t{_ranges(g.classes)}" for g in groups]
    plural_lines = [
        "# Irregular plurals of words naming ImageNet classes or groups, from WordNet 3.0's noun.exc."
    ]
    plural_lines += [f"{p}\t{s}" for p, s in plurals.items()]
    return "\n".join(hierarchy) + "\n", "\n".join(plural_lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--wordnet", type=Path, default=WORDNET, help="folder holding data.noun and index.noun"
    )
    parser.add_argument("--out", type=Path, default=DATA, help="folder to write the two data files into")
    args = parser.parse_args(argv)
    if not (args.wordnet / "data.noun").is_file():
        print(
            f"error: no WordNet 3.0 data.noun in {args.wordnet} (apt-get install wordnet-base)",
            file=sys.stderr,
        )
        return 1
    groups, plurals = derive(args.wordnet)
    hierarchy, plural_text = render(groups, plurals)
    (args.out / HIERARCHY).write_text(hierarchy, encoding="utf-8")
    (args.out / PLURALS).write_text(plural_text, encoding="utf-8")
    print(f"{len(groups)} groups, {len(plurals)} irregular plurals written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
