"""The web app and JSON API over one collection: a thin HTTP edge over `Collection`, like the CLI.

Concurrency model
-----------------
* Every request borrows its own `Collection` (hence its own SQLite connection) from a pool; sqlite3
  connections are never shared between threads at the same time.
* What is expensive is loaded once and shared by the pool: the nearest-neighbour index (per catalog
  version), the image model, the word table, and any other lazily computed model attribute.
* A long-lived server notices new `index` runs: before each request it reads SQLite's
  ``PRAGMA data_version`` (changes whenever another connection committed). When it changed, a new
  *epoch* starts: a fresh pool and index cache; requests already running finish on the old one. Readers
  see the old or the new state, never a mix (SQLite WAL + append-only vector files).

Security
--------
Only images in the catalog are served, addressed by integer id (never by path), and image terms in a
query are ids too (``id:12``): no request makes the server read a file outside the catalog or tells
whether one exists. Uploads are capped (413; multipart: at most `MAX_PARTS` parts, parsed in a worker
thread), decoded with `semsearch.media.load_image` within its memory bound (400 on anything that is not an
image) entirely in memory, and at most a few at once (`semsearch.server.guards.Gate`: 503 with
Retry-After beyond). The only files written are thumbnails under ``<collection>/thumbs``. The Host header
must name this server (DNS rebinding), POSTs must come from its own page or a non-browser client; with a
token, every ``/api`` call needs ``Authorization: Bearer <token>`` (or ``?token=`` for ``<img>`` URLs).
"""

from __future__ import annotations

import hmac
import mimetypes
import queue
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from python_multipart import create_form_parser
from python_multipart.multipart import Field, File
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect

from semsearch.collection import Collection, word_rows
from semsearch.dupes import DEFAULT_THRESHOLD
from semsearch.errors import CollectionError, DecodeError, SemsearchError
from semsearch.media import SUPPORTED_SUFFIXES
from semsearch.paths import shown
from semsearch.server.guards import Gate, SameOriginWrites
from semsearch.store import CATALOG, Record
from semsearch.thumbs import MEDIA_TYPE, thumbnail

STATIC_DIR = Path(__file__).with_name("static")
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
MAX_K = 200
MAX_ID = 2**63 - 1  # SQLite's largest integer
MAX_GROUPS = 500  # duplicate groups in one answer
MAX_PARTS = 8  # multipart parts per upload: the image and a few form fields
UPLOAD_WORKERS, UPLOAD_WAITING = 2, 14  # uploads decoded and encoded at once, and queued behind them
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
KEPT_ACROSS_EPOCHS = frozenset({"model"})  # cached attributes that do not depend on the catalog

K = Annotated[int, Query(ge=1, le=MAX_K, description="Number of results.")]
ImageId = Annotated[int, PathParam(ge=0, le=MAX_ID, description="Image id, as returned by searches.")]
Sort = Annotated[
    Literal["score", "date", "newest"],
    Query(description="Order: best first, by date taken (oldest first), or newest first."),
]
FilterText = Annotated[
    str | None,
    Query(
        max_length=500,
        description="Filters only: 'after:2019-06 before:2020 in:Trips camera:canon near:48.85,2.35,20km'.",
    ),
]
Focus = Annotated[
    str | None,
    Query(
        max_length=100,
        description="An ImageNet class (name or index 0-999) or a word for a group of classes ('dog').",
    ),
]


# ------------------------------------------------------------------------------------------ state


class _ServedCollection(Collection):
    """A `Collection` whose nearest-neighbour indexes come from the shared per-epoch cache instead of being
    loaded on every query."""

    _epoch: _Epoch

    def vector_index(self, space: str):
        return self._epoch.cached(
            ("index", space), lambda: _BatchedIndex(Collection.vector_index(self, space))
        )

    def _copies(self) -> int:
        return self._epoch.cached("copies", self.store.copies)  # a COUNT DISTINCT: ~3 ms on 10k photos

    def neighbour_graph(self, progress=None):
        """Computed once per catalog version: grouping duplicates at any threshold then costs little."""
        return self._epoch.cached(("neighbours", self.image_space), lambda: Collection.neighbour_graph(self))


