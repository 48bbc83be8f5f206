"""`edge watch`, the reference dashboard: de-duplication, gaps, status lines, live output,
the connection state, stale views, bounded memory, persistent sessions and exit codes."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.cli import main
from edge.contracts.messages import status_payload
from edge.service.config import MqttConfig
from edge.service.watch import (
    DEFAULT_SESSION_EXPIRY_S,
    MAX_IDS_PER_DEVICE,
    RECENT_MESSAGES,
    Session,
    Watcher,
    WatchError,
    connect_watcher,
    session_from_flags,
    watch,
)
from tests.edge.daemon_helpers import (
    ROOT,
    daemon_config,
    frame_folder,
    persistent_broker,
    write_config,
)
from tests.mosquitto import Mosquitto, free_port


def _result(seq: int, label: str = "ALL", mid: str | None = None) -> bytes:
    return json.dumps(
        {
            "message_id": mid or str(uuid.uuid4()),
            "seq": seq,
            "kind": "frame",
            "device": "scope-1",
            "frame": {"id": "f", "origin": f"folder:/d/f{seq}.jpg", "captured_at": "x"},
            "classified_at": "2025-01-01T00:00:00.000Z",
            "label": label,
            "score": 0.9,
            "probabilities": {"HEM": 0.1, "ALL": 0.9},
            "timing_ms": {"total": 3.0},
        }
    ).encode()


def _status(state: str, reason: str | None = None) -> bytes:
    return status_payload(device="scope-1", state=state, client_id="c", reason=reason)  # type: ignore[arg-type]


def _publish(
    broker: Mosquitto,
    topic: str,
    payloads: list[bytes],
    *,
    retain: bool = False,
    client_id: str = "",
) -> None:
    """Publish at QoS 1 and wait for each PUBACK: then the broker has it (and queued it)."""
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"pub-{uuid.uuid4()}")
    device.connect(broker.host, broker.port)
    device.loop_start()
    for payload in payloads:
        info = device.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)
        assert info.is_published(), f"no PUBACK for {topic}"
    device.disconnect()
    device.loop_stop()


def _retain_status(broker: Mosquitto, client_id: str, topic: str, state: str) -> None:
    """Leave a retained status on the broker, as a device that published it earlier would."""
    _publish(broker, topic, [_status(state)], retain=True, client_id=client_id)


def _fast(broker: Mosquitto) -> MqttConfig:
    """Short backoffs, so an outage test reconnects within a second of the broker's return."""
    return MqttConfig(broker=broker.url, reconnect_min_s=0.1, reconnect_max_s=0.5, keepalive_s=5)


@contextmanager
def _watching(
    cfg: MqttConfig, watcher: Watcher, session: Session | None = None
) -> Iterator[threading.Event]:
    """connect_watcher, disconnected at the end; yields the first-subscription event."""
    client, subscribed = connect_watcher(cfg, watcher, session)
    try:
        yield subscribed
    finally:
        client.disconnect()
        client.loop_stop()


def _auth_broker(workdir: Path) -> Mosquitto:
    """A mosquitto that lets in only user `lab` with password `right`."""
    tool = shutil.which("mosquitto_passwd")
    assert tool, "mosquitto_passwd is missing: apt-get install mosquitto"
    passwd = workdir / "passwd"
    subprocess.run([tool, "-c", "-b", str(passwd), "lab", "right"], check=True, capture_output=True)
    broker = Mosquitto(workdir)
    broker.conf.write_text(
        broker.conf.read_text().replace(
            "allow_anonymous true", f"allow_anonymous false\npassword_file {passwd}"
        )
    )
    return broker


