"""The `semsearch` command line: a thin edge over `Collection`; it parses, calls, and presents.

Heavy modules (torch, onnxruntime, the word table) are imported inside the commands that need them, and the
CLI is plain click (no pydantic), so a query on an indexed collection starts fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from semsearch.errors import SemsearchError, SettingError
from semsearch.paths import default_db, shown

TOKEN_ENV = "SEMSEARCH_TOKEN"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def app() -> None:
    """Semantic search for photo collections and words."""


db_option = click.option(
    "--db", type=click.Path(path_type=Path), help="Collection directory (default: per-user location)."
)
k_option = click.option(
    "-k", "--top", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Number of results."
)
query_text_model_option = click.option(
    "--text-model",
    type=click.Choice(["glove", "minilm"]),
    help="Word space for this query only (default: the collection's); no indexing again is needed.",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document and nothing else."
)
sort_option = click.option(
    "--sort",
    type=click.Choice(["score", "date", "newest"]),
    default="score",
    show_default=True,
    help="Order of the results: best first, by date taken (oldest first), or newest first.",
)


def _db(db: Path | None) -> Path:
    return db if db is not None else default_db()


def emit_rows(rows: Sequence[dict[str, Any]], as_json: bool, title: str = "") -> None:
    """Print result rows as a table on a terminal, or as one JSON array."""
    if as_json:
        sys.stdout.write(json.dumps(list(rows)) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    if title:  # a line of its own: a table title would wrap at the table's width, mid-word
        click.echo(title)
    if not rows:  # the notes on stderr say why
        click.echo("no results")
        return
    table = Table()
    columns = [c for c in rows[0] if any(r[c] not in (None, []) for r in rows)]
    for column in columns:  # a column no row has a value for (no photo has a camera) is left out
        table.add_column(column, justify="right" if column in ("rank", "score", "id", "group") else "left")
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in columns))
    Console().print(table)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):  # a position, or other paths of the same file
        return ", ".join(f"{v:.5f}" if isinstance(v, float) else str(v) for v in value)
    return "" if value is None else str(value)


def note_if_empty(collection) -> None:
    """Say why a query found nothing when the collection holds no images (yet)."""
    if not collection.store.count():
        root = shown(str(collection.root))
        click.echo(
            f"note: the collection {root} has no images yet: run `semsearch index FOLDER --db {root}`",
            err=True,
        )


@contextmanager
def progress_bar(label: str, enabled: bool) -> Iterator[Callable[..., None] | None]:
    """A rich progress bar on a terminal; when piped, only stage changes (as lines); nothing in JSON mode.

    The callback is `update(done, total, stage=label)`: a stage other than `label` (a one-time model
    preparation) replaces the bar's description, so a long wait never looks like a frozen 0/N bar.
    """
    if not enabled:
        yield None
        return
    if not sys.stderr.isatty():
        said = {label}

        def note(done: int, total: int, stage: str = label) -> None:
            if stage not in said:
                said.add(stage)
                click.echo(f"{stage}...", err=True)

        yield note
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int, stage: str = label) -> None:
            bar.update(task, completed=done, total=total, description=stage)

        yield update


model_option = click.option(
    "--model",
    help="Image model: lite0 (fast, default for a new collection), lite2 (more accurate), or a CLIP-family "
    "model: clip:/path/to/model-folder (offline) or clip:org/name (downloaded once by transformers).",
)


@app.command()
@click.argument("folder", type=click.Path(path_type=Path))
@db_option
@model_option
@click.option(
    "--joint",
    type=click.Path(path_type=Path),
    help="A model from `semsearch train` for word search and tags.",
)
@click.option("--text-model", type=click.Choice(["glove", "minilm"]), help="Text space without --joint.")
@click.option(
    "--vectors",
    metavar="WHERE",
    help="Where the nearest-neighbour indexes live: auto (default), exact, pruned, scann, hnsw, "
    "milvus-lite:PATH.db or milvus://HOST:PORT[/name]. Recorded: later runs and queries use it.",
)
@click.option(
    "--ocr/--no-ocr",
    default=None,
    help="Recognise text in photos (receipts, signs, slides) so searches find it; the collection remembers "
    "the choice (about 0.3 s a photo on 2 cores; needs pip install 'semsearch[ocr]').",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    metavar="[ADDRESS]",
    help="Decode and encode on Ray (pip install 'semsearch[scale]'): alone, a Ray instance on this machine; "
    "with an address (auto, HOST:6379, ray://HOST:10001), that cluster. Put it after FOLDER.",
)
@click.option(
    "--ray-workers",
    type=click.IntRange(min=1),
    help="Ray actors, one model session each (default: one per CPU of the cluster).",
)
@json_option
def index(
    folder: Path,
    db: Path | None,
    model: str | None,
    joint: Path | None,
    text_model: str | None,
    vectors: str | None,
    ocr: bool | None,
    ray_address: str | None,
    ray_workers: int | None,
    as_json: bool,
) -> None:
    """Embed every image under FOLDER into the collection; only new or changed files are embedded. Each
    photo's date taken, camera, GPS position and size are stored for filters (after:, camera:, near:)."""
    from semsearch.collection import Collection

    encode = None
    if ray_address is not None:
        from semsearch.scale.raydata import RayEncode

        encode = RayEncode(ray_address, workers=ray_workers)
    elif ray_workers is not None:
        raise SettingError("--ray-workers needs --ray")
    with Collection(_db(db), writable=True, model=model) as collection:
        if vectors is not None:
            collection.use_vectors(vectors)
        if joint is not None or text_model is not None:
            collection.use_joint(joint, text_model or "glove")
        with progress_bar("embedding", enabled=not as_json) as update:
            report = collection.sync(folder, progress=update, ocr=ocr, encode=encode)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
        return
    click.echo(
        f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
        f"moved {report.moved}, removed {report.removed}, skipped {report.skipped}"
    )
    for path, reason in report.skipped_files:
        click.echo(f"  skipped {shown(path)}: {reason}")
    for path, note in report.notes:
        click.echo(f"  note {shown(path)}: {note}")
    if report.details or report.text_read:
        click.echo(f"details read for {report.details} photos, text read in {report.text_read}")
    if report.runtime:
        click.echo(f"image model runtime: {report.runtime}")