class _Pending:
    __slots__ = ("done", "error", "k", "lead", "queries", "result")

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries, self.k = queries, k
        self.done = threading.Event()
        self.result: tuple[np.ndarray, np.ndarray] | None = None
        self.error: BaseException | None = None
        self.lead = False


class _BatchedIndex:
    """A `VectorIndex` whose concurrent searches are answered together (micro-batching).

    Exact search streams every stored vector (or, pruned, every vector's projection) once per call, so
    queries arriving together share one pass and one matrix product instead of paying for one each. The
    first caller leads: it runs every query waiting at that moment in one `search`, hands each caller its
    rows, and passes the lead to a caller that arrived meanwhile. Results are those of `search` itself.
    """

    MAX_BATCH = 64

    def __init__(self, index) -> None:
        self._index = index
        self._lock = threading.Lock()
        self._waiting: list[_Pending] = []
        self._busy = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)

    def __len__(self) -> int:
        return len(self._index)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if allowed is not None:  # a filtered search is answered alone: its allowed set is its own
            return self._index.search(queries, k, allowed=allowed)
        mine = _Pending(np.atleast_2d(np.asarray(queries, dtype=np.float32)), int(k))
        with self._lock:
            self._waiting.append(mine)
            lead = not self._busy
            self._busy = True
        if not lead:
            mine.done.wait()
            lead = mine.lead
        if lead:
            self._run_batch()
        if mine.error is not None:
            raise mine.error
        assert mine.result is not None
        return mine.result

    def _run_batch(self) -> None:
        with self._lock:
            batch, self._waiting = self._waiting[: self.MAX_BATCH], self._waiting[self.MAX_BATCH :]
        try:
            k = max(p.k for p in batch)
            ids, scores = self._index.search(np.concatenate([p.queries for p in batch]), k)
            row = 0
            for p in batch:
                n = len(p.queries)
                p.result = (ids[row : row + n, : p.k], scores[row : row + n, : p.k])
                row += n
        except BaseException as exc:
            for p in batch:
                p.error = exc
        with self._lock:
            if self._waiting:
                self._waiting[0].lead = True  # the next batch is led by the oldest waiting caller
                self._waiting[0].done.set()
            else:
                self._busy = False
        for p in batch:
            p.done.set()


def _cached_names(obj: object) -> Iterator[str]:
    for klass in type(obj).__mro__:
        for name, value in vars(klass).items():
            if isinstance(value, cached_property):
                yield name


class _Epoch:
    """Everything derived from one version of the catalog: a pool of collections and the caches."""

    def __init__(self, root: Path, version: int, shared: dict[str, Any]) -> None:
        self.root, self.version, self.shared = root, version, shared
        self._pool: queue.SimpleQueue[_ServedCollection] = queue.SimpleQueue()
        self._lock = threading.RLock()  # a build may need another cached value
        self._cache: dict[object, Any] = {}
        self.closed = False

    def cached(self, key: object, build: Callable[[], Any]) -> Any:
        """A value computed once per epoch (index, joint table, map projection); others wait for it."""
        found = self._cache.get(key)
        if found is None:
            with self._lock:
                found = self._cache.get(key)
                if found is None:
                    found = self._cache[key] = build()
        return found

    @contextmanager
    def borrow(self) -> Iterator[_ServedCollection]:
        try:
            collection = self._pool.get_nowait()
        except queue.Empty:
            collection = _ServedCollection(self.root)
            collection._epoch = self
        for name, value in self.shared.items():
            collection.__dict__.setdefault(name, value)
        try:
            yield collection
        finally:
            for name in _cached_names(collection):
                if name in collection.__dict__ and name not in self.shared:
                    self.shared[name] = collection.__dict__[name]
            if self.closed:
                collection.close()
            else:
                self._pool.put(collection)

    def close(self) -> None:
        self.closed = True
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return


