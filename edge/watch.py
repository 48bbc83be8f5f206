"""``edge watch``: the reference lab-dashboard subscriber.

Subscribes to every device's status, result and health topics (QoS 1) and shows a live table
of devices (online / offline / stopped), their latest results and per-label counts, with a
line for every status change. Results are de-duplicated on ``message_id`` (a replay after an
outage may deliver one twice) and gaps in ``seq`` are counted. Not a terminal: one line per
event; ``--json``: one JSON object per message.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, TextIO

import paho.mqtt.client as mqtt

from edge.config import MqttConfig
from edge.mqtt_link import make_client

log = logging.getLogger(__name__)

_MAX_IDS = 100_000  # message ids remembered per device for de-duplication


def _clock(iso: str | None = None) -> str:
    if iso:
        try:
            when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
            return when.strftime("%H:%M:%S")
        except ValueError:
            pass
    return time.strftime("%H:%M:%S")


def format_result_line(p: dict[str, Any]) -> str:
    """One human line for a result payload (shared by `edge run --print`)."""
    frame = p.get("frame", {})
    where = str(frame.get("origin", "?")).rsplit("/", 1)[-1]
    head = f"{_clock(p.get('classified_at'))} {p.get('device')} #{p.get('seq')}"
    if p.get("kind") == "error":
        err = p.get("error", {})
        reason = str(err.get("reason", "")).rsplit(": ", 1)[-1]
        return f"{head} ERROR {err.get('stage')} {where}: {reason}"
    probs = " ".join(f"{k} {v:.3f}" for k, v in p.get("probabilities", {}).items())
    total = p.get("timing_ms", {}).get("total")
    ms = f"  {total:.1f} ms" if isinstance(total, int | float) else ""
    return (
        f"{head} {p.get('kind')} {where}  {p.get('label')} {p.get('score', 0):.3f}  [{probs}]{ms}"
    )


@dataclass
class DeviceView:
    state: str = "?"
    since: str = ""
    reason: str = ""
    warnings: list[dict[str, Any]] = field(default_factory=list)
    results: int = 0
    errors: int = 0
    duplicates: int = 0
    gaps: int = 0
    last_seq: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    latest: deque[str] = field(default_factory=lambda: deque(maxlen=3))
    ids: set[str] = field(default_factory=set)
    health: dict[str, Any] = field(default_factory=dict)


class Watcher:
    """Collects what devices publish; prints lines or a table; thread-safe."""

    def __init__(
        self,
        prefix: str,
        device: str | None,
        mode: str = "lines",  # lines | json | table | quiet
        out: TextIO = sys.stdout,
    ) -> None:
        self.prefix = prefix
        self.device = device
        self.mode = mode
        self.out = out
        self.devices: dict[str, DeviceView] = {}
        self.events: deque[str] = deque(maxlen=12)
        self.distinct_results = 0
        self.messages: list[tuple[str, dict[str, Any]]] = []  # every parsed message, in order
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)

    @property
    def topics(self) -> list[str]:
        who = self.device or "+"
        return [f"{self.prefix}/{who}/{kind}" for kind in ("status", "result", "health")]

    def handle(self, topic: str, raw: bytes) -> None:
        parts = topic.split("/")
        device, kind = parts[-2], parts[-1]
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = {"unparsed": raw.decode("utf-8", "replace")}
        with self.changed:
            self.messages.append((topic, payload))
            view = self.devices.setdefault(device, DeviceView())
            if self.mode == "json":
                self._emit(json.dumps({"topic": topic, "payload": payload}))
            if kind == "status":
                self._status(device, view, payload)
            elif kind == "result":
                self._result(view, payload)
            elif kind == "health":
                view.health = payload
            self.changed.notify_all()

    def _status(self, device: str, view: DeviceView, p: dict[str, Any]) -> None:
        state = str(p.get("state", "?"))
        reason = str(p.get("reason", ""))
        codes = sorted(w.get("code", "?") for w in p.get("warnings", []))
        before = (view.state, view.reason, sorted(w.get("code", "?") for w in view.warnings))
        view.state, view.since, view.reason = state, _clock(p.get("at")), reason
        view.warnings = list(p.get("warnings", []))
        if before != (state, reason, codes):
            change = state if before[0] == "?" else f"{before[0]} -> {state}"
            line = f"{_clock()} {device} status: {change}"
            if reason:
                line += f" ({reason})"
            if codes:
                line += " warnings: " + ", ".join(codes)
            self._event(line)

    def _result(self, view: DeviceView, p: dict[str, Any]) -> None:
        mid = str(p.get("message_id"))
        if mid in view.ids:
            view.duplicates += 1
            return
        if len(view.ids) >= _MAX_IDS:
            view.ids.clear()
        view.ids.add(mid)
        seq = p.get("seq")
        if isinstance(seq, int):
            if view.last_seq and seq > view.last_seq + 1:
                view.gaps += seq - view.last_seq - 1
            view.last_seq = max(view.last_seq, seq)
        self.distinct_results += 1
        if p.get("kind") == "error":
            view.errors += 1
        else:
            view.results += 1
            view.labels[str(p.get("label"))] += 1
        line = format_result_line(p)
        view.latest.append(line)
        if self.mode == "lines":
            self._emit(line)

    def _event(self, line: str) -> None:
        self.events.append(line)
        if self.mode == "lines":
            self._emit(line)

    def _emit(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def table(self) -> str:
        with self._lock:
            rows = [
                f"{'DEVICE':<16} {'STATE':<8} {'SINCE':<8} {'RESULTS':>7} {'ERRORS':>6} "
                f"{'DUPS':>5} {'GAPS':>5}  COUNTS / LATEST"
            ]
            for name, v in sorted(self.devices.items()):
                counts = "  ".join(f"{k} {n}" for k, n in v.labels.most_common())
                rows.append(
                    f"{name:<16} {v.state:<8} {v.since:<8} {v.results:>7} {v.errors:>6} "
                    f"{v.duplicates:>5} {v.gaps:>5}  {counts}"
                )
                for w in v.warnings:
                    rows.append(f"{'':<16} ! {w.get('code')}: {w.get('message')}")
                for line in v.latest:
                    rows.append(f"{'':<16}   {line}")
            rows.append("")
            rows.extend(self.events)
        return "\n".join(rows)

    def wait_for(self, results: int, timeout: float | None) -> bool:
        """Block until `results` distinct results have arrived (True) or timeout (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.changed:
            while self.distinct_results < results:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.changed.wait(timeout=0.5 if left is None else min(0.5, left))
        return True


def connect_watcher(cfg: MqttConfig, watcher: Watcher) -> tuple[mqtt.Client, threading.Event]:
    """A client feeding `watcher` (re-subscribing after every reconnect); the event is set
    once the first subscription is confirmed."""
    address = cfg.address
    client_id = f"blastscope-watch-{uuid.uuid4().hex[:8]}"
    client, connect_kw = make_client(cfg, client_id, address.host, address.port)
    subscribed = threading.Event()

    def on_connect(c, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker refused the watcher: %s", reason_code)
            return
        c.subscribe([(t, 1) for t in watcher.topics])

    def on_subscribe(c, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(c, userdata, message):
        watcher.handle(message.topic, message.payload)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect_async(**connect_kw)
    client.loop_start()
    return client, subscribed


def watch(
    cfg: MqttConfig,
    device: str | None,
    mode: str,
    count: int | None,
    timeout: float | None,
    out: TextIO = sys.stdout,
) -> int:
    """Run the subscriber until Ctrl-C, `count` results, or `timeout` seconds."""
    watcher = Watcher(cfg.topic_prefix, device, mode, out)
    client, _ = connect_watcher(cfg, watcher)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            if count is not None and watcher.distinct_results >= count:
                return 0
            if deadline is not None and time.monotonic() >= deadline:
                return 0 if count is None else 1
            if mode == "table":
                out.write(
                    "\x1b[H\x1b[2J" + f"blastscope watch {cfg.broker} "
                    f"({cfg.topic_prefix}/{device or '+'}) - Ctrl-C quits\n\n"
                )
                out.write(watcher.table() + "\n")
                out.flush()
            watcher.wait_for(watcher.distinct_results + 1, 0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        client.disconnect()
        client.loop_stop()
