"""The daemon under faults from the hostile run (issue 10), against real processes.

A full outbox that blocks must keep the systemd watchdog fed; a crash must leave ``failed``,
never ``stopped``; a full disk must pause, say so and drain; a bundle that failed its
verification must not run; a finished replay says what it did and ends.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.cli import main
from edge.contracts.manifest import Verification, read_manifest, write_manifest
from edge.contracts.messages import validate_payload
from edge.service.config import load_config
from edge.service.startup import run
from tests.edge.daemon_helpers import (
    Collector,
    assert_ordered_unique,
    daemon_config,
    finish,
    frame_folder,
    persistent_broker,
    start_daemon,
    write_config,
)
from tests.mosquitto import Mosquitto, free_port

pytestmark = pytest.mark.mqtt


def _until(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    """Poll a condition (files, HTTP, a child's database) until it holds or time runs out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _outbox_rows(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return int(con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


class Systemd:
    """The systemd side of sd_notify: a datagram socket recording when each message came."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.received: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.received.append((time.monotonic(), data.decode()))

    def pings_after(self, t: float) -> int:
        return sum(1 for at, text in self.received if at > t and "WATCHDOG=1" in text)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _metric(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"blastscope_{name}{{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def _healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_full_outbox_that_blocks_keeps_the_watchdog_fed_and_then_drains(
    tmp_path: Path, bundle: Path, field_paths: list[Path]
) -> None:
    """Blocked by policy is alive: systemd must not kill a daemon waiting for the broker."""
    broker = persistent_broker(tmp_path / "broker")
    broker.start()
    sub = Collector(broker, ("blastscope/scope-t/#",), persistent=True, client_id="dash-wd")
    broker.stop()  # the broker is away for the whole capture
    n, stall_s = 25, 1.0
    frames = frame_folder(tmp_path / "frames", field_paths, n)
    port = free_port()
    cfg = daemon_config(
        bundle,
        frames,
        broker,
        tmp_path,
        outbox={"max_messages": 10, "when_full": "block"},
        health={"interval_s": 1.0, "http_port": port, "stall_s": stall_s},
    )
    conf = write_config(tmp_path / "d.toml", cfg)
    systemd = Systemd(tmp_path / "notify.sock")
    # Pings every 0.2 s (half of WATCHDOG_USEC), as systemd's WatchdogSec=0.4 would ask.
    env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "400000"}
    proc = start_daemon(conf, "--once", env=env)
    try:
        db = tmp_path / "outbox.sqlite3"
        assert _until(lambda: _outbox_rows(db) == 10, 30), "the outbox never filled"
        full_at = time.monotonic()
        # Well past the stall time, the daemon still pings and /healthz still says alive.
        assert _until(lambda: time.monotonic() > full_at + 3 * stall_s, 10)
        assert systemd.pings_after(full_at + 2 * stall_s) >= 3, systemd.received[-5:]
        assert _healthz(port) == 200
        assert _metric(port, "outbox_pending") == 10
        assert proc.poll() is None
        broker.start()
        code, _, err = finish(proc, 60)
        assert code == 0, err
        assert sub.wait_results(n, 20), f"{len(sub.distinct_results())} of {n}"
    finally:
        systemd.close()
        broker.stop()
    results = sub.distinct_results()
    assert len(results) == n
    assert_ordered_unique(results)
    # The first status after the broker came back says why classification was paused.
    codes = [{w["code"] for w in s["warnings"]} for s in sub.of("status", "scope-t")]
    assert any("outbox_full" in c for c in codes), codes
    sub.close()


def test_a_crash_leaves_failed_with_its_reason_never_stopped(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto, monkeypatch
) -> None:
    """Fault injection: the third classification raises, as a bug would."""
    import edge.service.daemon

    frames = frame_folder(tmp_path / "frames", field_paths, 6)
    cfg = load_config(None, daemon_config(bundle, frames, mosquitto, tmp_path))
    real = edge.service.daemon.Daemon._process
    calls = {"n": 0}

    def faulty(self, item):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected fault")
        return real(self, item)

    monkeypatch.setattr(edge.service.daemon.Daemon, "_process", faulty)
    sub = Collector(mosquitto)
    assert run(cfg, once=True) == 1
    assert sub.wait(lambda: sub.states("scope-t")[-1:] == ["failed"], 10), sub.states("scope-t")
    final = sub.of("status", "scope-t")[-1]
    validate_payload("status", final)
    assert final["reason"] == "crashed: RuntimeError: injected fault"
    assert "stopped" not in sub.states("scope-t")
    # What was committed before the crash was still delivered.
    assert sub.wait_results(2, 10)
    sub.close()
    late = Collector(mosquitto, ("blastscope/+/status",))  # the retained status, later
    assert late.wait(lambda: late.states("scope-t") == ["failed"], 5)
    late.close()


def test_a_bundle_that_failed_verification_is_refused(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto, capsys
) -> None:  # type: ignore[no-untyped-def]
    manifest = read_manifest(bundle)
    manifest.verification = Verification(status="failed", digest=manifest.graph_digest())
    write_manifest(bundle, manifest)  # as `converters verify` leaves a bundle that failed
    frames = frame_folder(tmp_path / "frames", field_paths, 2)
    conf = write_config(tmp_path / "d.toml", daemon_config(bundle, frames, mosquitto, tmp_path))
    sub = Collector(mosquitto)
    code, _, err = finish(start_daemon(conf, "--once"))
    assert code == 1 and "failed its verification" in err
    assert sub.wait(lambda: "failed" in sub.states("scope-t"), 5)
    assert "failed its verification" in sub.of("status", "scope-t")[-1]["reason"]
    assert not sub.of("result")
    assert main(["check", "--config", str(conf)]) == 1
    assert "FAIL bundle " in capsys.readouterr().out
    sub.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: a real filesystem that fills up (needs root or passwordless sudo)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    mount = subprocess.run(
        [*sudo, "mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if mount.returncode:
        pytest.fail(
            f"cannot mount a small tmpfs for the full-disk test ({mount.stderr.strip()}): "
            "run the tests as root or with passwordless sudo"
        )
    try:
        yield mnt
    finally:
        subprocess.run([*sudo, "umount", "-l", str(mnt)], check=False)


def test_a_full_disk_pauses_says_so_and_drains_when_the_broker_returns(
    tmp_path: Path, bundle: Path, field_paths: list[Path], small_disk: Path
) -> None:
    broker = persistent_broker(tmp_path / "broker")
    broker.start()
    sub = Collector(broker, ("blastscope/scope-t/#",), persistent=True, client_id="dash-disk")
    broker.stop()
    n = 1500  # more results than 2 MiB (3 MiB less the reserve) holds
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(n):  # hard links: n frames, the space of four
        os.link(field_paths[i % len(field_paths)], frames / f"frame_{i:04d}.jpg")
    port = free_port()
    cfg = daemon_config(
        bundle,
        frames,
        broker,
        tmp_path,
        outbox={"path": str(small_disk / "outbox.sqlite3"), "reserve_bytes": 1 << 20},
        health={"interval_s": 1.0, "http_port": port, "stall_s": 1.0},
    )
    conf = write_config(tmp_path / "d.toml", cfg)
    proc = start_daemon(conf, "--once")
    try:
        assert _until(lambda: _metric(port, "outbox_disk_full") == 1, 120), "disk never full"
        full_at = time.monotonic()
        pending = _metric(port, "outbox_pending")
        assert pending is not None and 100 < pending < n
        # Paused, not dead: alive past the stall time, and nothing more is committed.
        assert _until(lambda: time.monotonic() > full_at + 2.5, 10)
        assert proc.poll() is None and _healthz(port) == 200
        assert _metric(port, "outbox_pending") == pending
        broker.start()
        code, _, err = finish(proc, 240)
        assert code == 0, err[-3000:]
        assert sub.wait_results(n, 60), f"{len(sub.distinct_results())} of {n}"
    finally:
        broker.stop()
    results = sub.distinct_results()
    names = sorted(r["frame"]["origin"].rsplit("/", 1)[1] for r in results)
    assert names == [f"frame_{i:04d}.jpg" for i in range(n)]  # every frame, exactly once
    assert_ordered_unique(results)
    codes = [{w["code"] for w in s["warnings"]} for s in sub.of("status", "scope-t")]
    assert any("disk_full" in c for c in codes), "the status never said the disk was full"
    assert "disk_full" not in codes[-1]  # and it cleared once space came back
    assert "the disk is full" in err
    sub.close()


def test_a_replay_without_once_says_what_it_did_and_ends(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    """The README's form (a folder, no --once) used to finish and then sit silent forever."""
    frames = frame_folder(tmp_path / "frames", field_paths, 5)
    conf = write_config(tmp_path / "d.toml", daemon_config(bundle, frames, mosquitto, tmp_path))
    sub = Collector(mosquitto)
    code, _, err = finish(start_daemon(conf), 60)  # default log level, no -v
    assert code == 0, err
    assert "done, 5 frames" in err and "5 frames done, 5 results delivered; outbox empty" in err
    assert sub.wait_results(5, 10)
    sub.close()


def test_a_watched_folder_says_when_it_has_caught_up(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    frames = frame_folder(tmp_path / "frames", field_paths, 3)
    cfg = daemon_config(bundle, frames, mosquitto, tmp_path, source={"watch": True, "settle_s": 0})
    conf = write_config(tmp_path / "d.toml", cfg)
    sub = Collector(mosquitto)
    proc = start_daemon(conf)
    assert sub.wait_results(3, 20)
    assert proc.stderr is not None
    said: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            said.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert _until(lambda: any("waiting for new frames from folder:" in s for s in said), 20)
    assert any("3 frames done, 3 results delivered" in s for s in said)
    proc.terminate()
    proc.wait(20)
    reader.join(5)
    assert proc.returncode == 0
    sub.close()
