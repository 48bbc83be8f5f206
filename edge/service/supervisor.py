"""The supervisor thread: the retained status's warnings, health messages, progress lines and
the systemd watchdog, which is fed only while the pipeline makes progress.

Waiting for room in a full outbox (policy ``block``) or for space on a full disk is progress
by policy: killing the daemon would not drain the outbox, and a restart would block again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edge.contracts.messages import encode
from edge.pipeline.priority import yield_to_inference
from edge.service.health import Stats, health_payload
from edge.service.mqtt_link import MqttLink
from edge.service.outbox import Outbox
from edge.service.sd_notify import SystemdNotifier

log = logging.getLogger(__name__)

_PROGRESS_EVERY_S = 60.0  # a progress line while frames keep coming
_IDLE_AFTER_S = 3.0  # no new frame for this long, everything delivered: say so once
_FULL_EFFECT = {
    "block": "classification paused until the broker takes results",
    "drop_oldest": "the oldest results are being dropped",
    "reject_new": "new results are being discarded",
}


class Supervisor:
    """Watches a running pipeline; `alive()` is what /healthz and the watchdog report."""

    def __init__(
        self,
        *,
        device: str,
        source_name: str,
        stats: Stats,
        outbox: Outbox,
        link: MqttLink,
        notifier: SystemdNotifier,
        health_interval_s: float,
        stall_s: float,
        static_warnings: dict[str, dict[str, Any]],
        source_warning: Callable[[], dict[str, Any] | None],
        capture_backlog: Callable[[], int],
        capturing: Callable[[], bool],
        fatal: Callable[[], str | None],
        stop: threading.Event,
    ) -> None:
        self.device = device
        self.source_name = source_name
        self.stats = stats
        self.outbox = outbox
        self.link = link
        self.notifier = notifier
        self.health_interval_s = health_interval_s
        self.stall_s = stall_s
        self.static_warnings = dict(static_warnings)
        self.source_warning = source_warning
        self.capture_backlog = capture_backlog
        self.capturing = capturing
        self.fatal = fatal
        self.stop = stop
        self.heartbeat = time.monotonic()  # the inference loop's last turn
        self._counters_at_start = outbox.counters()
        self._progress = _Progress()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def alive(self) -> bool:
        fresh = time.monotonic() - self.heartbeat < self.stall_s
        waiting_by_policy = self.outbox.blocked
        return (fresh or waiting_by_policy) and self.capturing() and self.fatal() is None

    def _run(self) -> None:
        yield_to_inference()
        interval = self.health_interval_s
        next_health = time.monotonic() + min(interval, 5.0) if interval else float("inf")
        watchdog = self.notifier.watchdog_interval_s
        next_ping = time.monotonic()
        while not self.stop.wait(0.25):
            self.link.set_warnings(self.warnings())
            self._report_progress()
            now = time.monotonic()
            if now >= next_health:
                self.link.publish_health(encode(self.health()))
                next_health = now + interval
            if watchdog is not None and now >= next_ping and self.alive():
                self.notifier.watchdog()
                next_ping = now + watchdog

    def _report_progress(self) -> None:
        """Lines at the default log level: progress while busy, and once when caught up."""
        frames = self.stats.snapshot()["frames"]
        line = self._progress.update(frames, self.outbox.unsettled == 0, time.monotonic())
        if line == "busy":
            log.info(
                "%d frames done, %d results delivered, %d waiting in the outbox",
                frames,
                self.link.published,
                self.outbox.pending,
            )
        elif line == "idle":
            log.info(
                "%d frames done, %d results delivered; waiting for new frames from %s",
                frames,
                self.link.published,
                self.source_name,
            )

    def warnings(self) -> dict[str, dict[str, Any]]:
        """The current warnings, by stable code (edge/contracts/schemas/status.schema.json)."""
        out = dict(self.static_warnings)
        source = self.source_warning()
        if source is not None:
            out["source_retrying"] = source
        ob = self.outbox
        if ob.disk_full:
            out["disk_full"] = {
                "message": f"the disk under the outbox {ob.path} is full: classification is "
                "paused until delivered results free space; free disk space on the device",
                "count": ob.pending,
            }
        if ob.refused:
            out["broker_refused"] = {
                "message": f"the broker refused {ob.refused} results ({ob.last_refusal}); they "
                "stay in the outbox and are offered again after each reconnect: its ACL must let "
                "mqtt.username write this device's topics",
                "count": ob.refused,
            }
        if ob.pending >= ob.max_messages:
            out["outbox_full"] = {
                "message": f"outbox full ({ob.pending}): {_FULL_EFFECT[ob.when_full]}",
                "count": ob.pending,
            }
        now = ob.counters()
        for counter, code in (
            ("dropped_oldest", "outbox_dropped"),
            ("rejected_new", "outbox_rejected"),
        ):
            n = now[counter] - self._counters_at_start.get(counter, 0)
            if n > 0:
                out[code] = {"message": f"{n} results lost since start ({counter})", "count": n}
        return out

    def health(self) -> dict[str, Any]:
        counters = self.outbox.counters()
        outbox = {
            "pending": self.outbox.pending,
            "inflight": self.link.inflight,
            "max_messages": self.outbox.max_messages,
            "when_full": self.outbox.when_full,
            "dropped_oldest": counters["dropped_oldest"],
            "rejected_new": counters["rejected_new"],
            "refused_by_broker": counters["refused_by_broker"],
            "refused_pending": self.outbox.refused,
            "disk_full": self.outbox.disk_full,
            "blocked_s": round(self.outbox.blocked_s, 3),
            "published": self.link.published,
        }
        mqtt = {
            "connected": self.link.connected,
            "connects": self.link.connects,
            "disconnects": self.link.disconnects,
        }
        return health_payload(self.device, self.stats, self.capture_backlog(), outbox, mqtt)


class _Progress:
    """When to say what the daemon is doing: every _PROGRESS_EVERY_S while frames keep coming,
    and once when it has caught up (no new frame for _IDLE_AFTER_S, everything delivered)."""

    def __init__(self) -> None:
        self._frames = 0
        self._changed_at = time.monotonic()
        self._said_at = time.monotonic()
        self._idle_said = False

    def update(self, frames: int, settled: bool, now: float) -> str | None:
        if frames != self._frames:
            self._frames, self._changed_at, self._idle_said = frames, now, False
        if frames and settled and not self._idle_said and now - self._changed_at >= _IDLE_AFTER_S:
            self._idle_said, self._said_at = True, now
            return "idle"
        if not self._idle_said and now - self._said_at >= _PROGRESS_EVERY_S:
            self._said_at = now
            return "busy"
        return None