class Served:
    """One collection served over HTTP: epochs keyed by the catalog's data_version."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()
        Collection(self.root).close()  # fail early (CollectionError) if there is no collection there
        self._watch = sqlite3.connect(self.root / CATALOG, check_same_thread=False, isolation_level=None)
        self._watch.execute("PRAGMA query_only=1")
        self._lock = threading.Lock()
        self._shared: dict[str, Any] = {}
        self._epoch: _Epoch | None = None

    def epoch(self) -> _Epoch:
        with self._lock:
            (version,) = self._watch.execute("PRAGMA data_version").fetchone()
            current = self._epoch
            if current is None or current.version != version:
                kept = {k: v for k, v in self._shared.items() if k in KEPT_ACROSS_EPOCHS}
                self._shared.clear()
                self._shared.update(kept)
                self._epoch = _Epoch(self.root, version, self._shared)
                if current is not None:
                    current.close()
            return self._epoch

    @contextmanager
    def collection(self) -> Iterator[_ServedCollection]:
        with self.epoch().borrow() as collection:
            yield collection

    def close(self) -> None:
        with self._lock:
            if self._epoch is not None:
                self._epoch.close()
            self._watch.close()


# ------------------------------------------------------------------------------------------ helpers


@cache
def _words():
    from semsearch.encoders.words import load_words

    return load_words()


def _record(collection: Collection, image_id: int) -> Record:
    record = collection.store.get(image_id)
    if record is None:
        raise HTTPException(404, f"no image with id {image_id} in the collection")
    return record


def _rows(hits: list) -> list[dict[str, object]]:
    return [h.to_dict() for h in hits]


def _filters(text: str | None):
    """The `filter` parameter parsed (a QueryError becomes a 400), None when absent."""
    from semsearch.query import parse_filters

    return parse_filters(text) if text and text.strip() else None


def _need(collection: Collection, method: str) -> Callable:
    fn = getattr(collection, method, None)
    if fn is None:
        raise HTTPException(501, f"this semsearch version has no Collection.{method}")
    return fn


def _parse_upload(body: bytes, content_type: str) -> bytes:
    """The image bytes of a raw body, or of the first file part of a multipart/form-data body (kept in
    memory; at most `MAX_PARTS` parts). CPU work: call it from a worker thread, not the event loop."""
    if not content_type.lower().startswith("multipart/"):
        return body
    parts: list[Field | File] = []

    def keep(part: Field | File) -> None:
        parts.append(part)
        if len(parts) > MAX_PARTS:
            raise HTTPException(400, f"multipart upload with more than {MAX_PARTS} parts")

    try:
        parser = create_form_parser(
            {"Content-Type": content_type}, keep, keep, config={"MAX_MEMORY_FILE_SIZE": len(body) + 1}
        )
        parser.write(body)
        parser.finalize()
    except ValueError:  # python-multipart's errors (no boundary, bad framing, not form-data)
        raise HTTPException(400, "malformed multipart upload: send the image as field 'file'") from None
    chosen = next((p for p in parts if isinstance(p, File)), None) or next(
        (p for p in parts if p.field_name in (b"file", b"image")), None
    )
    if chosen is None:
        raise HTTPException(400, "the upload has no file part (send the image as field 'file')")
    return chosen.file_object.getvalue() if isinstance(chosen, File) else chosen.value or b""


def _projection(collection: _ServedCollection) -> dict[str, object]:
    """2-D PCA of every image's features, plus k-means clusters labelled by their members' top tags."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    snap = collection.store.snapshot([collection.image_space])
    n = len(snap)
    if n == 0:
        return {"points": [], "clusters": []}
    features = np.asarray(snap.vectors[collection.image_space], dtype=np.float32)
    if n >= 3:
        xy = PCA(n_components=2, random_state=0).fit_transform(features)
    else:
        xy = np.zeros((n, 2), dtype=np.float32) + np.arange(n, dtype=np.float32)[:, None]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    xy = (xy - lo) / np.maximum(hi - lo, 1e-9)
    points = [
        {"id": int(i), "x": round(float(x), 5), "y": round(float(y), 5)} for i, (x, y) in zip(snap.ids, xy)
    ]
    n_clusters = int(min(16, max(1, round((n / 2) ** 0.5))))
    clusters = []
    if n >= 2:
        model = KMeans(n_clusters=min(n_clusters, n), n_init=4, random_state=0).fit(xy)
        labels, centres = model.labels_, model.cluster_centers_
    else:
        labels, centres = np.zeros(n, dtype=int), xy[:1]
    tags = getattr(collection, "tags", None)
    for c, centre in enumerate(centres):
        members = np.flatnonzero(labels == c)
        if not len(members):
            continue
        nearest = members[np.argsort(np.linalg.norm(xy[members] - centre, axis=1))[:8]]
        votes: Counter[str] = Counter()
        for pos in nearest:
            image_id = int(snap.ids[pos])
            if tags is not None:
                try:
                    for word, score in tags(image_id, 3):
                        votes[word] += float(score)
                except SemsearchError:
                    pass
            else:
                record = collection.store.get(image_id)
                if record is not None and record.label:
                    votes[shown(record.label).replace("_", " ")] += 1.0
        label = ", ".join(w for w, _ in votes.most_common(2))
        clusters.append(
            {
                "x": round(float(centre[0]), 5),
                "y": round(float(centre[1]), 5),
                "size": len(members),
                "label": label,
            }
        )
    return {"points": points, "clusters": clusters}


