"""Counters and latency percentiles; the health payload; optional local /healthz and /metrics.

The HTTP server binds 127.0.0.1 by default: it is for the box's own monitoring (a Prometheus
node agent, a curl in a systemd health check), not for the lab network.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from edge.contracts.messages import SCHEMA_VERSION, utc_iso

log = logging.getLogger(__name__)

STAGES = ("preprocess", "inference", "total")


class Stats:
    """Thread-safe counters and rolling latency windows for one daemon run."""

    def __init__(self, window: int = 1000) -> None:
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self.counts = {"frames": 0, "results": 0, "errors": 0, "frames_skipped": 0}
        self._latency: dict[str, deque[float]] = {s: deque(maxlen=window) for s in STAGES}

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def timing(self, timing_ms: dict[str, float]) -> None:
        with self._lock:
            for stage in STAGES:
                if stage in timing_ms:
                    self._latency[stage].append(timing_ms[stage])

    def latency(self) -> dict[str, dict[str, float | int]]:
        with self._lock:
            windows = {s: np.array(d) for s, d in self._latency.items() if d}
        out: dict[str, dict[str, float | int]] = {}
        for stage, values in windows.items():
            p50, p90, p99 = np.percentile(values, [50, 90, 99])
            out[stage] = {
                "p50": round(float(p50), 3),
                "p90": round(float(p90), 3),
                "p99": round(float(p99), 3),
                "n": len(values),
            }
        return out

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started


def health_payload(
    device: str,
    stats: Stats,
    capture_queue: int,
    outbox: dict[str, Any],
    mqtt: dict[str, Any],
) -> dict[str, Any]:
    counts = stats.snapshot()
    return {
        "schema_version": SCHEMA_VERSION,
        "device": device,
        "at": utc_iso(),
        "uptime_s": round(stats.uptime_s, 3),
        "frames": counts["frames"],
        "results": counts["results"],
        "errors": counts["errors"],
        "frames_skipped": counts["frames_skipped"],
        "capture_queue": capture_queue,
        "outbox": outbox,
        "mqtt": mqtt,
        "latency_ms": stats.latency(),
    }


def prometheus_text(health: dict[str, Any]) -> str:
    """The health payload in Prometheus text exposition format."""
    labels = f'device="{health["device"]}"'
    lines: list[str] = []

    def metric(name: str, kind: str, value: float, help_text: str, extra: str = "") -> None:
        full = f"blastscope_{name}"
        if not any(line.startswith(f"# TYPE {full} ") for line in lines):
            lines.append(f"# HELP {full} {help_text}")
            lines.append(f"# TYPE {full} {kind}")
        lines.append(f"{full}{{{labels}{extra}}} {value}")

    metric("uptime_seconds", "gauge", health["uptime_s"], "seconds since the daemon started")
    metric("frames_total", "counter", health["frames"], "frames captured")
    metric("results_total", "counter", health["results"], "results committed to the outbox")
    metric("errors_total", "counter", health["errors"], "frames that could not be classified")
    metric("frames_skipped_total", "counter", health["frames_skipped"], "stale live frames skipped")
    metric("capture_queue", "gauge", health["capture_queue"], "frames waiting for inference")
    ob = health["outbox"]
    metric("outbox_pending", "gauge", ob["pending"], "results not yet acknowledged by the broker")
    metric("outbox_inflight", "gauge", ob["inflight"], "results sent, awaiting PUBACK")
    metric("published_total", "counter", ob["published"], "results acknowledged by the broker")
    for what in ("dropped_oldest", "rejected_new"):
        metric(f"outbox_{what}_total", "counter", ob[what], f"results lost: {what}")
    metric(
        "outbox_refused_by_broker_total",
        "counter",
        ob["refused_by_broker"],
        "results the broker refused (kept in the outbox, offered again)",
    )
    metric("outbox_refused_pending", "gauge", ob.get("refused_pending", 0), "refused, waiting")
    metric("outbox_disk_full", "gauge", int(ob.get("disk_full", False)), "1 if the disk is full")
    metric("mqtt_connected", "gauge", int(health["mqtt"]["connected"]), "1 if connected")
    for stage, p in health["latency_ms"].items():
        for q in ("p50", "p90", "p99"):
            extra = f',stage="{stage}",quantile="{q[1:]}"'
            metric("latency_ms", "gauge", p[q], "per-frame latency percentiles", extra)
    return "\n".join(lines) + "\n"


class HealthServer:
    """/healthz (200 while the pipeline is alive, else 503) and /metrics, on a local port."""

    def __init__(
        self,
        host: str,
        port: int,
        health: Callable[[], dict[str, Any]],
        alive: Callable[[], bool],
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    ok = outer.alive()
                    body = json.dumps({"ok": ok}).encode()
                    self._reply(200 if ok else 503, "application/json", body)
                elif self.path == "/metrics":
                    body = prometheus_text(outer.health()).encode()
                    self._reply(200, "text/plain; version=0.0.4", body)
                else:
                    self._reply(404, "text/plain", b"not found\n")

            def _reply(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

        self.health = health
        self.alive = alive
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
