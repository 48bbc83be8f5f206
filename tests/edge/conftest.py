"""Fixtures of the edge tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.edge.daemon_helpers import make_bundle
from tests.edge.lab_broker import lab_broker

__all__ = ["bundle", "lab_broker"]  # lab_broker: the shipped Mosquitto config, running


@pytest.fixture
def bundle(tmp_path: Path, tiny_tflite: bytes) -> Path:
    """A float32 bundle of the tiny model at tmp_path/bundle."""
    return make_bundle(tmp_path / "bundle", tiny_tflite)
