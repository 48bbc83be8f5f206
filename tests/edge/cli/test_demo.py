"""The README's first command: `edge run --demo` with the embedded broker."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

import edge.service.embedded_broker as eb
from edge.demo import DEMO_BUNDLE, DEMO_FRAMES
from edge.model.bundle import load_bundle
from edge.vision.image_io import list_images
from tests.edge.daemon_helpers import ROOT, RUNNER

pytestmark = pytest.mark.mqtt


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER), "edge.cli", "run", "--demo", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_demo_frames_are_shipped() -> None:
    assert len(list_images(DEMO_FRAMES)) >= 4 and (DEMO_FRAMES / "LICENSE").is_file()


def test_demo_runs_end_to_end_through_an_embedded_broker(bundle: Path) -> None:
    proc = _demo("--bundle", str(bundle))
    assert proc.returncode == 0, proc.stderr
    n = len(list_images(DEMO_FRAMES))
    lines = proc.stdout.splitlines()
    # Printed by a real subscriber, as a lab dashboard receives them.
    assert [line.split()[2] for line in lines if " frame " in line] == [
        f"#{i}" for i in range(1, n + 1)
    ]
    assert "status: online" in proc.stdout and "-> stopped" in proc.stdout
    assert f"demo: {n} results published and acknowledged" in proc.stderr
    assert "embedded broker on mqtt://127.0.0.1:" in proc.stderr


def test_demo_with_the_bundled_model(tmp_path: Path) -> None:
    # The bundle ships with the package: its absence is a failure, not another branch.
    assert (DEMO_BUNDLE / "manifest.json").is_file(), f"the demo bundle is missing: {DEMO_BUNDLE}"
    # What the README promises: a full-int8 bundle that passed the int8-vs-float gate.
    manifest = load_bundle(DEMO_BUNDLE).manifest
    assert manifest.quantization == "int8" and manifest.verification.status == "passed"
    assert manifest.input.dtype == "uint8"
    proc = _demo()
    assert proc.returncode == 0, proc.stderr
    n = len(list_images(DEMO_FRAMES))
    labels = [line.split()[5] for line in proc.stdout.splitlines() if " frame " in line]
    assert len(labels) == n and set(labels) <= set(manifest.labels), proc.stdout
    assert f"demo: {n} results published and acknowledged" in proc.stderr


def test_demo_without_its_bundle_says_so(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import edge.demo
    from edge.cli import main

    monkeypatch.setattr(edge.demo, "DEMO_BUNDLE", tmp_path / "not-installed")
    assert main(["run", "--demo"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the demo bundle is not installed at" in err[0]


def test_embedded_broker_starts_stops_and_names_the_install(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    broker = eb.EmbeddedBroker()
    broker.start()
    with socket.create_connection((broker.host, broker.port), timeout=2):
        pass
    broker.stop()
    with pytest.raises(OSError):
        socket.create_connection((broker.host, broker.port), timeout=1).close()
    monkeypatch.setattr(eb, "mosquitto_binary", lambda: None)
    with pytest.raises(eb.EmbeddedBrokerError, match="apt-get install mosquitto"):
        eb.EmbeddedBroker()
