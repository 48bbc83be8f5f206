"""A folder of image files as a frame source: replayed once, or watched for new files.

Every file is classified once. Processed files are recorded in the outbox (atomically with
their result), in replay mode as in watch mode, so a restart after a crash resumes where it
stopped and never classifies a frame again under a new message id; ``source.reprocess``
(``edge run --reprocess``) forgets the folder's records to process it again on purpose.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import Field

from edge.errors import BlastscopeError
from edge.pipeline.frames import Frame, SourceError
from edge.service.config_types import FilePath, SourceBase
from edge.service.sources.folder_events import FolderEvents, WatchError
from edge.service.sources.registry import SourceKind
from edge.vision.file_names import is_valid_utf8, printable_name
from edge.vision.image_io import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    ImageReadError,
    IncompleteImageError,
    file_kind,
    read_image,
)
from edge.vision.quality import channel_warnings

log = logging.getLogger(__name__)

# Events mode lists the whole folder this often even without a notification: a lost one is
# found within the hour, and the full listing refreshes the records of files still present.
MAINTENANCE_S = 3600.0
_WAKE_S = 0.5  # events mode: how soon a stop request is noticed when nothing happens

_run_counter = itertools.count(1)


class FolderSourceConfig(SourceBase):
    kind: Literal["folder"]
    path: FilePath
    watch: bool = False  # keep watching for new files (a slide scanner's output folder)
    # events: filesystem notifications (inotify), idle costs nothing; poll: list the folder
    # every poll_s (network shares whose changes made elsewhere raise no local event).
    watch_method: Literal["events", "poll"] = "events"
    poll_s: float = Field(default=1.0, ge=0.01, le=3600)
    # A file's size and mtime must stay unchanged this long before it is read.
    settle_s: float = Field(default=0.5, ge=0, le=600)
    # A file that does not decode yet is retried while it is younger than this (a writer that
    # pauses mid-file), and only then reported as unreadable.
    incomplete_grace_s: float = Field(default=30.0, ge=0, le=3600)
    max_image_bytes: int = Field(default=MAX_IMAGE_BYTES, ge=1024, le=1 << 30)
    # Width x height read from the file header before decoding: a small file can decode to
    # gigabytes (a 2.6 MB PNG of 30000x30000 pixels takes 5.4 GB).
    max_image_pixels: int = Field(default=MAX_IMAGE_PIXELS, ge=1024, le=1 << 31)
    # Forget this folder's records of processed files at start and classify them all again
    # (a one-off, `edge run --reprocess`: left in a config, every restart starts over).
    reprocess: bool = False


class SeenRecords(Protocol):
    """Records of processed files, keyed by `seen_key` (edge.service.outbox.Outbox keeps them)."""

    def seen_among(self, keys: Iterable[str]) -> set[str]: ...

    def refresh_seen(self, keys: Iterable[str]) -> int: ...

    def forget_seen(self, keys: Iterable[str]) -> int: ...

    def prune_seen(self, older_than: float) -> int: ...


@dataclass(frozen=True)
class _Entry:
    """One name in the folder as stat (never open) saw it."""

    name: str  # as the OS gives it: undecodable bytes are carried as surrogates
    size: int
    mtime_ns: int
    problem: str | None = None  # why it is not read: "a FIFO (named pipe)", ...

    @property
    def state(self) -> tuple[int, int, str | None]:
        return (self.size, self.mtime_ns, self.problem)


@dataclass
class _Pending:
    state: tuple[int, int, str | None]  # unchanged since this entry was created
    due: float  # monotonic time to look again (settled by then, or the grace is over)
    failing_since: float | None = None  # monotonic time it first failed to decode


def is_candidate(name: str) -> bool:
    """A name the folder source considers: an image suffix, not hidden (see FolderSource)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def seen_key(entry: _Entry) -> str:
    """The outbox key of one version of a file: escaped name, size, mtime (printable UTF-8)."""
    name = printable_name(entry.name)
    if entry.problem is not None:
        return f"{name}:not-a-file:{entry.mtime_ns}"
    return f"{name}:{entry.size}:{entry.mtime_ns}"


