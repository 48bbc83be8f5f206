"""The folder source on real files: hostile names, non-regular entries, writers that pause,
temporary names, greyscale frames, records of processed files, lost notifications."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.service.config import validate
from edge.service.outbox import Outbox
from edge.service.sources import Frame, open_source
from edge.vision.file_names import printable_name
from edge.vision.quality import channel_warnings
from tests.edge.daemon_helpers import ROOT, frame_folder
from tests.edge.image_files import grey_jpeg

METHODS = ["events", "poll"]


def _source(spec: dict[str, Any], once: bool = False, outbox: Outbox | None = None, **kw: Any):  # type: ignore[no-untyped-def]
    cfg = validate({"bundle": "b", "source": {"kind": "folder", **spec}}).source
    return open_source(cfg, once, outbox, **kw)


def _watching(folder: Path, method: str, **extra: Any) -> dict[str, Any]:
    return {
        "path": str(folder),
        "watch": True,
        "watch_method": method,
        "poll_s": 0.05,
        "settle_s": 0.2,
        **extra,
    }


class Running:
    """A source's frames() in a thread, collected in arrival order until finish()."""

    def __init__(self, source: Any, on_frame: Callable[[Frame], None] | None = None) -> None:
        self.source = source
        self.frames: list[Frame] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._on_frame = on_frame
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.source.open()
            for frame in self.source.frames(self.stop):
                with self._cond:
                    self.frames.append(frame)
                    self._cond.notify_all()
                if self._on_frame is not None:
                    self._on_frame(frame)
        except BaseException as exc:
            self.error = exc
        finally:
            self.source.close()
            with self._cond:
                self._cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = 15) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return predicate()
                self._cond.wait(min(left, 0.05))
        return True

    def names(self) -> list[str]:
        return [Path(f.origin).name for f in self.frames]

    def finish(self) -> list[Frame]:
        self.stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the source did not stop"
        if self.error is not None:
            raise self.error
        return self.frames


def _replay(source: Any) -> list[Frame]:
    run = Running(source)
    run._thread.join(timeout=30)
    return run.finish()


def _commit(outbox: Outbox, frames: list[Frame]) -> None:
    """What the daemon does with each frame: its result and its seen key in one commit."""
    for f in frames:
        outbox.put("t/result", lambda seq, mid: b"{}", seen_key=f.seen_key)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.sqlite3", 10_000, "block")
    yield box
    box.close()


class _LogSeen(logging.Handler):
    """Sets an event when a record matching `pattern` is logged."""

    def __init__(self, pattern: str) -> None:
        super().__init__(logging.DEBUG)
        self.pattern = re.compile(pattern)
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.pattern.search(record.getMessage()):
            self.seen.set()


# -- names -----------------------------------------------------------------------------------


def test_printable_name_convention() -> None:
    assert printable_name("Blutbild é.jpg") == "Blutbild é.jpg"
    assert printable_name(b"bad\xff.jpg") == "bad\\xff.jpg"
    assert printable_name("two\nlines\t.jpg") == "two\\nlines\\t.jpg"
    assert printable_name("esc\x1b[31m.jpg") == "esc\\u001b[31m.jpg"
    assert printable_name("sep\u2028.jpg") == "sep\\u2028.jpg"
    # Unambiguous: a literal backslash-x name never shows like an undecodable byte.
    assert printable_name("bad\\xff.jpg") == "bad\\\\xff.jpg" != printable_name(b"bad\xff.jpg")
    assert printable_name("\xff.jpg") == "ÿ.jpg"  # the character U+00FF is not the byte 0xff


def test_names_not_utf8_or_with_newlines_are_read_with_escaped_ids_and_keys(
    tmp_path: Path, field_paths: list[Path], outbox: Outbox
) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    data = field_paths[0].read_bytes()
    names = [b"a_latin1_\xe9t\xe9.jpg", b"b_line\nWARNING forged.jpg", b"c_plain.jpg"]
    for name in names:  # bytes paths: the names exactly as a scanner's firmware wrote them
        with open(os.path.join(os.fsencode(folder), name), "wb") as f:
            f.write(data)
    frames = _replay(_source({"path": str(folder)}, once=True, outbox=outbox))
    assert [f.frame_id.rsplit("@", 1)[0] for f in frames] == [
        "a_latin1_\\xe9t\\xe9.jpg",
        "b_line\\nWARNING forged.jpg",
        "c_plain.jpg",
    ]
    for f in frames:
        assert f.image is not None and f.error is None  # the image is fine: classified
        for text in (f.frame_id, f.origin, f.seen_key or ""):
            assert text.isprintable()  # no newline, no control character
            text.encode("utf-8")  # no surrogate: SQLite, JSON and logs take it
        json.dumps({"origin": f.origin}, ensure_ascii=False).encode("utf-8")
    assert frames[0].origin == f"folder:{folder}/a_latin1_\\xe9t\\xe9.jpg"
    codes = [[w["code"] for w in f.warnings] for f in frames]
    assert codes == [["name_not_utf8"], [], []]
    assert "\\xe9" in frames[0].warnings[0]["message"]
    _commit(outbox, frames)  # the keys are storable, and recognised on the next run
    assert outbox.seen_among(f.seen_key for f in frames if f.seen_key) == {
        f.seen_key for f in frames
    }
    assert _replay(_source({"path": str(folder)}, once=True, outbox=outbox)) == []


