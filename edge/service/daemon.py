"""The capture daemon: capture -> preprocess -> classify -> outbox -> MQTT, until told to stop.

Threads: the capture thread reads and preprocesses frames (OpenCV releases the GIL) into a
small queue; the main thread runs the LiteRT model and commits each result to the outbox; the
publisher thread (edge.service.mqtt_link) drains the outbox to the broker; a supervisor thread
publishes health, keeps the retained status's warnings current and pings the systemd watchdog
only while the pipeline is alive. A source that fails beyond its retries, a capture thread
that dies, or any other fatal error ends the process with exit code 1 and a retained ``failed``
status naming the reason (never ``stopped``, which means a clean exit), so that systemd
restarts it and the lab sees why. Waiting for room in a full outbox (policy ``block``) or for
space on a full disk is alive: it is reported as a warning and the watchdog is still fed.

A finite source (a replayed folder, a video) ends the run once every result is delivered.
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

from edge.contracts.messages import (
    encode,
    error_body,
    frame_info,
    model_info,
    result_body,
    topic,
    with_identity,
)
from edge.contracts.preprocess_spec import PreprocessError
from edge.errors import BlastscopeError
from edge.model.bundle import Bundle
from edge.service.config import DaemonConfig
from edge.service.health import HealthServer, Stats, health_payload
from edge.service.mqtt_link import MqttLink
from edge.service.outbox import Outbox
from edge.service.priority import yield_to_inference
from edge.service.sd_notify import SystemdNotifier
from edge.service.sources import Frame, Source, SourceError

log = logging.getLogger(__name__)

_PROGRESS_EVERY_S = 60.0  # a progress line while frames keep coming
_IDLE_AFTER_S = 3.0  # no new frame for this long, everything delivered: say so once


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
        self._progress = _Progress()
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
            if finished:  # the source is exhausted: deliver everything, then end
                log.info(
                    "%s: done, %d frames; delivering %d results still in the outbox",
                    self.source.name,
                    self.stats.snapshot()["frames"],
                    self.outbox.unsettled,
                )
                self._flush_all()
            elif self.link.connected:
                self.link.flush(self.cfg.mqtt.shutdown_flush_s)
        except Exception as exc:  # a bug or a broken disk: say so on status, exit for systemd
            log.critical("the daemon crashed", exc_info=not isinstance(exc, BlastscopeError))
            self._fail(
                f"crashed: {exc}"
                if isinstance(exc, BlastscopeError)
                else f"crashed: {type(exc).__name__}: {exc}"
            )
        finally:
            self._stop.set()
            self.notifier.stopping()
            self._say_how_it_ended()
            self.link.set_warnings(self.warnings())  # the final status says how things ended
            if self._fatal:
                self.link.close("failed", reason=self._fatal)
            else:
                self.link.close("stopped")
            if self._http is not None:
                self._http.stop()
            self._restore_signals()
        if self._fatal:
            log.error("%s", self._fatal)
            return 1
        if self.outbox.refused and not self.stop_requested.is_set():
            # A finished run promises delivery: refused results were not delivered.
            log.error(
                "the broker refused %d results (%s): they stay in %s and are offered again at "
                "the next start; mqtt.username and the broker's ACL must agree",
                self.outbox.refused,
                self.outbox.last_refusal,
                self.outbox.path,
            )
            return 1
        return 0

    def _say_how_it_ended(self) -> None:
        frames = self.stats.snapshot()["frames"]
        delivered = self.link.published
        left = self.outbox.pending
        if left:
            log.warning(
                "%d frames done, %d results delivered; %d stay in the outbox %s for the next start",
                frames,
                delivered,
                left,
                self.outbox.path,
            )
        else:
            log.info("%d frames done, %d results delivered; outbox empty", frames, delivered)

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

    def _flush_all(self) -> None:
        """Wait, however long, until the broker has acknowledged (or refused) every result."""
        last_note = time.monotonic()
        while not self.link.settled:
            if self.stop_requested.is_set():
                return
            self._heartbeat = time.monotonic()
            if time.monotonic() - last_note > 10:
                last_note = time.monotonic()
                log.warning(
                    "waiting for the broker to take %d results (%s)",
                    self.outbox.unsettled,
                    self.link.last_error or ("connected" if self.link.connected else "connecting"),
                )
            self.outbox.wait_changed(0.2)

    # -- capture thread ------------------------------------------------------------------------

    def _capture_loop(self) -> None:
        yield_to_inference()
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
            x = self.bundle.prepare(frame.image)
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
            body = self._error(meta, item.stage, item.error or "unknown", frame.warnings)
        else:
            t0 = time.perf_counter()
            try:
                probs = self.bundle.probabilities(item.x)
            except Exception as exc:  # the interpreter's errors are RuntimeError/ValueError
                body = self._error(
                    meta, "inference", f"{type(exc).__name__}: {exc}", frame.warnings
                )
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
                    warnings=frame.warnings,
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

    def _error(
        self,
        meta: dict[str, Any],
        stage: str,
        reason: str,
        warnings: tuple[dict[str, str], ...] = (),
    ) -> dict[str, Any]:
        log.warning("frame %s: %s", meta["origin"], reason)
        self.stats.add("errors")
        return error_body(
            device=self.cfg.device,
            frame=meta,
            stage=stage,
            reason=reason,
            model=self.model,
            warnings=warnings,
        )

    # -- supervisor thread ---------------------------------------------------------------------

    def alive(self) -> bool:
        """The pipeline is making progress (what /healthz and the watchdog report).

        Waiting for room in a full outbox, or for space on a full disk, is progress by policy:
        killing the daemon would not drain the outbox, and the restart would only block again.
        """
        fresh = time.monotonic() - self._heartbeat < self.cfg.health.stall_s
        waiting_by_policy = self.outbox.blocked
        capturing = self._capture.is_alive() or self._fatal is None
        return (fresh or waiting_by_policy) and capturing and self._fatal is None

    def _supervise(self) -> None:
        yield_to_inference()
        interval = self.cfg.health.interval_s
        next_health = time.monotonic() + min(interval, 5.0) if interval else float("inf")
        watchdog = self.notifier.watchdog_interval_s
        next_ping = time.monotonic()
        while not self._stop.wait(0.25):
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
                self.source.name,
            )

    def warnings(self) -> dict[str, dict[str, Any]]:
        out = dict(self._static_warnings)
        if self._source_warning is not None:
            out["source_retrying"] = self._source_warning
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
