"""Encoders on the protocol: the registry, CLIP-family models (a tiny random CLIP made here), MiniLM
through ONNX + tokenizers; each export checked against the untouched torch model."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from semsearch.encoders import clip as clip_mod
from semsearch.encoders.base import ImageModel
from semsearch.encoders.registry import load_image_model
from semsearch.encoders.runtime import EXPORT_MIN_COSINE, recorded
from semsearch.encoders.samples import check_photos
from semsearch.errors import ModelError

SENTENCES = [
    "a dog running on grass",
    "a child in a red shirt",
    "x",
    "Café au lait, naïve façade — 東京 🚲",
    "the quick brown fox jumps over the lazy dog " * 40,  # past the 256-token window
]


def test_registry_names() -> None:
    lite0 = load_image_model("lite0")
    assert isinstance(lite0, ImageModel)
    assert lite0.identity == "efficientnet-lite0" and [s.name for s in lite0.spaces] == ["features", "logits"]
    assert load_image_model("efficientnet:lite0") is not None
    for bad in ("lite9", "nope:thing", "clip:", "efficientnet:"):
        with pytest.raises(ModelError, match="unknown|no model folder|choose"):
            load_image_model(bad)


def test_clip_exports_pass_their_checks(tiny_clip: Path) -> None:
    model = load_image_model(f"clip:{tiny_clip}")
    assert isinstance(model, ImageModel) and model.classifier() is None
    pixels = check_photos(model.pixels.size, "crop")
    vectors = model.encode(pixels)
    assert list(vectors) == ["clip"] and vectors["clip"].shape == (len(pixels), 16)
    np.testing.assert_allclose(np.linalg.norm(vectors["clip"], axis=1), 1.0, atol=1e-5)
    text = model.text_model()
    words = text.encode(["a photo of a cat", "a dog"])
    assert words.shape == (2, 16)
    for graph in clip_mod._graphs(str(tiny_clip)):
        decision = recorded(graph.key)
        assert decision["runtime"] == "onnx", decision
        assert decision["check"]["min_cosine"] >= EXPORT_MIN_COSINE


def test_siglip_type_models_load_through_the_same_auto_classes(tmp_path: Path) -> None:
    """A SigLIP folder: squashed (not cropped) input, fixed-length text, both exports checked."""
    from conftest import make_tiny_clip

    folder = make_tiny_clip(tmp_path / "siglip", kind="siglip")
    model = load_image_model(f"clip:{folder}")
    assert model.identity.startswith("siglip-") and model.pixels.geometry == "squash"
    vectors = model.encode(check_photos(model.pixels.size, "squash"))["clip"]
    assert vectors.shape == (8, 32)
    texts = ["a photo of a cat", "two people riding bicycles down a city street at night"]
    alone = np.concatenate([model.text_model().encode([t]) for t in texts])
    np.testing.assert_allclose(model.text_model().encode(texts), alone, atol=1e-5)
    for graph in clip_mod._graphs(str(folder)):
        assert recorded(graph.key)["check"]["min_cosine"] >= EXPORT_MIN_COSINE


def test_clip_matches_transformers(tiny_clip: Path) -> None:
    """Our preprocessing, tokenising and exported towers give what transformers gives on the same photo/text."""
    import torch
    from PIL import Image
    from skimage import data
    from transformers import CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    model = load_image_model(f"clip:{tiny_clip}")
    reference = CLIPModel.from_pretrained(str(tiny_clip)).eval()
    photo = data.chelsea()
    processed = CLIPImageProcessor.from_pretrained(str(tiny_clip))(
        Image.fromarray(photo), return_tensors="np"
    )
    ours = clip_mod._Preprocessor(tiny_clip)(_crop(photo, model.pixels.size))
    assert ours.shape == processed["pixel_values"].shape
    assert np.abs(ours - processed["pixel_values"]).mean() < 0.1  # bilinear vs bicubic resampling only
    with torch.no_grad():
        want = reference.get_image_features(pixel_values=torch.from_numpy(processed["pixel_values"]))
        want = clip_mod._pooled(want).numpy()
    got = model.encode(_crop(photo, model.pixels.size))["clip"]
    assert float(np.sum(got * want / np.linalg.norm(want))) > 0.99

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(tiny_clip / "tokenizer.json"), pad_token="<|endoftext|>"
    )
    texts = ["a photo of a cat", "two people riding bicycles down a city street at night", "coffee"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = clip_mod._pooled(reference.get_text_features(**batch)).numpy()
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    got = model.text_model().encode(texts)
    np.testing.assert_allclose(np.sum(got * want, axis=1), 1.0, atol=1e-4)
    # padding never changes a text's vector: one at a time equals batched
    alone = np.concatenate([model.text_model().encode([t]) for t in texts])
    np.testing.assert_allclose(alone, got, atol=1e-5)


def _crop(photo: np.ndarray, size: int) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    from semsearch.media import load_image

    buffer = BytesIO()
    Image.fromarray(photo).save(buffer, "PNG")
    return load_image(buffer.getvalue(), size, "crop")[None]


def test_bad_clip_folders_are_refused(tiny_clip: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model folder"):
        load_image_model(f"clip:{tmp_path / 'missing'}")
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_clip, no_tokenizer)
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="tokenizer.json"):
        load_image_model(f"clip:{no_tokenizer}").text_model()
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_clip, no_weights)
    for weights in no_weights.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelError, match="no weights"):
        load_image_model(f"clip:{no_weights}")


def test_minilm_onnx_equals_sentence_transformers() -> None:
    from sentence_transformers import SentenceTransformer

    from semsearch.encoders.text import SentenceEncoder, _model_folder

    ours = SentenceEncoder().encode(SENTENCES)
    reference = SentenceTransformer(str(_model_folder()), device="cpu")
    want = reference.encode(SENTENCES, normalize_embeddings=True, show_progress_bar=False)
    np.testing.assert_allclose(np.sum(ours * want, axis=1), 1.0, atol=1e-4)


def test_minilm_query_imports_neither_torch_nor_transformers() -> None:
    code = (
        "import sys\n"
        "from semsearch.encoders.text import SentenceEncoder\n"
        "v = SentenceEncoder().encode(['a dog on the beach'])\n"
        "assert v.shape == (1, 384)\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    from semsearch.encoders.text import SentenceEncoder

    SentenceEncoder()  # prepared here (export + check need torch), so the subprocess is a warm query
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_clip_collection_answers_every_query_type(
    tiny_clip: Path, small_photos: Path, tmp_path: Path
) -> None:
    """Index, text, image, mixed queries, tags and the web API all work in a CLIP model's own space."""
    from fastapi.testclient import TestClient

    from semsearch.collection import Collection
    from semsearch.errors import CollectionError
    from semsearch.server.app import create_app

    name = f"clip:{tiny_clip}"
    db = tmp_path / "db"
    with Collection(db, writable=True, model=name) as collection:
        report = collection.sync(small_photos)
        assert report.added == 12 and report.runtime.startswith("onnx")
        stats = collection.stats()
    assert stats["spaces"] == ["clip"] and stats["model_name"] == name
    assert sorted(p.name for p in (db / "index").iterdir()) == ["clip.idx"]  # no derived word space
    photo = sorted((small_photos / "laptop").iterdir())[0]
    with Collection(db) as collection:  # the model comes from the collection, not from a flag
        assert collection.model_name == name
        own = collection.similar(str(photo), k=3)
        assert len(own) == 3 and str(photo) not in [h.path for h in own]
        words = collection.search("a photo of a laptop", k=12)
        assert len(words) == 12 and len({h.id for h in words}) == 12
        # the text query is the CLIP text tower's vector: the top hit is the photo nearest to it
        query = collection.model.text_model().encode(["a photo of a laptop"])[0]
        stored = collection.store.snapshot(["clip"])
        assert words[0].id == int(stored.ids[np.argmax(stored.vectors["clip"] @ query)])
        mixed = collection.search(f"laptop + {photo}", k=3)
        own_vector = stored.vectors["clip"][list(stored.paths).index(str(photo))]
        want = collection.model.text_model().encode(["laptop"])[0] + own_vector
        assert mixed[0].id == int(stored.ids[np.argmax(stored.vectors["clip"] @ want)])
        tags = collection.tags(str(photo), k=5)
        assert len(tags) == 5 and all(isinstance(w, str) for w, _ in tags)
        with pytest.raises(ModelError, match="no ImageNet classifier"):
            collection.similar(str(photo), focus="laptop")
    with pytest.raises(CollectionError, match="made with clip"):
        Collection(db, writable=True, model="lite0")
    client = TestClient(create_app(db), base_url="http://127.0.0.1:8000")  # a Host the server accepts
    found = client.get("/api/search", params={"q": "a dog on the grass", "k": 4})
    assert found.status_code == 200 and len(found.json()) == 4
    assert client.get("/api/stats").json()["spaces"] == ["clip"]
