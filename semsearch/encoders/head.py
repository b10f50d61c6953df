"""A trained image → text-space head and its gate, run with numpy at query time.

`semsearch train` (see `semsearch.train`) fits one of two maps from the image model's pooled features into
a text space: a linear map (closed-form ridge regression) or two dense layers with batch-norm, ReLU and
dropout (DeViSE-style). Either is saved as one small `.npz` file: the weights plus a JSON header recording
the text space (`space_identity`) and image model it was trained for, the dims and the training report.
At load time batch-norm is folded into the first dense layer, so inference is matrix products, no torch.

A head only knows what it was trained on: mapped alone, photos of other classes land on the trained
classes' words. So the output is blended with ConSE (the zero-training mapping from the classifier's
logits) by a per-photo *gate*: a photo whose features are close to what the head was trained on
(cosine to the nearest prototype, a mean feature of one training class or cluster) gets the head's
vector, others stay with ConSE. The gate's weight and threshold are chosen by `semsearch train` on
classes held out of training, and stored with the prototypes and ConSE's class vectors, so loading needs
neither torch nor the text model. Files written before the gate (format 1) blend at a constant weight.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from semsearch.errors import ModelError
from semsearch.paths import sweep_temporaries, write_atomically
from semsearch.vectors import normalise

FORMAT = "semsearch-joint-head"
VERSION = 2
LAYERS = {
    "linear": ("w", "b"),
    "mlp": ("w1", "b1", "bn_mean", "bn_var", "bn_gamma", "bn_beta", "w2", "b2"),
}


def save_head(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write the model file atomically: a failed write never replaces an existing good file. Temp files
    that killed saves of the same file left beside it are deleted first."""
    path = Path(path).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(path.parent, path.name)
    header = {"format": FORMAT, "version": VERSION, **meta}
    payload = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
    payload["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a path
            np.savez(f, **payload)

    write_atomically(path, write)


def prototype_similarity(features: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """(n,) cosine of each feature row to its nearest prototype (rows of `prototypes` are unit length)."""
    return (normalise(features) @ prototypes.T).max(axis=1)


def gate_weights(similarity: np.ndarray, weight: float, tau: float | None, temperature: float) -> np.ndarray:
    """(n,) share of the head's vector in each photo's blend: `weight` times a soft step at `tau` (a
    constant `weight` when tau is None)."""
    if tau is None:
        return np.full(len(similarity), weight, np.float32)
    z = np.clip((np.asarray(similarity, np.float64) - tau) / temperature, -50, 50)
    return (weight / (1 + np.exp(-z))).astype(np.float32)


def blend(head: np.ndarray, conse: np.ndarray, gate: np.ndarray) -> np.ndarray:
    """normalise(g·head + (1−g)·conse) row by row, both inputs unit length."""
    g = gate[:, None]
    return normalise(g * head + (1 - g) * conse)


class JointHead:
    """Image features and logits → (n, d) L2-normalised text-space vectors."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict, path: Path | None = None) -> None:
        self.meta = meta
        self.path = path
        self.space_identity: str = str(meta["space_identity"])
        self.image_model: str = str(meta.get("image_model", ""))
        self.dim: int = int(meta["dim"])
        self.feature_dim: int = int(meta["feature_dim"])
        self.identity: str = f"head-{meta.get('fingerprint', 'unknown')}:{self.space_identity}"
        self.classes: list[str] = list(meta.get("classes", []))
        self.kind: str = str(meta.get("head", "mlp"))
        if self.kind not in LAYERS:
            raise ModelError(f"joint model: unknown head kind {self.kind!r}")
        missing = [k for k in LAYERS[self.kind] if k not in arrays]
        if missing:
            raise ModelError(f"not a complete joint model (missing {', '.join(missing)})")
        if self.kind == "linear":
            self.layers = [(arrays["w"], arrays["b"])]
        else:
            eps = float(meta.get("bn_eps", 1e-5))
            scale = arrays["bn_gamma"] / np.sqrt(arrays["bn_var"] + eps)
            # BN(x W1^T + b1) = x (W1^T * scale) + (b1 - mean) * scale + beta
            w1 = (arrays["w1"] * scale[:, None]).T
            b1 = (arrays["b1"] - arrays["bn_mean"]) * scale + arrays["bn_beta"]
            self.layers = [(w1, b1), (arrays["w2"].T, arrays["b2"])]
        self.layers = [
            (np.ascontiguousarray(w, np.float32), np.asarray(b, np.float32)) for w, b in self.layers
        ]
        if self.layers[0][0].shape[0] != self.feature_dim or self.layers[-1][0].shape[1] != self.dim:
            raise ModelError("joint model: layer shapes do not match its header")
        self.class_vectors = arrays.get("class_vectors")
        self.prototypes = arrays.get("prototypes")
        gate = meta.get("gate")
        if gate is None:  # format 1: normalise(head + w·ConSE), i.e. a constant share 1/(1+w) of the head
            gate = {"weight": 1 / (1 + float(meta.get("conse_weight", 0.0))), "tau": None}
        self.gate_weight = float(gate["weight"])
        self.gate_tau = None if gate.get("tau") is None else float(gate["tau"])
        self.gate_temperature = float(gate.get("temperature", 1.0))
        if self.gate_tau is not None and self.prototypes is None:
            raise ModelError("joint model: its gate needs prototypes the file does not hold")

    @classmethod
    def load(cls, path: Path, space_identity: str | None = None) -> JointHead:
        """Read a model file; ModelError (one line) if it is missing, corrupt, not a model, or — when
        `space_identity` is given — trained for another text space."""
        path = Path(path).expanduser()
        try:
            with np.load(path, allow_pickle=False) as data:
                if "header" not in data.files:
                    raise ModelError(f"{path} is not a semsearch joint model (no header)")
                meta = json.loads(bytes(data["header"]).decode("utf-8"))
                if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                    raise ModelError(f"{path} is not a semsearch joint model")
                if int(meta.get("version", 0)) > VERSION:
                    raise ModelError(f"{path} was written by a newer semsearch (format {meta['version']})")
                arrays = {k: np.asarray(data[k], dtype=np.float32) for k in data.files if k != "header"}
            head = cls(arrays, meta, path)
        except ModelError as exc:
            message = str(exc)
            raise ModelError(message if str(path) in message else f"{path}: {message}") from None
        except FileNotFoundError:
            raise ModelError(f"joint model {path} does not exist") from None
        except IsADirectoryError:
            raise ModelError(f"joint model {path} is a directory, not a model file") from None
        except (
            OSError,
            ValueError,
            KeyError,
            EOFError,
            TypeError,
            UnicodeDecodeError,
            zipfile.BadZipFile,
        ) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(f"joint model {path} is corrupt or not a model file ({reason})") from None
        if space_identity is not None and head.space_identity != space_identity:
            raise ModelError(
                f"joint model {path} was trained for text space {head.space_identity}, not {space_identity}",
                cli_hint="use the matching --text-model or retrain",
            )
        return head

    def check_space(self, space_identity: str) -> None:
        if self.space_identity != space_identity:
            raise ModelError(
                f"joint model {self.path} was trained for text space {self.space_identity}, not {space_identity}"
            )

    def head_vectors(self, features: np.ndarray) -> np.ndarray:
        """The trained map alone (no ConSE blend): (n, d) normalised."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float32))
        if x.shape[1] != self.feature_dim:
            raise ModelError(
                f"joint model expects {self.feature_dim}-d image features, got {x.shape[1]}-d "
                f"(it was trained on {self.image_model or 'another image model'})"
            )
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0.0)
        return normalise(x)

    def gate(self, features: np.ndarray) -> np.ndarray:
        """(n,) share of the head's vector in each photo's joint vector (the rest is ConSE's)."""
        if self.class_vectors is None:
            return np.ones(len(np.atleast_2d(features)), np.float32)
        similarity = (
            prototype_similarity(np.atleast_2d(features), self.prototypes)
            if self.gate_tau is not None
            else np.zeros(len(np.atleast_2d(features)), np.float32)
        )
        return gate_weights(similarity, self.gate_weight, self.gate_tau, self.gate_temperature)

    def embed_images(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """(n, d) L2-normalised joint vectors of images from their features (n, F) and logits (n, 1000)."""
        out = self.head_vectors(features)
        gate = self.gate(features)
        if self.class_vectors is None or np.all(gate >= 1):
            return out
        from semsearch.encoders.joint import top_probabilities

        conse = normalise(top_probabilities(np.atleast_2d(logits)) @ self.class_vectors)
        return blend(out, conse, gate)