def test_watcher_deduplicates_counts_gaps_and_reports_status_changes() -> None:
    out = io.StringIO()
    w = Watcher("blastscope", None, "lines", out)
    w.handle("blastscope/scope-1/status", _status("online"))
    dup = str(uuid.uuid4())
    w.handle("blastscope/scope-1/result", _result(1, mid=dup))
    w.handle("blastscope/scope-1/result", _result(1, mid=dup))  # replayed after an outage
    w.handle("blastscope/scope-1/result", _result(4, "HEM"))  # 2 and 3 were dropped
    w.handle("blastscope/scope-1/status", _status("offline", "connection lost (last will)"))
    view = w.devices["scope-1"]
    assert (view.results, view.duplicates, view.gaps) == (2, 1, 2)
    assert view.labels == {"ALL": 1, "HEM": 1}
    lines = out.getvalue().splitlines()
    assert "scope-1 status: online" in lines[0]
    assert "scope-1 #1 frame f1.jpg  ALL 0.900" in lines[1]
    assert lines[-1].endswith("status: online -> offline (connection lost (last will))")
    table = w.table()
    assert "scope-1" in table and "offline" in table and "ALL 1" in table


@pytest.mark.mqtt
def test_edge_watch_follows_a_running_daemon(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    _retain_status(mosquitto, "older-device", "blastscope/old-1/status", "stopped")
    watch = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "watch", "--broker", mosquitto.url, "--json",
         "--count", "3", "--timeout", "30"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert watch.stdout is not None
    first = json.loads(watch.stdout.readline())
    while "event" in first:  # connecting, connected
        first = json.loads(watch.stdout.readline())
    # The retained status: it is subscribed.
    assert first["topic"] == "blastscope/old-1/status" and first["payload"]["state"] == "stopped"
    frames = frame_folder(tmp_path / "frames", field_paths, 3)
    conf = write_config(tmp_path / "d.toml", daemon_config(bundle, frames, mosquitto, tmp_path))
    assert main(["run", "--config", str(conf), "--once"]) == 0
    out, err = watch.communicate(timeout=30)
    assert watch.returncode == 0, err
    messages = [m for m in map(json.loads, out.splitlines()) if "topic" in m]
    results = [m for m in messages if m["topic"] == "blastscope/scope-t/result"]
    assert [r["payload"]["seq"] for r in results] == [1, 2, 3]
    assert any(m["topic"] == "blastscope/scope-t/status" for m in messages)


@pytest.mark.mqtt
def test_table_mode_redraws_a_device_table(mosquitto: Mosquitto) -> None:
    _retain_status(mosquitto, "scope-1", "blastscope/scope-1/status", "online")
    out = io.StringIO()
    assert watch(MqttConfig(broker=mosquitto.url), None, "table", None, 1.5, out) == 0
    screen = out.getvalue().rsplit("\x1b[2J", 1)[-1]
    assert "DEVICE" in screen and "scope-1" in screen and "online" in screen
    assert screen.splitlines()[1].endswith(f"connected to {mosquitto.url}")  # the header line


def test_watcher_memory_is_bounded_and_recent_duplicates_are_still_dropped() -> None:
    w = Watcher("blastscope", None, "quiet")
    ids = [str(uuid.uuid4()) for _ in range(MAX_IDS_PER_DEVICE + 100)]
    for seq, mid in enumerate(ids, 1):
        w.handle("blastscope/scope-1/result", _result(seq, mid=mid))
    view = w.devices["scope-1"]
    assert len(w.messages) == RECENT_MESSAGES < len(ids)
    assert w.messages[-1][1]["message_id"] == ids[-1]  # the newest are the ones kept
    assert len(view.ids) == MAX_IDS_PER_DEVICE
    for seq, mid in list(enumerate(ids, 1))[-20:]:  # a replay of the last in-flight window
        w.handle("blastscope/scope-1/result", _result(seq, mid=mid))
    assert (view.duplicates, w.distinct_results, view.gaps) == (20, len(ids), 0)
    oldest_kept, next_oldest = ids[100], ids[101]
    w.handle("blastscope/scope-1/result", _result(101, mid=oldest_kept))  # seen again: kept
    w.handle("blastscope/scope-1/result", _result(len(ids) + 1))  # a new one evicts the LRU id
    assert view.duplicates == 21 and len(view.ids) == MAX_IDS_PER_DEVICE
    assert oldest_kept in view.ids and next_oldest not in view.ids


def test_session_flags_are_checked() -> None:
    assert session_from_flags(None, None) is None
    assert session_from_flags("lab-1", None) == Session("lab-1", DEFAULT_SESSION_EXPIRY_S)
    assert session_from_flags("lab-1", 60) == Session("lab-1", 60)
    assert Session("lab-1").client_id == "blastscope-watch-lab-1"
    with pytest.raises(WatchError, match="--session-expiry 60: it needs --session NAME"):
        session_from_flags(None, 60)
    with pytest.raises(WatchError, match="--session 'a b': use 1-64 letters"):
        session_from_flags("a b", None)
    with pytest.raises(WatchError, match="--session-expiry 0: give 1 to"):
        session_from_flags("lab-1", 0)


@pytest.mark.parametrize("mode", ["--lines", "--json"])
def test_never_connected_says_so_and_exits_1_at_timeout(
    mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["watch", "--broker", url, mode, "--timeout", "1.5"]) == 1
    out, err = capsys.readouterr()
    if mode == "--lines":
        lines = out.splitlines()
        assert lines[0].endswith(f"connecting to {url}")
        assert lines[1].endswith("Connection refused; retrying")
        assert f"connecting to {url} failed: " in lines[1]
    else:
        events = [json.loads(line) for line in out.splitlines()]
        assert [(e["event"], e["state"]) for e in events][:2] == [("connection", "connecting")] * 2
        assert events[0]["reason"] is None and "Connection refused" in events[1]["reason"]
        assert events[0]["broker"] == url
    assert f"edge: error: never connected to {url} in 1.5 s" in err
    assert "Connection refused" in err


def test_table_mode_shows_connecting_in_its_header() -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    out = io.StringIO()
    with pytest.raises(WatchError, match="never connected"):
        watch(MqttConfig(broker=url), None, "table", None, 1.2, out)
    screen = out.getvalue().rsplit("\x1b[2J", 1)[-1].splitlines()
    assert f"connecting to {url} failed: " in screen[1] and screen[1].endswith("; retrying")


@pytest.mark.mqtt
def test_refused_credentials_end_at_once_with_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = _auth_broker(tmp_path)
    broker.start()
    try:
        args = ["watch", "--broker", broker.url, "--username", "lab", "--password-env", "WATCH_PW"]
        monkeypatch.setenv("WATCH_PW", "wrong")
        # Retrying would run to the --timeout and end with "never connected" instead.
        assert main([*args, "--lines", "--timeout", "60"]) == 1
        out, err = capsys.readouterr()
        assert "refused: Not authorized (check --username/--password-env)" in out.splitlines()[1]
        assert (
            f"edge: error: {broker.url} refused the connection: Not authorized "
            "(check --username/--password-env)"
        ) in err.splitlines()
        assert "connected to" not in out and "never connected" not in err

        assert main([*args, "--json", "--timeout", "60"]) == 1
        refused = json.loads(capsys.readouterr().out.splitlines()[1])
        assert (refused["state"], refused["reason"], refused["final"]) == (
            "refused",
            "Not authorized",
            True,
        )

        monkeypatch.setenv("WATCH_PW", "right")
        assert main([*args, "--lines", "--timeout", "1"]) == 0  # connected, then the timeout
        assert f"connected to {broker.url}" in capsys.readouterr().out
        assert main([*args, "--lines", "--count", "1", "--timeout", "1"]) == 1
        assert "--count 1: only 0 distinct results arrived" in capsys.readouterr().err
    finally:
        broker.stop()


def _all_stale(w: Watcher) -> Callable[[], bool]:
    return lambda: bool(w.devices) and all(v.stale_since for v in w.devices.values())


def _fresh_again(w: Watcher) -> Callable[[], bool]:
    return lambda: (
        w.link.state == "connected" and not any(v.stale_since for v in w.devices.values())
    )


@pytest.mark.mqtt
def test_a_lost_connection_marks_every_view_stale_until_a_fresh_status(tmp_path: Path) -> None:
    broker = persistent_broker(tmp_path / "broker")  # keeps the retained statuses over a restart
    broker.start()
    lines, records = io.StringIO(), io.StringIO()
    shown = Watcher("blastscope", None, "lines", lines)
    script = Watcher("blastscope", None, "json", records)
    devices = ("scope-1", "scope-2")
    try:
        for device in devices:
            _retain_status(broker, device, f"blastscope/{device}/status", "online")
        with _watching(_fast(broker), shown), _watching(_fast(broker), script):
            assert shown.wait(lambda: len(shown.devices) == 2, 10), shown.events
            assert script.wait(lambda: len(script.devices) == 2, 10), script.events
            broker.stop()
            assert shown.wait(_all_stale(shown), 10) and script.wait(_all_stale(script), 10)
            assert shown.link.state in ("lost", "connecting")  # reconnecting, in vain for now
            rows = [r for r in shown.table().splitlines() if r.startswith("scope-")]
            assert len(rows) == 2 and all("online (stale since " in r for r in rows), rows
            broker.start()
            # Re-subscribing brings the retained statuses again: that clears the marks.
            assert shown.wait(_fresh_again(shown), 15), shown.events
            assert script.wait(_fresh_again(script), 15), script.events
            rows = [r for r in shown.table().splitlines() if r.startswith("scope-")]
            assert len(rows) == 2 and not any("stale" in r for r in rows), rows
    finally:
        broker.stop()
    text = lines.getvalue()
    assert "connection lost: connection closed; reconnecting" in text
    for device in devices:
        assert f"{device} status: online (stale since " in text
        assert f"{device} status: online (current again; stale since " in text
    events = [json.loads(line) for line in records.getvalue().splitlines()]
    said = [(e["event"], e.get("device") or e.get("state")) for e in events if "event" in e]
    assert said.index(("connection", "lost")) < said.index(("stale", "scope-1"))
    assert {("stale", d) for d in devices} | {("fresh", d) for d in devices} <= set(said)
    assert said.count(("connection", "connected")) == 2


@pytest.mark.mqtt
def test_a_persistent_session_gets_what_was_published_while_away(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = persistent_broker(tmp_path / "broker")
    broker.start()
    try:
        first = Watcher("blastscope", None, "quiet")
        with _watching(_fast(broker), first, Session("lab-1")) as subscribed:
            assert subscribed.wait(10)  # the broker now has the session and its subscriptions
        assert first.link.reason == "new session blastscope-watch-lab-1"
        _publish(broker, "blastscope/scope-1/result", [_result(i) for i in (1, 2, 3)])

        argv = ["watch", "--broker", broker.url, "--session", "lab-1", "--json"]
        assert main([*argv, "--count", "3", "--timeout", "20"]) == 0
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["payload"]["seq"] for r in records if "topic" in r] == [1, 2, 3]
        connected = [r for r in records if r.get("state") == "connected"]
        assert connected[0]["reason"] == "resumed session blastscope-watch-lab-1"

        # Without --session: a clean session, so nothing published before it connected.
        plain = Watcher("blastscope", None, "quiet")
        with _watching(_fast(broker), plain) as subscribed:
            assert subscribed.wait(10)
            assert plain.link.reason == ""
            _publish(broker, "blastscope/scope-1/result", [_result(4)])
            assert plain.wait(lambda: plain.distinct_results >= 1, 10)
            assert [p["seq"] for _, p in plain.messages] == [4]
    finally:
        broker.stop()
