"""A trained image → text-space head (DeViSE-style), run with numpy at query time.

The head is two dense layers with batch-norm, ReLU and dropout between them, trained by `semsearch train`
(see `semsearch.train`). It is saved as one small `.npz` file: the raw layer weights plus a JSON header that
records the text space (`space_identity`) and image model it was trained for, the dims and the training
report. At load time the batch-norm is folded into the first dense layer, so inference is two matrix
products and needs no torch.

Optionally the head's output is blended with ConSE (the zero-training mapping from the classifier's logits),
which keeps classes the head never saw findable; the blend weight and the ConSE class vectors are stored in
the file so loading needs neither torch nor the text model.
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
VERSION = 1
_ARRAYS = ("w1", "b1", "bn_mean", "bn_var", "bn_gamma", "bn_beta", "w2", "b2")


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


class JointHead:
    """Image features (and logits, for the ConSE blend) → (n, d) L2-normalised text-space vectors."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict, path: Path | None = None) -> None:
        self.meta = meta
        self.path = path
        self.space_identity: str = str(meta["space_identity"])
        self.image_model: str = str(meta.get("image_model", ""))
        self.dim: int = int(meta["dim"])
        self.feature_dim: int = int(meta["feature_dim"])
        self.identity: str = f"head-{meta.get('fingerprint', 'unknown')}:{self.space_identity}"
        self.classes: list[str] = list(meta.get("classes", []))
        self.conse_weight: float = float(meta.get("conse_weight", 0.0))
        eps = float(meta.get("bn_eps", 1e-5))
        scale = arrays["bn_gamma"] / np.sqrt(arrays["bn_var"] + eps)
        # BN(x W1^T + b1) = x (W1^T * scale) + (b1 - mean) * scale + beta
        self.w1 = np.ascontiguousarray((arrays["w1"] * scale[:, None]).T, dtype=np.float32)
        self.b1 = ((arrays["b1"] - arrays["bn_mean"]) * scale + arrays["bn_beta"]).astype(np.float32)
        self.w2 = np.ascontiguousarray(arrays["w2"].T, dtype=np.float32)
        self.b2 = arrays["b2"].astype(np.float32)
        self.class_vectors = arrays.get("class_vectors")
        if self.w1.shape[0] != self.feature_dim or self.w2.shape[1] != self.dim:
            raise ModelError("joint model: layer shapes do not match its header")

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
            missing = [k for k in _ARRAYS if k not in arrays]
            if missing:
                raise ModelError(f"{path} is not a complete joint model (missing {', '.join(missing)})")
            head = cls(arrays, meta, path)
        except ModelError:
            raise
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
        """The trained layers alone (no ConSE blend): (n, d) normalised."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float32))
        if x.shape[1] != self.feature_dim:
            raise ModelError(
                f"joint model expects {self.feature_dim}-d image features, got {x.shape[1]}-d "
                f"(it was trained on {self.image_model or 'another image model'})"
            )
        h = np.maximum(x @ self.w1 + self.b1, 0.0)
        return normalise(h @ self.w2 + self.b2)

    def embed_images(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """(n, d) L2-normalised joint vectors of images from their features (n, F) and logits (n, 1000)."""
        out = self.head_vectors(features)
        if self.conse_weight > 0 and self.class_vectors is not None:
            from semsearch.encoders.joint import top_probabilities

            conse = normalise(top_probabilities(np.atleast_2d(logits)) @ self.class_vectors)
            out = normalise(out + self.conse_weight * conse)
        return out