@app.command()
@click.argument("folder", type=click.Path(path_type=Path))
@db_option
@model_option
@click.option(
    "--debounce",
    "debounce_ms",
    type=click.IntRange(10, 60_000),
    default=1600,
    show_default=True,
    help="Gather changes for up to this many milliseconds into one batch.",
)
@click.option(
    "--full-sync",
    "full_every",
    type=click.FloatRange(min=1),
    default=3600,
    show_default=True,
    help="Also walk the whole folder this often (seconds) and at start-up, for changes no event told.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per batch (JSON lines).")
def watch(
    folder: Path, db: Path | None, model: str | None, debounce_ms: int, full_every: float, as_json: bool
) -> None:
    """Keep the collection in sync with FOLDER as photos appear, change, move and disappear (Ctrl-C stops).

    One line per batch on stderr (or one JSON object per batch on stdout with --json). Only one process
    writes a collection at a time: `index` on a watched collection is refused, and the other way round.
    """
    import time

    from semsearch.collection import Collection
    from semsearch.watch import watch as watch_folder

    with Collection(_db(db), writable=True, model=model) as collection:
        batches = watch_folder(collection, folder, debounce_ms=debounce_ms, full_every=full_every)
        if not as_json:
            click.echo(f"watching {shown(str(folder))} (Ctrl-C to stop)", err=True)
        for batch in batches:
            if as_json:
                sys.stdout.write(json.dumps(batch.to_dict()) + "\n")
                sys.stdout.flush()
                continue
            r = batch.report
            click.echo(
                f"{time.strftime('%H:%M:%S')} {'full sync: ' if batch.full else ''}added {r.added}, "
                f"updated {r.updated}, moved {r.moved}, removed {r.removed}, skipped {r.skipped}",
                err=True,
            )
            for path, reason in r.skipped_files:
                click.echo(f"  skipped {shown(path)}: {reason}", err=True)


@app.command()
@click.argument("image")
@db_option
@k_option
@click.option(
    "--focus",
    help="Focus on an ImageNet class ('Siamese cat', 0-999) or a group of them ('dog', 'birds', 'musical instrument').",
)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    help="Only photos these filters allow: 'after:2019-06 before:2020 in:Trips camera:canon "
    "near:48.85,2.35,20km' (repeatable).",
)
@sort_option
@json_option
def similar(
    image: str, db: Path | None, k: int, focus: str | None, filters: tuple[str, ...], sort: str, as_json: bool
) -> None:
    """Images most similar to IMAGE (a file, or an indexed image by id: 12 or id:12), by cosine of features."""
    from semsearch.collection import Collection
    from semsearch.query import image_ref, parse_filters

    allowed = parse_filters(" ".join(filters)) if filters else None
    with Collection(_db(db)) as collection:
        hits = collection.similar(image_ref(image), k=k, focus=focus, filters=allowed, sort=sort)
        note_if_empty(collection)
    focused = f", focus {focus!r}" if focus else ""
    emit_rows([h.to_dict() for h in hits], as_json, title=f"similar to {shown(image)}{focused}")


