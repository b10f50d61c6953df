"""Milvus: a collection's vectors and ANN index kept in a Milvus database instead of this process.

``milvus-lite:PATH`` is an embedded Milvus Lite file (one process at a time may open it);
``milvus://HOST:PORT[/name]`` is a Milvus server or cluster. Both go through the same pymilvus client, only
the URI differs. Ids are Milvus primary keys, so adding is an upsert and removing a delete: re-running
either after a crash does no harm. The saved index file holds only where the vectors live and which ids
the database was last known to hold; the count is checked against the database on every load, and where
they differ (a crash between a write and the save) the ids are read back from the database itself.
"""

from __future__ import annotations

import fcntl
import logging
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import numpy as np

from semsearch.errors import CollectionError
from semsearch.index.base import VectorIndex

LITE = "milvus-lite:"
SERVER = "milvus://"
DEFAULT_PORT = 19530
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,200}")


def _server(spec: str) -> tuple[str, int, str]:
    """(host, port, collection name or "") of a ``milvus://`` spec."""
    try:
        parts = urlsplit("//" + spec[len(SERVER) :])
        host, port, name = parts.hostname, parts.port or DEFAULT_PORT, parts.path.strip("/")
    except ValueError as e:
        raise CollectionError(f"bad Milvus address {spec!r}: {e}") from e
    if not host or parts.query or parts.fragment or (name and not _NAME.fullmatch(name)):
        raise CollectionError(
            f"bad Milvus address {spec!r}: use milvus://HOST:PORT or milvus://HOST:PORT/name "
            "(name: letters, digits, underscores)"
        )
    return host, port, name


def parse_spec(spec: str) -> dict[str, str]:
    """``uri`` (for pymilvus) and ``prefix`` (of the Milvus collection names) of a ``--vectors`` value."""
    if "\0" in spec:
        raise CollectionError("a --vectors value cannot contain a NUL character")
    if spec.startswith(LITE):
        try:
            path = Path(spec[len(LITE) :]).expanduser().absolute()
        except RuntimeError as e:  # ~user that does not exist
            raise CollectionError(f"bad Milvus Lite path {spec!r}: {e}") from e
        if path.suffix != ".db":
            raise CollectionError(f"a Milvus Lite file name ends in .db: {LITE}{path}.db, not {spec}")
        return {"uri": str(path), "prefix": "semsearch"}
    if spec.startswith(SERVER):
        host, port, name = _server(spec)
        return {"uri": f"http://{host}:{port}", "prefix": name or "semsearch"}
    raise CollectionError(f"not a Milvus address: {spec!r} (milvus-lite:PATH or milvus://HOST:PORT[/name])")


def canonical_spec(spec: str, previous: str | None = None) -> str:
    """The spec to record: an absolute Lite path; a server address with a collection name of its own, so
    that two semsearch collections never share one Milvus collection by accident (the `previous` name is
    kept where the same server is named again without one)."""
    options = parse_spec(spec)
    if spec.startswith(LITE):
        return LITE + options["uri"]
    host, port, name = _server(spec)
    address = f"{SERVER}{host}:{port}"
    if not name and previous and previous.startswith(address + "/"):
        return previous
    return f"{address}/{name or f'semsearch_{secrets.token_hex(4)}'}"


def space_options(spec: str, space: str) -> dict[str, str]:
    """MilvusIndex options for one vector space of a collection: its URI and its Milvus collection."""
    options = parse_spec(spec)
    return {
        "uri": options["uri"],
        "collection": f"{options['prefix']}_{re.sub(r'[^A-Za-z0-9_]', '_', space)}",
    }