class FolderSource:
    """Image files in a folder, by name: replayed once, or watched for new files.

    Considered are names with an image suffix (.jpg .jpeg .png .bmp .tif .tiff .webp) that do
    not start with a dot, so a writer's temporary names are ignored: ``x.jpg.part``, ``.tmp``,
    ``.partial``, ``.crdownload``, rsync's ``.x.jpg.Ab12Cd``. The safe convention for a slide
    scanner (or a copy job) is to write under such a name and rename into place when done:
    a rename is atomic, so the file is complete when it appears.

    Writers that write in place are handled too: a watched file is read only once its size
    and mtime stayed unchanged for ``settle_s`` (two looks at it), and one that still does not
    decode while younger than ``incomplete_grace_s`` (a writer that paused) is retried later,
    reported as unreadable only after that. A FIFO, socket, device, directory or broken link
    with an image name is reported once as an error event, never opened.

    Frame ids, origins and keys show file names escaped (`edge.vision.file_names.printable_name`);
    a name that is not valid UTF-8 adds a ``name_not_utf8`` warning to its result.

    Watching uses filesystem notifications (``watch_method = "events"``, an initial listing,
    a full listing again after lost notifications) or lists the folder every ``poll_s``
    (``"poll"``: network shares, whose remote changes raise no local notification). What is
    kept in memory is bounded by the folder's current contents.
    """

    live = False
    settings: dict[str, Any] | None = None

    def __init__(
        self,
        cfg: FolderSourceConfig,
        once: bool,
        seen: SeenRecords | None = None,
        retention_s: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.root = os.fspath(cfg.path)
        self.name = f"folder:{printable_name(self.root)}"
        self.watch = cfg.watch and not once
        self.seen = seen
        self.retention_s = retention_s  # prune records older than this (None: keep them)
        self.full_scans = 0  # listings of the whole folder so far (for tests and benchmarks)
        self._done: dict[str, tuple[int, int, str | None]] = {}  # name -> state dealt with
        self._pending: dict[str, _Pending] = {}
        self._dues: list[tuple[float, str]] = []  # heap of (due, name); stale ones skipped
        self._maintained_at: float | None = None
        self._reprocess = cfg.reprocess  # once per process, not on every retry
        self._events: FolderEvents | None = None

    # -- Source interface ----------------------------------------------------------------------

    def open(self) -> None:
        if not os.path.isdir(self.root):
            raise SourceError(f"{self.root_shown}: no such folder")
        if self._reprocess and self.seen is not None:
            forgotten = self.seen.forget_seen(seen_key(e) for e in self._scan())
            log.info("%s: processing again (%d records forgotten)", self.name, forgotten)
        self._reprocess = False

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        if not self.watch:
            yield from self._replay(stop)
        elif self.cfg.watch_method == "events":
            yield from self._watch_events(stop)
        else:
            yield from self._watch_poll(stop)

    def close(self) -> None:
        if self._events is not None:
            self._events.stop()
            self._events = None

    @property
    def root_shown(self) -> str:
        return printable_name(self.root)

    @property
    def remembered(self) -> int:
        """Entries held in memory: at most two per name in the folder now (done, and a newer
        version settling); names that are gone are forgotten."""
        return len(self._done) + len(self._pending)

    # -- the three ways of going through the folder --------------------------------------------

    def _replay(self, stop: threading.Event) -> Iterator[Frame]:
        for listed in self._full_scan():
            if stop.is_set():
                return
            entry = self._examine(listed.name)  # as it is now: the listing may be minutes old
            if entry is None or self._done.get(entry.name) == entry.state:
                continue
            frame = None if self._recorded(entry) else self._read(entry, retry_incomplete=False)
            self._done[entry.name] = entry.state
            if frame is not None:
                yield frame
        if not os.path.isdir(self.root):
            # Deleted or unmounted mid-run: the files left in the listing were skipped as
            # "removed", and returning now would pass for a finished replay (exit 0).
            raise SourceError(f"{self.root_shown}: no such folder (gone mid-run)")

    def _watch_poll(self, stop: threading.Event) -> Iterator[Frame]:
        while not stop.is_set():
            yield from self._consider_all(self._full_scan(), stop)
            stop.wait(self.cfg.poll_s)

    def _watch_events(self, stop: threading.Event) -> Iterator[Frame]:
        events = FolderEvents(Path(self.root), is_candidate)
        self._start(events)  # before the first listing: a file written in between is heard of
        self._events = events
        try:
            yield from self._consider_all(self._full_scan(), stop)
            listed_at = time.monotonic()
            while not stop.is_set():
                names, rescan = events.wait(min(_WAKE_S, self._next_due() - time.monotonic()))
                if events.gone or not os.path.isdir(self.root):
                    raise SourceError(f"{self.root_shown}: no such folder (gone mid-run)")
                if not events.alive:
                    log.warning("%s: the folder watcher stopped; restarting it", self.name)
                    events.stop()
                    self._start(events)
                    rescan = True
                if rescan or time.monotonic() - listed_at >= MAINTENANCE_S:
                    entries = self._full_scan()
                    listed_at = time.monotonic()
                else:
                    entries = self._examine_names(names | self._due_names())
                yield from self._consider_all(entries, stop)
        finally:
            events.stop()
            self._events = None

    def _start(self, events: FolderEvents) -> None:
        try:
            events.start()
        except WatchError as exc:  # a source failure: the daemon retries, then exits
            raise SourceError(f"{self.root_shown}: {exc}") from None

    # -- listing -------------------------------------------------------------------------------

    def _scan(self) -> list[_Entry]:
        try:
            names = sorted(n for n in os.listdir(self.root) if is_candidate(n))
        except (FileNotFoundError, NotADirectoryError):
            raise SourceError(f"{self.root_shown}: no such folder (gone mid-run)") from None
        except OSError as exc:
            raise SourceError(
                f"{self.root_shown}: cannot list the folder ({exc.strerror})"
            ) from None
        return self._examine_names(names)

    def _full_scan(self) -> list[_Entry]:
        """Every candidate not yet dealt with; names that are gone are forgotten."""
        entries = self._scan()
        present = {e.name for e in entries}
        for name in self._done.keys() - present:
            del self._done[name]  # memory stays bounded by what is in the folder now
        for name in self._pending.keys() - present:
            del self._pending[name]
        if self.seen is not None:
            self._adopt_records(entries)
            self._maintain_records(entries)
        self.full_scans += 1
        return [e for e in entries if self._done.get(e.name) != e.state]

    def _examine_names(self, names: Iterable[str]) -> list[_Entry]:
        out = []
        for name in sorted(names):
            entry = self._examine(name)
            if entry is None:  # gone: a delete event, or removed since the listing
                self._done.pop(name, None)
                self._pending.pop(name, None)
            else:
                out.append(entry)
        return out

    def _examine(self, name: str) -> _Entry | None:
        """stat() one name, following links, never opening it; None if it is gone."""
        path = os.path.join(self.root, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return _dangling_link(path, name)
        except OSError as exc:  # a symlink loop, a permission problem on the way
            return _Entry(name, 0, 0, f"cannot be examined ({exc.strerror})")
        if stat.S_ISREG(st.st_mode):
            return _Entry(name, st.st_size, st.st_mtime_ns)
        what = file_kind(st.st_mode)
        if os.path.islink(path):
            what = f"a symbolic link to {printable_name(os.readlink(path))} ({what})"
        return _Entry(name, 0, st.st_mtime_ns, what)

    # -- the outbox's records of processed files -----------------------------------------------

    def _adopt_records(self, entries: list[_Entry]) -> None:
        """Entries processed by an earlier run (their records say so) count as done."""
        assert self.seen is not None
        fresh = {seen_key(e): e for e in entries if self._done.get(e.name) != e.state}
        if not fresh:
            return
        for key in self.seen.seen_among(fresh):
            entry = fresh[key]
            self._done[entry.name] = entry.state

    def _maintain_records(self, entries: list[_Entry]) -> None:
        """Refresh the records of files still present, then prune old ones (at most hourly).

        Refreshing first means pruning can never drop the record of a file still in the
        folder, which would otherwise be classified again after the next restart.
        """
        assert self.seen is not None
        now = time.monotonic()
        if self._maintained_at is not None and now - self._maintained_at < MAINTENANCE_S:
            return
        self._maintained_at = now
        done = [seen_key(e) for e in entries if self._done.get(e.name) == e.state]
        try:
            self.seen.refresh_seen(done)
            if self.retention_s is not None:
                pruned = self.seen.prune_seen(time.time() - self.retention_s)
                if pruned:
                    log.info("pruned %d records of processed files no longer present", pruned)
        except BlastscopeError as exc:  # the disk is full, say: keep classifying, retry later
            log.warning("%s: cannot maintain the records of processed files: %s", self.name, exc)

    def _recorded(self, entry: _Entry) -> bool:
        return self.seen is not None and bool(self.seen.seen_among([seen_key(entry)]))

    # -- watching: settle, read, retry ---------------------------------------------------------

    def _consider_all(self, entries: list[_Entry], stop: threading.Event) -> Iterator[Frame]:
        for listed in entries:
            if stop.is_set():
                return
            # Looked at again: while the daemon took the previous frames, this one may have
            # changed or gone (only entries not yet done get here: few, after the first scan).
            for entry in self._examine_names([listed.name]):
                frame = self._consider(entry, time.monotonic())
                if frame is not None:
                    yield frame

    def _consider(self, entry: _Entry, now: float) -> Frame | None:
        """The frame for a watched entry once it is settled and complete; None until then."""
        name = entry.name
        if self._done.get(name) == entry.state:
            self._pending.pop(name, None)
            return None
        if entry.problem is None:
            p = self._pending.get(name)
            if p is None or p.state != entry.state:  # new, or written since: settle again
                p = self._defer(name, entry.state, now + self.cfg.settle_s)
            if now < p.due:
                return None
        frame = None
        if not self._recorded(entry):
            left = self._grace_left(entry, now)
            frame = self._read(entry, retry_incomplete=left > 0)
            if frame is None:  # incomplete and young: the writer may only have paused
                failing_since = self._pending[name].failing_since or now
                self._defer(name, entry.state, now + left).failing_since = failing_since
                log.debug("%s: incomplete; looking again within %.1fs", printable_name(name), left)
                return None
        self._done[name] = entry.state
        self._pending.pop(name, None)
        return frame

    def _defer(self, name: str, state: tuple[int, int, str | None], due: float) -> _Pending:
        p = self._pending[name] = _Pending(state, due)
        if self._events is not None:  # poll mode looks at every pending entry each poll
            heapq.heappush(self._dues, (due, name))
        return p

    def _due_names(self) -> set[str]:
        now, out = time.monotonic(), set()
        while self._dues and self._dues[0][0] <= now:
            _, name = heapq.heappop(self._dues)
            p = self._pending.get(name)
            if p is not None and p.due <= now:
                out.add(name)
        return out

    def _next_due(self) -> float:
        return self._dues[0][0] if self._dues else float("inf")

    def _grace_left(self, entry: _Entry, now: float) -> float:
        """Seconds an undecodable file may still be a writer's pause, by its mtime and by our
        own clock (a network share's mtime can be in the future)."""
        grace = self.cfg.incomplete_grace_s
        by_mtime = grace - (time.time() - entry.mtime_ns / 1e9)
        p = self._pending.get(entry.name)
        by_us = grace if p is None or p.failing_since is None else grace - (now - p.failing_since)
        return min(by_mtime, by_us)

    # -- reading -------------------------------------------------------------------------------

    def _read(self, entry: _Entry, retry_incomplete: bool) -> Frame | None:
        """The entry's frame or error frame; None if it is gone, or incomplete and
        `retry_incomplete`."""
        path = os.path.join(self.root, entry.name)
        shown = printable_name(path)
        meta = self._frame_meta(entry, shown)
        if entry.problem is not None:
            reason = (
                f"{shown}: {entry.problem}; only regular files are read: move it out of the "
                "folder or replace it with the image file"
            )
            return Frame(**meta, error=reason)
        t0 = time.perf_counter()
        try:
            image = read_image(
                path, self.cfg.max_image_bytes, self.cfg.max_image_pixels, name=shown
            )
        except IncompleteImageError as exc:
            return None if retry_incomplete else Frame(**meta, error=str(exc))
        except ImageReadError as exc:
            if not os.path.lexists(path):
                return None  # removed while being read: nothing to report
            return Frame(**meta, error=str(exc))
        ms = (time.perf_counter() - t0) * 1e3
        meta["warnings"] = (*meta["warnings"], *channel_warnings(image))
        return Frame(**meta, image=image, read_ms=ms)

    def _frame_meta(self, entry: _Entry, shown: str) -> dict[str, Any]:
        warnings: tuple[dict[str, str], ...] = ()
        if not is_valid_utf8(entry.name):
            warnings = (
                {
                    "code": "name_not_utf8",
                    "message": f"the file name is not valid UTF-8; shown as "
                    f"{printable_name(entry.name)} (\\xNN: a byte that is not UTF-8); "
                    "rename the file",
                },
            )
        return {
            "frame_id": f"{printable_name(entry.name)}@{next(_run_counter)}",
            "captured_at": time.time(),
            "origin": f"folder:{shown}",
            "seen_key": seen_key(entry),
            "warnings": warnings,
        }


def _dangling_link(path: str, name: str) -> _Entry | None:
    try:
        mtime_ns = os.lstat(path).st_mtime_ns
        target = os.readlink(path)
    except OSError:
        return None  # removed between listing and looking
    problem = f"a symbolic link to {printable_name(target)}, which does not exist"
    return _Entry(name, 0, mtime_ns, problem)


def _parse(rest: str) -> dict[str, Any] | None:
    return {"kind": "folder", "path": rest} if rest else None


KIND = SourceKind(
    "folder",
    FolderSourceConfig,
    lambda cfg, ctx: FolderSource(cfg, ctx.once, ctx.seen, ctx.retention_s),
    _parse,
    "folder:PATH",
)
