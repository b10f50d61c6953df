"""Folder names read as labels: plurals made singular, real singulars kept, dropped labels reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch.labels import label_text, label_vectors

CALTECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "caltech-dev"
CALTECH_NAMES = sorted(p.name for p in CALTECH.iterdir()) if CALTECH.is_dir() else ["soccer_ball", "ibis"]


def _plural(name: str) -> str:
    """'soccer_ball' → 'soccer_balls', 'ibis' → 'ibises', 'dragonfly' → 'dragonflies'."""
    from lemminflect import getInflection

    head, _, last = name.rpartition("_")
    return (head + "_" if head else "") + getInflection(last, "NNS")[0]


@pytest.mark.parametrize(
    ("folder", "text"),
    [
        ("roses", "rose"),
        ("Sunflowers", "sunflower"),
        ("Leopards", "leopard"),
        ("Faces_easy", "face easy"),
        ("dining_tables", "dining table"),
        ("001.Black_footed_Albatross", "black footed albatross"),
        ("wolves", "wolf"),
        ("cacti", "cactus"),
        ("okapis", "okapi"),
        ("bass", "bass"),
        ("ibis", "ibis"),
        ("nautilus", "nautilus"),
        ("platypus", "platypus"),
        ("okapi", "okapi"),
        ("scissors", "scissors"),
        ("gerenuk", "gerenuk"),
        ("2024-07", ""),
    ],
)
def test_label_text(folder, text):
    assert label_text(folder) == text


@given(st.sampled_from(CALTECH_NAMES))
def test_plural_folders_read_as_their_singular(name):
    assert label_text(_plural(name)) == label_text(name) == " ".join(name.lower().split("_"))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_label_text_is_words_and_stable(name):
    from semsearch.encoders.words import tokenize

    text = label_text(name)
    assert text.split() == tokenize(text) and len(text.split()) == len(tokenize(name))
    assert label_text(text) == text


def test_label_vectors_report_what_has_no_vector():
    from semsearch.encoders.words import load_words

    glove = load_words()
    vectors, dropped = label_vectors(glove, ["roses", "gerenuk", "___", "soccer_balls"])
    assert sorted(vectors) == ["roses", "soccer_balls"]
    assert (vectors["roses"] == glove.embed_label("rose")).all()
    assert set(dropped) == {"gerenuk", "___"}
    assert "gerenuk" in dropped["gerenuk"] and glove.identity in dropped["gerenuk"]
    assert "no letters" in dropped["___"]


def test_eval_reads_plural_folders_and_reports_dropped_labels(caltech, tmp_path, capsys):
    """The same real photos under singular and plural folder names score alike; a folder whose name has
    no word vector is listed with its reason, in the JSON and in the table."""
    from semsearch.cli import main

    classes = ["crocodile", "laptop", "soccer_ball", "ant", "wrench"]
    results = {}
    for form in ("singular", "plural"):
        root = tmp_path / form
        for name in classes:
            folder = root / (name if form == "singular" else _plural(name))
            folder.mkdir(parents=True)
            for src in sorted((caltech / name).iterdir())[:6]:
                shutil.copy2(src, folder / src.name)
        (root / "gerenuk").mkdir()
        for src in sorted((caltech / "okapi").iterdir())[:3]:
            shutil.copy2(src, root / "gerenuk" / src.name)
        main(["eval", str(root), "--json"])
        results[form] = json.loads(capsys.readouterr().out)
    singular, plural = results["singular"], results["plural"]
    by_singular = {_plural(n): v for n, v in singular["per_class_text_precision"].items()}
    assert plural["per_class_text_precision"] == by_singular
    assert plural["text_precision@10"] == singular["text_precision@10"] >= 0.5
    assert plural["labels_read_as"]["soccer_balls"] == "soccer ball"
    for result in results.values():
        assert [d["label"] for d in result["dropped_labels"]] == ["gerenuk"]
        assert "gerenuk" in result["dropped_labels"][0]["reason"]
    main(["eval", str(tmp_path / "plural")])
    table = capsys.readouterr().out
    assert "dropped label 'gerenuk'" in table and "soccer_balls" in table
