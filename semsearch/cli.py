"""The `semsearch` command line: a thin edge over `Collection`; it parses, calls, and presents.

Heavy modules (torch, onnxruntime, the word table) are imported inside the commands that need them, so a
query on an indexed collection starts fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from semsearch.errors import SemsearchError
from semsearch.paths import default_db

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Semantic search for photo collections and words.",
    pretty_exceptions_enable=False,
)

DbOption = Annotated[Path | None, typer.Option("--db", help="Collection directory (default: per-user location).")]
KOption = Annotated[int, typer.Option("-k", "--top", min=1, help="Number of results.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document and nothing else.")]


def _db(db: Path | None) -> Path:
    return db if db is not None else default_db()


def emit_rows(rows: Sequence[dict[str, Any]], as_json: bool, title: str = "") -> None:
    """Print result rows as a table on a terminal, or as one JSON array."""
    if as_json:
        sys.stdout.write(json.dumps(list(rows)) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None, title_justify="left")
    columns = list(rows[0]) if rows else ["result"]
    for column in columns:
        table.add_column(column, justify="right" if column in ("rank", "score", "id") else "left")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)


@contextmanager
def progress_bar(label: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on a terminal; nothing when piped or in JSON mode."""
    if not enabled or not sys.stderr.isatty():
        yield None
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

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@app.command()
def index(
    folder: Annotated[Path, typer.Argument(help="Folder of photos, scanned recursively.")],
    db: DbOption = None,
    model: Annotated[str, typer.Option(help="Image model: lite0 (fast) or lite2 (more accurate).")] = "lite0",
    joint: Annotated[
        Path | None, typer.Option(help="A model from `semsearch train` for word search and tags.")
    ] = None,
    text_model: Annotated[str | None, typer.Option(help="Text space without --joint: glove or minilm.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Embed every image under FOLDER into the collection; only new or changed files are embedded."""
    from semsearch.collection import Collection

    with Collection(_db(db), writable=True, model=model) as collection:
        if joint is not None or text_model is not None:
            collection.use_joint(joint, text_model or "glove")
        with progress_bar("embedding", enabled=not as_json) as update:
            report = collection.sync(folder, progress=update)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
        return
    typer.echo(
        f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
        f"removed {report.removed}, skipped {report.skipped}"
    )
    for path, reason in report.skipped_files:
        typer.echo(f"  skipped {path}: {reason}")


@app.command()
def similar(
    image: Annotated[str, typer.Argument(help="An indexed photo or any image file.")],
    db: DbOption = None,
    k: KOption = 10,
    focus: Annotated[
        str | None, typer.Option(help="Focus on one ImageNet class: a name such as 'Siamese cat' or 0-999.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Images most similar to IMAGE (cosine distance of CNN features)."""
    from semsearch.collection import Collection

    with Collection(_db(db)) as collection:
        hits = collection.similar(image, k=k, focus=focus)
    emit_rows([h.to_dict() for h in hits], as_json, title=f"similar to {image}")


@app.command()
def words(
    query: Annotated[list[str], typer.Argument(help="One or more words; several words search their mean.")],
    k: KOption = 10,
    glove: Annotated[Path | None, typer.Option(help="A GloVe text file to use instead of GloVe 6B 50-d.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Words nearest to WORD (GloVe word vectors)."""
    from semsearch.encoders.words import load_words

    table = load_words(glove)
    vector, unknown = table.phrase(" ".join(query))
    if unknown:
        typer.echo(f"note: not in the vocabulary: {', '.join(unknown)}", err=True)
    asked = {w.lower() for w in query}
    rows = [
        {"rank": rank, "word": word, "score": score}
        for rank, (word, score) in enumerate(table.nearest(vector, k, exclude=asked), start=1)
    ]
    emit_rows(rows, as_json, title=f"words like {' '.join(query)}")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help='Words, a phrase, or a mixed query: "cat + ./photo.jpg - grass".')],
    db: DbOption = None,
    k: KOption = 10,
    as_json: JsonOption = False,
) -> None:
    """Images that match words or a phrase (the joint image-word space); terms can be added or subtracted."""
    from semsearch.collection import Collection

    with Collection(_db(db)) as collection:
        vector, notes = collection.encode_query(query)
        hits = collection.search_vector(vector, k)
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    emit_rows([h.to_dict() for h in hits], as_json, title=f"images for {query!r}")


@app.command()
def tags(
    image: Annotated[str, typer.Argument(help="An indexed photo or any image file.")],
    db: DbOption = None,
    k: KOption = 10,
    as_json: JsonOption = False,
) -> None:
    """Words that describe IMAGE."""
    from semsearch.collection import Collection

    with Collection(_db(db)) as collection:
        found = collection.tags(image, k)
    rows = [{"rank": r, "word": w, "score": s} for r, (w, s) in enumerate(found, start=1)]
    emit_rows(rows, as_json, title=f"tags of {image}")


@app.command()
def demo(
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Index the sample photos that ship inside installed packages and run a few searches."""
    from semsearch.collection import Collection
    from semsearch.demo import demo_photos

    photos = demo_photos()
    root = db if db is not None else photos.parent / "collection"
    with Collection(root, writable=True) as collection:
        with progress_bar("embedding", enabled=not as_json) as update:
            report = collection.sync(photos, progress=update)
        cat = str(photos / "chelsea.jpg")
        sections = {
            "index": report.to_dict(),
            "similar to chelsea.jpg": [h.to_dict() for h in collection.similar(cat, k=3)],
            "similar to chelsea.jpg, focus 'espresso'": [
                h.to_dict() for h in collection.similar(cat, k=3, focus="espresso")
            ],
        }
    from semsearch.encoders.words import load_words

    table = load_words()
    sections["words like 'cat'"] = [
        {"rank": r, "word": w, "score": s}
        for r, (w, s) in enumerate(table.nearest(table.vector("cat"), 5, exclude={"cat"}), start=1)
    ]
    if as_json:
        sys.stdout.write(json.dumps(sections) + "\n")
        return
    typer.echo(f"demo collection: {root} ({report.added + report.unchanged} photos from {photos})")
    for title, rows in sections.items():
        if isinstance(rows, list):
            emit_rows(rows, False, title=title)
    typer.echo(f"try: semsearch similar {photos / 'rocket.jpg'} --db {root}")


@app.command()
def serve(
    db: DbOption = None,
    host: Annotated[str, typer.Option(help="Address to bind; only loopback unless you mean to share it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    token: Annotated[
        str | None, typer.Option(help="Require 'Authorization: Bearer TOKEN' on every API call (page: /?token=TOKEN).")
    ] = None,
    max_upload_mb: Annotated[int, typer.Option(min=1, help="Largest accepted upload, in MiB.")] = 20,
) -> None:
    """A local web page and JSON API over the collection (search, similar images, tags, words, map)."""
    import uvicorn

    from semsearch.server.app import create_app, loopback

    web = create_app(_db(db), token=token, max_upload=max_upload_mb * 1024 * 1024)
    if not loopback(host) and not token:
        typer.echo(f"warning: serving on {host} without --token: anyone who can reach it can browse", err=True)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"semsearch: http://{shown}:{port}/" + (f"?token={token}" if token else ""), err=True)
    uvicorn.run(web, host=host, port=port, log_level="warning")


@app.command()
def train(
    source: Annotated[Path, typer.Argument(help="A folder with one sub-folder per class, or a captions TSV.")],
    out: Annotated[Path, typer.Option("--out", help="Model file to write (e.g. model.npz).")],
    text_model: Annotated[str, typer.Option(help="Text space: glove or minilm.")] = "glove",
    loss: Annotated[str, typer.Option(help="cosine (DeViSE) or infonce (contrastive).")] = "cosine",
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation split and the weights.")] = 0,
    classes_from_half: Annotated[
        str | None, typer.Option(help="Train on the first or second half of the sorted class folders.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Fit a small head from image features to text vectors (DeViSE-style) and save it to --out."""
    from semsearch.train import train as run_train

    log = None if as_json else (lambda msg: typer.echo(msg, err=True))
    with progress_bar("embedding", enabled=not as_json) as update:
        report = run_train(source, out, text_model=text_model, loss=loss, epochs=epochs, seed=seed,
                           classes_from_half=classes_from_half, log=log, progress=update)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    else:
        typer.echo(f"saved {report.out}: {report.images} images, best epoch {report.best_epoch}, "
                   f"{report.seconds:.1f}s training")


@app.command(name="eval")
def eval_(
    folder: Annotated[Path, typer.Argument(help="A folder with one sub-folder of photos per class.")],
    joint: Annotated[Path | None, typer.Option(help="A model from `semsearch train` (default: ConSE).")] = None,
    text_model: Annotated[str, typer.Option(help="Text space without --joint: glove or minilm.")] = "glove",
    as_json: JsonOption = False,
) -> None:
    """Precision@10 (image→image, class name→image), tag hit rate; held-out classes for a trained model."""
    from semsearch.evaluate import evaluate_folder

    with progress_bar("embedding", enabled=not as_json) as update:
        result = evaluate_folder(folder, text_model=text_model, joint_model=joint, progress=update)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    rows = [{"metric": k, "value": v} for k, v in result.items() if not isinstance(v, dict)]
    emit_rows(rows, False, title=f"eval {folder}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit code."""
    try:
        app(args=argv, standalone_mode=False)
    except SemsearchError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
