"""The durable outbox: order, stable ids, crash safety, and the full-outbox policies."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge.service.outbox import Outbox


def _render(seq: int, message_id: str) -> bytes:
    return json.dumps({"seq": seq, "message_id": message_id}).encode()


def _put(box: Outbox, n: int, **kw) -> list:  # type: ignore[no-untyped-def, type-arg]
    return [box.put("t/result", _render, **kw) for _ in range(n)]


def test_order_ids_and_ack(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", 100, "block")
    stored = _put(box, 5)
    assert [m.seq for m in stored] == [1, 2, 3, 4, 5]
    assert len({m.message_id for m in stored}) == 5
    # The payload carries the seq and id the row was given.
    assert json.loads(stored[2].payload) == {"seq": 3, "message_id": stored[2].message_id}
    assert [m.seq for m in box.peek(0, 3)] == [1, 2, 3]
    assert [m.seq for m in box.peek(3, 10)] == [4, 5]
    assert box.ack([1, 2]) == 2 and box.pending == 3
    assert box.ack([2]) == 0  # acked twice (a duplicate PUBACK): harmless
    assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    box.close()


def test_rows_and_ids_survive_a_reopen_and_seq_is_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    box = Outbox(path, 100, "block")
    before = _put(box, 3)
    box.ack([3])
    box.close()
    box = Outbox(path, 100, "block")
    assert box.pending == 2
    assert [(m.seq, m.message_id) for m in box.peek(0, 10)] == [
        (m.seq, m.message_id) for m in before[:2]
    ]
    assert box.put("t/result", _render).seq == 4  # AUTOINCREMENT: 3 is never handed out again
    box.close()


def test_committed_rows_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    code = (
        "import sys, os, signal\n"
        "from edge.service.outbox import Outbox\n"
        f"box = Outbox({str(path)!r}, 1000, 'block')\n"
        "for i in range(50):\n"
        "    box.put('t', lambda s, m: b'x', seen_key=f'file{i}')\n"
        "print('committed', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9 and "committed" in proc.stdout
    box = Outbox(path, 1000, "block")
    assert box.pending == 50
    assert box.is_seen("file49") and not box.is_seen("file50")
    box.close()


def test_drop_oldest_keeps_the_newest_and_counts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", 10, "drop_oldest")
    _put(box, 15)
    assert box.pending == 10
    assert [m.seq for m in box.peek(0, 100)] == list(range(6, 16))
    assert box.counters()["dropped_oldest"] == 5
    box.close()


def test_reject_new_keeps_the_oldest_counts_and_marks_the_file_done(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", 10, "reject_new")
    results = _put(box, 10) + [box.put("t", _render, seen_key=f"f{i}") for i in range(3)]
    assert results[-1] is None and box.pending == 10
    assert [m.seq for m in box.peek(0, 100)] == list(range(1, 11))
    assert box.counters()["rejected_new"] == 3
    assert box.is_seen("f2")  # reported as lost, not re-processed forever
    box.close()


def test_block_waits_for_an_ack_and_gives_up_on_stop(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", 10, "block")
    _put(box, 10)
    got: list = []  # type: ignore[type-arg]
    t = threading.Thread(target=lambda: got.append(box.put("t", _render)))
    t.start()
    assert _until(lambda: box.blocked), "the producer did not wait for room"
    assert t.is_alive() and not got
    box.ack([1])
    t.join(timeout=5)
    assert got[0].seq == 11 and box.blocked_s > 0
    stop = threading.Event()
    stop.set()
    assert box.put("t", _render, stop=stop) is None  # shutting down while full
    box.close()


def _until(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # polling a condition, not waiting a guessed time
    return True


def test_a_refused_row_stays_in_line_marked_until_delivered(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", 10, "block")
    _put(box, 3)
    box.refuse(1, "Not authorized")
    box.refuse(1, "Not authorized")  # offered again and refused again: counted once
    # Not delivered: still pending, still first in line, but settled for a flush.
    assert box.pending == 3 and box.refused == 1 and box.unsettled == 2
    assert box.counters()["refused_by_broker"] == 1 and box.last_refusal == "Not authorized"
    assert [m.seq for m in box.peek(0, 10)] == [1, 2, 3]
    assert [m.seq for m in box.peek_refused(0, 3, 10)] == [1]
    box.ack([2, 3])
    assert box.unsettled == 0 and not box.wait_empty(0)
    box.close()
    # Across a restart it is still there, still marked; a later delivery settles it.
    box = Outbox(tmp_path / "o.sqlite3", 10, "block")
    assert box.pending == 1 and box.refused == 1 and box.last_refusal == "Not authorized"
    box.ack([1])
    assert box.pending == 0 and box.refused == 0
    box.close()


def test_rows_refused_by_an_older_outbox_are_put_back_in_line(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL "
        "UNIQUE, topic TEXT NOT NULL, payload BLOB NOT NULL, created_at REAL NOT NULL);"
        "CREATE TABLE rejected (seq INTEGER PRIMARY KEY, message_id TEXT NOT NULL, topic TEXT "
        "NOT NULL, payload BLOB NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL);"
        "INSERT INTO outbox VALUES (2, 'b', 't', x'7b7d', 1.0);"
        "INSERT INTO rejected VALUES (1, 'a', 't', x'7b7d', 'Not authorized', 1.0);"
    )
    old.commit()
    old.close()
    box = Outbox(path, 10, "block")
    assert [m.message_id for m in box.peek(0, 10)] == ["a", "b"]
    assert box.refused == 1 and box.pending == 2
    assert box.put("t", _render).seq == 3  # type: ignore[union-attr]
    box.close()


def test_put_many_commits_a_whole_frame_or_nothing(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", 10, "block")

    def broken(seq: int, message_id: str) -> bytes:
        raise ValueError("cannot render")

    with pytest.raises(ValueError):
        box.put_many([("t", _render), ("t", broken)], seen_key="field-1")
    assert box.pending == 0 and not box.is_seen("field-1")
    stored = box.put_many([("t", _render)] * 3, seen_key="field-1")
    # The rolled-back frame left no trace, not even a used seq (no gap for consumers).
    assert stored is not None and [m.seq for m in stored] == [1, 2, 3]
    assert box.pending == 3 and box.is_seen("field-1")
    box.close()


def test_unopenable_outbox_names_the_path(tmp_path: Path) -> None:
    from edge.service.outbox import OutboxError

    bad = tmp_path / "o.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match=r"o\.sqlite3: cannot open the outbox"):
        Outbox(bad, 10, "block")
    assert sqlite3.sqlite_version  # the stdlib's SQLite is what the device uses
