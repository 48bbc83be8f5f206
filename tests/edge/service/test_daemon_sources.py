"""`edge run` over real sources: a video file written with OpenCV, a folder that goes away."""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli import main
from edge.contracts.messages import validate_payload
from edge.model.bundle import load_bundle
from edge.vision.preprocessing import preprocess
from tests.edge.daemon_helpers import (
    Collector,
    assert_ordered_unique,
    daemon_config,
    finish,
    frame_folder,
    start_daemon,
    write_config,
)
from tests.mosquitto import Mosquitto

pytestmark = pytest.mark.mqtt


def _write_video(path: Path, sources: list[Path], n: int) -> Path:
    """n real smear frames (the fixtures, repeated) as an MJPG .avi at 5 fps."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (640, 480))
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for i in range(n):
        writer.write(cv2.imread(str(sources[i % len(sources)])))
    writer.release()
    return path


def test_video_file_every_frame_classified_and_delivered(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    n = 9
    video = _write_video(tmp_path / "slide.avi", field_paths, n)
    cfg = daemon_config(bundle, tmp_path, mosquitto, tmp_path)
    cfg["source"] = {"kind": "video", "path": str(video)}
    conf = write_config(tmp_path / "d.toml", cfg)
    sub = Collector(mosquitto)
    assert main(["run", "--config", str(conf), "--once"]) == 0
    assert sub.wait(lambda: "stopped" in sub.states("scope-t"), 10)
    results = sub.distinct_results("scope-t")
    assert len(results) == n
    for r in results:
        validate_payload("result", r)
    assert_ordered_unique(results)
    assert [r["kind"] for r in results] == ["frame"] * n
    assert [r["frame"]["origin"] for r in results] == [f"video:{video}#{i}" for i in range(n)]
    assert {(r["frame"]["width"], r["frame"]["height"]) for r in results} == {(640, 480)}
    # What the daemon classified is the decoded video frame in RGB (not BGR, not re-encoded).
    cap = cv2.VideoCapture(str(video))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    b = load_bundle(bundle)
    expected = b.probabilities(preprocess(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), b.spec))
    got = [results[0]["probabilities"][k] for k in b.labels]
    assert np.allclose(got, expected, atol=1e-5)
    sub.close()


@pytest.mark.parametrize("once", [True, False], ids=["replay", "watch"])
def test_folder_deleted_mid_run_retries_says_so_and_exits_nonzero(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto, once: bool
) -> None:
    frames = frame_folder(tmp_path / "frames", field_paths, 40)
    cfg = daemon_config(
        bundle,
        frames,
        mosquitto,
        tmp_path,
        source={
            "interval_s": 0.1,
            "watch": not once,
            "settle_s": 0,
            # 0.6 + 1.2 + 1.2 s of retries: long enough for the status to show them.
            "retry": {"attempts": 4, "initial_s": 0.6, "max_s": 1.2},
        },
    )
    conf = write_config(tmp_path / "d.toml", cfg)
    sub = Collector(mosquitto)
    proc = start_daemon(conf, *(["--once"] if once else []))
    assert sub.wait_results(3, 20), "no results before the folder went away"
    shutil.rmtree(frames)  # the scanner's share is unmounted
    code, _, err = finish(proc, 30)
    # A replay that lost its folder is not a finished replay: exit 1 for systemd to restart.
    assert code == 1, err
    assert "failed 4 times" in err and "no such folder" in err
    # Exponential backoff, capped at max_s.
    assert re.findall(r"retrying in ([\d.]+)s", err) == ["0.6", "1.2", "1.2"]
    warnings = [
        w
        for s in sub.of("status", "scope-t")
        for w in s["warnings"]
        if w["code"] == "source_retrying"
    ]
    assert warnings, "the retries were not reported on the status topic"
    assert "no such folder" in warnings[0]["message"]
    assert sub.wait(lambda: sub.states("scope-t")[-1:] == ["failed"], 5)
    last = sub.of("status", "scope-t")[-1]
    validate_payload("status", last)
    assert "failed 4 times" in last["reason"]
    # Everything classified before the folder went away was delivered before the exit.
    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    pending = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    db.close()
    assert pending == 0
    results = sub.distinct_results("scope-t")
    assert 3 <= len(results) < 40
    assert_ordered_unique(results)
    sub.close()
