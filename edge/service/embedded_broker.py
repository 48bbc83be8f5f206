"""``--broker embedded``: a child mosquitto on 127.0.0.1, for a first run and the demo.

Not for production: it listens on loopback only, allows anonymous clients and keeps nothing
on disk (the daemon's outbox is what must not lose results). It dies with the daemon (Linux
parent-death signal), so a SIGKILLed daemon leaves no orphan broker.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge.errors import BlastscopeError

log = logging.getLogger(__name__)

_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


class EmbeddedBrokerError(BlastscopeError):
    """The embedded broker cannot be started."""


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next((p for p in _CANDIDATES if Path(p).exists()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Looked up in the parent: the child, between fork and exec, must not load libraries.
_prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedBroker:
    """A mosquitto child process on a loopback port; stop() and start() again keep the port.

    Its config and log live in `workdir` (a temporary folder removed by close() if none is
    given); `conf` is written at construction, so a caller may amend it before start().
    """

    host = "127.0.0.1"

    def __init__(self, port: int = 0, workdir: Path | None = None) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise EmbeddedBrokerError(
                "--broker embedded needs the mosquitto binary: sudo apt-get install mosquitto "
                "(or brew install mosquitto), or give --broker mqtt://HOST:PORT"
            )
        self.binary = binary
        self.port = port or free_port()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="blastscope-broker-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.conf = self.workdir / "mosquitto.conf"
        self.log_file = self.workdir / "mosquitto.log"
        # Started by root, mosquitto drops to its own user, which cannot write this folder
        # (0700): its log (and a test's persistence file) would silently not be written.
        as_root = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n"
            f"log_dest file {self.log_file}\n{as_root}"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self.log_file.read_text()[-500:] if self.log_file.exists() else ""
                raise EmbeddedBrokerError(
                    f"embedded mosquitto exited with {self._proc.returncode} (port {self.port} "
                    f"in use?) {tail.strip()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    log.info("embedded broker on %s", self.url)
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EmbeddedBrokerError(f"embedded mosquitto did not listen on {self.port} in {timeout}s")

    def stop(self) -> None:
        """End the process; start() may run it again on the same port and config."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def close(self) -> None:
        """stop(), and remove the temporary folder if the broker made one."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
