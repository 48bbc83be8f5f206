"""`edge run` over hostile folders: odd names, pixel bombs, FIFOs, paused writers, crashes."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.contracts.messages import validate_payload
from tests.edge.daemon_helpers import (
    ROOT,
    Collector,
    daemon_config,
    finish,
    frame_folder,
    start_daemon,
    write_config,
)
from tests.edge.image_files import flat_png, grey_jpeg, tiled_jpeg
from tests.mosquitto import Mosquitto

pytestmark = pytest.mark.mqtt


def _until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Wait for a condition outside our process (a database another process writes)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.05)
    return True


def _rows(db_path: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(db_path)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        db.close()


def _name(result: dict[str, Any]) -> str:
    return result["frame"]["origin"].rsplit("/", 1)[1]


def _stopped(sub: Collector, n: int) -> bool:
    return sub.wait(lambda: sub.states("scope-t").count("stopped") >= n, 10)


def _peak_rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0])


def _unit_memory_max_kb() -> int:
    unit = (ROOT / "firmware_config" / "blastscope-edge.service").read_text()
    values = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("MemoryMax=")]
    assert len(values) == 1, "the systemd unit caps the daemon's memory with one MemoryMax="
    scale = {"K": 1, "M": 1 << 10, "G": 1 << 20}
    return int(values[0][:-1]) * scale[values[0][-1]]


def test_names_not_utf8_or_with_newlines_are_classified_escaped_and_restarts_go_on(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    good = field_paths[0].read_bytes()
    files = {
        b"a_latin1_\xe9t\xe9.jpg": good,
        b"b_bad\nWARNING edge.service.daemon: forged.jpg": b"not an image",
        b"c_line\nbreak.jpg": good,
        b"d_plain.jpg": good,
    }
    for name, data in files.items():  # bytes names, as the OS has them
        with open(os.path.join(os.fsencode(folder), name), "wb") as f:
            f.write(data)
    conf = write_config(tmp_path / "d.toml", daemon_config(bundle, folder, mosquitto, tmp_path))
    sub = Collector(mosquitto)
    code, _, err = finish(start_daemon(conf, "--once"))
    assert code == 0, err
    assert _stopped(sub, 1)
    results = sub.distinct_results("scope-t")
    for r in results:
        validate_payload("result", r)
    assert [(_name(r), r["kind"]) for r in results] == [
        ("a_latin1_\\xe9t\\xe9.jpg", "frame"),
        ("b_bad\\nWARNING edge.service.daemon: forged.jpg", "error"),
        ("c_line\\nbreak.jpg", "frame"),
        ("d_plain.jpg", "frame"),
    ]
    assert [r["frame"]["id"].rsplit("@", 1)[0] for r in results] == [_name(r) for r in results]
    assert [[w["code"] for w in r.get("warnings", [])] for r in results] == [
        ["name_not_utf8"],
        [],
        [],
        [],
    ]
    assert "not a decodable image" in results[1]["error"]["reason"]
    # The bad file's name was logged escaped, on one line: no forged "WARNING" line.
    assert "b_bad\\nWARNING edge.service.daemon: forged.jpg" in err
    assert not any(
        line.startswith("WARNING edge.service.daemon: forged") for line in err.splitlines()
    )
    # A restart neither crashes on the names nor classifies the files again.
    code, _, err = finish(start_daemon(conf, "--once"))
    assert code == 0, err
    assert _stopped(sub, 2)
    assert len(sub.distinct_results("scope-t")) == 4
    sub.close()


def test_a_pixel_bomb_is_refused_from_its_header_with_memory_to_spare(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    folder = frame_folder(tmp_path / "frames", field_paths, 1)
    bomb = flat_png(folder / "bomb.png", 30000, 30000, (200, 40, 120))
    assert bomb.stat().st_size < 200_000  # 110 KB that would decode to 2.7 GB (x2 as RGB)
    cfg = daemon_config(
        bundle, folder, mosquitto, tmp_path, source={"watch": True, "settle_s": 0.1}
    )
    conf = write_config(tmp_path / "d.toml", cfg)
    sub = Collector(mosquitto)
    proc = start_daemon(conf)
    try:
        assert sub.wait_results(2, 60), sub.of("result")
        peak_kb = _peak_rss_kb(proc.pid)
    finally:
        proc.terminate()
        code, _, err = finish(proc)
    assert code == 0, err
    results = {_name(r): r for r in sub.distinct_results("scope-t")}
    assert results["frame_000.jpg"]["kind"] == "frame"
    refused = results["bomb.png"]
    validate_payload("result", refused)
    assert refused["kind"] == "error"
    reason = refused["error"]["reason"]
    assert str(bomb) in reason and "30000x30000" in reason
    assert "40000000-pixel limit" in reason and "source.max_image_pixels" in reason
    assert peak_kb < 1_000_000, f"peak RSS {peak_kb} kB: the image was decoded"
    sub.close()


def test_a_frame_just_under_the_pixel_limit_takes_under_half_the_units_memory_cap(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    tiled_jpeg(folder / "field_40mp.jpg", field_paths[0], 7296, 5472)  # 39.9 MP of real smear
    cfg = daemon_config(
        bundle, folder, mosquitto, tmp_path, source={"watch": True, "settle_s": 0.1}
    )
    conf = write_config(tmp_path / "d.toml", cfg)
    sub = Collector(mosquitto)
    proc = start_daemon(conf)
    try:
        assert sub.wait_results(1, 60)
        peak_kb = _peak_rss_kb(proc.pid)
    finally:
        proc.terminate()
        code, _, err = finish(proc)
    assert code == 0, err
    (result,) = sub.distinct_results("scope-t")
    assert result["kind"] == "frame"
    assert (result["frame"]["width"], result["frame"]["height"]) == (7296, 5472)
    print(f"\npeak RSS on a 39.9 MP frame: {peak_kb / 1024:.0f} MiB")
    assert 2 * peak_kb < _unit_memory_max_kb()
    sub.close()


def test_watched_folder_reports_odd_entries_once_warns_on_grey_and_waits_for_a_paused_writer(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    folder = frame_folder(tmp_path / "frames", field_paths, 1)
    os.mkfifo(folder / "a_fifo.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "b_socket.jpg"))
    os.symlink("/dev/zero", folder / "c_zero.jpg")
    os.symlink(tmp_path / "nowhere.jpg", folder / "d_broken.jpg")
    (folder / "e_dir.jpg").mkdir()
    grey_jpeg(folder / "grey.jpg", field_paths[1])
    cfg = daemon_config(
        bundle,
        folder,
        mosquitto,
        tmp_path,
        source={"watch": True, "watch_method": "poll", "poll_s": 0.05, "settle_s": 0.3},
    )
    conf = write_config(tmp_path / "d.toml", cfg)
    sub = Collector(mosquitto)
    proc = start_daemon(conf)
    data = field_paths[2].read_bytes()

    def paused_writer() -> None:  # the scanner stops mid-file for longer than settle_s
        with open(folder / "slow.jpg", "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(1.0)  # the writer's behaviour under test, not a synchronisation
            f.write(data[len(data) // 2 :])

    try:
        assert sub.wait_results(7, 60), [_name(r) for r in sub.of("result")]
        writer = threading.Thread(target=paused_writer)
        writer.start()
        writer.join(timeout=10)
        assert sub.wait(lambda: "slow.jpg" in map(_name, sub.of("result")), 30)
        (folder / "z_sentinel.jpg").write_bytes(field_paths[0].read_bytes())
        # Dozens of polls went by since the odd entries were first reported.
        assert sub.wait(lambda: "z_sentinel.jpg" in map(_name, sub.of("result")), 30)
    finally:
        proc.terminate()
        code, _, err = finish(proc)
        sock.close()
    assert code == 0, err
    results = sub.distinct_results("scope-t")
    for r in results:
        validate_payload("result", r)
    names = [_name(r) for r in results]
    assert sorted(names) == sorted(set(names)), "a file was reported twice"
    errors = {_name(r): r["error"]["reason"] for r in results if r["kind"] == "error"}
    assert sorted(errors) == [
        "a_fifo.jpg",
        "b_socket.jpg",
        "c_zero.jpg",
        "d_broken.jpg",
        "e_dir.jpg",
    ]
    for name, reason in errors.items():
        assert str(folder / name) in reason and "move it out of the folder" in reason
    frames = {_name(r): r for r in results if r["kind"] == "frame"}
    assert sorted(frames) == ["frame_000.jpg", "grey.jpg", "slow.jpg", "z_sentinel.jpg"]
    assert frames["grey.jpg"]["warnings"] == [
        {"code": "channels_mismatch", "message": "greyscale frame; the model was trained on colour"}
    ]
    assert "warnings" not in frames["frame_000.jpg"] and "warnings" not in frames["slow.jpg"]
    sub.close()


def test_replay_killed_mid_run_resumes_without_new_ids_and_reprocess_starts_over(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    n = 40
    frames = frame_folder(tmp_path / "frames", field_paths, n)
    cfg = daemon_config(bundle, frames, mosquitto, tmp_path, source={"interval_s": 0.1})
    conf = write_config(tmp_path / "d.toml", cfg)
    db = tmp_path / "outbox.sqlite3"
    sub = Collector(mosquitto)
    proc = start_daemon(conf, "--once")  # a plain replay: no watch
    assert sub.wait_results(3, 30), "no results before the outage"
    mosquitto.stop()  # results now stay pending in the outbox
    assert _until(lambda: len(_rows(db, "SELECT seq FROM outbox")) >= 5, 30)
    proc.kill()  # SIGKILL mid-replay: no flush, no cleanup
    proc.communicate(timeout=10)
    pending = {r[0] for r in _rows(db, "SELECT message_id FROM outbox")}
    done_files = len(_rows(db, "SELECT key FROM seen"))
    assert pending and done_files < n, "the kill did not happen mid-replay"
    mosquitto.start()
    late = Collector(mosquitto)  # subscribed before the restart publishes anything
    code, _, err = finish(start_daemon(conf, "--once"), 60)
    assert code == 0, err
    assert late.wait(lambda: "stopped" in late.states("scope-t"), 10)

    ids_by_frame: dict[str, set[str]] = {}
    for r in sub.of("result", "scope-t") + late.of("result", "scope-t"):
        ids_by_frame.setdefault(_name(r), set()).add(r["message_id"])
    assert sorted(ids_by_frame) == [f"frame_{i:03d}.jpg" for i in range(n)]
    twice = {k: v for k, v in ids_by_frame.items() if len(v) > 1}
    assert not twice, f"classified again under a new message id: {twice}"
    delivered = set().union(*ids_by_frame.values())
    assert pending <= delivered, "a result committed before the kill was not delivered"

    # On purpose: the whole folder again, as new results.
    code, _, err = finish(start_daemon(conf, "--once", "--reprocess"), 60)
    assert code == 0, err
    assert late.wait(lambda: late.states("scope-t").count("stopped") >= 2, 10)
    again = [r for r in late.distinct_results("scope-t") if r["message_id"] not in delivered]
    assert sorted(_name(r) for r in again) == [f"frame_{i:03d}.jpg" for i in range(n)]
    sub.close()
    late.close()
