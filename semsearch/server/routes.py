"""The JSON API under ``/api``: one endpoint per question a client asks of the collection, each a thin call
into `Collection` (as the CLI's commands are) on a collection borrowed from `Served`."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.params import Depends
from fastapi.responses import FileResponse, JSONResponse, Response
from python_multipart import create_form_parser
from python_multipart.multipart import Field, File
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from semsearch.collection import Collection, word_rows
from semsearch.dupes import DEFAULT_THRESHOLD
from semsearch.errors import DecodeError
from semsearch.media import SUPPORTED_SUFFIXES
from semsearch.paths import shown
from semsearch.server.guards import Gate
from semsearch.server.maps import collection_map, examples
from semsearch.server.state import Epoch, Served, word_table
from semsearch.store import Record
from semsearch.thumbs import MEDIA_TYPE, thumbnail

MAX_K = 200
MAX_ID = 2**63 - 1  # SQLite's largest integer
MAX_GROUPS = 500  # duplicate groups in one answer
MAX_PARTS = 8  # multipart parts per upload: the image and a few form fields

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


def api_router(served: Served, *, gate: Gate, max_upload: int, guard: Depends) -> APIRouter:
    """The ``/api`` endpoints over `served`; `guard` runs before each (the token check), `gate` bounds
    the uploads at work, `max_upload` their size in bytes."""
    api = APIRouter(prefix="/api", dependencies=[guard])

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

        table = word_table()
        vector, unknown = table.phrase(q)
        rows = word_rows(table.nearest(vector, k, exclude=set(tokenize(q))))
        headers = {"X-Unknown-Words": quote(",".join(unknown), safe=",")} if unknown else None
        return JSONResponse(rows, headers=headers)

    def the_map(epoch: Epoch) -> dict[str, object]:
        """The collection's map, computed once per catalog version by the first caller (others wait)."""

        def build() -> dict[str, object]:
            with epoch.borrow() as c:
                return collection_map(c)

        return epoch.cached("map", build)

    @api.get("/map", tags=["images"])
    def map_of_collection() -> Response:
        """Every image placed in 2-D so that photos that look alike lie together (`points`: id, x, y in
        [0, 1], cluster), in regions named by what they show (`clusters`, largest first: label, centre x,
        y, size, box [x0, y0, x1, y1] of its photos). Computed once per change of the collection."""
        epoch = served.epoch()
        body = epoch.cached("map.json", lambda: json.dumps(the_map(epoch), separators=(",", ":")).encode())
        return Response(body, media_type="application/json")

    @api.get("/overview", tags=["meta"])
    def overview(k: K = 12) -> dict[str, object]:
        """What a start page shows: how many photos, the image model, the `k` newest photos (by date
        taken; rows as /api/search's) and up to six example queries that find photos of this collection
        (the names of its map's largest regions, such as 'dog' or 'laptop')."""
        epoch = served.epoch()
        with epoch.borrow() as c:
            count, recent = c.store.count(), _rows(c.newest(k))
            model = c.store.meta().get("image_model") or c.model_name
        return {"count": count, "model": model, "recent": recent, "examples": examples(the_map(epoch))}

    return api
