"""The durable outbox: every result is on disk before it is published, gone only once acked.

SQLite in WAL mode with ``synchronous=FULL``: a committed row survives a power cut, a daemon
crash or SIGKILL. ``seq`` (AUTOINCREMENT, never reused) is the publish order; ``message_id``
is assigned at insert and stored, so a replay after an outage carries the same id and
consumers can de-duplicate. The outbox is bounded; what happens when it is full is a policy,
and its effect is counted (and reported on the status topic by the daemon), never silent.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge.errors import BlastscopeError

log = logging.getLogger(__name__)

FullPolicy = Literal["block", "drop_oldest", "reject_new"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class OutboxError(BlastscopeError):
    """The outbox database cannot be opened or written."""


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

    def __init__(self, path: str | Path, max_messages: int, when_full: FullPolicy) -> None:
        self.path = Path(path)
        self.max_messages = max_messages
        self.when_full = when_full
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._pending = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(
                f"{self.path}: cannot open the outbox ({exc}); check the directory is writable, "
                "or move a damaged file aside (its unsent results are in it)"
            ) from None
        if str(mode).lower() != "wal":
            log.warning("%s: journal mode is %s, not WAL", self.path, mode)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.blocked_s = 0.0  # time producers spent waiting for room (policy "block")
        self.blocked = False

    # -- producer side -------------------------------------------------------------------------

    def put(
        self,
        topic: str,
        render: Render,
        seen_key: str | None = None,
        stop: threading.Event | None = None,
    ) -> StoredMessage | None:
        """Commit one message (and mark seen_key) atomically; None if the policy refused it."""
        with self._changed:
            if self._pending >= self.max_messages:
                if self.when_full == "reject_new":
                    self._bump("rejected_new")
                    if seen_key is not None:  # the frame was dealt with: do not redo it
                        self._write(lambda: self._mark_seen(seen_key))
                    return None
                if self.when_full == "block":
                    if not self._wait_for_room(stop):
                        return None
                else:
                    self._write(self._drop_oldest)
            message_id = str(uuid.uuid4())
            now = time.time()
            stored: list[StoredMessage] = []

            def insert() -> None:
                cur = self._db.execute(
                    "INSERT INTO outbox(message_id, topic, payload, created_at) VALUES (?,?,?,?)",
                    (message_id, topic, b"", now),
                )
                seq = int(cur.lastrowid or 0)
                payload = render(seq, message_id)
                self._db.execute("UPDATE outbox SET payload=? WHERE seq=?", (payload, seq))
                if seen_key is not None:
                    self._mark_seen(seen_key)
                stored.append(StoredMessage(seq, message_id, topic, payload, now))

            self._write(insert)
            self._pending += 1
            self._changed.notify_all()
            return stored[0]

    def _wait_for_room(self, stop: threading.Event | None) -> bool:
        started = time.monotonic()
        self.blocked = True
        try:
            while self._pending >= self.max_messages:
                if stop is not None and stop.is_set():
                    return False
                self._changed.wait(timeout=0.2)
            return True
        finally:
            self.blocked = False
            self.blocked_s += time.monotonic() - started

    def _drop_oldest(self) -> None:
        row = self._db.execute("SELECT seq FROM outbox ORDER BY seq LIMIT 1").fetchone()
        if row is None:
            return
        self._db.execute("DELETE FROM outbox WHERE seq=?", (row[0],))
        self._pending -= 1
        self._bump_in_tx("dropped_oldest")
        self._set_in_tx("last_dropped_seq", int(row[0]))

    def _mark_seen(self, key: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO seen(key, at) VALUES (?, ?)", (key, time.time()))

    def is_seen(self, key: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM seen WHERE key=?", (key,)).fetchone()
        return row is not None

    # -- publisher side ------------------------------------------------------------------------

    def peek(self, after_seq: int, limit: int) -> list[StoredMessage]:
        """The oldest messages with seq > after_seq, in publish order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, message_id, topic, payload, created_at FROM outbox "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [StoredMessage(int(r[0]), r[1], r[2], bytes(r[3]), float(r[4])) for r in rows]

    def ack(self, seqs: Iterable[int]) -> int:
        """The broker has the messages: delete them (one commit). Returns how many were here."""
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._changed:
            removed: list[int] = []

            def delete() -> None:
                cur = self._db.executemany("DELETE FROM outbox WHERE seq=?", [(s,) for s in seqs])
                removed.append(cur.rowcount)

            self._write(delete)
            self._pending -= removed[0]
            self._changed.notify_all()
            return removed[0]

    def reject(self, seq: int, reason: str) -> None:
        """The broker refused the message (an MQTT 5 reason code): keep it aside, not in line."""
        with self._changed:

            def move() -> None:
                self._db.execute(
                    "INSERT OR REPLACE INTO rejected(seq, message_id, topic, payload, reason, at) "
                    "SELECT seq, message_id, topic, payload, ?, ? FROM outbox WHERE seq=?",
                    (reason, time.time(), seq),
                )
                cur = self._db.execute("DELETE FROM outbox WHERE seq=?", (seq,))
                self._pending -= cur.rowcount
                self._bump_in_tx("refused_by_broker")

            self._write(move)
            self._changed.notify_all()

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

    def _bump(self, name: str) -> None:
        self._write(lambda: self._bump_in_tx(name))

    def _bump_in_tx(self, name: str) -> None:
        self._db.execute(
            "INSERT INTO counters(name, value) VALUES (?, 1) "
            "ON CONFLICT(name) DO UPDATE SET value = value + 1",
            (name,),
        )

    def _set_in_tx(self, name: str, value: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO counters(name, value) VALUES (?, ?)", (name, value)
        )

    def _write(self, body: Callable[[], None]) -> None:
        """Run body in one IMMEDIATE transaction (the caller holds the lock)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                body()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: write failed ({exc}); is the disk full?") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()
