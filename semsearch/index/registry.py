"""Index backends by name: the name a collection records (``--vectors``) and a saved index file carries.

Backend modules are imported only when their name is used, so a library that is not installed (ScaNN off
Linux x86-64, pymilvus without the ``scale`` extra) costs nothing until it is asked for, and is then
refused with a reason rather than an ImportError.
"""

from __future__ import annotations

import importlib
from typing import Any

from semsearch.errors import CollectionError
from semsearch.index.base import VectorIndex

_BACKENDS = {
    "auto": "semsearch.index.auto:AutoIndex",
    "exact": "semsearch.index.exact:ExactIndex",
    "pruned": "semsearch.index.pruned:PrunedExactIndex",
    "scann": "semsearch.index.scann:ScannIndex",
    "hnsw": "semsearch.index.hnsw:HnswIndex",
    "milvus": "semsearch.index.milvus:MilvusIndex",
}
DEFAULT = "auto"


def names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def index_class(name: str) -> type[VectorIndex]:
    """The backend class registered as `name` (its module imported now)."""
    try:
        module, _, attr = _BACKENDS[name].partition(":")
    except KeyError:
        raise CollectionError(f"unknown index backend {name!r}: one of {', '.join(_BACKENDS)}") from None
    return getattr(importlib.import_module(module), attr)


def create_index(name: str, dim: int, **options: Any) -> VectorIndex:
    """A new, empty index of backend `name`; refused with the reason where its library is missing."""
    klass = index_class(name)
    reason = klass.unavailable(**options)
    if reason:
        raise CollectionError(reason)
    return klass(dim, **options)


def _is_milvus(spec: str) -> bool:
    from semsearch.index.milvus import LITE, SERVER

    return spec.startswith((LITE, SERVER))


def canonical_spec(spec: str, previous: str | None = None, *, connect: bool = False) -> str:
    """A ``--vectors`` value checked (backend known and installed; with `connect`, a database reached) and
    in the form a collection records (`previous`: the one recorded so far, whose generated names are kept)."""
    spec = spec.strip()
    if _is_milvus(spec):
        from semsearch.index import milvus

        spec = milvus.canonical_spec(spec, previous)
        uri = milvus.parse_spec(spec)["uri"]
        reason = milvus.MilvusIndex.unavailable(uri=uri)
        if connect and not reason:
            milvus.connect(uri, milvus.MilvusIndex.LITE_WAIT_S).close()
    elif spec in _BACKENDS and spec != "milvus":
        reason = index_class(spec).unavailable()
    else:
        raise CollectionError(
            f"unknown --vectors {spec!r}: one of {', '.join(n for n in _BACKENDS if n != 'milvus')}, "
            "milvus-lite:PATH.db or milvus://HOST:PORT[/name]"
        )
    if reason:
        raise CollectionError(reason)
    return spec


def resolve_spec(spec: str, space: str) -> tuple[str, dict[str, Any]]:
    """(backend name, constructor options) that keep vector space `space` as a recorded spec says."""
    if _is_milvus(spec):
        from semsearch.index.milvus import MilvusIndex, space_options

        return MilvusIndex.name, space_options(spec, space)
    return spec, {}