# -- entries that are not regular files ------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_non_regular_entries_are_reported_once_each_never_opened(
    tmp_path: Path, field_paths: list[Path], method: str
) -> None:
    folder = frame_folder(tmp_path / "f", field_paths, 1)
    os.mkfifo(folder / "a_fifo.jpg")  # opening it would block until a writer came
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "b_socket.png"))
    os.symlink("/dev/zero", folder / "c_zero.jpg")  # reading it would never end
    os.symlink(tmp_path / "nowhere.jpg", folder / "d_broken.jpg")
    (folder / "e_dir.jpg").mkdir()
    os.symlink(folder / "frame_000.jpg", folder / "f_link_to_file.jpg")  # fine: read it
    run = Running(_source(_watching(folder, method, settle_s=0)))
    assert run.wait(lambda: len(run.frames) == 7), run.names()
    (folder / "z_after.jpg").write_bytes(field_paths[1].read_bytes())
    assert run.wait(lambda: "z_after.jpg" in run.names()), run.names()
    if method == "poll":  # many polls went by, and none reported anything again
        assert run.wait(lambda: run.source.full_scans >= 20)
    frames = run.finish()
    sock.close()
    errors = {Path(f.origin).name: f.error for f in frames if f.error}
    assert sorted(errors) == [
        "a_fifo.jpg",
        "b_socket.png",
        "c_zero.jpg",
        "d_broken.jpg",
        "e_dir.jpg",
    ]
    assert "a FIFO (named pipe)" in errors["a_fifo.jpg"]
    assert "a socket" in errors["b_socket.png"]
    assert "a symbolic link to /dev/zero (a character device)" in errors["c_zero.jpg"]
    assert "which does not exist" in errors["d_broken.jpg"]
    assert "a directory" in errors["e_dir.jpg"]
    for name, reason in errors.items():
        assert str(folder / name) in reason and "move it out of the folder" in reason
    assert sorted(Path(f.origin).name for f in frames if f.image is not None) == [
        "f_link_to_file.jpg",
        "frame_000.jpg",
        "z_after.jpg",
    ]


# -- greyscale ---------------------------------------------------------------------------------


def test_greyscale_frames_get_a_channels_warning_colour_frames_none(
    tmp_path: Path, field_paths: list[Path]
) -> None:
    folder = frame_folder(tmp_path / "f", field_paths, 1)
    grey_jpeg(folder / "grey.jpg", field_paths[0])
    frames = {Path(f.origin).name: f for f in _replay(_source({"path": str(folder)}, once=True))}
    assert frames["grey.jpg"].warnings == (
        {
            "code": "channels_mismatch",
            "message": "greyscale frame; the model was trained on colour",
        },
    )
    assert frames["frame_000.jpg"].warnings == ()
    # The same check for a camera's RGB array: a mono sensor's frame, a colour one.
    mono = np.repeat(np.random.default_rng(0).integers(0, 255, (480, 640, 1), np.uint8), 3, 2)
    assert [w["code"] for w in channel_warnings(mono)] == ["channels_mismatch"]
    assert channel_warnings(frames["frame_000.jpg"].image) == ()  # type: ignore[arg-type]