def _lite_locked(path: str) -> bool:
    """Whether another process holds the Milvus Lite file open (it takes an exclusive lock on it)."""
    try:
        with open(Path(path) / "LOCK", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fh, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def _is_lite(uri: str) -> bool:
    return not uri.startswith(("http://", "https://"))


def where(uri: str) -> str:
    """The database of a URI, as messages name it."""
    return f"the Milvus Lite file {uri}" if _is_lite(uri) else f"Milvus at {uri}"


def connect(uri: str, wait_s: float = 0.0):
    """A pymilvus client for `uri`; a Lite file held by another process is waited for up to `wait_s`."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    # Failures reach the user as one line; the in-process Lite server's gRPC layer logs, as errors,
    # calls it does not implement that the client then does without.
    for name in ("pymilvus", "pymilvus.milvus_client", "milvus_lite", "grpc._server"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    lite = _is_lite(uri)
    if lite and not Path(uri).parent.is_dir():
        raise CollectionError(f"cannot create {where(uri)}: {Path(uri).parent} does not exist")
    deadline = time.monotonic() + (wait_s if lite else 0)
    while True:
        try:
            return MilvusClient(uri=uri, timeout=MilvusIndex.TIMEOUT_S)
        except MilvusException as e:
            busy = lite and _lite_locked(uri)
            if busy and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            if busy:
                raise CollectionError(
                    f"{where(uri)} is in use by another process (a running `semsearch serve`?): "
                    "stop it, or keep the vectors in a Milvus server (--vectors milvus://HOST:PORT)"
                ) from e
            raise CollectionError(f"cannot open {where(uri)}: {e.message}") from e


class MilvusIndex(VectorIndex):
    """Vectors in the Milvus collection `collection` at `uri` (a Lite file path or ``http://HOST:PORT``).

    ``ids``: the ids the database was last known to hold (from a saved file); checked by count, read back
    from the database where it disagrees. None: read them from the database.
    """

    name = "milvus"
    requires = ("pymilvus",)
    #: The database's own choice of index and its defaults: HNSW on a Milvus server and in Milvus Lite 3,
    #: IVF in the older C++ Milvus Lite, which refuses HNSW (docs/scale.md has the measurements).
    INDEX_TYPE = "AUTOINDEX"
    INDEX_PARAMS: dict[str, Any] = {}
    SEARCH_PARAMS: dict[str, Any] = {}
    BATCH = 2048  # rows per upsert or delete request (~10 MB of 1,280-d vectors)
    add_batch = 65536  # rows a collection reads from its vector files for one add (~335 MB of 1,280-d)
    LITE_WAIT_S = 10.0  # a Lite file held by another process (a short CLI query) is waited for this long
    TIMEOUT_S = 30.0

    def __init__(
        self,
        dim: int,
        *,
        uri: str,
        collection: str,
        ids: np.ndarray | None = None,
        index_type: str | None = None,
        index_params: dict[str, Any] | None = None,
        search_params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(dim)
        self.uri, self.collection = uri, collection
        self.index_type = index_type or self.INDEX_TYPE
        self.index_params = dict(self.INDEX_PARAMS if index_params is None else index_params)
        self.search_params = dict(self.SEARCH_PARAMS if search_params is None else search_params)
        self.client = connect(uri, self.LITE_WAIT_S)
        with self._calls():
            self._ensure_collection()
            count = self._count()
        if ids is None or len(ids) != count:
            ids = self._fetch_ids() if count else np.zeros(0, dtype=np.int64)
        self._ids = np.unique(np.asarray(ids, dtype=np.int64))

    @classmethod
    def unavailable(cls, uri: str = "", **options: Any) -> str | None:
        reason = super().unavailable()
        if reason is None and uri and not uri.startswith("http") and cls._missing("milvus_lite"):
            reason = "a Milvus Lite file needs milvus-lite (pip install 'semsearch[scale]')"
        return reason

    @staticmethod
    def _missing(module: str) -> bool:
        import importlib.util

        return importlib.util.find_spec(module) is None

    # -- connection ---------------------------------------------------------------------------
    @contextmanager
    def _calls(self) -> Iterator[None]:
        """Milvus failures as one-line collection errors."""
        from pymilvus.exceptions import MilvusException

        try:
            yield
        except MilvusException as e:
            raise CollectionError(f"{where(self.uri)} failed: {e.message}") from e

    def _ensure_collection(self) -> None:
        """The collection with this width, indexed and loaded (made where missing; remade where its width
        differs: it holds derived data only, the catalog is the source of truth)."""
        from pymilvus import DataType

        c = self.client
        if c.has_collection(self.collection):
            fields = c.describe_collection(self.collection)["fields"]
            dims = [int(f["params"].get("dim", 0)) for f in fields if f["name"] == "vector"]
            if dims == [self.dim]:
                c.load_collection(self.collection)
                return
            c.drop_collection(self.collection)
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        index = c.prepare_index_params()
        index.add_index(
            field_name="vector", index_type=self.index_type, metric_type="IP", params=self.index_params
        )
        c.create_collection(self.collection, schema=schema, consistency_level="Strong")
        c.create_index(self.collection, index, sync=False)  # a new, empty collection: nothing to wait for
        c.load_collection(self.collection)

    def _count(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def _fetch_ids(self) -> np.ndarray:
        with self._calls():
            it = self.client.query_iterator(self.collection, batch_size=16384, output_fields=["id"])
            found: list[int] = []
            try:
                while batch := it.next():
                    found.extend(row["id"] for row in batch)
            finally:
                it.close()
        return np.asarray(found, dtype=np.int64)

    def _wait_indexed(self) -> None:
        """Until a Milvus server has built the ANN index over every flushed row (it builds in the
        background; until then it searches the new rows by brute force). Milvus Lite reports no pending
        rows and finishes its background index builds before the process that opened it exits."""
        while True:
            state = self.client.describe_index(self.collection, "vector")
            if not int(state.get("pending_index_rows", 0)):
                return
            time.sleep(0.2)

    def close(self) -> None:
        self.client.close()

    def describe(self) -> str:
        """The index as the database reports it (it may not apply every parameter it was given)."""
        with self._calls():
            found = self.client.describe_index(self.collection, "vector")
        shown = {
            k: v
            for k, v in found.items()
            if k not in ("field_name", "index_name", "state") and "rows" not in k
        }
        params = " ".join(f"{k}={v}" for k, v in {**shown, **self.search_params}.items())
        return f"{params} in {where(self.uri)}"

    # -- the interface ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> np.ndarray:
        return self._ids.copy()

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        with self._calls():
            for a in range(0, len(ids), self.BATCH):
                rows = [
                    {"id": i, "vector": v}
                    for i, v in zip(ids[a : a + self.BATCH].tolist(), vectors[a : a + self.BATCH])
                ]
                self.client.upsert(self.collection, rows)
        self._ids = np.union1d(self._ids, ids)

    def _remove(self, ids: np.ndarray) -> None:
        with self._calls():  # unknown ids included: deleting them is harmless, and the saved ids may lag
            for a in range(0, len(ids), self.BATCH):
                self.client.delete(self.collection, ids=ids[a : a + self.BATCH].tolist())
        self._ids = np.setdiff1d(self._ids, ids)

    def _search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        among = {}
        if allowed is not None:  # integers only: safe to spell out (Milvus Lite has no filter templates)
            among = {"filter": f"id in [{','.join(map(str, allowed.tolist()))}]"}
        with self._calls():
            found = self.client.search(
                self.collection,
                data=list(queries),
                limit=k,
                output_fields=["id"],
                search_params={"metric_type": "IP", "params": {**self.search_params}},
                **among,
            )
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for row, hits in enumerate(found):
            hits = hits[:k]
            ids[row, : len(hits)] = [h["id"] for h in hits]
            scores[row, : len(hits)] = [h["distance"] for h in hits]
        return ids, scores

    def _search_among(
        self, queries: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Milvus filters inside its own search (an `id in [...]` expression over the primary key)."""
        return self._search(queries, k, allowed)

    # -- persistence --------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        with self._calls():
            self.client.flush(self.collection)  # durable before the saved file says it holds these ids
            self._wait_indexed()
        return {"uri": np.array(self.uri), "collection": np.array(self.collection), "ids": self._ids}

    @classmethod
    def _from_arrays(cls, dim: int, arrays: dict[str, np.ndarray], **options: Any) -> Self:
        return cls(
            dim, uri=str(arrays["uri"]), collection=str(arrays["collection"]), ids=arrays["ids"], **options
        )
