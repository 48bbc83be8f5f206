"""Nothing lost: a broker outage mid-run, a SIGKILLed daemon, a full outbox while offline.

Each test runs `edge run` as a child process (TensorFlow blocked) against a real mosquitto
and checks delivery with a real QoS 1 subscriber: every result exactly once after
de-duplication on message_id, seq strictly increasing, and every frame accounted for.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from edge.contracts.messages import validate_payload
from tests.edge.daemon_helpers import (
    Collector,
    assert_ordered_unique,
    daemon_config,
    finish,
    frame_folder,
    persistent_broker,
    start_daemon,
    write_config,
)
from tests.mosquitto import Mosquitto

pytestmark = pytest.mark.mqtt  # about 5 s each: fast enough to run on every check


def _origins(results: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return [Path(r["frame"]["origin"]).name for r in results]


def test_broker_outage_mid_run_loses_nothing_and_keeps_order(
    tmp_path: Path, bundle: Path, field_paths: list[Path]
) -> None:
    n = 40
    broker = persistent_broker(tmp_path / "broker")
    broker.start()
    frames = frame_folder(tmp_path / "frames", field_paths, n)
    cfg = daemon_config(bundle, frames, broker, tmp_path, source={"interval_s": 0.08})
    conf = write_config(tmp_path / "d.toml", cfg)
    # A dashboard with a persistent session: the broker queues for it across its own restart.
    sub = Collector(broker, ("blastscope/scope-t/#",), persistent=True, client_id="dashboard-1")
    proc = start_daemon(conf, "--once")
    try:
        assert sub.wait_results(8, 30), "no results before the outage"
        broker.stop()
        at_stop = len(sub.distinct_results())
        time.sleep(1.5)  # the daemon keeps classifying into its outbox
        broker.start()
        code, _, err = finish(proc, 60)
        assert code == 0, err
        assert sub.wait_results(n, 20), f"only {len(sub.distinct_results())} of {n} arrived"
    finally:
        broker.stop()
    results = sub.distinct_results()
    assert len(results) == n and _origins(results) == [f"frame_{i:03d}.jpg" for i in range(n)]
    assert set(sub.qos_of("result")) == {1}
    assert_ordered_unique(results)
    for r in results:
        validate_payload("result", r)
    dupes = len(sub.of("result")) - n
    print(f"\noutage: {at_stop} delivered before the broker stopped, {n} after, {dupes} dupes")
    assert at_stop < n, "the outage did not happen mid-run"
    assert sub.states("scope-t").count("online") >= 2  # "online" again after the reconnect
    sub.close()


def test_sigkill_mid_run_then_restart_delivers_everything_once(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    n = 30
    frames = frame_folder(tmp_path / "frames", field_paths, n)
    cfg = daemon_config(
        bundle,
        frames,
        mosquitto,
        tmp_path,
        source={"watch": True, "settle_s": 0, "interval_s": 0.08},
    )
    conf = write_config(tmp_path / "d.toml", cfg)
    sub = Collector(mosquitto, ("blastscope/scope-t/#",))
    proc = start_daemon(conf, "--once")
    assert sub.wait_results(8, 30), "no results before the kill"
    proc.kill()  # SIGKILL: no flush, no "stopped"
    proc.communicate(timeout=10)
    delivered_before = {r["message_id"] for r in sub.distinct_results()}
    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    pending = {row[0] for row in db.execute("SELECT message_id FROM outbox")}
    committed_files = db.execute("SELECT COUNT(*) FROM seen").fetchone()[0]
    db.close()
    assert committed_files < n, "the kill did not happen mid-run"
    # The broker noticed the dead connection: the retained last will says offline.
    assert sub.wait(lambda: sub.states("scope-t")[-1:] == ["offline"], 15)

    code, _, err = finish(start_daemon(conf, "--once"), 60)
    assert code == 0, err
    assert sub.wait_results(n, 20), f"only {len(sub.distinct_results())} of {n} arrived"
    results = sub.distinct_results()
    ids = {r["message_id"] for r in results}
    assert pending <= ids, "a result committed before the kill was not delivered"
    assert delivered_before <= ids
    # Every frame exactly once: committed frames were not redone, the rest were done once.
    assert len(results) == n and sorted(_origins(results)) == [
        f"frame_{i:03d}.jpg" for i in range(n)
    ]
    assert_ordered_unique(results)
    print(
        f"\nsigkill: {len(delivered_before)} delivered before the kill, {len(pending)} "
        f"committed but unsent, replayed after restart; {n} of {n} frames delivered once"
    )
    assert sub.states("scope-t")[-1] == "stopped"
    sub.close()


def test_full_outbox_while_offline_drops_oldest_and_says_so(
    tmp_path: Path, bundle: Path, field_paths: list[Path]
) -> None:
    broker = persistent_broker(tmp_path / "broker")  # not started yet: the broker is down
    frames = frame_folder(tmp_path / "frames", field_paths, 25)
    cfg = daemon_config(
        bundle, frames, broker, tmp_path, outbox={"max_messages": 10, "when_full": "drop_oldest"}
    )
    conf = write_config(tmp_path / "d.toml", cfg)
    proc = start_daemon(conf, "--once")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until every frame went through the outbox
        try:
            db = sqlite3.connect(tmp_path / "outbox.sqlite3")
            row = db.execute("SELECT value FROM counters WHERE name='dropped_oldest'").fetchone()
            db.close()
        except sqlite3.Error:
            row = None
        if row and row[0] == 15:
            break
        time.sleep(0.2)
    broker.start()
    try:
        sub = Collector(broker, ("blastscope/scope-t/#",))
        code, _, err = finish(proc, 60)
        assert code == 0, err
        assert sub.wait(lambda: sub.states("scope-t")[-1:] == ["stopped"], 10)
    finally:
        broker.stop()
    # The retained status is what a dashboard connecting after the fact sees.
    status = sub.of("status", "scope-t")[-1]
    validate_payload("status", status)
    dropped = {w["code"]: w for w in status["warnings"]}["outbox_dropped"]
    assert dropped["count"] == 15 and "dropped_oldest" in dropped["message"]
    sub.close()
