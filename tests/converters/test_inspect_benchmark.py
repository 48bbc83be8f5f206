"""`converters inspect` and `converters benchmark` on real exported bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from converters.cli import main

pytestmark = pytest.mark.slow  # uses the trained model and real conversions (session fixtures)


def test_inspect_shows_tensors_quantisation_ops_size_and_status(
    bundles: dict[str, Path], capsys
) -> None:  # type: ignore[no-untyped-def]
    assert main(["inspect", str(bundles["int8"])]) == 0
    out = capsys.readouterr().out
    assert "input        [1, 32, 32, 3] uint8  scale 0.98" in out
    assert "zero_point 0" in out and "output       [1, 2] uint8  scale " in out
    assert "head         logits v1: softmax over 2 logits, temperature 1, thresholds none" in out
    assert "golden       6 images, parity (raw) 0 (tolerance " in out
    assert "CONV_2D x2" in out and "DELEGATE" not in out  # the graph as written
    assert "size         model " in out and "KiB" in out
    assert "calibration  16 images {'RBC': 8, 'WBC': 8}" in out
    assert "verification unverified" in out and "run `converters verify`" in out
    assert main(["inspect", str(bundles["int8-finetunable"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["manifest"]["form"] == "backbone_head"
    assert info["tensors"]["output"]["shape"] == [1, 16]
    assert info["graph"]["ops"]["CONV_2D"] == 2 and "SOFTMAX" not in info["graph"]["ops"]
    assert info["head"].startswith("dense v1: heads/v1.npz: 16 -> 2 (sha256 ")
    assert info["size_bytes"]["model"] < info["size_bytes"]["bundle"]
    assert info["golden"]["passed"] is True


def test_benchmark_reports_latency_per_thread_count_and_keras_ratio(
    bundles: dict[str, Path], trained_run: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    args = ["benchmark", str(bundles["float32"]), str(bundles["int8"]), "--max-threads", "2"]
    args += ["--runs", "5", "--warmup", "1", "--keras", str(trained_run / "model.keras")]
    assert main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["quantization"], r["threads"]) for r in rows] == [
        ("float32", 1),
        ("float32", 2),
        ("int8", 1),
        ("int8", 2),
        ("float32", None),
    ]
    for r in rows:
        assert 0 < r["median_ms"] <= r["p90_ms"] and r["images_per_s"] > 0 and r["runs"] == 5
    assert all(r["keras_ratio"] > 0 for r in rows[:-1]) and rows[-1]["form"] == "keras"
    assert main(["benchmark", str(bundles["int8"]), "--max-threads", "2", "--runs", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["model", "quant", "form"] and len(table) == 3
    assert table[1].split()[:4] == ["tiny-int8", "int8", "classifier", "1"]