@app.command()
@click.argument("query", nargs=-1, required=True)
@k_option
@click.option(
    "--glove", type=click.Path(path_type=Path), help="A GloVe text file to use instead of GloVe 6B 50-d."
)
@json_option
def words(query: tuple[str, ...], k: int, glove: Path | None, as_json: bool) -> None:
    """Words nearest to WORD (GloVe word vectors). Several words search their mean; '+' and '-' do
    vector arithmetic: 'king - man + woman'."""
    from semsearch.collection import word_rows
    from semsearch.encoders.words import load_words, tokenize
    from semsearch.query import combine, parse_query

    table = load_words(glove)
    unknown: list[str] = []

    def embed(term) -> object:
        vector, missing = table.phrase(term.text)
        unknown.extend(missing)
        return vector

    vector = combine(parse_query(" ".join(query), images=False), embed)
    if unknown:
        click.echo(f"note: not in the vocabulary: {', '.join(dict.fromkeys(unknown))}", err=True)
    asked = set(tokenize(" ".join(query)))
    rows = word_rows(table.nearest(vector, k, exclude=asked))
    emit_rows(rows, as_json, title=f"words like {' '.join(query)}")


@app.command()
@click.argument("query")
@db_option
@k_option
@click.option(
    "--min-score",
    type=click.FloatRange(min=0),
    help="Drop results scoring under this (default: calibrated per kind of score; 0 keeps all).",
)
@query_text_model_option
@sort_option
@json_option
def search(
    query: str,
    db: Path | None,
    k: int,
    min_score: float | None,
    text_model: str | None,
    sort: str,
    as_json: bool,
) -> None:
    """Images that match words or a description; terms can be added or subtracted, and images (a file,
    or id:12) mixed in: 'beach + 2:id:12 - people'. Filters narrow any query: 'beach after:2019-06
    before:2020 in:Trips camera:canon near:48.85,2.35,20km'; filters alone list photos by date. Text
    recognised in photos (index --ocr) lifts the photos that contain the query's words."""
    from semsearch.collection import Collection

    notes: list[str] = []
    with Collection(_db(db), text_model=text_model) as collection:
        hits = collection.search(query, k, notes, min_score, sort=sort)
        note_if_empty(collection)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    emit_rows([h.to_dict() for h in hits], as_json, title=f"images for {shown(query)!r}")


@app.command()
@click.argument("image")
@db_option
@k_option
@query_text_model_option
@json_option
def tags(image: str, db: Path | None, k: int, text_model: str | None, as_json: bool) -> None:
    """Words that describe IMAGE (a file, or an indexed image as id:12)."""
    from semsearch.collection import Collection, word_rows
    from semsearch.query import image_ref

    with Collection(_db(db), text_model=text_model) as collection:
        found = collection.tags(image_ref(image), k)
    rows = word_rows(found)
    emit_rows(rows, as_json, title=f"tags of {shown(image)}")


@app.command()
@db_option
@click.option(
    "--threshold",
    type=float,
    help="Cosine of image features from which two photos are near-duplicates, above 0 and at most 1 "
    "(default: calibrated on edited copies of real photos, see bench/dupes.py).",
)
@json_option
def dupes(db: Path | None, threshold: float | None, as_json: bool) -> None:
    """Groups of duplicate photos: byte-identical copies and near-duplicates (resized, re-encoded, slightly
    cropped or re-coloured, burst frames)."""
    from semsearch.collection import Collection
    from semsearch.dupes import DEFAULT_THRESHOLD

    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    with Collection(_db(db)) as collection:
        with progress_bar("comparing photos", enabled=not as_json) as update:
            groups = collection.duplicates(threshold, progress=update)
        note_if_empty(collection)
    if as_json:
        found = {"threshold": threshold, "groups": [g.to_dict() for g in groups]}
        sys.stdout.write(json.dumps(found) + "\n")
        return
    rows = []
    for number, group in enumerate(groups, start=1):
        copy_of = {i: ids[0] for ids in group.identical for i in ids[1:]}
        best = {i: max((s for a, b, s in group.pairs if i in (a, b)), default=0.0) for i in group.ids}
        for image_id, path in zip(group.ids, group.paths):
            identical = f"id:{copy_of[image_id]}" if image_id in copy_of else ""
            rows.append(
                {
                    "group": number,
                    "id": image_id,
                    "score": best[image_id],
                    "copy of": identical,
                    "path": shown(path),
                }
            )
    if not rows:
        click.echo(f"no duplicates at threshold {threshold:g}")
        return
    images = sum(len(g.ids) for g in groups)
    named = f"{len(groups)} group{'s' if len(groups) > 1 else ''}"
    emit_rows(rows, False, title=f"{named}, {images} photos (threshold {threshold:g})")


