"""A real Mosquitto broker on a free 127.0.0.1 port, started and stopped by tests."""

from __future__ import annotations

import signal
from pathlib import Path

from edge.service.embedded_broker import EmbeddedBroker, free_port, mosquitto_binary

__all__ = ["Mosquitto", "free_port", "mosquitto_binary"]


class Mosquitto(EmbeddedBroker):
    """The embedded broker with its config and log in `workdir`, kept for a failing test's
    post-mortem; `stop()` and `start()` again on the same port simulate an outage, `kill()`
    and `start()` a crash."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(port or 0, workdir)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash or the OOM killer would: no chance to save its
        in-memory state; start() may run it again on the same port and config."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert proc.returncode == -signal.SIGKILL, proc.returncode
        self._proc = None
