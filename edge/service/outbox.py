"""The durable outbox: every result is on disk before it is published, gone only once acked.

SQLite in WAL mode with ``synchronous=FULL``: a committed row survives a power cut, a daemon
crash or SIGKILL. ``seq`` (AUTOINCREMENT, never reused) is the publish order; ``message_id``
is assigned at insert and stored, so a replay after an outage carries the same id and
consumers can de-duplicate. The outbox is bounded; what happens when it is full is a policy,
and its effect is counted (and reported on the status topic by the daemon), never silent.

A row the broker refused (an MQTT 5 PUBACK reason code >= 0x80, e.g. an ACL that does not
match the device's user name) was not delivered: it stays, marked with the broker's reason,
and is offered again after the next connect.

A full disk must not stop the drain. SQLite needs room to delete a row (the change goes to the
WAL, and a checkpoint may have to grow the database file), so a reserve file of
``reserve_bytes`` is kept beside the database and given up when a delete fails for lack of
space. From the first failed write, producers wait (``disk_full``) while acknowledged rows are
deleted; they resume only once the outbox has given space back to the filesystem (a truncating
checkpoint, an incremental vacuum) and the reserve could be taken again, so that the next full
disk can be drained too. Without that margin a resumed producer takes the freed space at once
and the drain deadlocks (measured on a 1 MiB tmpfs).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge.errors import BlastscopeError
from edge.service.outbox_lock import OutboxLock

log = logging.getLogger(__name__)

FullPolicy = Literal["block", "drop_oldest", "reject_new"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    refused TEXT,
    refused_at REAL
);
CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# Outboxes written before refused rows stayed in line kept them in a table of their own.
_MIGRATIONS = (
    ("outbox", "refused", "ALTER TABLE outbox ADD COLUMN refused TEXT"),
    ("outbox", "refused_at", "ALTER TABLE outbox ADD COLUMN refused_at REAL"),
)
_OLD_REJECTED_TABLE = "rejected"
# Checkpoint every ~400 KiB of WAL (SQLite's default is 4 MiB): a small disk fills with WAL
# long before the default would copy it back, and a checkpoint needs room in the database.
_WAL_AUTOCHECKPOINT_PAGES = 100
_FULL_RETRY_S = 1.0  # how often a full outbox tries to give space back and retake its reserve
# The reserve must cover what a checkpoint may add to the database file: the WAL's pages.
MIN_RESERVE_BYTES = 1 << 20


class OutboxError(BlastscopeError):
    """The outbox database cannot be opened or written."""


class DiskFullError(OutboxError):
    """A write failed for lack of disk space (SQLITE_FULL, ENOSPC)."""


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or (
            "disk is full" in str(exc)
        )
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class StoredMessage:
    seq: int
    message_id: str
    topic: str
    payload: bytes
    created_at: float


# A payload is rendered once its seq and id are known, inside the inserting transaction.
Render = Callable[[int, str], bytes]


class Outbox:
    """A bounded, ordered, crash-safe queue of MQTT messages, shared by two threads."""

    def __init__(
        self,
        path: str | Path,
        max_messages: int,
        when_full: FullPolicy,
        reserve_bytes: int = 0,
    ) -> None:
        self.path = Path(path)
        self.max_messages = max_messages
        self.when_full = when_full
        self.reserve_bytes = reserve_bytes
        self.reserve_path = self.path.with_name(self.path.name + ".reserve")
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.blocked_s = 0.0  # time producers spent waiting (policy "block", or a full disk)
        self.blocked = False
        # A write failed for lack of space: producers wait until _recover() gives room back.
        self.disk_full = False
        self._recover_tried_at = 0.0
        self._owner = OutboxLock(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._owner.acquire()
        except OSError as exc:
            raise self._open_error(exc) from None
        try:
            mode = self._open()
        except (OSError, sqlite3.Error) as exc:
            if not (_is_disk_full(exc) and self._release_reserve()):
                self._owner.release()
                raise self._open_error(exc) from None
            try:  # the reserve is what lets a full disk open its outbox and drain it
                mode = self._open()
            except (OSError, sqlite3.Error) as again:
                self._owner.release()
                raise self._open_error(again) from None
            self.disk_full = True  # producers wait until the drain has given room back
        if str(mode).lower() != "wal":
            log.warning("%s: journal mode is %s, not WAL", self.path, mode)
        self._take_reserve()

    def _open(self) -> str:
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30
        )
        # Only takes effect on a new database (before its first table): lets a drained outbox
        # hand its free pages back to the filesystem after a full disk.
        self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        mode = str(self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._pending = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        self._refused = int(
            self._db.execute("SELECT COUNT(*) FROM outbox WHERE refused IS NOT NULL").fetchone()[0]
        )
        row = self._db.execute(
            "SELECT refused FROM outbox WHERE refused IS NOT NULL ORDER BY refused_at DESC LIMIT 1"
        ).fetchone()
        self.last_refusal: str | None = None if row is None else str(row[0])
        return mode

    def _open_error(self, exc: BaseException) -> OutboxError:
        full = " (the disk is full)" if _is_disk_full(exc) else ""
        return OutboxError(
            f"{self.path}: cannot open the outbox ({exc}){full}; check the directory is "
            "writable and has space, or move a damaged file aside (its unsent results are in it)"
        )

    def _migrate(self) -> None:
        for table, column, statement in _MIGRATIONS:
            columns = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                self._db.execute(statement)
        old = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (_OLD_REJECTED_TABLE,)
        ).fetchone()
        if old is not None:
            # Refused results were kept aside there; they are undelivered: back in line.
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR IGNORE INTO outbox(seq, message_id, topic, payload, created_at, "
                "refused, refused_at) SELECT seq, message_id, topic, payload, at, reason, at "
                f"FROM {_OLD_REJECTED_TABLE}"
            )
            self._db.execute(f"DROP TABLE {_OLD_REJECTED_TABLE}")
            self._db.execute("COMMIT")

    # -- disk-space reserve ----------------------------------------------------------------

    def _take_reserve(self) -> bool:
        """Hold reserve_bytes of real disk blocks in the reserve file; False if no room."""
        if self.reserve_bytes <= 0:
            return True
        try:
            if self.reserve_path.stat().st_size >= self.reserve_bytes:
                return True
        except FileNotFoundError:
            pass
        try:
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.reserve_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            # No room for it now: try again later; without it a full disk may stall the drain.
            self.reserve_path.unlink(missing_ok=True)
            log.debug("%s: reserve not taken (%s)", self.reserve_path, exc)
            return False
        return True

    def _release_reserve(self) -> bool:
        """Give the reserve's space to the database; True if there was one to give."""
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        log.warning(
            "%s: the disk is full; released the %d-byte reserve", self.path, self.reserve_bytes
        )
        return True

    @property
    def has_reserve(self) -> bool:
        return self.reserve_path.exists()

    def _recover(self) -> None:
        """After a full disk: give space back to the filesystem, retake the reserve, and only
        then let producers write again (lock held; at most every _FULL_RETRY_S)."""
        if not self.disk_full or time.monotonic() - self._recover_tried_at < _FULL_RETRY_S:
            return
        self._recover_tried_at = time.monotonic()
        try:
            # TRUNCATE: the WAL's blocks go back to the filesystem once all of it is in the
            # database; the vacuum hands back the pages that delivered rows left free.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            # executescript steps the pragma to the end (execute() frees one page per call).
            self._db.executescript("PRAGMA incremental_vacuum;")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()  # file shrinks now
        except sqlite3.Error as exc:
            log.debug("%s: no space given back yet (%s)", self.path, exc)
            return
        if self._take_reserve():
            log.warning("%s: disk space is available again; classification resumes", self.path)
            self.disk_full = False
            self._changed.notify_all()

    # -- producer side -------------------------------------------------------------------------

    def put(
        self,
        topic: str,
        render: Render,
        seen_key: str | None = None,
        stop: threading.Event | None = None,
    ) -> StoredMessage | None:
        """Commit one message (and mark seen_key) atomically; None if the policy refused it."""
        stored = self.put_many([(topic, render)], seen_key, stop)
        return stored[0] if stored else None

    def put_many(
        self,
        messages: Sequence[tuple[str, Render]],
        seen_key: str | None = None,
        stop: threading.Event | None = None,
    ) -> list[StoredMessage] | None:
        """Commit all messages of one frame and mark seen_key, in one transaction (one fsync).

        All or nothing: a crash never leaves half a frame to be published and the rest redone.
        None if the full-outbox policy refused them, or stop was set while waiting for room.
        """
        n = len(messages)
        with self._changed:
            if self._pending + n > self.max_messages:
                if self.when_full == "reject_new":
                    self._bump("rejected_new", n)
                    if seen_key is not None:  # the frame was dealt with: do not redo it
                        self._write_waiting(lambda: self._mark_seen(seen_key), stop)
                    return None
                if self.when_full == "block" and not self._wait_for_room(n, stop):
                    return None
            stored: list[StoredMessage] = []

            def insert() -> None:
                stored.clear()
                excess = self._pending + n - self.max_messages
                if self.when_full == "drop_oldest" and excess > 0:
                    self._drop_oldest(excess)
                now = time.time()
                for topic, render in messages:
                    message_id = str(uuid.uuid4())
                    cur = self._db.execute(
                        "INSERT INTO outbox(message_id, topic, payload, created_at) "
                        "VALUES (?,?,?,?)",
                        (message_id, topic, b"", now),
                    )
                    seq = int(cur.lastrowid or 0)
                    payload = render(seq, message_id)
                    self._db.execute("UPDATE outbox SET payload=? WHERE seq=?", (payload, seq))
                    stored.append(StoredMessage(seq, message_id, topic, payload, now))
                if seen_key is not None:
                    self._mark_seen(seen_key)

            pending_before = self._pending
            if not self._write_waiting(insert, stop):
                self._pending = pending_before  # rolled back, drops included
                return None
            self._pending += len(stored)
            self._changed.notify_all()
            return stored

    def _wait_for_room(self, n: int, stop: threading.Event | None) -> bool:
        started = time.monotonic()
        self.blocked = True
        try:
            while self._pending + n > self.max_messages:
                if stop is not None and stop.is_set():
                    return False
                self._changed.wait(timeout=0.2)
            return True
        finally:
            self.blocked = False
            self.blocked_s += time.monotonic() - started

    def _write_waiting(self, body: Callable[[], None], stop: threading.Event | None) -> bool:
        """A producer's _write, waiting out a full disk (see the module docstring); False if
        stop was set while waiting."""
        started: float | None = None
        try:
            while True:
                if not self.disk_full:
                    try:
                        self._write(body)
                        return True
                    except DiskFullError:
                        log.error(
                            "%s: the disk is full; classification paused until delivered "
                            "results free space",
                            self.path,
                        )
                if started is None:
                    started = time.monotonic()
                    self.blocked = True
                if stop is not None and stop.is_set():
                    return False
                self._changed.wait(timeout=_FULL_RETRY_S)
                self._recover()
        finally:
            if started is not None:
                self.blocked = False
                self.blocked_s += time.monotonic() - started

    def _drop_oldest(self, n: int) -> None:
        rows = self._db.execute("SELECT seq FROM outbox ORDER BY seq LIMIT ?", (n,)).fetchall()
        if not rows:
            return
        self._db.executemany("DELETE FROM outbox WHERE seq=?", rows)
        self._pending -= len(rows)
        self._bump_in_tx("dropped_oldest", len(rows))
        self._set_in_tx("last_dropped_seq", int(rows[-1][0]))

    def _mark_seen(self, key: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO seen(key, at) VALUES (?, ?)", (key, time.time()))

    def is_seen(self, key: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM seen WHERE key=?", (key,)).fetchone()
        return row is not None

    # -- publisher side ------------------------------------------------------------------------

    def peek(self, after_seq: int, limit: int) -> list[StoredMessage]:
        """The oldest messages with seq > after_seq, in publish order (refused ones included)."""
        return self._select("seq > ?", (after_seq,), limit)

    def peek_refused(self, after_seq: int, up_to_seq: int, limit: int) -> list[StoredMessage]:
        """Refused messages with after_seq < seq <= up_to_seq, to offer the broker again."""
        return self._select(
            "refused IS NOT NULL AND seq > ? AND seq <= ?", (after_seq, up_to_seq), limit
        )

    def _select(self, where: str, args: tuple[int, ...], limit: int) -> list[StoredMessage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, message_id, topic, payload, created_at FROM outbox "
                f"WHERE {where} ORDER BY seq LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [StoredMessage(int(r[0]), r[1], r[2], bytes(r[3]), float(r[4])) for r in rows]

    def ack(self, seqs: Iterable[int]) -> int:
        """The broker has the messages: delete them (one commit). Returns how many were here."""
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._changed:
            removed: list[int] = []
            refused_removed: list[int] = []

            def delete() -> None:
                removed.clear()
                refused_removed.clear()
                if self._refused:
                    marks = ",".join("?" * len(seqs))
                    row = self._db.execute(
                        "SELECT COUNT(*) FROM outbox WHERE refused IS NOT NULL "
                        f"AND seq IN ({marks})",
                        seqs,
                    ).fetchone()
                    refused_removed.append(int(row[0]))
                cur = self._db.executemany("DELETE FROM outbox WHERE seq=?", [(s,) for s in seqs])
                removed.append(cur.rowcount)

            self._write(delete, drain=True)
            self._pending -= removed[0]
            self._refused -= sum(refused_removed)
            self._changed.notify_all()
            return removed[0]

    def refuse(self, seq: int, reason: str) -> None:
        """The broker refused the message (an MQTT 5 reason code): not delivered, so it stays,
        marked with the reason, and is offered again after the next connect."""
        with self._changed:
            newly: list[bool] = []

            def mark() -> None:
                newly.clear()
                row = self._db.execute("SELECT refused FROM outbox WHERE seq=?", (seq,)).fetchone()
                if row is None:
                    return
                self._db.execute(
                    "UPDATE outbox SET refused=?, refused_at=? WHERE seq=?",
                    (reason, time.time(), seq),
                )
                if row[0] is None:
                    newly.append(True)
                    self._bump_in_tx("refused_by_broker")

            self._write(mark, drain=True)
            self._refused += len(newly)
            self.last_refusal = reason
            self._changed.notify_all()

    @property
    def refused(self) -> int:
        """Messages the broker refused that are still here (not delivered)."""
        return self._refused

    @property
    def unsettled(self) -> int:
        """Messages neither acknowledged nor refused: what a flush still waits for."""
        return self._pending - self._refused

    def wait_empty(self, timeout: float | None, stop: threading.Event | None = None) -> bool:
        """Block until every message is acked (True) or timeout/stop (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._pending > 0:
                if stop is not None and stop.is_set():
                    return False
                left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
                if left <= 0:
                    return False
                self._changed.wait(timeout=left)
            return True

    def wait_changed(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout=timeout)

    # -- records of processed files (edge.service.sources.folder) ------------------------------

    _KEYS_PER_QUERY = 500  # SQLite before 3.32 allows 999 parameters in one statement

    def seen_among(self, keys: Iterable[str]) -> set[str]:
        """Which of these keys are recorded as processed (a folder's listing, in few queries)."""
        keys = list(keys)
        found: set[str] = set()
        with self._lock:
            for i in range(0, len(keys), self._KEYS_PER_QUERY):
                chunk = keys[i : i + self._KEYS_PER_QUERY]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key FROM seen WHERE key IN ({marks})", chunk)
                found.update(str(r[0]) for r in rows)
        return found

    def refresh_seen(self, keys: Iterable[str]) -> int:
        """Date these records now (their files are still there: pruning must keep them)."""
        return self._seen_write("UPDATE seen SET at=? WHERE key=?", keys, time.time())

    def forget_seen(self, keys: Iterable[str]) -> int:
        """Delete these records, so that their files are processed again; how many there were."""
        return self._seen_write("DELETE FROM seen WHERE key=?", keys)

    def prune_seen(self, older_than: float) -> int:
        """Delete the records dated before this unix time; how many."""
        counted: list[int] = []
        with self._lock:
            self._write(
                lambda: counted.append(
                    self._db.execute("DELETE FROM seen WHERE at < ?", (older_than,)).rowcount
                )
            )
        return counted[0]

    def _seen_write(self, sql: str, keys: Iterable[str], *first: float) -> int:
        rows = [(*first, key) for key in keys]
        if not rows:
            return 0
        counted: list[int] = []
        with self._lock:
            self._write(lambda: counted.append(self._db.executemany(sql, rows).rowcount))
        return counted[0]

    # -- bookkeeping ---------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return self._pending

    def counters(self) -> dict[str, int]:
        """Totals kept across restarts: dropped_oldest, rejected_new, refused_by_broker, ..."""
        with self._lock:
            rows = self._db.execute("SELECT name, value FROM counters").fetchall()
        out = {"dropped_oldest": 0, "rejected_new": 0, "refused_by_broker": 0}
        out.update({str(k): int(v) for k, v in rows})
        return out

    def _bump(self, name: str, n: int = 1) -> None:
        self._write(lambda: self._bump_in_tx(name, n))

    def _bump_in_tx(self, name: str, n: int = 1) -> None:
        self._db.execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, n),
        )

    def _set_in_tx(self, name: str, value: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO counters(name, value) VALUES (?, ?)", (name, value)
        )

    def _write(self, body: Callable[[], None], drain: bool = False) -> None:
        """Run body in one IMMEDIATE transaction (the caller holds the lock).

        drain: the write removes or settles delivered rows; on a full disk it may spend the
        reserve, which exists for exactly this. A producer's write never does: it waits.
        """
        try:
            self._transaction(body)
        except DiskFullError:
            self.disk_full = True
            if not (drain and self._release_reserve()):
                raise
            self._transaction(body)
        if drain:
            self._recover()

    def _transaction(self, body: Callable[[], None]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                body()
                self._db.execute("COMMIT")
            except BaseException:
                # A COMMIT that failed for lack of space leaves the transaction open.
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            if _is_disk_full(exc):
                raise DiskFullError(f"{self.path}: write failed: the disk is full") from None
            raise OutboxError(f"{self.path}: write failed ({exc})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._owner.release()
