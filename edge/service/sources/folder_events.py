"""Filesystem notifications for one folder (watchdog: inotify on Linux), as a set of names.

The folder source asks "which names changed?" and sleeps in between: an idle folder of any
size costs no CPU. Notifications can be lost (the kernel's queue overflows when files arrive
faster than they are read); that is reported as "rescan needed", and so is an observer whose
thread died, so that the caller lists the whole folder again.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.errors import BlastscopeError
from edge.optional_dependencies import missing_message

log = logging.getLogger(__name__)

# watchdog logs an inotify queue overflow from here and tells no event handler (watchdog
# #654): a handler on this logger is the only way to hear of it.
_WATCHDOG_INOTIFY_LOGGER = "watchdog.observers.inotify_c"


class WatchError(BlastscopeError):
    """The folder cannot be watched (watchdog missing, inotify limits reached)."""


class FolderEvents:
    """Names directly inside `folder` that were created, written, moved or deleted."""

    def __init__(self, folder: Path, wanted: Callable[[str], bool]) -> None:
        self.folder = os.path.abspath(folder)
        self.wanted = wanted  # which names matter (image suffix, not hidden)
        self._cond = threading.Condition()
        self._names: set[str] = set()
        self._rescan = False
        self._gone = False
        self._observer: Any = None
        self._overflow = _OverflowHook(self.request_rescan)

    def start(self) -> None:
        """Start watching (before the caller's first listing, so nothing falls in between)."""
        observer, event_filter = _watchdog()
        try:
            observer.schedule(
                _Handler(self), self.folder, recursive=False, event_filter=event_filter
            )
            observer.start()
        except OSError as exc:
            raise WatchError(f"cannot watch the folder for new files: {_why(exc)}") from None
        logging.getLogger(_WATCHDOG_INOTIFY_LOGGER).addHandler(self._overflow)
        self._observer = observer

    def stop(self) -> None:
        logging.getLogger(_WATCHDOG_INOTIFY_LOGGER).removeHandler(self._overflow)
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    @property
    def alive(self) -> bool:
        """The observer and its emitter still run (the emitter stops when the folder goes)."""
        obs = self._observer
        return bool(obs is not None and obs.is_alive() and all(e.is_alive() for e in obs.emitters))

    @property
    def gone(self) -> bool:
        """The watched folder itself was deleted or moved away."""
        return self._gone

    def wait(self, timeout: float) -> tuple[set[str], bool]:
        """Names changed since the last call, and whether a full rescan is needed (overflow)."""
        with self._cond:
            if not (self._names or self._rescan or self._gone):
                self._cond.wait(max(0.0, timeout))
            names, self._names = self._names, set()
            rescan, self._rescan = self._rescan, False
        return names, rescan

    def request_rescan(self) -> None:
        with self._cond:
            self._rescan = True
            self._cond.notify_all()

    def note(self, event: Any) -> None:
        """One watchdog event: remember the names it concerns."""
        paths = [os.fsdecode(p) for p in (event.src_path, event.dest_path) if p]
        if event.event_type == "deleted" and os.fsdecode(event.src_path) == self.folder:
            with self._cond:
                self._gone = True
                self._cond.notify_all()
            return
        names = {
            os.path.basename(p)
            for p in paths
            if os.path.dirname(p) == self.folder and self.wanted(os.path.basename(p))
        }
        if names:
            with self._cond:
                self._names |= names
                self._cond.notify_all()


def _watchdog() -> tuple[Any, list[Any]]:
    """A new watchdog Observer and the event types wanted (imported lazily: only watching)."""
    try:
        from watchdog import events as e
        from watchdog.observers import Observer
    except ImportError:
        fix = missing_message("watchdog", "watching a folder")
        raise WatchError(f'{fix}; or set source.watch_method = "poll"') from None
    # Not opened / closed-without-writing: the source's own reads would wake it for nothing.
    wanted = [
        e.FileCreatedEvent,
        e.FileModifiedEvent,
        e.FileAttribEvent,
        e.FileClosedEvent,
        e.FileMovedEvent,
        e.FileDeletedEvent,
        e.DirCreatedEvent,
        e.DirMovedEvent,
        e.DirDeletedEvent,
    ]
    return Observer(), wanted


def _why(exc: OSError) -> str:
    poll = 'or set source.watch_method = "poll"'
    if exc.errno == errno.ENOSPC:
        return f"the inotify watch limit is reached; raise fs.inotify.max_user_watches, {poll}"
    if exc.errno == errno.EMFILE:
        return f"too many inotify instances; raise fs.inotify.max_user_instances, {poll}"
    return str(exc.strerror or exc)


class _Handler:
    """What watchdog calls for each event (its handler interface is `dispatch`)."""

    def __init__(self, events: FolderEvents) -> None:
        self.events = events

    def dispatch(self, event: Any) -> None:
        self.events.note(event)


class _OverflowHook(logging.Handler):
    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            log.warning("filesystem notifications were lost (queue overflow): listing again")
            self.on_overflow()
