"""Health: latency percentiles, Prometheus text, /healthz, and the systemd notify protocol."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edge.contracts.messages import validate_payload
from edge.service.health import HealthServer, Stats, health_payload, prometheus_text
from edge.service.sd_notify import SystemdNotifier
from tests.edge.daemon_helpers import (
    daemon_config,
    finish,
    frame_folder,
    start_daemon,
    write_config,
)
from tests.mosquitto import Mosquitto

OUTBOX = {
    "pending": 3,
    "inflight": 1,
    "max_messages": 100,
    "when_full": "block",
    "dropped_oldest": 0,
    "rejected_new": 0,
    "refused_by_broker": 0,
    "blocked_s": 0.0,
    "published": 7,
}
MQTT = {"connected": True, "connects": 1, "disconnects": 0}


def _health() -> dict:  # type: ignore[type-arg]
    stats = Stats(window=100)
    for ms in range(1, 101):
        stats.timing({"preprocess": 1.0, "inference": float(ms), "total": ms + 1.0})
    stats.add("frames", 100)
    stats.add("results", 100)
    return health_payload("scope-01", stats, 2, OUTBOX, MQTT)


def test_health_payload_percentiles_and_schema() -> None:
    h = _health()
    validate_payload("health", h)
    inf = h["latency_ms"]["inference"]
    assert inf["n"] == 100 and inf["p50"] == pytest.approx(50.5) and inf["p99"] > 98


def test_prometheus_text_and_http_endpoints() -> None:
    text = prometheus_text(_health())
    assert 'blastscope_published_total{device="scope-01"} 7' in text
    assert 'blastscope_latency_ms{device="scope-01",stage="inference",quantile="50"}' in text
    assert text.count("# TYPE blastscope_latency_ms gauge") == 1
    alive = [True]
    server = HealthServer("127.0.0.1", 0, _health, lambda: alive[0])
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            assert "blastscope_frames_total" in r.read().decode()
        alive[0] = False
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/healthz", timeout=5)
        assert err.value.code == 503
    finally:
        server.stop()


def _notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(20)
    return sock


def test_notifier_speaks_the_sd_notify_protocol(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sock = _notify_socket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = SystemdNotifier()
    assert n.enabled and n.watchdog_interval_s == 2.0
    n.ready("classifying")
    n.watchdog()
    assert sock.recv(256) == b"READY=1\nSTATUS=classifying"
    assert sock.recv(256) == b"WATCHDOG=1"
    sock.close()
    monkeypatch.delenv("NOTIFY_SOCKET")
    SystemdNotifier().ready()  # outside systemd: a no-op


@pytest.mark.mqtt
def test_daemon_notifies_ready_pings_the_watchdog_and_says_stopping(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    sock = _notify_socket(tmp_path)
    frames = frame_folder(tmp_path / "frames", field_paths, 12)
    cfg = daemon_config(bundle, frames, mosquitto, tmp_path, source={"interval_s": 0.1})
    conf = write_config(tmp_path / "d.toml", cfg)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "300000"}
    code, _, err = finish(start_daemon(conf, "--once", env=env))
    assert code == 0, err
    sock.settimeout(0.5)
    received = []
    try:
        while True:
            received.append(sock.recv(256).decode())
    except TimeoutError:
        pass
    sock.close()
    assert received[0].startswith("READY=1")
    assert received.count("WATCHDOG=1") >= 3  # every 0.15 s while classifying for ~1.2 s
    assert received[-1] == "STOPPING=1"
