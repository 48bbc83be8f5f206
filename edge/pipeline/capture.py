"""Stage 1, capture: frames from a source, prepared, into a small queue for inference.

Runs in its own thread. A source that fails is opened again with exponential backoff; after
``retry.attempts`` failures the run is fatal (systemd restarts the daemon). A live source
(a camera) keeps only the newest frames when inference lags: a microscope operator wants the
current field, not one from seconds ago; a file source waits instead, so nothing is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from edge.pipeline.frames import Frame, Source, SourceError
from edge.pipeline.prepare import Prepared
from edge.pipeline.priority import yield_to_inference

log = logging.getLogger(__name__)

END = None  # "the source is exhausted": the last item of the queue


class Backoff(Protocol):
    """How a failing source is retried (the config's ``source.retry`` table)."""

    attempts: int
    initial_s: float
    max_s: float


class Capture:
    """The capture thread: source -> prepare -> queue; `get` is the other end."""

    def __init__(
        self,
        source: Source,
        prepare: Callable[[Frame], Prepared],
        *,
        retry: Backoff,
        interval_s: float,
        queue_size: int,
        stop: threading.Event,
        on_fatal: Callable[[str], None],
        count: Callable[[str], None],
    ) -> None:
        self.source = source
        self.prepare = prepare
        self.retry = retry
        self.interval_s = interval_s
        self.stop = stop
        self.on_fatal = on_fatal
        self.count = count  # a counter to bump: "frames", "frames_skipped"
        self.warning: dict[str, Any] | None = None  # the source's retry state, for the status
        self._queue: queue.Queue[Prepared | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def get(self, timeout: float) -> Prepared | None:
        """The next prepared frame, END when the source is exhausted; queue.Empty on timeout."""
        return self._queue.get(timeout=timeout)

    def _run(self) -> None:
        yield_to_inference()
        failures, delay = 0, self.retry.initial_s
        try:
            while not self.stop.is_set():
                try:
                    self.source.open()
                    last = 0.0
                    for frame in self.source.frames(self.stop):
                        if failures:
                            log.info("%s recovered after %d failures", self.source.name, failures)
                            failures, delay = 0, self.retry.initial_s
                            self.warning = None
                        self.count("frames")
                        self._put(self.prepare(frame))
                        wait = self.interval_s - (time.monotonic() - last)
                        if wait > 0:
                            self.stop.wait(wait)
                        last = time.monotonic()
                    return  # exhausted
                except SourceError as exc:
                    failures += 1
                    if failures >= self.retry.attempts:
                        self.on_fatal(f"source {self.source.name} failed {failures} times: {exc}")
                        return
                    log.warning(
                        "%s (attempt %d of %d); retrying in %.1fs",
                        exc,
                        failures,
                        self.retry.attempts,
                        delay,
                    )
                    self.warning = {
                        "message": f"{exc}; retry {failures} of {self.retry.attempts - 1}",
                        "count": failures,
                    }
                    self.stop.wait(delay)
                    delay = min(delay * 2, self.retry.max_s)
                finally:
                    self.source.close()
        except Exception as exc:  # a dead capture thread must not leave a live-looking service
            log.exception("capture thread crashed")
            self.on_fatal(f"capture thread crashed: {type(exc).__name__}: {exc}")
        finally:
            self._put_end()

    def _put(self, item: Prepared) -> None:
        if self.source.live:
            while True:
                try:
                    self._queue.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self.count("frames_skipped")
                    except queue.Empty:
                        pass
        while not self.stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _put_end(self) -> None:
        while True:
            try:
                self._queue.put(END, timeout=0.2)
                return
            except queue.Full:
                if self.stop.is_set():  # the consumer is leaving anyway: make room
                    with contextlib.suppress(queue.Empty):
                        self._queue.get_nowait()
