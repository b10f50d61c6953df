"""The EfficientNet-Lite encoder (real weights, real photos) and the encode_paths pipeline."""

from __future__ import annotations

import platform
import shutil
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


@pytest.fixture
def cache(model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of its own for a test that breaks a step of the preparation on purpose.

    The other steps reuse the session's real fp32 export (copied in, never re-exported), so each such
    test pays only for the step it breaks.
    """
    good = image_mod._cache_paths(image_mod.model_spec("lite0"))["onnx"]
    ImageEncoder("lite0", runtime="onnx")  # the session's export exists before the cache moves
    monkeypatch.setenv("SEMSEARCH_CACHE", str(tmp_path))
    monkeypatch.setattr(image_mod, "_export_onnx", lambda name, path: shutil.copyfile(good, path))
    return tmp_path


@pytest.fixture(scope="module")
def encoder() -> ImageEncoder:
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
        torch.onnx.export(
            wrapper,
            (torch.zeros(1, 3, 224, 224),),
            str(path),
            input_names=["pixels"],
            output_names=["features", "logits"],
            dynamic_axes={"pixels": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )

    monkeypatch.setattr(image_mod, "_export_onnx", broken_export)
    meta = image_mod.prepare("lite0", force=True)
    assert meta["runtime"] == "torch"
    assert "error" not in meta["check"], meta["check"]  # it exported fine, and was caught by the check
    assert meta["check"]["min_cosine"] < 0.999 or meta["check"]["top1_agree"] < 1.0
    assert not list((cache / "models").glob("*.onnx"))
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

    monkeypatch.setattr(image_mod, "_quantize_int8", corrupt)
    meta = image_mod.prepare("lite0", force=True)
    assert meta["check"]["top1_agree"] == 1.0  # the fp32 export itself is fine
    assert "error" in meta["check_int8"], meta["check_int8"]
    assert meta["runtime"] in ("onnx", "torch")
    assert not list((cache / "models").glob("*.int8*.onnx"))
    with pytest.raises(image_mod.ModelError):
        ImageEncoder("lite0", runtime="onnx-int8")


def test_badly_calibrated_int8_is_refused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An int8 model that loads but disagrees (activation ranges calibrated on blank frames) fails the bar."""
    monkeypatch.setattr(
        image_mod, "calibration_photos", lambda size: np.full((8, size, size, 3), 127, np.uint8)
    )
    meta = image_mod.prepare("lite0", force=True)
    assert "error" not in meta["check_int8"], meta["check_int8"]  # it quantised and ran, and was caught
    assert not image_mod.int8_passes(meta["check_int8"]), meta["check_int8"]
    assert meta["runtime"] in ("onnx", "torch")
    assert not list((cache / "models").glob("*.int8*.onnx"))


def test_warm_path_does_not_import_torch(encoder: ImageEncoder) -> None:
    code = (
        "import sys\n"
        "from semsearch.encoders.image import classifier_weights, load_encoder\n"
        "w, b = classifier_weights('lite0'); assert w.shape == (1000, 1280)\n"
        "enc = load_encoder('lite0')\n"
        "assert enc.runtime in ('onnx', 'onnx-int8'), enc.runtime\n"
        "assert 'torch' not in sys.modules, 'torch imported on the warm path'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_encode_paths_each_once(encoder: ImageEncoder, tmp_path: Path) -> None:
    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    paths: list[Path] = []
    for i in range(7):
        p = tmp_path / f"good{i}.jpg"
        Image.fromarray(photos[i % 4]).save(p, "JPEG")
        paths.append(p)
    bad = {
        tmp_path / "empty.jpg": b"",
        tmp_path / "text.png": b"hello world",
        tmp_path / "cut.jpg": paths[0].read_bytes()[:3000],
    }
    for p, raw in bad.items():
        p.write_bytes(raw)
    missing = tmp_path / "missing.jpg"
    order = [
        *paths[:2],
        tmp_path / "empty.jpg",
        *paths[2:5],
        tmp_path / "text.png",
        missing,
        *paths[5:],
        tmp_path / "cut.jpg",
    ]

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
    assert skipped == {
        tmp_path / "empty.jpg": "empty file",
        tmp_path / "text.png": "not an image",
        missing: "file not found",
        tmp_path / "cut.jpg": "truncated image",
    }
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


# ---------------------------------------------------------------- int8 on CPUs without VNNI
#
# ONNX Runtime's int8 kernels add neighbouring uint8 x int8 products into a saturating int16 on CPUs
# without VNNI (AVX2-only). qemu-user emulates such a CPU (`-cpu Haswell`: AVX2, FMA, no AVX-512), so
# the check runs there whatever CPU runs the suite. A tiny model whose every pair saturates shows
# that the emulated kernels really are the saturating ones; then the real int8 model must agree.

QEMU = shutil.which("qemu-x86_64")
needs_qemu = pytest.mark.skipif(
    QEMU is None or platform.machine() != "x86_64",
    reason="qemu-x86_64 (Debian package qemu-user) is needed to emulate an AVX2-only CPU",
)

RUN_ORT = """
import sys, numpy as np, onnxruntime as ort
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.log_severity_level = 3
out = {}
for name, model, x in zip(sys.argv[2::3], sys.argv[3::3], sys.argv[4::3]):
    s = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    out[name] = s.run(None, {s.get_inputs()[0].name: np.load(x)})[0]
np.savez(sys.argv[1], **out)
"""


def _saturating_model(path: Path) -> np.ndarray:
    """A float 1x1 conv (64 -> 16 channels, equal positive weights) after ReLU6; returns inputs at 6.0."""
    import onnx
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.full((16, 64, 1, 1), 0.05, np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Clip", ["x", "lo", "hi"], ["r"]),
            helper.make_node("Conv", ["r", "w"], ["y"]),
        ],
        "pairs",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 64, 4, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 16, 4, 4])],
        [weight, numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return np.full((2, 64, 4, 4), 6.0, np.float32)


@pytest.fixture(scope="module")
def emulated(encoder: ImageEncoder, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Outputs of the tiny models and of the real int8 model, computed on an emulated AVX2-only CPU."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from semsearch.encoders.quantize import quantize

    work = tmp_path_factory.mktemp("avx2")
    x = _saturating_model(work / "float.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"x": x}])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(
        str(work / "float.onnx"),
        str(work / "plain.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    quantize(work / "float.onnx", work / "ours.onnx", x, input_name="x")
    np.save(work / "x.npy", x)
    np.save(work / "pixels.npy", image_mod.preprocess(check_photos(224)))
    int8 = image_mod._cache_paths(image_mod.model_spec("lite0"))["onnx-int8"]
    ImageEncoder("lite0", runtime="onnx-int8")  # makes the int8 model if this cache has none yet
    args = [str(work / "out.npz")]
    for name, model, inputs in (
        ("float", "float.onnx", "x.npy"),
        ("plain", "plain.onnx", "x.npy"),
        ("ours", "ours.onnx", "x.npy"),
    ):
        args += [name, str(work / model), str(work / inputs)]
    args += ["lite0", str(int8), str(work / "pixels.npy")]
    subprocess.run(
        [QEMU, "-cpu", "Haswell", sys.executable, "-c", RUN_ORT, *args],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return dict(np.load(work / "out.npz"))


@needs_qemu
def test_emulated_cpu_saturates_a_plain_int8_model(emulated: dict[str, np.ndarray]) -> None:
    """The emulation really exercises the saturating kernels: plain quantize_static goes wrong there."""
    want = emulated["float"]
    assert np.allclose(want, 6.0 * 0.05 * 64, rtol=1e-3)
    assert not np.allclose(emulated["plain"], want, rtol=0.05)  # saturated int16 pairs
    np.testing.assert_allclose(emulated["ours"], want, rtol=0.02)  # saturation-free scales


@needs_qemu
def test_int8_model_is_the_same_on_avx2_only_cpus(emulated: dict[str, np.ndarray]) -> None:
    """The real int8 model gives the same features on an AVX2-only CPU as here, and passes its bar there."""
    pixels = check_photos(224)
    int8 = ImageEncoder("lite0", runtime="onnx-int8")
    here, _ = int8.encode(pixels)
    there = emulated["lite0"] / np.linalg.norm(emulated["lite0"], axis=1, keepdims=True)
    assert np.all(np.sum(here * there, axis=1) > 0.9999)
    ref = image_mod._torch_run("lite0", image_mod.preprocess(pixels))
    _, logits = int8._session.run(None, {"pixels": image_mod.preprocess(pixels)})
    assert image_mod.int8_passes(compare_outputs(ref, (emulated["lite0"], logits)))


def test_int8_weights_cannot_saturate(encoder: ImageEncoder) -> None:
    """Every paired int8 weight tensor of the model keeps same-sign neighbours within 128 (no int16 overflow)."""
    import onnx
    from onnx import numpy_helper

    from semsearch.encoders.quantize import PAIR_LIMIT, pair_sums

    ImageEncoder("lite0", runtime="onnx-int8")
    model = onnx.load(str(image_mod._cache_paths(image_mod.model_spec("lite0"))["onnx-int8"]))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    checked = 0
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type in ("Conv", "Gemm") and group == 1:
            q = init[producer[node.input[1]].input[0]]
            assert q.dtype == np.int8
            assert pair_sums(q.astype(np.int32)).max() <= PAIR_LIMIT, node.name
            checked += 1
    assert checked >= 30  # 33 dense convolutions and the classifier in lite0
