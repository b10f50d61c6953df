"""Shared fixtures: real photos (caltech-dev beside the checkout, skimage samples) and indexed collections."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CALTECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "caltech-dev"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the whole session (the user's own is never touched).

    The export, its checks against torch, the int8 preparation and the word tables are made once,
    as on a user's first run, and every test and CLI subprocess shares them. `SEMSEARCH_TEST_CACHE`
    names a folder to keep them between sessions while iterating locally.
    """
    path = Path(os.environ.get("SEMSEARCH_TEST_CACHE") or tmp_path_factory.mktemp("model-cache"))
    patch = pytest.MonkeyPatch()
    patch.setenv("SEMSEARCH_CACHE", str(path))
    yield path
    patch.undo()


@pytest.fixture(scope="session")
def caltech() -> Path:
    """The caltech-dev photo set (30 class folders); tests that need it skip where it is absent."""
    if not CALTECH.is_dir():
        pytest.skip(f"caltech-dev photos not found at {CALTECH}")
    return CALTECH


@pytest.fixture(scope="session")
def caltech_collection(caltech, tmp_path_factory):
    """caltech-dev indexed once for the whole session (read-only for tests)."""
    from semsearch.collection import Collection

    db = tmp_path_factory.mktemp("caltech-db")
    with Collection(db, writable=True) as collection:
        report = collection.sync(caltech)
    assert report.added > 1000
    return db


@pytest.fixture
def small_photos(caltech, tmp_path) -> Path:
    """A writable folder with 3 classes x 4 real photos, for tests that change files."""
    folder = tmp_path / "photos"
    for name in ("crocodile", "laptop", "soccer_ball"):
        (folder / name).mkdir(parents=True)
        for src in sorted((caltech / name).iterdir())[:4]:
            shutil.copy2(src, folder / name / src.name)
    return folder


TINY_WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "an",
    "cat",
    "dog",
    "running",
    "on",
    "grass",
    "two",
    "people",
    "riding",
    "bicycles",
    "down",
    "city",
    "street",
    "at",
    "night",
    "coffee",
    "red",
    "car",
    "parked",
    "next",
    "to",
    "white",
    "building",
    "astronaut",
    "moon",
    "over",
    "sea",
    "plate",
    "food",
    "wooden",
    "table",
    "beach",
    "boat",
    "water",
    "crocodile",
    "laptop",
    "soccer",
    "ball",
]


def make_tiny_clip(folder: Path, kind: str = "clip") -> Path:
    """A tiny, randomly initialised CLIP (or SigLIP) model folder as `save_pretrained` writes one
    (config, weights, tokenizer.json, preprocessor config): no such weights exist offline, so the whole
    path is tested with this."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    specials = ["<|startoftext|>", "<|endoftext|>", "[UNK]"]
    vocab = {t: i for i, t in enumerate([*specials, *dict.fromkeys(TINY_WORDS)])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)],
    )
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text('{"pad_token": "<|endoftext|>", "model_max_length": 77}')
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2}
    text = {**layers, "vocab_size": len(vocab), "max_position_embeddings": 77}
    text |= {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
    vision = {**layers, "image_size": 32, "patch_size": 8}
    torch.manual_seed(0)
    if kind == "siglip":  # resizes to the square, pads texts to a fixed length, no projection layer
        text["max_position_embeddings"] = 16
        SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(str(folder))
        SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(folder))
        return folder
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    CLIPModel(config).save_pretrained(str(folder))
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip") / "model")