@app.command()
@db_option
@json_option
def stats(db: Path | None, as_json: bool) -> None:
    """What the collection holds, which models made it, and the image model's runtime here (and why)."""
    from semsearch.collection import Collection

    with Collection(_db(db)) as collection:
        found = collection.stats()
    if as_json:
        sys.stdout.write(json.dumps(found) + "\n")
        return
    for key, value in found.items():
        click.echo(f"{key}: {value}")


@app.command()
@db_option
@json_option
def demo(db: Path | None, as_json: bool) -> None:
    """Index the sample photos that ship inside installed packages and run a few searches."""
    from semsearch.collection import Collection, word_rows
    from semsearch.demo import demo_photos

    photos = demo_photos()
    root = db if db is not None else photos.parent / "collection"
    with Collection(root, writable=True) as collection:
        with progress_bar("embedding", enabled=not as_json) as update:
            report = collection.sync(photos, progress=update)
        both = str(photos / "cat-and-coffee.jpg")
        sections: dict[str, Any] = {
            "index": report.to_dict(),
            "similar to chelsea.jpg": [
                h.to_dict() for h in collection.similar(str(photos / "chelsea.jpg"), k=3)
            ],
            "similar to cat-and-coffee.jpg, focus 'tabby cat'": [
                h.to_dict() for h in collection.similar(both, k=3, focus="tabby cat")
            ],
            "similar to cat-and-coffee.jpg, focus 'espresso'": [
                h.to_dict() for h in collection.similar(both, k=3, focus="espresso")
            ],
            "search 'a cup of coffee'": [h.to_dict() for h in collection.search("a cup of coffee", k=3)],
            "tags of rocket.jpg": word_rows(collection.tags(str(photos / "rocket.jpg"), k=5)),
        }
    from semsearch.encoders.words import load_words

    table = load_words()
    sections["words like 'cat'"] = word_rows(table.nearest(table.vector("cat"), 5, exclude={"cat"}))
    if as_json:
        sys.stdout.write(json.dumps(sections) + "\n")
        return
    click.echo(f"demo collection: {root} ({report.added + report.unchanged} photos from {photos})")
    for title, rows in sections.items():
        if isinstance(rows, list):
            emit_rows(rows, False, title=title)
    click.echo(f"try: semsearch similar {photos / 'rocket.jpg'} --db {root}")


@app.command()
@db_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; loopback unless you mean to share.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port.")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"Require 'Authorization: Bearer TOKEN' on every API call, TOKEN read from this file "
    f"(or set {TOKEN_ENV}); the page then needs /?token=TOKEN.",
)
@click.option("--token", help="The token itself (visible to other users in `ps`: prefer --token-file).")
@click.option(
    "--max-upload-mb", type=click.IntRange(min=1), default=20, show_default=True, help="Largest upload, MiB."
)
def serve(
    db: Path | None, host: str, port: int, token_file: Path | None, token: str | None, max_upload_mb: int
) -> None:
    """A local web page and JSON API over the collection (search, similar images, tags, words, map)."""
    from semsearch.server.app import create_app, loopback
    from semsearch.server.guards import serve as run_server

    secret = _serve_token(token, token_file)
    if token is not None:
        click.echo("warning: --token is visible to other users in `ps`; prefer --token-file", err=True)
    wildcard = host in ("0.0.0.0", "::", "")
    named = f"[{host}]" if ":" in host else host
    hosts = ("*",) if wildcard else (named,)
    web = create_app(_db(db), token=secret, max_upload=max_upload_mb * 1024 * 1024, hosts=hosts)
    if not loopback(host) and not secret:
        click.echo(
            f"warning: serving on {host} without a token: anyone who can reach it can browse", err=True
        )
    needs = " (token required: open /?token=YOUR-TOKEN once)" if secret else ""
    click.echo(f"semsearch: http://{named}:{port}/{needs}", err=True)
    run_server(web, host, port)


