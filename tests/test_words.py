"""Word vectors: real packaged GloVe 6B 50-d, and a GloVe text file converted once to a binary cache."""

from __future__ import annotations

import numpy as np
import pytest

from semsearch.encoders import words as words_mod
from semsearch.encoders.words import load_words
from semsearch.errors import EmptyQueryError, ModelError, UnknownWordError


@pytest.fixture(scope="module")
def glove():
    return load_words()


def test_packaged_table_is_normalised(glove):
    assert glove.identity == "glove-6b-50d+abtt3"
    assert glove.dim == 50 and len(glove.words) == glove.vectors.shape[0] == 400000
    norms = np.linalg.norm(np.asarray(glove.vectors[:1000]), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)


def test_nearest_neighbours_are_sensible(glove):
    king = [w for w, _ in glove.nearest(glove.vector("king"), 10, exclude={"king"})]
    assert "king" not in king
    assert {"queen", "prince"} <= set(king)
    frog = [w for w, _ in glove.nearest(glove.vector("frog"), 10, exclude={"frog"})]
    assert {"toad", "snake"} & set(frog)
    scores = [s for _, s in glove.nearest(glove.vector("frog"), 5)]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0, abs=1e-5)


def test_unknown_word_message(glove):
    assert "fwjwiwejiu" not in glove and "cat" in glove
    with pytest.raises(UnknownWordError) as info:
        glove.vector("fwjwiwejiu")
    assert str(info.value) == "word 'fwjwiwejiu' is not in the vocabulary"


def test_phrase_returns_unknown_words(glove):
    vector, unknown = glove.phrase("Black fwjwiwejiu cat qzxqzxqv")
    assert unknown == ["fwjwiwejiu", "qzxqzxqv"]
    expected = glove.vector("black") + glove.vector("cat")
    assert np.allclose(vector, expected / np.linalg.norm(expected), atol=1e-5)
    with pytest.raises(UnknownWordError, match="fwjwiwejiu"):
        glove.phrase("fwjwiwejiu qzxqzxqv")
    for empty in ("", "   ", "123 -- !!"):
        with pytest.raises(EmptyQueryError):
            glove.phrase(empty)


def test_label_of_folder_name(glove):
    v = glove.label("dining_table")
    expected = glove.vector("dining") + glove.vector("table")
    assert np.allclose(v, expected / np.linalg.norm(expected), atol=1e-5)
    assert glove.label("fwjwiwejiu_qzxqzxqv") is None


def _write_tiny_glove(path):
    rows = {"apple": [1, 0, 0], "banana": [0.9, 0.1, 0], "car": [0, 0, 2], "truck": [0, 0.1, 1]}
    path.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in rows.items()), "utf-8")


def test_glove_text_file_is_converted_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(words_mod, "_LOADED", {})
    src = tmp_path / "tiny.3d.txt"
    _write_tiny_glove(src)
    table = load_words(src)
    assert table.dim == 3 and table.words == ["apple", "banana", "car", "truck"]
    assert table.identity.startswith("glove:tiny.3d:3:")
    assert [w for w, _ in table.nearest(table.vector("apple"), 2)] == ["apple", "banana"]
    assert np.allclose(table.vector("car"), [0, 0, 1])

    cache = words_mod.cache_path_for(src)
    assert (cache / "vectors.npy").is_file() and (cache / "words.txt").is_file()
    # A fresh process-level load must come from the cache, not the text file: make parsing impossible.
    monkeypatch.setattr(words_mod, "_LOADED", {})
    monkeypatch.setattr(words_mod, "_parse_glove_text", lambda p: pytest.fail("re-parsed the text file"))
    again = load_words(src)
    assert again.identity == table.identity
    assert isinstance(again.vectors, np.memmap)
    assert np.array_equal(np.asarray(again.vectors), np.asarray(table.vectors))


def test_changed_glove_file_is_reconverted(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(words_mod, "_LOADED", {})
    src = tmp_path / "tiny.txt"
    _write_tiny_glove(src)
    first = load_words(src)
    src.write_text("apple 0 1\nzebra 1 0\n", "utf-8")
    second = load_words(src)
    assert second.dim == 2 and second.words == ["apple", "zebra"]
    assert second.identity != first.identity


def test_bad_glove_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMSEARCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelError):
        load_words(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("apple 1 2 3\nbanana 1 x 3\n", "utf-8")
    with pytest.raises(ModelError):
        load_words(bad)
