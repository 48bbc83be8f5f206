"""A real Mosquitto broker on a free 127.0.0.1 port, started and stopped by tests."""

from __future__ import annotations

from pathlib import Path

from edge.embedded_broker import EmbeddedBroker, free_port, mosquitto_binary

__all__ = ["Mosquitto", "free_port", "mosquitto_binary"]


class Mosquitto(EmbeddedBroker):
    """The embedded broker with its config and log in `workdir`, kept for a failing test's
    post-mortem; `stop()` and `start()` again on the same port simulate an outage."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(port or 0, workdir)