# -- writers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_a_writer_that_pauses_longer_than_settle_gives_one_frame_no_error(
    tmp_path: Path, field_paths: list[Path], method: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.service.sources.folder")
    folder = tmp_path / "f"
    folder.mkdir()
    data = field_paths[0].read_bytes()
    looked = _LogSeen(r"slow\.jpg: incomplete")
    logging.getLogger("edge.service.sources.folder").addHandler(looked)
    run = Running(_source(_watching(folder, method, settle_s=0.2, incomplete_grace_s=30)))

    def writer() -> None:
        with open(folder / "slow.jpg", "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            # The scanner pauses: longer than settle_s, until the source has looked at the half
            # file (at most 5 s, so that a source that never looks fails the test, not hangs).
            looked.seen.wait(5)
            f.write(data[len(data) // 2 :])

    t = threading.Thread(target=writer)
    t.start()
    t.join(timeout=15)
    try:
        assert run.wait(lambda: len(run.frames) >= 1)
        (folder / "z_sentinel.jpg").write_bytes(field_paths[1].read_bytes())
        assert run.wait(lambda: "z_sentinel.jpg" in run.names())
    finally:
        frames = run.finish()
        logging.getLogger("edge.service.sources.folder").removeHandler(looked)
    slow = [(f.error, f.image is not None) for f in frames if Path(f.origin).name == "slow.jpg"]
    assert slow == [(None, True)]  # one frame, no "truncated" error before it
    assert looked.seen.is_set(), "the source never looked at the half-written file"


def test_a_file_that_never_completes_is_reported_once_after_the_grace(
    tmp_path: Path, field_paths: list[Path]
) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    data = field_paths[0].read_bytes()
    (folder / "stuck.jpg").write_bytes(data[: len(data) // 2])
    written = (folder / "stuck.jpg").stat().st_mtime
    run = Running(_source(_watching(folder, "events", settle_s=0.1, incomplete_grace_s=1.5)))
    assert run.wait(lambda: len(run.frames) >= 1)
    (folder / "z_sentinel.jpg").write_bytes(field_paths[1].read_bytes())
    assert run.wait(lambda: "z_sentinel.jpg" in run.names())
    frames = run.finish()
    stuck = [f for f in frames if Path(f.origin).name == "stuck.jpg"]
    assert len(stuck) == 1 and "truncated" in (stuck[0].error or "")
    assert stuck[0].captured_at - written >= 1.5  # not before the grace was over


@pytest.mark.parametrize("method", METHODS)
def test_temporary_names_are_ignored_until_renamed_into_place(
    tmp_path: Path, field_paths: list[Path], method: str
) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    data = field_paths[0].read_bytes()
    temporary = ["a.jpg.part", "b.tmp", "c.jpg.partial", "d.jpg.crdownload", ".e.jpg", ".f.jpg.x1"]
    for name in temporary:
        (folder / name).write_bytes(data[:1000])  # half-written: reading one would fail
    run = Running(_source(_watching(folder, method)))
    os.rename(folder / "a.jpg.part", folder / "a.jpg")  # done: into place, atomically
    (folder / "a.jpg").write_bytes(data)  # (the rest, as a scanner renaming early would)
    assert run.wait(lambda: "a.jpg" in run.names()), run.names()
    (folder / "z_sentinel.jpg").write_bytes(field_paths[1].read_bytes())
    assert run.wait(lambda: "z_sentinel.jpg" in run.names())
    frames = run.finish()
    assert [Path(f.origin).name for f in frames] == ["a.jpg", "z_sentinel.jpg"]
    assert all(f.image is not None for f in frames)


# -- records of processed files --------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_watched_folder_resumes_from_records_and_picks_up_new_files(
    tmp_path: Path, field_paths: list[Path], outbox: Outbox, method: str
) -> None:
    folder = frame_folder(tmp_path / "f", field_paths, 2)
    (folder / "frame_001.jpg").rename(tmp_path / "later.jpg")
    _commit(outbox, _replay(_source({"path": str(folder)}, once=True, outbox=outbox)))
    os.rename(tmp_path / "later.jpg", folder / "frame_001.jpg")

    def scanner(frame: Frame) -> None:  # the next scan arrives once the source is running
        if Path(frame.origin).name == "frame_001.jpg":
            (folder / "frame_009.jpg").write_bytes(field_paths[1].read_bytes())

    run = Running(_source(_watching(folder, method), outbox=outbox), on_frame=scanner)
    assert run.wait(lambda: len(run.frames) >= 2), run.names()
    frames = run.finish()
    assert [Path(f.origin).name for f in frames] == ["frame_001.jpg", "frame_009.jpg"]
    assert all(f.seen_key for f in frames)


def test_replay_resumes_after_a_restart_and_reprocess_starts_over(
    tmp_path: Path, field_paths: list[Path], outbox: Outbox
) -> None:
    folder = frame_folder(tmp_path / "f", field_paths, 5)
    first = _replay(_source({"path": str(folder)}, once=True, outbox=outbox))
    _commit(outbox, first[:2])  # killed after two results were committed
    resumed = _replay(_source({"path": str(folder)}, once=True, outbox=outbox))
    assert [Path(f.origin).name for f in resumed] == [f"frame_{i:03d}.jpg" for i in (2, 3, 4)]
    _commit(outbox, resumed)
    assert _replay(_source({"path": str(folder)}, once=True, outbox=outbox)) == []
    again = _replay(_source({"path": str(folder), "reprocess": True}, once=True, outbox=outbox))
    assert len(again) == 5
    assert outbox.seen_among(f.seen_key for f in first if f.seen_key) == set()  # forgotten


def test_pruning_keeps_the_records_of_files_still_in_the_folder(
    tmp_path: Path, field_paths: list[Path], outbox: Outbox
) -> None:
    folder = frame_folder(tmp_path / "f", field_paths, 3)
    frames = _replay(_source({"path": str(folder)}, once=True, outbox=outbox))
    _commit(outbox, frames)
    (folder / "frame_002.jpg").unlink()  # the lab cleared one file out
    db = sqlite3.connect(outbox.path)
    with db:  # forty days pass
        db.execute("UPDATE seen SET at = at - 40 * 86400")
    month = 30 * 86400.0
    run = Running(_source(_watching(folder, "events"), outbox=outbox, retention_s=month))
    (folder / "z_sentinel.jpg").write_bytes(field_paths[1].read_bytes())
    assert run.wait(lambda: len(run.frames) >= 1)
    assert run.names() == ["z_sentinel.jpg"]  # the two old files were not classified again
    _commit(outbox, run.finish())
    rows = dict(db.execute("SELECT key, at FROM seen").fetchall())
    db.close()
    assert sorted(k.split(":")[0] for k in rows) == [
        "frame_000.jpg",
        "frame_001.jpg",
        "z_sentinel.jpg",
    ]
    assert all(time.time() - at < 60 for at in rows.values())  # refreshed, not pruned
    # ...so that the next start, with the same retention, does not classify them either.
    assert (
        _replay(_source({"path": str(folder)}, once=True, outbox=outbox, retention_s=month)) == []
    )


def test_memory_is_bounded_by_what_is_in_the_folder(
    tmp_path: Path, field_paths: list[Path]
) -> None:
    folder = frame_folder(tmp_path / "f", field_paths, 30)
    run = Running(_source(_watching(folder, "events", settle_s=0)))
    assert run.wait(lambda: len(run.frames) == 30)
    assert run.source.remembered == 30
    for i in range(25):
        (folder / f"frame_{i:03d}.jpg").unlink()
    assert run.wait(lambda: run.source.remembered == 5), run.source.remembered
    run.finish()


# -- lost notifications ----------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, threading, time
    from edge.service.config import validate
    from edge.service.sources import open_source
    spec = {"kind": "folder", "path": sys.argv[1], "watch": True, "settle_s": 0}
    source = open_source(validate({"bundle": "b", "source": spec}).source, False)
    source.open()
    frames = source.frames(threading.Event())
    def scans():
        seen = 0
        while True:
            if source.full_scans != seen:
                seen = source.full_scans
                print("scans", seen, flush=True)
            time.sleep(0.05)
    threading.Thread(target=scans, daemon=True).start()
    for frame in frames:
        print("frame", frame.origin.rsplit("/", 1)[1], flush=True)
    """
)


def test_lost_notifications_lead_to_a_full_listing(tmp_path: Path, field_paths: list[Path]) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(folder)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    got = threading.Condition()

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            with got:
                lines.append(line.strip())
                got.notify_all()

    threading.Thread(target=read, daemon=True).start()

    def wait_line(text: str, timeout: float = 20) -> bool:
        with got:
            return got.wait_for(lambda: text in lines, timeout)

    try:
        assert wait_line("scans 1"), lines
        child.send_signal(signal.SIGSTOP)  # the watcher cannot read its events meanwhile
        limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
        for i in range(limit + 100):  # two events each (create, close): the queue overflows
            (folder / f"flood_{i:05d}.txt").touch()
        (folder / "late.jpg").write_bytes(field_paths[0].read_bytes())  # its events are lost
        child.send_signal(signal.SIGCONT)
        assert wait_line("frame late.jpg"), lines
        assert wait_line("scans 2"), lines  # found by the full listing after the overflow
    finally:
        child.kill()
        _, err = child.communicate(timeout=10)
    assert "overflow" in err
