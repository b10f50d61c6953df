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
