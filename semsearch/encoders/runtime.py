"""How a model runs on this machine: ONNX Runtime (fp32 or int8) or torch, chosen once and remembered.

A model module (`efficientnet.py`, `clip.py`, `text.py`) describes *what* to run as a `Graph`: a
builder of the untouched torch module, real inputs to check it on, and optionally calibration inputs
for an int8 candidate. This module does the rest: export to ONNX once under `cache_dir()/models`,
check the export (and the int8 model made from it, see `quantize.py`) against torch, time the
candidates that pass, and record the choice in a JSON file beside the export. Later loads read that
decision and, on the ONNX path, never import torch; the choice is not re-timed, so the runtime (and
with it the exact vectors) of a model stays put on a machine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semsearch.errors import ModelError
from semsearch.paths import cache_dir, write_atomically
from semsearch.vectors import normalise

RUNTIMES = ("onnx", "onnx-int8", "torch")
#: ORT threads: both cores; decoding threads interleave with them (see pipeline.py).
DEFAULT_THREADS = 2
#: ORT worker threads spin while idle by default; with decode threads sharing the cores that burns
#: the time the decoders need, so it is off (measured in bench/embed.py).
ORT_SPINNING = False
#: Agreement required between the fp32 ONNX export and torch on the check inputs.
EXPORT_MIN_COSINE = 0.999
#: The int8 candidate's bar on the check photos. Measured for EfficientNet-Lite0: top-1 7/8, min cosine
#: 0.996 against torch, the same on an AVX-512 VNNI EPYC and on an emulated AVX2-only CPU. 0.97 refuses
#: a badly calibrated or saturating model (a plain `quantize_static` graph measured 0.86 and 6/8 on
#: AVX2); one of 8 top-1 flips is allowed because the features, not the logits, carry search (a
#: near-tie between two dog breeds may flip).
INT8_MIN_TOP1 = 7 / 8
INT8_MIN_COSINE = 0.97
#: int8 is chosen only when at least this much faster than the best fp32 runtime, so that timing
#: noise on a busy machine cannot flip the (recorded) choice between re-preparations.
INT8_MIN_SPEEDUP = 1.3
#: Bump when the set of candidates, the choice rule or the int8 recipe changes: older decisions (and
#: int8 files) are made again.
DECISION_VERSION = 3
#: Inputs per timed run: the check inputs repeated up to a typical indexing batch.
TIMING_BATCH = 32


@dataclass(frozen=True)
class Graph:
    """One exportable model graph, as a model module describes it to the runtime."""

    key: str  # cache file stem: the weights' identity and the module's export version
    build: Callable[[], Any]  # the untouched torch module, eval mode: inputs in `inputs` order → outputs
    check_inputs: Callable[[], dict[str, np.ndarray]]  # real inputs, batched along axis 0
    outputs: tuple[str, ...]  # the first is an embedding, checked by cosine
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)  # dynamic axes by tensor name
    calibration: Callable[[], dict[str, np.ndarray]] | None = None  # makes an int8 candidate
    classes: str | None = None  # an output whose argmax must agree with torch (top-1)


def dist_version(dist: str) -> str:
    """An installed distribution's version ("0" when missing): part of export cache keys, so a new
    release of a model package is exported again."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "0"


def model_paths(key: str) -> dict[str, Path]:
    base = cache_dir() / "models"
    base.mkdir(parents=True, exist_ok=True)
    return {
        "onnx": base / f"{key}.onnx",
        "onnx-int8": base / f"{key}.int8-d{DECISION_VERSION}.onnx",
        "meta": base / f"{key}.json",
    }


# ---------------------------------------------------------------- torch side (imported lazily)


_MODULES: dict[str, Any] = {}


def _torch_module(graph: Graph):
    """The graph's torch module, built once per process (by key: a Graph holds dicts, so is unhashable)."""
    import torch

    if graph.key not in _MODULES:
        module = graph.build()
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        _MODULES[graph.key] = module
    return _MODULES[graph.key], torch