def _serve_token(given: str | None, token_file: Path | None) -> str | None:
    """The API token from --token, --token-file or $SEMSEARCH_TOKEN (in that order); an empty one is an
    error, never a silently open server."""
    if given is not None:
        token, source = given, "--token"
    elif token_file is not None:
        token, source = token_file.read_text(encoding="utf-8", errors="replace"), f"--token-file {token_file}"
    elif TOKEN_ENV in os.environ:
        token, source = os.environ[TOKEN_ENV], TOKEN_ENV
    else:
        return None
    token = token.strip()
    if not token:
        raise SettingError(f"the token from {source} is empty: give a real token, or none for no token")
    return token


@app.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Model file to write (e.g. model.npz)."
)
@click.option("--text-model", type=click.Choice(["glove", "minilm"]), default="glove", show_default=True)
@click.option(
    "--method",
    "--loss",
    "method",
    type=click.Choice(["ridge", "cosine", "infonce"]),
    default="ridge",
    show_default=True,
    help="ridge (closed form, seconds), or an MLP trained with the cosine (DeViSE) or infonce loss.",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=50, show_default=True, help="MLP epochs at most."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the splits and the weights.")
@click.option(
    "--classes-from-half",
    type=click.Choice(["first", "second"]),
    help="Train on the first or second half of the sorted class folders.",
)
@json_option
def train(
    source: Path,
    out: Path,
    text_model: str,
    method: str,
    epochs: int,
    seed: int,
    classes_from_half: str | None,
    as_json: bool,
) -> None:
    """Learn to map photos into the text space from class folders or a captions TSV; save it to --out."""
    from semsearch.train import train as run_train

    log = None if as_json else (lambda msg: click.echo(msg, err=True))
    with progress_bar("embedding", enabled=not as_json) as update:
        report = run_train(
            source,
            out,
            text_model=text_model,
            method=method,
            epochs=epochs,
            seed=seed,
            classes_from_half=classes_from_half,
            log=log,
            progress=update,
        )
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
        return
    gate = report.gate
    kept = (
        f"gate weight {gate['weight']} above similarity {gate['tau']}"
        if gate["weight"]
        else "ConSE kept for every photo (the map did not beat it on held-out classes)"
    )
    click.echo(
        f"saved {report.out}: {report.images} images, {method}, {kept}, {report.seconds:.1f}s training"
    )


@app.command(name="eval")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--joint", type=click.Path(path_type=Path), help="A model from `semsearch train` (default: ConSE)."
)
@click.option("--text-model", type=click.Choice(["glove", "minilm"]), default="glove", show_default=True)
@click.option(
    "--captions",
    type=click.Path(path_type=Path),
    help="A TSV of 'image path<TAB>caption' lines (paths relative to the TSV): caption retrieval recall.",
)
@json_option
def eval_(folder: Path, joint: Path | None, text_model: str, captions: Path | None, as_json: bool) -> None:
    """Precision@10 (image→image, class name→image) and tag hit rate over class folders; Recall@1/5/10
    and median rank of caption retrieval with --captions; held-out classes for a trained model."""
    from semsearch.evaluate import evaluate_folder

    with progress_bar("embedding", enabled=not as_json) as update:
        result = evaluate_folder(
            folder, text_model=text_model, joint_model=joint, progress=update, captions=captions
        )
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    emit_rows(eval_rows(result), False, title=f"eval {folder}")


def eval_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The eval report as (metric, value) rows: nested numbers flattened ('captions text_to_image R@10'),
    one row per dropped label with its reason, per-class numbers left to --json."""
    rows: list[dict[str, Any]] = []

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                add(f"{prefix} {key}".strip(), inner)
        elif not isinstance(value, list):
            rows.append({"metric": prefix, "value": value})

    add("", {k: v for k, v in result.items() if k not in ("per_class_text_precision", "labels_read_as")})
    for name, text in result.get("labels_read_as", {}).items():
        rows.append({"metric": f"label {name!r} read as", "value": repr(text)})
    for dropped in result.get("dropped_labels", []):
        rows.append({"metric": f"dropped label {dropped['label']!r}", "value": dropped["reason"]})
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit code."""
    try:
        app.main(args=argv, prog_name="semsearch", standalone_mode=False)
    except SemsearchError as exc:
        hint = f": {exc.cli_hint}" if exc.cli_hint else ""
        click.echo(f"error: {shown(str(exc))}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OSError as exc:  # a file the command reads or writes (e.g. --out on a full disk)
        where = f": {shown(os.fsdecode(exc.filename))}" if exc.filename else ""
        click.echo(f"error: {exc.strerror or exc}{where}", err=True)
        sys.exit(1)
    except (click.Abort, KeyboardInterrupt):
        click.echo("aborted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
