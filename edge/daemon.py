"""The capture daemon: capture -> preprocess -> classify -> outbox -> MQTT, until told to stop.

Threads: the capture thread reads and preprocesses frames (OpenCV releases the GIL) into a
small queue; the main thread runs the LiteRT model and commits each result to the outbox; the
publisher thread (edge.mqtt_link) drains the outbox to the broker; a supervisor thread
publishes health, keeps the retained status's warnings current and pings the systemd watchdog
only while the pipeline is alive. A source that fails beyond its retries, or a capture thread
that dies, ends the process with exit code 1 so that systemd restarts it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.bundle import Bundle
from edge.config import DaemonConfig
from edge.errors import BlastscopeError
from edge.health import HealthServer, Stats, health_payload
from edge.messages import (
    encode,
    error_body,
    frame_info,
    model_info,
    result_body,
    topic,
    with_identity,
)
from edge.mqtt_link import MqttLink
from edge.outbox import Outbox
from edge.preprocessing import PreprocessError, preprocess
from edge.sd_notify import SystemdNotifier
from edge.sources import Frame, Source, SourceError

log = logging.getLogger(__name__)

_HEARTBEAT_STALE_S = 60.0  # no inference-loop iteration for this long: do not feed the watchdog


@dataclass
class _Item:
    frame: Frame
    x: np.ndarray | None
    preprocess_ms: float = 0.0
    stage: str = "read"  # where an error happened
    error: str | None = None


_END = None  # the capture thread's "source exhausted" marker


class Daemon:
    """One run of the pipeline over an opened bundle, a source, an outbox and a link."""

    def __init__(
        self,
        cfg: DaemonConfig,
        bundle: Bundle,
        source: Source,
        outbox: Outbox,
        link: MqttLink,
        *,
        once: bool,
        static_warnings: dict[str, dict[str, Any]] | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.cfg = cfg
        self.bundle = bundle
        self.source = source
        self.outbox = outbox
        self.link = link
        self.once = once
        self.notifier = notifier or SystemdNotifier()
        self.stats = Stats(cfg.health.latency_window)
        self.result_topic = topic(cfg.mqtt.topic_prefix, cfg.device, "result")
        self.model = model_info(bundle.manifest, bundle.spec.sha256())
        self.stop_requested = threading.Event()  # SIGTERM / SIGINT
        self._stop = threading.Event()  # stop capturing and classifying (signal or fatal)
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=cfg.queue_size)
        self._fatal: str | None = None
        self._static_warnings = dict(static_warnings or {})
        self._source_warning: dict[str, Any] | None = None
        self._counters_at_start = outbox.counters()
        self._heartbeat = time.monotonic()
        self._capture = threading.Thread(target=self._capture_loop, name="capture", daemon=True)
        self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self._http: HealthServer | None = None
        self._previous_handlers: dict[signal.Signals, Any] = {}

    # -- entry point ---------------------------------------------------------------------------

    def run(self) -> int:
        """Run until the source is exhausted (--once), a signal, or a fatal source failure."""
        if self.cfg.health.http_port:
            host, port = self.cfg.health.http_host, self.cfg.health.http_port
            try:
                self._http = HealthServer(host, port, self.health, self.alive)
            except OSError as exc:
                raise BlastscopeError(
                    f"health.http_port: cannot listen on {host}:{port} ({exc.strerror}); "
                    "choose another port or 0 to disable"
                ) from None
            self._http.start()
        self._install_signals()
        self.link.set_warnings(self.warnings())  # the first "online" already carries them
        self.link.start()
        self._capture.start()
        self._supervisor.start()
        self.notifier.ready(f"classifying {self.source.name}")
        try:
            self._inference_loop()
            self._capture.join(timeout=5)
            finished = self._fatal is None and not self.stop_requested.is_set()
            if finished and self.once:
                self._flush_all()
            else:
                if finished:
                    self._idle()
                if self.link.connected:
                    self.link.flush(self.cfg.mqtt.shutdown_flush_s)
        finally:
            self._stop.set()
            self.notifier.stopping()
            left = self.outbox.pending
            if left:
                log.warning(
                    "%d results stay in the outbox %s for the next start", left, self.outbox.path
                )
            self.link.set_warnings(self.warnings())  # the final status says how things ended
            if self._fatal:
                self.link.close("offline", reason=self._fatal)
            else:
                self.link.close("stopped")
            if self._http is not None:
                self._http.stop()
            self._restore_signals()
        if self._fatal:
            log.error("%s", self._fatal)
            return 1
        refused = self.outbox.counters()["refused_by_broker"]
        refused -= self._counters_at_start.get("refused_by_broker", 0)
        if self.once and refused:
            # --once promises delivery: results the broker refused (MQTT 5 reason codes, e.g. an
            # ACL that does not match mqtt.username) were not delivered.
            log.error(
                "the broker refused %d results (see the log for its reason; mqtt.username and "
                "the broker's ACL must agree); they are kept in %s, table 'rejected'",
                refused,
                self.outbox.path,
            )
            return 1
        return 0

    @property
    def fatal(self) -> str | None:
        return self._fatal

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # tests may run a daemon in a thread: they stop it with request_stop()

        def handler(signum: int, _frame: Any) -> None:
            log.info("%s: finishing the current frame, then stopping", signal.Signals(signum).name)
            self.request_stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[sig] = signal.signal(sig, handler)

    def _restore_signals(self) -> None:
        for sig, previous in self._previous_handlers.items():
            signal.signal(sig, previous)

    def request_stop(self) -> None:
        self.stop_requested.set()
        self._stop.set()

    def _idle(self) -> None:
        """A finite source is done but this is a service: keep delivering until told to stop."""
        log.info("%s is exhausted; delivering and idling until stopped", self.source.name)
        while not self.stop_requested.wait(0.5):
            self._heartbeat = time.monotonic()

    def _flush_all(self) -> None:
        """--once: wait, however long, until the broker has acknowledged every result."""
        last_note = 0.0
        while not self.link.flush(1.0 if self.link.connected else 0.0, self.stop_requested):
            if self.stop_requested.is_set() or self.outbox.pending == 0:
                return
            self._heartbeat = time.monotonic()
            if time.monotonic() - last_note > 10:
                last_note = time.monotonic()
                log.warning(
                    "waiting for the broker to take %d results (%s)",
                    self.outbox.pending,
                    self.link.last_error or ("connected" if self.link.connected else "connecting"),
                )
            self.stop_requested.wait(0.2)

    # -- capture thread ------------------------------------------------------------------------

    def _capture_loop(self) -> None:
        retry = self.cfg.source.retry
        failures, delay = 0, retry.initial_s
        try:
            while not self._stop.is_set():
                try:
                    self.source.open()
                    last = 0.0
                    for frame in self.source.frames(self._stop):
                        if failures:
                            log.info("%s recovered after %d failures", self.source.name, failures)
                            failures, delay = 0, retry.initial_s
                            self._source_warning = None
                        self.stats.add("frames")
                        self._enqueue(self._prepare(frame))
                        wait = self.cfg.source.interval_s - (time.monotonic() - last)
                        if wait > 0:
                            self._stop.wait(wait)
                        last = time.monotonic()
                    return  # exhausted
                except SourceError as exc:
                    failures += 1
                    if failures >= retry.attempts:
                        self._fail(f"source {self.source.name} failed {failures} times: {exc}")
                        return
                    log.warning(
                        "%s (attempt %d of %d); retrying in %.1fs",
                        exc,
                        failures,
                        retry.attempts,
                        delay,
                    )
                    self._source_warning = {
                        "message": f"{exc}; retry {failures} of {retry.attempts - 1}",
                        "count": failures,
                    }
                    self._stop.wait(delay)
                    delay = min(delay * 2, retry.max_s)
                finally:
                    self.source.close()
        except Exception as exc:  # a dead capture thread must not leave a live-looking service
            log.exception("capture thread crashed")
            self._fail(f"capture thread crashed: {type(exc).__name__}: {exc}")
        finally:
            self._put_end()

    def _fail(self, reason: str) -> None:
        self._fatal = reason
        self._stop.set()

    def _prepare(self, frame: Frame) -> _Item:
        if frame.image is None:
            return _Item(frame, None, error=frame.error or "no image")
        t0 = time.perf_counter()
        try:
            x = preprocess(frame.image, self.bundle.spec)
        except PreprocessError as exc:
            return _Item(frame, None, stage="preprocess", error=str(exc))
        return _Item(frame, x, preprocess_ms=(time.perf_counter() - t0) * 1e3)

    def _enqueue(self, item: _Item) -> None:
        if self.source.live:
            # A microscope operator wants the current field, not one from seconds ago.
            while True:
                try:
                    self._queue.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self.stats.add("frames_skipped")
                    except queue.Empty:
                        pass
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _put_end(self) -> None:
        while True:
            try:
                self._queue.put(_END, timeout=0.2)
                return
            except queue.Full:
                if self._stop.is_set():  # the consumer is leaving anyway: make room
                    with contextlib.suppress(queue.Empty):
                        self._queue.get_nowait()

    # -- main thread: inference ----------------------------------------------------------------

    def _inference_loop(self) -> None:
        while True:
            self._heartbeat = time.monotonic()
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():  # even if a camera read hangs in the capture thread
                    return
                continue
            if item is _END or self._stop.is_set():
                return
            self._classify(item)

    def _classify(self, item: _Item) -> None:
        frame = item.frame
        size = None if frame.image is None else (frame.image.shape[0], frame.image.shape[1])
        meta = frame_info(frame.frame_id, frame.origin, frame.captured_at, size)
        body: dict[str, Any]
        if item.x is None:
            body = self._error(meta, item.stage, item.error or "unknown")
        else:
            t0 = time.perf_counter()
            try:
                probs = self.bundle.probabilities(item.x)
            except Exception as exc:  # the interpreter's errors are RuntimeError/ValueError
                body = self._error(meta, "inference", f"{type(exc).__name__}: {exc}")
            else:
                inference_ms = (time.perf_counter() - t0) * 1e3
                timing = {
                    "read": frame.read_ms,
                    "preprocess": item.preprocess_ms,
                    "inference": inference_ms,
                    "total": (time.time() - frame.captured_at) * 1e3 + frame.read_ms,
                }
                body = result_body(
                    device=self.cfg.device,
                    frame=meta,
                    labels=self.bundle.labels,
                    probabilities=[float(p) for p in probs],
                    model=self.model,
                    camera=self.source.settings,
                    timing_ms=timing,
                )
                self.stats.timing(timing)
        stored = self.outbox.put(
            self.result_topic,
            lambda seq, mid: with_identity(body, seq, mid),
            seen_key=frame.seen_key,
            stop=self._stop,
        )
        if stored is not None:
            self.stats.add("results")
            self.link.wake()

    def _error(self, meta: dict[str, Any], stage: str, reason: str) -> dict[str, Any]:
        log.warning("frame %s: %s", meta["origin"], reason)
        self.stats.add("errors")
        return error_body(
            device=self.cfg.device, frame=meta, stage=stage, reason=reason, model=self.model
        )

    # -- supervisor thread ---------------------------------------------------------------------

    def alive(self) -> bool:
        """The pipeline is making progress (what /healthz and the watchdog report)."""
        fresh = time.monotonic() - self._heartbeat < _HEARTBEAT_STALE_S
        capturing = self._capture.is_alive() or self._fatal is None
        return fresh and capturing and self._fatal is None

    def _supervise(self) -> None:
        interval = self.cfg.health.interval_s
        next_health = time.monotonic() + min(interval, 5.0) if interval else float("inf")
        watchdog = self.notifier.watchdog_interval_s
        next_ping = time.monotonic()
        while not self._stop.wait(0.25):
            self.link.set_warnings(self.warnings())
            now = time.monotonic()
            if now >= next_health:
                self.link.publish_health(encode(self.health()))
                next_health = now + interval
            if watchdog is not None and now >= next_ping and self.alive():
                self.notifier.watchdog()
                next_ping = now + watchdog

    def warnings(self) -> dict[str, dict[str, Any]]:
        out = dict(self._static_warnings)
        if self._source_warning is not None:
            out["source_retrying"] = self._source_warning
        ob = self.outbox
        if ob.pending >= ob.max_messages:
            effect = {
                "block": "classification paused until the broker takes results",
                "drop_oldest": "the oldest results are being dropped",
                "reject_new": "new results are being discarded",
            }[ob.when_full]
            out["outbox_full"] = {
                "message": f"outbox full ({ob.pending}): {effect}",
                "count": ob.pending,
            }
        now = ob.counters()
        for counter, code in (
            ("dropped_oldest", "outbox_dropped"),
            ("rejected_new", "outbox_rejected"),
            ("refused_by_broker", "broker_refused"),
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
            "blocked_s": round(self.outbox.blocked_s, 3),
            "published": self.link.published,
        }
        mqtt = {
            "connected": self.link.connected,
            "connects": self.link.connects,
            "disconnects": self.link.disconnects,
        }
        return health_payload(self.cfg.device, self.stats, self._queue.qsize(), outbox, mqtt)


def bundle_warnings(bundle: Bundle, golden_checked: bool) -> dict[str, dict[str, Any]]:
    """Warnings a bundle carries for as long as it runs, shown in the retained status."""
    out: dict[str, dict[str, Any]] = {}
    status = bundle.manifest.verification.status
    if status != "passed":
        out["bundle_unverified"] = {
            "message": f"bundle {bundle.manifest.name!r} verification is {status!r}: its "
            "accuracy against the float model was not checked (converters verify)"
        }
    if not golden_checked:
        out["no_golden_set"] = {
            "message": "bundle has no golden images: the start-up parity self-test did not run"
        }
    return out


def software_version() -> str:
    try:
        return f"blastscope {importlib.metadata.version('blastscope')}"
    except importlib.metadata.PackageNotFoundError:
        return "blastscope (not installed)"


PrintFn = Callable[[dict[str, Any]], None]