def torch_run(graph: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of the untouched torch module (the reference every export is checked against)."""
    module, torch = _torch_module(graph)
    with torch.inference_mode():
        got = module(*(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()))
    got = got if isinstance(got, tuple) else (got,)
    return {name: t.numpy().astype(np.float32) for name, t in zip(graph.outputs, got, strict=True)}


def export(graph: Graph, path: Path, inputs: dict[str, np.ndarray]) -> None:
    """The torch module as an ONNX graph (opset 17), checked by onnx's checker, written atomically."""
    import contextlib
    import io
    import warnings

    import onnx

    module, torch = _torch_module(graph)
    example = tuple(torch.from_numpy(np.ascontiguousarray(v[:2])) for v in inputs.values())

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                example,
                str(tmp),
                input_names=list(inputs),
                output_names=list(graph.outputs),
                dynamic_axes=graph.dynamic,
                opset_version=17,
                do_constant_folding=True,
                dynamo=False,
            )
        onnx.checker.check_model(str(tmp))

    write_atomically(path, write)


def quantize_int8(graph: Graph, fp32_path: Path, path: Path) -> None:
    """The int8 candidate (same numbers on AVX2 and VNNI CPUs), calibrated on `graph.calibration`."""
    from semsearch.encoders.quantize import quantize

    assert graph.calibration is not None
    ((name, calibration),) = graph.calibration().items()
    write_atomically(path, lambda tmp: quantize(fp32_path, tmp, calibration, input_name=name))


# ---------------------------------------------------------------- checks and the decision


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], graph: Graph) -> dict[str, float]:
    """Agreement of two runs: min cosine of the embedding output, top-1 agreement of the class output."""
    first = graph.outputs[0]
    stats = {"min_cosine": float(np.sum(normalise(ref[first]) * normalise(got[first]), axis=1).min())}
    if graph.classes:
        a, b = ref[graph.classes], got[graph.classes]
        stats["top1_agree"] = float(np.mean(a.argmax(1) == b.argmax(1)))
        stats["max_logit_diff"] = float(np.abs(a - b).max())
    return stats


def export_passes(stats: dict[str, float]) -> bool:
    return (
        "error" not in stats and stats["min_cosine"] >= EXPORT_MIN_COSINE and stats.get("top1_agree", 1) == 1
    )


def int8_passes(stats: dict[str, float]) -> bool:
    """The int8 bar: top-1 agreement with torch (when the model classifies) and min embedding cosine."""
    return (
        "error" not in stats
        and stats.get("top1_agree", 1.0) >= INT8_MIN_TOP1 - 1e-9
        and stats["min_cosine"] >= INT8_MIN_COSINE
    )


def _time(
    run: Callable[[dict[str, np.ndarray]], object], inputs: dict[str, np.ndarray], repeats: int
) -> float:
    run(inputs)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(inputs)
        best = min(best, time.perf_counter() - t0)
    return len(next(iter(inputs.values()))) / best