# ------------------------------------------------------------------------------------------ app


def _one_blas_thread() -> None:
    """Concurrency comes from requests (threads + micro-batching), not from BLAS threads inside one product:
    nested BLAS threads oversubscribe the cores and, on a loaded 2-core machine, made a 1x50 @ 50x10000
    product take 20 ms instead of 0.2 ms."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        return
    threadpool_limits(limits=1, user_api="blas")


_CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"


class _SecurityHeaders:
    """Adds the browser hardening headers to every response.

    A plain ASGI middleware: Starlette's ``@app.middleware("http")`` wraps each response in a stream and
    task, which cost more per request than a whole cached text query."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        docs = scope["path"].startswith("/docs")

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if not docs:
                    headers.setdefault("Content-Security-Policy", _CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    db: Path,
    *,
    token: str | None = None,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    hosts: tuple[str, ...] = (),
    uploads: Gate | None = None,
) -> FastAPI:
    """The FastAPI app serving the collection at `db` (page at `/`, API under `/api`, schema at `/openapi.json`).

    `hosts`: Host header names accepted besides loopback ones (the address served on; "*" for any).
    `uploads`: how many uploads are processed at once and queued (default `UPLOAD_WORKERS`, `UPLOAD_WAITING`).
    """
    if token is not None and not token.strip():
        raise ValueError("the token is empty: give a real token or none")
    _one_blas_thread()
    served = Served(db)
    expected = token.encode() if token else None
    gate = uploads or Gate(UPLOAD_WORKERS, UPLOAD_WAITING)

    def check_token(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        given = (
            header[7:].strip() if header[:7].lower() == "bearer " else request.query_params.get("token", "")
        )
        if not given or not hmac.compare_digest(given.encode(), expected):
            raise HTTPException(401, "missing or wrong token", headers={"WWW-Authenticate": "Bearer"})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        served.close()

    app = FastAPI(
        lifespan=lifespan,
        title="semsearch",
        summary="Semantic search over a photo collection and words.",
        version="1",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.served = served
    api = APIRouter(prefix="/api", dependencies=[Depends(check_token)])

    @app.exception_handler(SemsearchError)
    async def _user_error(request: Request, exc: SemsearchError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    app.add_middleware(SameOriginWrites)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=[*LOOPBACK_HOSTS, *hosts], www_redirect=False)
    app.add_middleware(_SecurityHeaders)

    @api.get("/health", tags=["meta"])
    def health() -> dict[str, object]:
        """Liveness: the collection opens and its catalog is readable."""
        with served.collection() as c:
            return {"status": "ok", "images": c.store.count()}

    @api.get("/stats", tags=["meta"])
    def stats() -> dict[str, object]:
        """Collection statistics (as `Collection.stats()`)."""
        with served.collection() as c:
            return c.stats()

    @api.get("/classes", tags=["meta"])
    def classes() -> list[dict[str, object]]:
        """The focus classes (ImageNet-1k): index and display name."""
        from semsearch.classes import class_names

        return [{"index": i, "name": n} for i, n in enumerate(class_names())]

    @api.get("/search", tags=["search"])
    def search(
        q: Annotated[str, Query(min_length=1, max_length=500, description="Words or a phrase.")],
        k: K = 20,
        min_score: Annotated[
            float | None, Query(ge=0, le=1, description="Drop results under this score (0 keeps all).")
        ] = None,
        sort: Sort = "score",
    ):
        """Images matching words, a description, or a mixed query such as `beach + id:12 - people`
        (images by id only), narrowed by filters in the query (`after:2019-06 before:2020 in:Trips
        camera:canon near:48.85,2.35,20km`; filters alone list photos by date). Notes for people (unknown
        words, concepts no photo shows, nothing matching well) come in the X-Search-Notes header,
        percent-encoded, separated by '|'."""
        notes: list[str] = []
        with served.collection() as c:
            hits = c.search(q, k=k, notes=notes, min_score=min_score, allow_paths=False, sort=sort)
        headers = {"X-Search-Notes": quote("|".join(notes), safe="|, ")} if notes else None
        return JSONResponse(_rows(hits), headers=headers)

    @api.get("/similar/{image_id}", tags=["search"])
    def similar_to_indexed(
        image_id: ImageId, k: K = 20, focus: Focus = None, filter: FilterText = None, sort: Sort = "score"
    ):
        """Images similar to an indexed image, optionally focused on an ImageNet class or group ('dog')
        and narrowed by filters."""
        allowed = _filters(filter)
        with served.collection() as c:
            _record(c, image_id)
            return JSONResponse(
                _rows(c.similar(image_id, k=k, focus=focus or None, filters=allowed, sort=sort))
            )

    @api.post(
        "/similar",
        tags=["search"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "The image, as the raw body (image/*) or as field 'file' of multipart/form-data.",
                "content": {
                    "image/*": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                        }
                    },
                },
            }
        },
    )
    async def similar_to_upload(
        request: Request, k: K = 20, focus: Focus = None, filter: FilterText = None, sort: Sort = "score"
    ):
        """Images similar to an uploaded image (never stored), narrowed by filters. 413 when too large,
        400 when not an image, 503 (with Retry-After) when too many uploads are being processed."""
        allowed = _filters(filter)
        too_large = HTTPException(413, f"upload larger than {max_upload // (1024 * 1024)} MiB")
        limit = max_upload + 64 * 1024  # room for multipart headers
        length = request.headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > limit:
            raise too_large
        with gate.admitted():
            chunks, total = [], 0
            try:
                async for chunk in request.stream():
                    total += len(chunk)
                    if total > limit:
                        raise too_large
                    chunks.append(chunk)
            except ClientDisconnect:  # gone, or closed by its body deadline: nobody to answer
                return Response(status_code=400)
            content_type = request.headers.get("content-type", "")

            def run() -> list[dict[str, object]]:
                data = _parse_upload(b"".join(chunks), content_type)
                if len(data) > max_upload:
                    raise too_large
                if not data:
                    raise HTTPException(400, "empty upload: send an image")
                with served.collection() as c:
                    try:
                        return _rows(c.similar(data, k=k, focus=focus or None, filters=allowed, sort=sort))
                    except DecodeError as exc:
                        raise HTTPException(400, f"not a usable image: {exc}") from None

            return JSONResponse(await run_in_threadpool(gate.run, run))

    @api.get("/images/{image_id}", tags=["images"])
    def image_info(image_id: ImageId) -> dict[str, object]:
        """What the catalog knows about an image: id, path, label (its folder name), date taken (and
        whether from EXIF or the file's time), camera, GPS position, size in pixels, and the text
        recognised in it (null where `index --ocr` never ran on it)."""
        with served.collection() as c:
            r = _record(c, image_id)
            path = shown(r.path)  # a name that is not UTF-8 is shown escaped, never a 500
            label = shown(r.label) if r.label else r.label
            return {
                "id": r.id,
                "path": path,
                "name": Path(path).name,
                "label": label,
                **c.image_details(r.id),
            }

    @api.get("/facets", tags=["images"])
    def facets(filter: FilterText = None):
        """The photos the filters allow (all without): their count, a histogram of dates taken (by month,
        or by year over spans of three years or more; each bin with the `after:`/`before:` values that
        select it), their GPS positions (at most 5,000, evenly sampled) and their cameras."""
        allowed = _filters(filter)
        with served.collection() as c:
            return JSONResponse(c.facets(allowed))

    @api.get("/images/{image_id}/tags", tags=["images"])
    def image_tags(image_id: ImageId, k: K = 8):
        """Words describing an image (image → words). Rows: rank, word, score."""
        with served.collection() as c:
            _record(c, image_id)
            return JSONResponse(word_rows(_need(c, "tags")(image_id, k=k)))

    @api.get("/images/{image_id}/thumb", tags=["images"], response_class=Response)
    def image_thumb(image_id: ImageId):
        """A ~256 px WebP thumbnail, made once and cached under <collection>/thumbs."""
        with served.collection() as c:
            r = _record(c, image_id)
        source = Path(r.path)
        if not source.is_file():
            raise HTTPException(404, f"image {image_id} is no longer on disk")
        headers = {"Cache-Control": "private, max-age=300"}
        try:
            made = thumbnail(served.root, r.id, r.sha256, source)
        except DecodeError as exc:
            raise HTTPException(404, f"image {image_id} cannot be shown: {exc}") from None
        if isinstance(made, bytes):
            return Response(made, media_type=MEDIA_TYPE, headers=headers)
        return FileResponse(made, media_type=MEDIA_TYPE, headers=headers)

    @api.get("/images/{image_id}/original", tags=["images"], response_class=Response)
    def image_original(image_id: ImageId):
        """The indexed file itself (only files in the catalog, by id)."""
        with served.collection() as c:
            r = _record(c, image_id)
        source = Path(r.path)
        if source.suffix.lower() not in SUPPORTED_SUFFIXES or not source.is_file():
            raise HTTPException(404, f"image {image_id} is no longer on disk")
        media_type = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
        return FileResponse(source, media_type=media_type, headers={"Cache-Control": "private, max-age=300"})

    @api.get("/duplicates", tags=["images"])
    def duplicates(
        threshold: Annotated[
            float,
            Query(gt=0, le=1, description="Cosine of image features from which photos are near-duplicates."),
        ] = DEFAULT_THRESHOLD,
        limit: Annotated[int, Query(ge=1, le=MAX_GROUPS, description="Largest groups returned.")] = 100,
    ) -> dict[str, object]:
        """Groups of byte-identical copies and near-duplicates, largest first: `total` groups in all, the
        first `limit` in `groups` (each: ids, paths, sets of identical files, pair scores). Photos are
        compared once per change of the collection; another threshold only regroups."""
        with served.collection() as c:
            groups = c.duplicates(threshold)
        return {"threshold": threshold, "total": len(groups), "groups": [g.to_dict() for g in groups[:limit]]}

    @api.get("/words", tags=["words"])
    def similar_words(q: Annotated[str, Query(min_length=1, max_length=500)], k: K = 20):
        """Words nearest to a word or phrase (GloVe). Rows: rank, word, score; unknown words in X-Unknown-Words
        (comma-separated, percent-encoded: headers are Latin-1)."""
        from semsearch.encoders.words import tokenize

        table = _words()
        vector, unknown = table.phrase(q)
        rows = word_rows(table.nearest(vector, k, exclude=set(tokenize(q))))
        headers = {"X-Unknown-Words": quote(",".join(unknown), safe=",")} if unknown else None
        return JSONResponse(rows, headers=headers)

    @api.get("/map", tags=["images"])
    def collection_map():
        """Every image placed by a 2-D PCA of its features, with labelled clusters (computed once per change)."""
        epoch = served.epoch()
        with epoch.borrow() as c:
            return JSONResponse(epoch.cached("map", lambda: _projection(c)))

    app.include_router(api)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


__all__ = ["CollectionError", "Served", "create_app", "loopback"]
