"""Folder names as labels: 'Roses', 'dining_table', 'Faces_easy' → the words a text space should match.

People name photo folders by plural nouns ('roses', 'leopards'), while a query and the ImageNet class
names are singular; in GloVe 'roses' sits far from 'rose' photos (measured on caltech-dev folders renamed
to plurals: class-name → image precision@10 fell to 0.0-0.2 where the singular scored 0.8). So each word
of a folder name is reduced to its noun lemma with LemmInflect's dictionary ('roses' → 'rose', 'wolves' →
'wolf', 'cacti' → 'cactus'), which keeps real singulars that end in -s ('bass', 'ibis', 'lens') and
plural-only nouns ('scissors', 'jeans'). A word outside its dictionary is reduced by its rules only when
the word table knows the result ('okapis' → 'okapi', never 'okapi' → 'okapus').
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache

import numpy as np

from semsearch.encoders.words import load_words, tokenize
from semsearch.errors import SemsearchError


@cache
def lemma(word: str) -> str:
    """The singular of a (lower-case) noun, or the word itself when it is singular or unknown."""
    from lemminflect import getLemma

    known = getLemma(word, upos="NOUN", lemmatize_oov=False)
    if known:  # the most common lemma first: 'letters' → 'letter' (not the 'letters' of literature)
        return known[0]
    guessed = getLemma(word, upos="NOUN")
    return guessed[0] if guessed and guessed[0] and guessed[0] in load_words() else word


def label_text(folder_name: str) -> str:
    """'Sunflowers' → 'sunflower', 'dining_tables' → 'dining table', '001.Black_footed_Albatross' →
    'black footed albatross': lower-case singular words, '' when the name has no letters."""
    return " ".join(lemma(w) for w in tokenize(folder_name))


def label_vectors(
    space, names: Iterable[str], named: Callable[[str], np.ndarray | None] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Text-space vectors of folder names (from `named` where it knows the whole name, e.g. ConSE's
    vector of a class or group name), and the names that have none with the reason why."""
    vectors: dict[str, np.ndarray] = {}
    dropped: dict[str, str] = {}
    for name in names:
        text = label_text(name)
        if not text:
            dropped[name] = "the name has no letters"
            continue
        try:
            vector = named(text) if named is not None else None
            vector = space.embed_label(text) if vector is None else vector
        except SemsearchError as exc:
            vector, reason = None, str(exc)
        else:
            reason = f"no word of {text!r} is in {space.identity}"
        if vector is None:
            dropped[name] = reason
        else:
            vectors[name] = np.asarray(vector, np.float32)
    return vectors, dropped
