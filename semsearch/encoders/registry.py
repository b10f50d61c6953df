"""Image models by name: `lite0`, `lite2`, `clip:<model id or folder>`, or a family from a plugin.

A name is `family:ref`; `lite0` and `lite2` are short for `efficientnet:lite0` / `efficientnet:lite2`.
A family is a module with one function, `load(ref, runtime, threads) -> ImageModel` (cheap: weights
are loaded on first use, see `base.py`). Other packages add families through the `semsearch.models`
entry-point group (name = family, value = module path), so adding a model is one module.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module, metadata
from types import ModuleType

from semsearch.encoders.base import ImageModel
from semsearch.encoders.runtime import DEFAULT_THREADS
from semsearch.errors import ModelError

DEFAULT_MODEL = "lite0"
FAMILIES = {"efficientnet": "semsearch.encoders.efficientnet", "clip": "semsearch.encoders.clip"}
ALIASES = {"lite0": "efficientnet:lite0", "lite2": "efficientnet:lite2"}


def _families() -> dict[str, str]:
    found = dict(FAMILIES)
    for entry in metadata.entry_points(group="semsearch.models"):
        found.setdefault(entry.name, entry.value)
    return found


def split(name: str) -> tuple[ModuleType, str]:
    """(family module, ref) of a model name; ModelError naming the choices for an unknown one."""
    full = ALIASES.get(name, name)
    family, _, ref = full.partition(":")
    families = _families()
    if not ref or family not in families:
        choices = ", ".join([*ALIASES, *(f"{f}:..." for f in families if f != "efficientnet")])
        raise ModelError(f"unknown image model {name!r}; choose one of {choices}")
    try:
        return import_module(families[family]), ref
    except ImportError as exc:
        raise ModelError(f"the {family} model family cannot be loaded: {exc}") from None


@cache
def load_image_model(
    name: str = DEFAULT_MODEL, runtime: str = "auto", threads: int = DEFAULT_THREADS
) -> ImageModel:
    """The image model `name`, shared per process (prepared on first use on this machine)."""
    module, ref = split(name)
    return module.load(ref, runtime, threads)
