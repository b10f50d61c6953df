"""Encode a collection's new photos on Ray: a Ray Data pipeline spreads the paths over a pool of actors,
each holding one model session, and streams the results back to the one writer (`Collection.sync`).

Only the work per file moves: the writer still lists the folder and decides what to embed against its
catalog before anything is dispatched, and records what comes back exactly as from the in-process
pipeline. Each actor runs `pipeline.encode_paths` on its share of the paths, so reading, hashing the
decoded bytes, decoding, skip reasons and the model's numbers are the same code as in one process.
Every node must see the photos at the same path (a shared mount) and have semsearch installed.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semsearch.encoders.base import ImageModel
from semsearch.errors import ModelError, SemsearchError, SettingError
from semsearch.pipeline import Analyse, EncodedBatch, Skipped, encode_paths

#: What `--ray` means without an address: a Ray instance started in this process, on this machine's cores.
LOCAL = "local"
#: Calls an actor runs at once, each one batch of the model: while one infers, the next decodes (in one
#: process, `encode_paths` overlaps them the same way).
CALLS_PER_ACTOR = 2
#: Inference threads per actor (one actor per core).
DEFAULT_THREADS = 1
PATH, ITEM = "path", "item"
INSTALL = "--ray needs Ray Data: pip install 'semsearch[scale]'"


def ray_module() -> Any:
    """The `ray` package with Ray Data, or a SettingError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 -- the extra brings it; a bare `ray` lacks it
    except ImportError:
        raise SettingError(INSTALL) from None
    return ray


class _Worker:
    """One Ray actor: the image model loaded once (one session), run on the paths each call brings."""

    def __init__(
        self, name: str, identity: str, runtime: str, threads: int, batch_size: int, analyse: Analyse | None
    ) -> None:
        from semsearch.encoders.registry import load_image_model

        self.model = load_image_model(name, runtime, threads)
        if self.model.identity != identity:
            raise ModelError(f"model {name} is {self.model.identity} on this node, not {identity}")
        self.model.runtime  # noqa: B018 -- loads the session now, not in the first call
        self.batch_size, self.analyse = batch_size, analyse

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A batch of paths -> its results (one `EncodedBatch` and any `Skipped`), as Python objects."""
        paths = [Path(os.fsdecode(bytes(p))) for p in batch[PATH]]
        items = list(encode_paths(paths, self.model, self.batch_size, encode_workers=1, analyse=self.analyse))
        column = np.empty(len(items), dtype=object)
        column[:] = items
        return {ITEM: column}


class RayEncode:
    """`pipeline.Encode` on Ray: `address` is a cluster (`auto`, `HOST:PORT`, `ray://HOST:10001`) or
    `LOCAL`; `workers` actors (default: the cluster's CPUs / `threads`) of `threads` inference threads
    each (default 1: on 2 cores, two 1-thread actors encoded ~1.3x as fast as one 2-thread actor,
    `python bench/scale.py --ray`). Ray starts only when there is something to encode."""

    def __init__(
        self, address: str = LOCAL, *, workers: int | None = None, threads: int | None = None
    ) -> None:
        ray_module()
        if workers is not None and workers < 1:
            raise SettingError("--ray-workers must be at least 1")
        if threads is not None and threads < 1:
            raise SettingError("Ray worker threads must be at least 1")
        self.address, self.workers, self.threads = address, workers, threads
        if address != LOCAL:
            reachable(address)

    def __call__(
        self,
        paths: Sequence[Path],
        model: ImageModel,
        batch_size: int = 32,
        *,
        analyse: Analyse | None = None,
    ) -> Iterator[EncodedBatch | Skipped]:
        if not paths:
            return
        ray = ray_module()
        started = self._connect(ray)
        try:
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            threads = self.threads or DEFAULT_THREADS
            workers = self.workers or max(1, cpus // threads)
            dataset = ray.data.from_items([{PATH: os.fsencode(p)} for p in paths]).map_batches(
                _Worker,
                batch_size=batch_size,
                compute=ray.data.ActorPoolStrategy(
                    size=workers,
                    max_concurrent_calls_per_actor=CALLS_PER_ACTOR,
                    enable_true_multi_threading=True,
                ),
                num_cpus=threads,
                fn_constructor_kwargs={
                    "name": model.name,
                    "identity": model.identity,
                    "runtime": model.runtime,
                    "threads": threads,
                    "batch_size": batch_size,
                    "analyse": analyse,
                },
            )
            for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                yield from block[ITEM]
        except ray.exceptions.RayError as exc:
            raise _user_error(exc) from None
        finally:
            if started:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Join the cluster (or start the local instance); True where this call started Ray."""
        if ray.is_initialized():  # a caller's own Ray session (tests, notebooks): used as it is
            return False
        options: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": False,
        }
        if self.address == LOCAL:
            options["num_cpus"] = os.cpu_count() or 1
        else:
            options["address"] = self.address
        try:
            ray.init(**options)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise SettingError(f"cannot reach the Ray cluster at {self.address}: {exc}") from None
        quiet(ray)
        return True


def reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a `HOST:PORT` (or `ray://HOST:PORT`) nobody answers on at once: `ray.init` would wait for it
    without end. `auto` (the cluster this machine belongs to) is Ray's to find."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep:
        return
    if not port.isdigit():
        raise SettingError(f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT, auto or local")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise SettingError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def quiet(ray: Any) -> None:
    """No Ray Data progress bars or execution logs: the caller shows its own progress."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def _user_error(exc: BaseException) -> SemsearchError:
    """The semsearch error a worker raised (a model that does not load there), else one line saying what
    failed; the batches written before it stay in the collection."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SemsearchError):
            return type(seen)(str(seen).splitlines()[0])
        seen = seen.__cause__
    last = next((line for line in reversed(str(exc).splitlines()) if line.strip()), type(exc).__name__)
    return SemsearchError(f"the Ray pipeline failed: {last.strip()}")
