"""The EfficientNet-Lite encoder (real weights, real photos) and the encode_paths pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from semsearch.encoders import image as image_mod
from semsearch.encoders.image import ImageEncoder, check_photos, classifier_weights, compare_outputs
from semsearch.pipeline import EncodedBatch, Skipped, encode_paths


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache, so the export + check really runs here (never the user's cache)."""
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("SEMSEARCH_CACHE")
    os.environ["SEMSEARCH_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SEMSEARCH_CACHE", None)
    else:
        os.environ["SEMSEARCH_CACHE"] = old


@pytest.fixture(scope="module")
def encoder(cache: Path) -> ImageEncoder:
    return ImageEncoder("lite0", runtime="onnx")


def test_onnx_matches_torch(encoder: ImageEncoder) -> None:
    pixels = check_photos(encoder.input_size)
    assert len(pixels) >= 6
    x = image_mod.preprocess(pixels)
    ref = image_mod._torch_run("lite0", x)  # the untouched torch model
    feats, logits = encoder.encode(pixels)
    stats = compare_outputs(ref, (feats, logits))
    assert stats["top1_agree"] == 1.0
    assert stats["min_cosine"] > 0.999
    assert stats["max_logit_diff"] < 1e-2
    meta = image_mod.prepare("lite0")
    assert meta["runtime"] in image_mod.RUNTIMES and meta["check"]["top1_agree"] == 1.0


def test_known_labels_and_normalised(encoder: ImageEncoder) -> None:
    pixels = check_photos(encoder.input_size)[:2]  # chelsea, coffee
    feats, logits = encoder.encode(pixels)
    assert feats.shape == (2, 1280) and feats.dtype == np.float32
    assert logits.shape == (2, 1000) and logits.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    top = logits.argmax(1)
    assert 281 <= top[0] <= 285, top  # chelsea: a cat
    assert top[1] in (967, 968), top  # coffee: espresso or cup
    # the stored classifier reproduces the logits from the (unnormalised) features' direction
    w, b = classifier_weights("lite0")
    assert w.shape == (1000, 1280) and b.shape == (1000,)
    torch_feats, torch_logits = image_mod._torch_run("lite0", image_mod.preprocess(pixels))
    np.testing.assert_allclose(torch_feats @ w.T + b, torch_logits, atol=1e-3)


def test_torch_runtime_agrees(encoder: ImageEncoder) -> None:
    torch_enc = ImageEncoder("lite0", runtime="torch")
    pixels = check_photos(224)[:3]
    a, la = encoder.encode(pixels)
    b, lb = torch_enc.encode(pixels)
    assert np.all(np.sum(a * b, axis=1) > 0.999)
    assert np.array_equal(la.argmax(1), lb.argmax(1))


def test_bad_export_is_refused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export that disagrees with torch (here: Swish swapped in) is deleted and not used."""
    import copy

    import torch

    def broken_export(name: str, path: Path) -> None:
        model, _ = image_mod._torch_model(name)
        bad = copy.deepcopy(model)
        bad.set_swish(memory_efficient=False)  # the classic mistake
        wrapper = image_mod._features_and_logits_module(bad)
        torch.onnx.export(wrapper, (torch.zeros(1, 3, 224, 224),), str(path), input_names=["pixels"],
                          output_names=["features", "logits"], dynamic_axes={"pixels": {0: "n"}},
                          opset_version=17, dynamo=False)

    monkeypatch.setenv("SEMSEARCH_CACHE", str(cache / "bad"))
    monkeypatch.setattr(image_mod, "_export_onnx", broken_export)
    meta = image_mod.prepare("lite0", force=True)
    assert meta["runtime"] == "torch"
    assert "error" not in meta["check"], meta["check"]  # it exported fine, and was caught by the check
    assert meta["check"]["min_cosine"] < 0.999 or meta["check"]["top1_agree"] < 1.0
    assert not list((cache / "bad" / "models").glob("*.onnx"))
    with pytest.raises(image_mod.ModelError):
        ImageEncoder("lite0", runtime="onnx")


def test_int8_passes_its_check(encoder: ImageEncoder) -> None:
    """The int8 model agrees with torch within its bar (top-1 >= 7/8, min feature cosine >= 0.97)."""
    int8 = ImageEncoder("lite0", runtime="onnx-int8")
    assert int8.runtime == "onnx-int8"
    pixels = check_photos(int8.input_size)
    ref = image_mod._torch_run("lite0", image_mod.preprocess(pixels))
    stats = compare_outputs(ref, int8.encode(pixels))
    assert stats["top1_agree"] >= image_mod.INT8_MIN_TOP1 == 7 / 8, stats
    assert stats["min_cosine"] >= image_mod.INT8_MIN_FEATURE_COSINE >= 0.97, stats
    assert image_mod.int8_passes(stats)
    # close to the fp32 export too, and the bar is really looser than the fp32 one
    fp32_feats, _ = encoder.encode(pixels)
    assert np.all(np.sum(fp32_feats * int8.encode(pixels)[0], axis=1) > 0.97)
    meta = image_mod.prepare("lite0")
    assert image_mod.int8_passes(meta["check_int8"]), meta
    # the recorded choice is stable: a later prepare reads it instead of re-timing
    assert image_mod.prepare("lite0") == meta
    assert ImageEncoder("lite0").runtime == meta["runtime"]
    # the calibration photos never include the check photos (nor caltech-dev)
    calib = image_mod.calibration_photos(224)
    assert len(calib) >= 16
    assert not any(np.array_equal(c, p) for c in calib for p in pixels)


def test_broken_int8_is_refused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An int8 file that does not load (corrupt bytes) is deleted, recorded, and never chosen."""

    def corrupt(name: str, fp32_path: Path, path: Path) -> None:
        path.write_bytes(fp32_path.read_bytes()[:5000] + b"garbage" * 100)

    monkeypatch.setenv("SEMSEARCH_CACHE", str(cache / "bad8"))
    monkeypatch.setattr(image_mod, "_quantize_int8", corrupt)
    meta = image_mod.prepare("lite0", force=True)
    assert meta["check"]["top1_agree"] == 1.0  # the fp32 export itself is fine
    assert "error" in meta["check_int8"], meta["check_int8"]
    assert meta["runtime"] in ("onnx", "torch")
    assert not list((cache / "bad8" / "models").glob("*.int8.onnx"))
    with pytest.raises(image_mod.ModelError):
        ImageEncoder("lite0", runtime="onnx-int8")


