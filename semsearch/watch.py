"""Keep a collection in sync with a folder as photos appear, change, move and disappear.

Events come from watchfiles (Rust `notify`: inotify on Linux, FSEvents on macOS, ReadDirectoryChangesW
on Windows). inotify watches folders, not files, so a tree costs one watch per folder (measured: 1,612
folders, one chain of them 500 deep, holding 9,001 files took 1,612 watches; the per-user limit,
/proc/sys/fs/inotify/max_user_watches, is 8,192 on older kernels and grows with memory on newer ones).
A burst of changes is gathered into one batch (`debounce`), and a batch syncs only the paths it names
(`Collection.sync(paths=...)`): a camera import of 500 photos is a few batches, and a big tree is not
walked again for each of them. A full sync at start-up and every `full_every` seconds is the safety net
for whatever no event told (changes while nothing watched, a queue overflow, a folder a link leads to).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from semsearch.collection import Collection, IndexReport, visible_tops
from semsearch.errors import CollectionError

#: How often an idle watcher wakes (seconds) to see whether a full sync is due or the folder is gone.
TICK = 1.0


@dataclass(frozen=True)
class Batch:
    """One sync the watcher ran: what it did, whether it walked the whole folder, and how long it took."""

    report: IndexReport
    full: bool  # start-up, periodic, or a change set as large as the collection
    changes: int  # changed paths the events named (0 for a periodic full sync)
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            "full": self.full,
            "changes": self.changes,
            **self.report.to_dict(),
            "seconds": round(self.seconds, 3),
        }

    @property
    def changed(self) -> bool:
        """Whether the collection changed (a file skipped by a path batch is news too)."""
        report = self.report
        moves = report.added + report.updated + report.moved + report.removed
        return moves > 0 or (not self.full and report.skipped > 0)


def watch(
    collection: Collection,
    folder: Path,
    *,
    debounce_ms: int = 1600,
    full_every: float = 3600.0,
    tick: float = TICK,
    stop: threading.Event | None = None,
) -> Iterator[Batch]:
    """Sync `collection` with `folder` now and then whenever files change, until `stop` is set (or
    Ctrl-C: KeyboardInterrupt, between or inside batches; every batch commits as `sync` does). An idle
    watcher wakes every `tick` seconds to look for a due full sync or a vanished folder.

    Yields the start-up sync and each later batch that changed something. A missing folder is refused
    at once (CollectionError); one deleted or replaced while watched raises CollectionError too, and
    its photos stay in the collection (an unmounted disk looks the same).
    """
    import watchfiles

    folder = Path(folder).expanduser().absolute()
    identity = _identity(folder)
    if identity is None:
        raise CollectionError(f"folder {folder} does not exist or is not a directory")
    events = watchfiles.watch(
        folder,
        watch_filter=lambda change, path: _wanted(folder, collection.root, change, path),
        debounce=debounce_ms,
        step=min(50, debounce_ms),
        stop_event=stop,
        rust_timeout=max(1, int(min(tick, full_every) * 1000)),
        yield_on_timeout=True,
        ignore_permission_denied=True,  # an unreadable folder is listed by the full sync, not fatal here
    )
    return _batches(collection, folder, identity, events, full_every)


def _wanted(folder: Path, collection_root: Path, change, path: str) -> bool:
    """Events worth a sync: visible paths in the folder, outside the collection's own files, and no file
    of a kind that is never indexed."""
    from watchfiles import Change

    from semsearch.media import SUPPORTED_SUFFIXES

    if not visible_tops(folder, [path], skip=collection_root):
        return False
    suffix = os.path.splitext(path)[1].lower()
    return suffix in SUPPORTED_SUFFIXES or change == Change.deleted or os.path.isdir(path)


def _batches(
    collection: Collection,
    folder: Path,
    identity: tuple[int, int],
    events: Iterator[set[tuple[object, str]]],
    full_every: float,
) -> Iterator[Batch]:
    """One sync per set of changes (or per wake-up when a full sync is due), reported as `watch` says."""
    due, first = 0.0, True  # the start-up sync is due at once
    for changes in events:
        if _identity(folder) != identity:
            raise CollectionError(
                f"the watched folder {folder} was deleted or replaced; the collection keeps its photos",
                cli_hint="watch it again once it is back, or `semsearch index` another folder",
            )
        full = time.monotonic() >= due or len(changes) >= collection.store.count()
        if not full and not changes:
            continue
        start = time.monotonic()
        paths = None if full else {path for _, path in changes}
        report = collection.sync(folder, paths=paths)
        batch = Batch(report, full, len(changes), time.monotonic() - start)
        if full:
            due = time.monotonic() + full_every
        if first or batch.changed:
            yield batch
        first = False


def _identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of the folder, None where there is no folder: one deleted and made again under
    the same name is another folder, which no event of the old watch will tell about."""
    try:
        st = folder.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