def prepare(graph: Graph, threads: int = DEFAULT_THREADS, force: bool = False) -> dict[str, Any]:
    """Export + check + time the candidates (fp32 ONNX, int8 ONNX) once, torch where neither passes;
    cached per machine.

    Returns the recorded decision. Without `force`, a recorded decision is never re-timed.
    """
    paths = model_paths(graph.key)
    if not force:
        meta = recorded(graph.key)
        if meta and (meta["runtime"] == "torch" or paths[meta["runtime"]].exists()):
            return meta

    inputs = graph.check_inputs()
    ref = torch_run(graph, inputs)
    meta: dict[str, Any] = {"key": graph.key, "decision": DECISION_VERSION}
    sessions: dict[str, Any] = {}
    for runtime, make, passes, check in (
        ("onnx", lambda: export(graph, paths["onnx"], inputs), export_passes, "check"),
        (
            "onnx-int8",
            lambda: quantize_int8(graph, paths["onnx"], paths["onnx-int8"]),
            int8_passes,
            "check_int8",
        ),
    ):
        if runtime == "onnx-int8" and ("onnx" not in sessions or graph.calibration is None):
            break  # the int8 candidate is made from the checked fp32 export only
        try:
            if force or not paths[runtime].exists():
                make()
            session = ort_session(paths[runtime], threads)
            meta[check] = compare(ref, _ort_run(session, graph, inputs), graph)
            if passes(meta[check]):
                sessions[runtime] = session
        except Exception as exc:
            meta[check] = {"error": str(exc)[:200]}
    for runtime in ("onnx", "onnx-int8"):
        if runtime not in sessions:
            paths[runtime].unlink(missing_ok=True)

    # torch eager is the reference, not a contender: it measured 10x slower than the fp32 export
    # (31 vs 316 images/s for lite0), so it runs only where no export passes, and is not timed.
    batch = {k: np.resize(v, (TIMING_BATCH, *v.shape[1:])) for k, v in inputs.items()}
    rates = {rt: _time(lambda x, s=s: _ort_run(s, graph, x), batch, 2) for rt, s in sessions.items()}
    if rates:
        meta["per_s"] = {rt: round(r, 1) for rt, r in rates.items()}
    fp32_best = "onnx" if "onnx" in rates else "torch"
    if "onnx-int8" in rates and rates["onnx-int8"] >= INT8_MIN_SPEEDUP * rates[fp32_best]:
        meta["runtime"] = "onnx-int8"
    else:
        meta["runtime"] = fp32_best
    meta["reason"] = _reason(meta, rates, fp32_best)
    write_atomically(paths["meta"], lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
    return meta


def _check_text(stats: dict[str, Any]) -> str:
    if "error" in stats:
        return f"error: {stats['error']}"
    top1 = f"top-1 agreement {stats['top1_agree']:.0%}, " if "top1_agree" in stats else ""
    return f"{top1}min cosine {stats['min_cosine']:.3f} vs torch"


def _reason(meta: dict[str, Any], rates: dict[str, float], fp32_best: str) -> str:
    """Why the runtime was chosen, in one line for `semsearch stats`, `index` and /api/stats."""
    if "onnx" not in rates:
        return f"the ONNX export failed its check ({_check_text(meta.get('check', {}))})"
    if "check_int8" not in meta:
        return f"the export passed its check ({_check_text(meta['check'])}; {rates[fp32_best]:.0f}/s); no int8 candidate for this model"
    if "onnx-int8" not in rates:
        bar = f"bar: top-1 >= {INT8_MIN_TOP1:.0%}, cosine >= {INT8_MIN_COSINE}"
        return f"int8 failed its check ({_check_text(meta['check_int8'])}; {bar})"
    speedup = rates["onnx-int8"] / rates[fp32_best]
    if meta["runtime"] == "onnx-int8":
        return f"int8 passed its check ({_check_text(meta['check_int8'])}) and ran {speedup:.1f}x as fast as {fp32_best}"
    return f"int8 passed its check but ran only {speedup:.1f}x as fast as {fp32_best} (needs {INT8_MIN_SPEEDUP}x)"


def recorded(key: str) -> dict[str, Any]:
    """The decision recorded on this machine for a graph (empty if not prepared yet or outdated)."""
    try:
        meta = json.loads(model_paths(key)["meta"].read_text())
    except (OSError, ValueError):
        return {}
    ok = (
        isinstance(meta, dict)
        and meta.get("runtime") in RUNTIMES
        and meta.get("decision") == DECISION_VERSION
    )
    return meta if ok else {}


def describe(meta: dict[str, Any]) -> str:
    """'onnx-int8 (why)' for a recorded decision, for people."""
    if not meta:
        return "not prepared on this machine yet"
    return f"{meta['runtime']} ({meta.get('reason', 'chosen at preparation')})"


# ---------------------------------------------------------------- running


def ort_session(path: Path, threads: int = DEFAULT_THREADS):
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


def _ort_run(session, graph: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    got = session.run(list(graph.outputs), inputs)
    return {name: np.asarray(a, np.float32) for name, a in zip(graph.outputs, got, strict=True)}


class Runner:
    """A graph on its recorded runtime: `run(inputs) -> {output name: array}`."""

    def __init__(self, graph: Graph, runtime: str = "auto", threads: int = DEFAULT_THREADS) -> None:
        self.graph, self.threads = graph, threads
        meta = prepare(graph, threads)
        if runtime == "auto":
            runtime = meta["runtime"]
        if runtime not in RUNTIMES:
            raise ModelError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
        path = model_paths(graph.key).get(runtime)
        if runtime != "torch" and (path is None or not path.exists()):
            check = meta.get("check" if runtime == "onnx" else "check_int8", {})
            raise ModelError(f"the {runtime} model {graph.key} failed its check: {_check_text(check)}")
        self.runtime = runtime
        self.decision = meta
        self._session = ort_session(path, threads) if runtime != "torch" and path else None
        if self._session is None:
            _torch_module(graph)[1].set_num_threads(threads)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            return torch_run(self.graph, inputs)
        return _ort_run(self._session, self.graph, inputs)
