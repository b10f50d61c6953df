"""ImageNet classes and their WordNet groups: focus by everyday words, plurals, synonyms, and the shipped data."""

from __future__ import annotations

import importlib.util
import sys
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch.classes import class_groups, class_names, class_synonyms, resolve_class, resolve_group
from semsearch.errors import UnknownClassError

TOOL = Path(__file__).resolve().parents[1] / "tools" / "make_hierarchy.py"
WORDNET = Path("/usr/share/wordnet")


def _names(indices) -> set[str]:
    return {class_names()[i] for i in indices}


def test_dog_is_the_118_dog_breeds():
    dog = resolve_group("dog")
    assert dog.name == "dog"
    assert dog.classes == tuple(range(151, 269))
    for word in ("dogs", "Dog", " domestic dog ", "Canis familiaris", "puppy", "puppies"):
        assert resolve_group(word).classes == dog.classes, word


@pytest.mark.parametrize(
    ("word", "inside", "outside"),
    [
        ("bird", {"goldfinch", "bald eagle", "flamingo", "king penguin"}, {"airliner", "tabby"}),
        ("birds", {"goldfinch", "ostrich"}, {"kite"} - {"kite"}),
        ("car", {"sports car", "convertible", "cab", "jeep"}, {"car wheel", "passenger car"}),
        ("fruit", {"Granny Smith", "strawberry", "banana", "pineapple"}, {"broccoli"}),
        ("cat", {"tabby", "Siamese cat", "Persian cat", "cougar", "lynx"}, {"lion", "tiger", "dalmatian"}),
        ("big cats", {"lion", "tiger", "leopard", "snow leopard", "jaguar", "cheetah"}, {"tabby"}),
        ("ball", {"soccer ball", "golf ball", "tennis ball", "basketball", "volleyball"}, {"balloon"}),
        ("horses", {"sorrel"}, {"zebra", "horse cart"}),
        ("insects", {"ant", "dragonfly", "monarch", "bee"}, {"scorpion", "tarantula"}),
        ("musical instrument", {"accordion", "sax", "violin", "grand piano"}, {"radio"}),
        ("chair", {"folding chair", "rocking chair", "barber chair", "throne"}, {"studio couch"}),
        ("wolves", {"timber wolf", "red wolf"}, {"dalmatian"}),
        ("boats", {"canoe", "speedboat", "lifeboat"}, {"paddle"}),
    ],
)
def test_everyday_words_mean_sensible_class_sets(word, inside, outside):
    found = _names(resolve_group(word).classes)
    assert inside <= found, (word, inside - found)
    assert not outside & found, (word, outside & found)


def test_person_means_the_three_imagenet_people():
    """ImageNet-1k has three person classes; WordNet's 'person' holds exactly those."""
    assert _names(resolve_group("person").classes) == {"ballplayer", "groom", "scuba diver"}
    assert (
        resolve_group("persons").classes
        == resolve_group("someone").classes
        == resolve_group("person").classes
    )


def test_class_names_and_indices_still_mean_one_class():
    assert resolve_group("Siamese cat").classes == (resolve_class("Siamese cat"),)
    assert resolve_group("siamese").name == "Siamese cat"
    assert resolve_group("285").classes == (285,)
    assert resolve_group(285).classes == (285,)
    assert resolve_group("tabby cats").classes == (resolve_class("tabby cat"),)


def test_words_whose_first_sense_is_elsewhere_do_not_hijack_a_group():
    """'wind' is a lemma of 'wind instrument' and 'machine' of 'car', but neither is what they usually mean."""
    assert resolve_group("machine").name == "machine"
    assert "sports car" not in _names(resolve_group("machine").classes)
    with pytest.raises(UnknownClassError):
        resolve_group("wind")
    # a class's display name (what the web page lists) keeps its class; a mere synonym yields to the group
    assert resolve_group("pot").classes == (resolve_class("pot"),)
    assert resolve_group("wagon").name == "wagon" and len(resolve_group("wagon").classes) > 1


def test_unknown_words_get_suggestions():
    with pytest.raises(UnknownClassError, match="did you mean.*'dog'"):
        resolve_group("dgo")
    with pytest.raises(UnknownClassError, match="out of range"):
        resolve_group("1000")
    with pytest.raises(UnknownClassError):
        resolve_group("zzqx")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([name for syns in class_synonyms() for name in syns]))
def test_every_class_synonym_resolves_to_its_class_or_the_group_it_usually_means(name):
    group = resolve_group(name)
    if len(group.classes) == 1 and name.lower() in {s.lower() for s in class_synonyms()[group.classes[0]]}:
        return  # its class, or a class whose name it shares ('Cardigan' the corgi, 'cardigan' the sweater)
    # only a synonym that is no class's display name, and whose first WordNet sense is a group, goes elsewhere
    assert name.lower() not in {n.lower() for n in class_names()} and group in class_groups(), (name, group)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(class_groups()))
def test_every_group_is_found_by_its_name_and_its_plural(group):
    is_class_name = any(group.name.lower() == n.lower() for syns in class_synonyms() for n in syns)
    assert resolve_group(group.name).classes == group.classes or is_class_name  # a class's own name wins
    assert 1 <= len(group.classes) <= 500 and list(group.classes) == sorted(set(group.classes))
    plural = group.name + ("es" if group.name.endswith(("s", "x", "ch", "sh")) else "s")
    assert resolve_group(plural).classes == resolve_group(group.name).classes, plural


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text_resolves_or_fails_with_one_clear_error(text):
    try:
        group = resolve_group(text)
    except UnknownClassError as exc:
        assert "\n" not in str(exc)
    else:
        assert group.classes and all(0 <= i < 1000 for i in group.classes)


def _tool():
    spec = importlib.util.spec_from_file_location("make_hierarchy", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    not (WORDNET / "data.noun").is_file(), reason="WordNet 3.0 (Debian wordnet-base) not installed"
)
def test_shipped_hierarchy_is_what_wordnet_gives():
    tool = _tool()
    hierarchy, plurals = tool.render(*tool.derive(WORDNET))
    data = resources.files("semsearch.data")
    assert data.joinpath(tool.HIERARCHY).read_text("utf-8") == hierarchy
    assert data.joinpath(tool.PLURALS).read_text("utf-8") == plurals
