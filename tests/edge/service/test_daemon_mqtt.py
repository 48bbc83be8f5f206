"""`edge run` against a real mosquitto: results, status, health, errors, exit codes."""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main
from edge.contracts.messages import validate_payload
from edge.model.bundle import load_bundle
from edge.vision.image_io import read_image
from edge.vision.preprocessing import preprocess
from tests.edge.daemon_helpers import (
    SPEC,
    Collector,
    assert_ordered_unique,
    daemon_config,
    finish,
    frame_folder,
    make_bundle,
    start_daemon,
    write_config,
)
from tests.mosquitto import Mosquitto, free_port

pytestmark = pytest.mark.mqtt


def test_results_arrive_validate_and_carry_provenance(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    frames = frame_folder(tmp_path / "frames", field_paths, 6)
    conf = write_config(
        tmp_path / "device.toml",
        daemon_config(bundle, frames, mosquitto, tmp_path, source={"interval_s": 0.25}),
    )
    sub = Collector(mosquitto)
    assert main(["run", "--config", str(conf), "--once"]) == 0
    assert sub.wait(lambda: "stopped" in sub.states("scope-t"), 10)
    results = sub.distinct_results("scope-t")
    assert len(results) == 6
    # Without an outage nothing is sent twice, and the broker delivers results at QoS 1.
    assert len(sub.of("result", "scope-t")) == 6
    assert sub.qos_of("result") == [1] * 6 and set(sub.qos_of("status")) == {1}
    for r in results:
        validate_payload("result", r)
    assert_ordered_unique(results)
    assert [Path(r["frame"]["origin"]).name for r in results] == [
        f"frame_{i:03d}.jpg" for i in range(6)
    ]
    # Provenance: the exact model and preprocessing, and what the model itself says.
    b = load_bundle(bundle)
    first = results[0]
    assert first["model"]["sha256"] == b.manifest.model_sha256
    assert first["model"]["preprocessing_sha256"] == SPEC.sha256()
    assert first["model"]["verification"] == "unverified"
    expected = b.probabilities(preprocess(read_image(field_paths[0]), b.spec))
    got = [first["probabilities"][k] for k in b.labels]
    assert np.allclose(got, expected, atol=1e-5)
    assert first["label"] == b.labels[int(np.argmax(expected))]
    assert set(first["timing_ms"]) >= {"preprocess", "inference", "total"}
    # Status: online (with the unverified-bundle warning), then a retained "stopped".
    statuses = sub.of("status", "scope-t")
    for s in statuses:
        validate_payload("status", s)
    assert sub.states("scope-t")[0] == "online" and sub.states("scope-t")[-1] == "stopped"
    codes = {w["code"] for w in statuses[0]["warnings"]}
    assert codes == {"bundle_unverified", "no_golden_set"}
    health = sub.of("health", "scope-t")
    assert health, "no health message within the run"
    for h in health:
        validate_payload("health", h)
    sub.close()
    late = Collector(mosquitto, ("blastscope/+/status",))  # a dashboard starting later
    assert late.wait(lambda: late.states("scope-t") == ["stopped"], 5)
    late.close()


def test_bad_images_each_give_an_error_event_and_the_daemon_goes_on(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    frames = frame_folder(tmp_path / "frames", field_paths, 2)
    good = field_paths[0].read_bytes()
    (frames / "frame_000a_empty.jpg").write_bytes(b"")
    (frames / "frame_000b_truncated.jpg").write_bytes(good[: len(good) // 3])
    (frames / "frame_000c_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x13" * 500)
    (frames / "frame_000d_oversized.jpg").write_bytes(good + b"\0" * 200_000)
    cfg = daemon_config(
        bundle, frames, mosquitto, tmp_path, source={"max_image_bytes": len(good) + 1000}
    )
    conf = write_config(tmp_path / "device.toml", cfg)
    sub = Collector(mosquitto)
    assert main(["run", "--config", str(conf), "--once"]) == 0
    assert sub.wait_results(6, 10)
    results = sub.distinct_results()
    for r in results:
        validate_payload("result", r)
    errors = {Path(r["frame"]["origin"]).name: r["error"] for r in results if r["kind"] == "error"}
    assert set(errors) == {
        "frame_000a_empty.jpg",
        "frame_000b_truncated.jpg",
        "frame_000c_corrupt.png",
        "frame_000d_oversized.jpg",
    }
    assert all(e["stage"] == "read" for e in errors.values())
    assert "empty" in errors["frame_000a_empty.jpg"]["reason"]
    assert "truncated" in errors["frame_000b_truncated.jpg"]["reason"]
    assert "over the" in errors["frame_000d_oversized.jpg"]["reason"]
    frames_ok = [r for r in results if r["kind"] == "frame"]
    assert [Path(r["frame"]["origin"]).name for r in frames_ok] == [
        "frame_000.jpg",
        "frame_001.jpg",
    ]
    assert_ordered_unique(results)
    sub.close()


def test_daemon_runs_without_tensorflow_and_prints_results(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    frames = frame_folder(tmp_path / "frames", field_paths, 3)
    conf = write_config(tmp_path / "d.toml", daemon_config(bundle, frames, mosquitto, tmp_path))
    sub = Collector(mosquitto)
    code, out, err = finish(start_daemon(conf, "--once", "--print"))
    assert code == 0, err
    assert "edge must run without TensorFlow" not in err  # the blocker never fired
    assert out.count("scope-t #") == 3 and "frame_002.jpg" in out
    assert sub.wait_results(3, 10)
    sub.close()


def test_golden_mismatch_refuses_to_start_and_says_why_on_status(
    tmp_path: Path, tiny_tflite: bytes, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    images = np.stack([read_image(p) for p in field_paths])
    pre = np.stack([preprocess(i, SPEC) for i in images])
    probe = load_bundle(make_bundle(tmp_path / "probe", tiny_tflite))
    expected = np.stack([probe.probabilities(x) for x in pre])
    good = make_bundle(
        tmp_path / "good",
        tiny_tflite,
        golden={"images": images, "preprocessed": pre, "expected": expected},
    )
    bad = make_bundle(
        tmp_path / "bad",
        tiny_tflite,
        golden={"images": images, "preprocessed": pre, "expected": expected[:, ::-1].copy()},
    )
    frames = frame_folder(tmp_path / "frames", field_paths, 1)
    sub = Collector(mosquitto)
    conf = write_config(tmp_path / "bad.toml", daemon_config(bad, frames, mosquitto, tmp_path))
    code, _, err = finish(start_daemon(conf, "--once"))
    assert code == 1 and "start-up parity check failed" in err
    # "failed" with the reason: not "stopped" (a clean exit), not a bare last will.
    assert sub.wait(lambda: "failed" in sub.states("scope-t"), 5)
    failed = sub.of("status", "scope-t")[-1]
    assert failed["reason"].startswith("refused to start:") and "parity" in failed["reason"]
    assert not sub.of("result")
    conf = write_config(tmp_path / "good.toml", daemon_config(good, frames, mosquitto, tmp_path))
    code, _, err = finish(start_daemon(conf, "--once"))
    assert code == 0, err
    assert sub.wait(lambda: sub.states("scope-t")[-1] == "stopped", 5)
    online = [s for s in sub.of("status", "scope-t") if s["state"] == "online"][-1]
    assert {w["code"] for w in online["warnings"]} == {"bundle_unverified"}  # golden ran
    sub.close()


def test_source_that_does_not_recover_exits_nonzero_for_systemd(
    tmp_path: Path, bundle: Path, mosquitto: Mosquitto
) -> None:
    cfg = daemon_config(bundle, tmp_path, mosquitto, tmp_path)
    cfg["source"] = {
        "kind": "video",
        "path": str(tmp_path / "unplugged.avi"),
        # Waits of 0.6 and 1.2 s: long enough for the rate-limited status to show the retries.
        "retry": {"attempts": 3, "initial_s": 0.6, "max_s": 1.2},
    }
    conf = write_config(tmp_path / "d.toml", cfg)
    sub = Collector(mosquitto)
    code, _, err = finish(start_daemon(conf))  # not --once: it would otherwise run forever
    assert code == 1
    assert "failed 3 times" in err and "unplugged.avi: no such video file" in err
    assert re.findall(r"retrying in ([\d.]+)s", err) == ["0.6", "1.2"]  # backoff
    assert sub.wait(lambda: "failed" in sub.states("scope-t"), 5)
    retrying = [
        w["message"]
        for s in sub.of("status", "scope-t")
        if s["state"] == "online"
        for w in s["warnings"]
        if w["code"] == "source_retrying"
    ]
    assert retrying and "no such video file" in retrying[0], "retries not shown on status"
    last = sub.of("status", "scope-t")[-1]
    validate_payload("status", last)
    assert last["state"] == "failed" and "failed 3 times" in last["reason"]
    assert "stopped" not in sub.states("scope-t")
    sub.close()


def test_sigterm_finishes_flushes_publishes_stopped_and_serves_metrics(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    frames = frame_folder(tmp_path / "frames", field_paths, 40)
    port = free_port()
    cfg = daemon_config(
        bundle,
        frames,
        mosquitto,
        tmp_path,
        source={"watch": True, "settle_s": 0, "interval_s": 0.05},
        health={"interval_s": 1.0, "http_port": port},
    )
    conf = write_config(tmp_path / "d.toml", cfg)
    sub = Collector(mosquitto)
    proc = start_daemon(conf)
    assert sub.wait_results(5, 20), "no results before SIGTERM"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        assert r.status == 200 and json.loads(r.read()) == {"ok": True}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'blastscope_results_total{device="scope-t"}' in metrics
    assert "blastscope_outbox_pending" in metrics
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc, 30)
    assert code == 0, err
    assert sub.wait(lambda: sub.states("scope-t")[-1:] == ["stopped"], 5)
    import sqlite3

    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    pending = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    done = db.execute("SELECT COUNT(*) FROM seen").fetchone()[0]
    db.close()
    assert pending == 0, "SIGTERM must flush the outbox while the broker is there"
    results = sub.distinct_results("scope-t")
    assert len(results) == done < 40  # stopped part-way; every committed result delivered
    assert_ordered_unique(results)
    sub.close()


def test_check_says_what_is_wrong(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto, capsys
) -> None:  # type: ignore[no-untyped-def]
    frames = frame_folder(tmp_path / "frames", field_paths, 1)
    conf = write_config(tmp_path / "d.toml", daemon_config(bundle, frames, mosquitto, tmp_path))
    assert main(["check", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert out.count("ok   ") == 5 and "first frame 640x480" in out
    closed = f"mqtt://127.0.0.1:{free_port()}"
    code = main(
        ["check", "--config", str(conf), "--broker", closed, "--bundle", str(tmp_path / "x")]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL bundle " in out and "not a bundle directory" in out
    assert "FAIL broker " in out and "cannot connect" in out
    assert "ok   source " in out


def test_source_failure_is_reported_on_status_and_recovers(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    frames = tmp_path / "scanner-out"  # not there yet: the share is not mounted
    cfg = daemon_config(bundle, frames, mosquitto, tmp_path)
    cfg["source"]["retry"] = {"attempts": 50, "initial_s": 0.2, "max_s": 0.4}
    conf = write_config(tmp_path / "d.toml", cfg)
    sub = Collector(mosquitto)
    proc = start_daemon(conf, "--once")

    def retrying() -> list[dict]:  # type: ignore[type-arg]
        return [
            w
            for s in sub.of("status", "scope-t")
            for w in s["warnings"]
            if w["code"] == "source_retrying"
        ]

    assert sub.wait(lambda: bool(retrying()), 15), "source failure not reported on status"
    assert "no such folder" in retrying()[0]["message"]
    frame_folder(frames, field_paths, 2)  # the share comes back
    code, _, err = finish(proc, 30)
    assert code == 0, err
    assert sub.wait_results(2, 10)
    assert sub.wait(lambda: sub.states("scope-t")[-1:] == ["stopped"], 5)
    final = sub.of("status", "scope-t")[-1]
    assert "source_retrying" not in {w["code"] for w in final["warnings"]}
    sub.close()


def test_a_new_head_version_is_used_without_a_re_export_and_named_in_every_result(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    """Temperature and thresholds are float post-processing: a new head version starts, is
    named in each result (model.head_version) and drives the decision step."""
    from edge.model.heads import write_head_version

    write_head_version(bundle, temperature=2.0, thresholds={"min_confidence": 0.999})
    b = load_bundle(bundle)
    assert b.manifest.head.version == 2
    frames = frame_folder(tmp_path / "frames", field_paths, 3)
    conf = write_config(tmp_path / "d.toml", daemon_config(bundle, frames, mosquitto, tmp_path))
    sub = Collector(mosquitto)
    assert main(["run", "--config", str(conf), "--once"]) == 0
    assert sub.wait_results(3, 10)
    for r in sub.distinct_results("scope-t"):
        validate_payload("result", r)
        assert r["model"]["head_version"] == 2
        # Temperature 2 on the tiny model's logits keeps every answer below 0.999.
        assert r["score"] < 0.999 and r["decision"]["outcome"] == "needs_review"
        assert r["decision"]["reasons"][0].startswith("low confidence:")
        expected = b.probabilities(b.prepare(read_image(Path(r["frame"]["origin"][7:]))))
        got = [r["probabilities"][k] for k in b.labels]
        assert np.allclose(got, expected, atol=1e-5)
    sub.close()
