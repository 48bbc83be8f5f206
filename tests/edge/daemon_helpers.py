"""Helpers for the daemon tests: bundles, frame folders, TOML configs, a real MQTT subscriber."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.contracts.preprocess_spec import PreprocessSpec
from edge.model.bundle_writer import write_bundle
from tests.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "without_tensorflow.py"
SPEC = PreprocessSpec(height=32, width=32)


def make_bundle(out: Path, model: bytes, **kw: Any) -> Path:
    write_bundle(
        out, model, name="tiny", labels=["HEM", "ALL"], spec=SPEC, quantization="float32", **kw
    )
    return out


def frame_folder(out: Path, sources: list[Path], n: int) -> Path:
    """n real smear frames (the fixtures, repeated) named frame_000.jpg ... in order."""
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        shutil.copy(sources[i % len(sources)], out / f"frame_{i:03d}.jpg")
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a TOML basic string is a JSON string


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A minimal TOML writer (scalars, arrays, nested tables) for test configs."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}{k}"
            lines.append(f"\n[{name}]")
            lines.append(to_toml(v, name + "."))
    return "\n".join(lines)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(to_toml(data) + "\n")
    return path


def daemon_config(
    bundle: Path, frames: Path, broker: Mosquitto, state: Path, **extra: Any
) -> dict[str, Any]:
    """A fast-reacting config: small backoffs so outage tests stay short."""
    cfg: dict[str, Any] = {
        "device": "scope-t",
        "bundle": str(bundle),
        "source": {"kind": "folder", "path": str(frames)},
        "mqtt": {
            "broker": broker.url,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
            "keepalive_s": 5,
            "shutdown_flush_s": 2.0,
        },
        "outbox": {"path": str(state / "outbox.sqlite3")},
        "health": {"interval_s": 1.0},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def start_daemon(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """`edge run` in a child process with TensorFlow imports blocked (as on a Pi)."""
    return subprocess.Popen(
        [sys.executable, str(RUNNER), "edge.cli", "run", "--config", str(config), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"daemon did not finish in {timeout}s; stderr:\n{err}") from None
    return proc.returncode, out, err


class Collector:
    """A real QoS 1 subscriber recording every message in arrival order."""

    def __init__(
        self,
        broker: Mosquitto,
        topics: tuple[str, ...] = ("blastscope/#",),
        *,
        persistent: bool = False,
        client_id: str | None = None,
    ) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.qos: list[tuple[str, int]] = []  # (topic, QoS the broker delivered it with)
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"collector-{uuid.uuid4().hex[:8]}",
            clean_session=not persistent,
        )
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]

        def on_connect(c, userdata, flags, rc, props):  # type: ignore[no-untyped-def]
            if not flags.session_present:
                c.subscribe([(t, 1) for t in topics])
            else:
                self._subscribed.set()

        def on_subscribe(c, userdata, mid, rcs, props):  # type: ignore[no-untyped-def]
            self._subscribed.set()

        def on_message(c, userdata, msg):  # type: ignore[no-untyped-def]
            with self._cond:
                self.messages.append((msg.topic, json.loads(msg.payload)))
                self.qos.append((msg.topic, msg.qos))
                self._cond.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect_async(broker.host, broker.port, keepalive=5)
        self.client.loop_start()
        assert self._subscribed.wait(10), "collector could not subscribe"

    def of(self, kind: str, device: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [
                p
                for t, p in self.messages
                if t.endswith("/" + kind) and (device is None or t.split("/")[-2] == device)
            ]

    def qos_of(self, kind: str) -> list[int]:
        """The QoS each message of this kind arrived with (1 for results and status)."""
        with self._cond:
            return [q for t, q in self.qos if t.endswith("/" + kind)]

    def distinct_results(self, device: str | None = None) -> list[dict[str, Any]]:
        """Results de-duplicated on message_id, in first-arrival order."""
        seen: set[str] = set()
        out = []
        for p in self.of("result", device):
            if p["message_id"] not in seen:
                seen.add(p["message_id"])
                out.append(p)
        return out

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def wait_results(self, n: int, timeout: float, device: str | None = None) -> bool:
        return self.wait(lambda: len(self.distinct_results(device)) >= n, timeout)

    def states(self, device: str) -> list[str]:
        return [p["state"] for p in self.of("status", device)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def persistent_broker(workdir: Path) -> Mosquitto:
    """A mosquitto that keeps sessions and queued QoS 1 messages across stop/start."""
    workdir.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(workdir)
    text = broker.conf.read_text().replace(
        "persistence false",
        f"persistence true\npersistence_location {workdir}/\nmax_queued_messages 100000",
    )
    broker.conf.write_text(text)
    return broker


def assert_ordered_unique(results: list[dict[str, Any]]) -> None:
    """seq strictly increases over distinct results; message ids are unique."""
    seqs = [r["seq"] for r in results]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"order broken: {seqs}"
    ids = [r["message_id"] for r in results]
    assert len(set(ids)) == len(ids)
