"""The capture daemon: one frame at a time through the pipeline, until told to stop.

    capture (thread) -> prepare -> infer -> decide -> commit -> outbox -> MQTT (thread)
    edge.pipeline.capture / .prepare / .infer / .decide / .commit; edge.service.mqtt_link

The capture thread reads and prepares frames into a small queue; the main thread runs the
model, decides, and commits each frame's results to the outbox in one transaction; the
publisher thread drains the outbox to the broker; the supervisor (edge.service.supervisor)
keeps the status, health and watchdog current. A source that fails beyond its retries, a
capture thread that dies, or any other fatal error ends the process with exit code 1 and a
retained ``failed`` status naming the reason (never ``stopped``, which means a clean exit), so
that systemd restarts it and the lab sees why.

A finite source (a replayed folder, a video) ends the run once every result is delivered.
"""

from __future__ import annotations

import importlib.metadata
import logging
import queue
import signal
import threading
import time
from typing import Any

from edge.contracts.messages import model_info, topic
from edge.contracts.results import ErrorResult
from edge.errors import BlastscopeError
from edge.model.bundle import Bundle
from edge.pipeline.capture import END, Capture
from edge.pipeline.commit import Committer
from edge.pipeline.decide import Decider
from edge.pipeline.frames import Source
from edge.pipeline.infer import infer
from edge.pipeline.prepare import Prepared, prepare_frame
from edge.service.config import DaemonConfig
from edge.service.health import HealthServer, Stats
from edge.service.mqtt_link import MqttLink
from edge.service.outbox import Outbox
from edge.service.sd_notify import SystemdNotifier
from edge.service.supervisor import Supervisor

log = logging.getLogger(__name__)


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
        decider: Decider | None = None,
    ) -> None:
        self.cfg = cfg
        self.bundle = bundle
        self.source = source
        self.outbox = outbox
        self.link = link
        self.once = once
        self.notifier = notifier or SystemdNotifier()
        self.stats = Stats(cfg.health.latency_window)
        self.stop_requested = threading.Event()  # SIGTERM / SIGINT
        self._stop = threading.Event()  # stop capturing and classifying (signal or fatal)
        self._fatal: str | None = None
        self.decider = decider or Decider(bundle.manifest.head.thresholds.min_confidence)
        self.capture = Capture(
            source,
            lambda frame: prepare_frame(frame, bundle),
            retry=cfg.source.retry,
            interval_s=cfg.source.interval_s,
            queue_size=cfg.queue_size,
            stop=self._stop,
            on_fatal=self._fail,
            count=self.stats.add,
        )
        self.committer = Committer(
            outbox,
            topic(cfg.mqtt.topic_prefix, cfg.device, "result"),
            device=cfg.device,
            model=model_info(bundle.manifest, bundle.spec.sha256()),
            stop=self._stop,
        )
        self.supervisor = Supervisor(
            device=cfg.device,
            source_name=source.name,
            stats=self.stats,
            outbox=outbox,
            link=link,
            notifier=self.notifier,
            health_interval_s=cfg.health.interval_s,
            stall_s=cfg.health.stall_s,
            static_warnings=dict(static_warnings or {}),
            source_warning=lambda: self.capture.warning,
            capture_backlog=lambda: self.capture.backlog,
            capturing=lambda: self.capture.alive or self._fatal is None,
            fatal=lambda: self._fatal,
            stop=self._stop,
        )
        self._http: HealthServer | None = None
        self._previous_handlers: dict[signal.Signals, Any] = {}

    # -- entry point ---------------------------------------------------------------------------

    def run(self) -> int:
        """Run until the source is exhausted (--once), a signal, or a fatal source failure."""
        if self.cfg.health.http_port:
            host, port = self.cfg.health.http_host, self.cfg.health.http_port
            try:
                self._http = HealthServer(host, port, self.supervisor.health, self.alive)
            except OSError as exc:
                raise BlastscopeError(
                    f"health.http_port: cannot listen on {host}:{port} ({exc.strerror}); "
                    "choose another port or 0 to disable"
                ) from None
            self._http.start()
        self._install_signals()
        self.link.set_warnings(self.warnings())  # the first "online" already carries them
        self.link.start()
        self.capture.start()
        self.supervisor.start()
        self.notifier.ready(f"classifying {self.source.name}")
        try:
            self._inference_loop()
            self.capture.join(timeout=5)
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

    def alive(self) -> bool:
        """The pipeline is making progress (what /healthz and the watchdog report)."""
        return self.supervisor.alive()

    def warnings(self) -> dict[str, dict[str, Any]]:
        return self.supervisor.warnings()

    def health(self) -> dict[str, Any]:
        return self.supervisor.health()

    @property
    def fatal(self) -> str | None:
        return self._fatal

    def request_stop(self) -> None:
        self.stop_requested.set()
        self._stop.set()

    def _fail(self, reason: str) -> None:
        self._fatal = reason
        self._stop.set()

    # -- main thread: the frame's path after capture ---------------------------------------------

    def _inference_loop(self) -> None:
        while True:
            self.supervisor.beat()
            try:
                item = self.capture.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():  # even if a camera read hangs in the capture thread
                    return
                continue
            if item is END or self._stop.is_set():
                return
            self._process(item)

    def _process(self, prepared: Prepared) -> None:
        """infer -> decide -> commit, for one frame."""
        results = self.decider.results(infer(prepared, self.bundle))
        for r in results:
            if isinstance(r, ErrorResult):
                log.warning("frame %s: %s", r.frame.origin, r.reason)
                self.stats.add("errors")
            else:
                self.stats.timing(r.timing_ms)
        if self.committer.commit(results, prepared.frame.seen_key, self.source.settings):
            self.stats.add("results", len(results))
            self.link.wake()

    # -- endings ---------------------------------------------------------------------------------

    def _flush_all(self) -> None:
        """Wait, however long, until the broker has acknowledged (or refused) every result."""
        last_note = time.monotonic()
        while not self.link.settled:
            if self.stop_requested.is_set():
                return
            self.supervisor.beat()
            if time.monotonic() - last_note > 10:
                last_note = time.monotonic()
                log.warning(
                    "waiting for the broker to take %d results (%s)",
                    self.outbox.unsettled,
                    self.link.last_error or ("connected" if self.link.connected else "connecting"),
                )
            self.outbox.wait_changed(0.2)

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