def test_badly_calibrated_int8_is_refused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An int8 model that loads but disagrees (activation ranges calibrated on blank frames) fails the bar."""
    monkeypatch.setenv("SEMSEARCH_CACHE", str(cache / "blank8"))
    monkeypatch.setattr(image_mod, "calibration_photos", lambda size: np.full((8, size, size, 3), 127, np.uint8))
    meta = image_mod.prepare("lite0", force=True)
    assert "error" not in meta["check_int8"], meta["check_int8"]  # it quantised and ran, and was caught
    assert not image_mod.int8_passes(meta["check_int8"]), meta["check_int8"]
    assert meta["runtime"] in ("onnx", "torch")
    assert not list((cache / "blank8" / "models").glob("*.int8.onnx"))


def test_warm_path_does_not_import_torch(encoder: ImageEncoder, cache: Path) -> None:
    code = (
        "import sys\n"
        "from semsearch.encoders.image import classifier_weights, load_encoder\n"
        "w, b = classifier_weights('lite0'); assert w.shape == (1000, 1280)\n"
        "enc = load_encoder('lite0')\n"
        "assert enc.runtime in ('onnx', 'onnx-int8'), enc.runtime\n"
        "assert 'torch' not in sys.modules, 'torch imported on the warm path'\n"
    )
    env = {**os.environ, "SEMSEARCH_CACHE": str(cache)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_encode_paths_each_once(encoder: ImageEncoder, tmp_path: Path) -> None:
    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    paths: list[Path] = []
    for i in range(7):
        p = tmp_path / f"good{i}.jpg"
        Image.fromarray(photos[i % 4]).save(p, "JPEG")
        paths.append(p)
    bad = {tmp_path / "empty.jpg": b"", tmp_path / "text.png": b"hello world",
           tmp_path / "cut.jpg": paths[0].read_bytes()[:3000]}
    for p, raw in bad.items():
        p.write_bytes(raw)
    missing = tmp_path / "missing.jpg"
    order = [*paths[:2], tmp_path / "empty.jpg", *paths[2:5], tmp_path / "text.png", missing,
             *paths[5:], tmp_path / "cut.jpg"]

    results = list(encode_paths(order, encoder, batch_size=3))
    seen: list[Path] = []
    skipped: dict[Path, str] = {}
    for r in results:
        if isinstance(r, Skipped):
            skipped[r.path] = r.reason
            seen.append(r.path)
        else:
            assert isinstance(r, EncodedBatch)
            assert 1 <= len(r.paths) <= 3
            assert r.features.shape == (len(r.paths), 1280) and r.logits.shape == (len(r.paths), 1000)
            np.testing.assert_allclose(np.linalg.norm(r.features, axis=1), 1.0, atol=1e-5)
            seen.extend(r.paths)
    assert sorted(seen) == sorted(order) and len(seen) == len(order)
    assert skipped == {tmp_path / "empty.jpg": "empty file", tmp_path / "text.png": "not an image",
                       missing: "file not found", tmp_path / "cut.jpg": "truncated image"}
    # the features belong to their paths: good0 (chelsea) is a cat, good1 (coffee) is espresso/cup
    batches = [r for r in results if isinstance(r, EncodedBatch)]
    by_path = {p: row for r in batches for p, row in zip(r.paths, r.logits, strict=True)}
    assert 281 <= by_path[paths[0]].argmax() <= 285
    assert by_path[paths[1]].argmax() in (967, 968)
    assert list(encode_paths([], encoder)) == []
    # two batches inferred at once: same batches in the same order, same numbers, same skips
    # (a Skipped may come out earlier, ahead of batches still being inferred)
    again = list(encode_paths(order, encoder, batch_size=3, encode_workers=2))
    assert [r.paths for r in again if isinstance(r, EncodedBatch)] == [r.paths for r in batches]
    assert {r for r in again if isinstance(r, Skipped)} == {r for r in results if isinstance(r, Skipped)}
    for a, b in zip([r for r in again if isinstance(r, EncodedBatch)], batches, strict=True):
        np.testing.assert_allclose(a.features, b.features, atol=1e-5)
