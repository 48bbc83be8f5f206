"""`edge watch`, the reference dashboard: de-duplication, gaps, status lines, live output."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.cli import main
from edge.messages import status_payload
from edge.watch import Watcher
from tests.edge.daemon_helpers import (
    ROOT,
    daemon_config,
    frame_folder,
    write_config,
)
from tests.mosquitto import Mosquitto


def _result(seq: int, label: str = "ALL", mid: str | None = None) -> bytes:
    return json.dumps(
        {
            "message_id": mid or str(uuid.uuid4()),
            "seq": seq,
            "kind": "frame",
            "device": "scope-1",
            "frame": {"id": "f", "origin": f"folder:/d/f{seq}.jpg", "captured_at": "x"},
            "classified_at": "2025-01-01T00:00:00.000Z",
            "label": label,
            "score": 0.9,
            "probabilities": {"HEM": 0.1, "ALL": 0.9},
            "timing_ms": {"total": 3.0},
        }
    ).encode()


def _status(state: str, reason: str | None = None) -> bytes:
    return status_payload(device="scope-1", state=state, client_id="c", reason=reason)  # type: ignore[arg-type]


def _retain_status(broker: Mosquitto, client_id: str, topic: str, state: str) -> None:
    """Leave a retained status on the broker, as a device that published it earlier would."""
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    device.connect(broker.host, broker.port)
    device.loop_start()
    device.publish(topic, _status(state), qos=1, retain=True).wait_for_publish(5)
    device.disconnect()
    device.loop_stop()


def test_watcher_deduplicates_counts_gaps_and_reports_status_changes() -> None:
    out = io.StringIO()
    w = Watcher("blastscope", None, "lines", out)
    w.handle("blastscope/scope-1/status", _status("online"))
    dup = str(uuid.uuid4())
    w.handle("blastscope/scope-1/result", _result(1, mid=dup))
    w.handle("blastscope/scope-1/result", _result(1, mid=dup))  # replayed after an outage
    w.handle("blastscope/scope-1/result", _result(4, "HEM"))  # 2 and 3 were dropped
    w.handle("blastscope/scope-1/status", _status("offline", "connection lost (last will)"))
    view = w.devices["scope-1"]
    assert (view.results, view.duplicates, view.gaps) == (2, 1, 2)
    assert view.labels == {"ALL": 1, "HEM": 1}
    lines = out.getvalue().splitlines()
    assert "scope-1 status: online" in lines[0]
    assert "scope-1 #1 frame f1.jpg  ALL 0.900" in lines[1]
    assert lines[-1].endswith("status: online -> offline (connection lost (last will))")
    table = w.table()
    assert "scope-1" in table and "offline" in table and "ALL 1" in table


@pytest.mark.mqtt
def test_edge_watch_follows_a_running_daemon(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    _retain_status(mosquitto, "older-device", "blastscope/old-1/status", "stopped")
    watch = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "watch", "--broker", mosquitto.url, "--json",
         "--count", "3", "--timeout", "30"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert watch.stdout is not None
    first = json.loads(watch.stdout.readline())  # the retained status: it is subscribed
    assert first["topic"] == "blastscope/old-1/status" and first["payload"]["state"] == "stopped"
    frames = frame_folder(tmp_path / "frames", field_paths, 3)
    conf = write_config(tmp_path / "d.toml", daemon_config(bundle, frames, mosquitto, tmp_path))
    assert main(["run", "--config", str(conf), "--once"]) == 0
    out, err = watch.communicate(timeout=30)
    assert watch.returncode == 0, err
    messages = [json.loads(line) for line in out.splitlines()]
    results = [m for m in messages if m["topic"] == "blastscope/scope-t/result"]
    assert [r["payload"]["seq"] for r in results] == [1, 2, 3]
    assert any(m["topic"] == "blastscope/scope-t/status" for m in messages)


@pytest.mark.mqtt
def test_table_mode_redraws_a_device_table(mosquitto: Mosquitto) -> None:
    from edge.config import MqttConfig
    from edge.watch import watch

    _retain_status(mosquitto, "scope-1", "blastscope/scope-1/status", "online")
    out = io.StringIO()
    assert watch(MqttConfig(broker=mosquitto.url), None, "table", None, 1.5, out) == 0
    screen = out.getvalue().rsplit("\x1b[2J", 1)[-1]
    assert "DEVICE" in screen and "scope-1" in screen and "online" in screen
