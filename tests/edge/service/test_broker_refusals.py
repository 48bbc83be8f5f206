"""Refusals and connection failures are named, never silent (issue 10, items 1, 15, 17).

Against the lab broker (firmware_config's mosquitto config, TLS, passwords, ACL): MQTT 5 by
default, so an ACL refusal comes back in the PUBACK; refused results stay in the outbox and
arrive once the ACL allows them; `edge check` finds a refusing ACL with one test publish and
writes nothing; TLS failures and credentials in URLs are reported without echoing secrets.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from edge.cli import main
from edge.contracts.messages import validate_payload
from edge.service.config import load_config
from edge.service.startup import run
from tests.edge.daemon_helpers import (
    ROOT,
    daemon_config,
    finish,
    frame_folder,
    make_bundle,
    start_daemon,
    write_config,
)
from tests.edge.lab_broker import (
    ACL,
    PASSWORDS,
    LabBroker,
    _client,
    close,
    publish_acked,
    start_lab_broker,
    subscribe,
)
from tests.mosquitto import Mosquitto

pytestmark = pytest.mark.mqtt

# A lab's own ACL with a mistake: the devices may write status and health, but not results.
ACL_WITHOUT_RESULTS = """\
pattern write blastscope/%u/status
pattern write blastscope/%u/health
user dashboard
topic read blastscope/#
"""


def _device_config(
    lab: LabBroker, tmp_path: Path, tiny_tflite: bytes, frames: Path, **mqtt: Any
) -> dict[str, Any]:
    """scanner-01 on the lab broker, as an operator writes it: no `protocol` key."""
    return {
        "device": "scanner-01",
        "bundle": str(make_bundle(tmp_path / "bundle", tiny_tflite)),
        "source": {"kind": "folder", "path": str(frames)},
        "mqtt": {
            "broker": f"mqtts://127.0.0.1:{lab.port}",
            "username": "scanner-01",
            "password_env": "BLASTSCOPE_MQTT_PASSWORD",
            "tls": {"ca_file": str(lab.ca)},
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
            **mqtt,
        },
        "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
        "health": {"interval_s": 0},
    }


def _dashboard(lab: LabBroker) -> tuple[Any, Any]:
    c, state = _client(lab.port, lab.ca, "dashboard", PASSWORDS["dashboard"])
    subscribe(c, state, "blastscope/#")
    return c, state


def _eventually(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    """Retry a real round trip until it succeeds (the broker re-reads its ACL on its own)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _payloads(state: Any, topic: str) -> list[dict[str, Any]]:
    with state.cond:
        return [json.loads(m.payload) for m in state["received"] if m.topic == topic]


def test_refused_results_stay_in_the_outbox_say_why_and_arrive_once_the_acl_allows(
    tmp_path: Path, tiny_tflite: bytes, field_paths: list[Path], monkeypatch, caplog
) -> None:  # type: ignore[no-untyped-def]
    acl = tmp_path / "lab.acl"
    acl.write_text(ACL_WITHOUT_RESULTS)
    lab = start_lab_broker(
        tmp_path / "broker", lambda text: text.replace(f"acl_file {ACL}", f"acl_file {acl}")
    )
    try:
        monkeypatch.setenv("BLASTSCOPE_MQTT_PASSWORD", PASSWORDS["scanner-01"])
        frames = frame_folder(tmp_path / "frames", field_paths, 3)
        cfg = load_config(None, _device_config(lab, tmp_path, tiny_tflite, frames))
        assert cfg.mqtt.protocol == "5"  # the default
        dash, seen = _dashboard(lab)
        assert run(cfg, once=True) == 1  # a finished run that delivered nothing is a failure
        assert "the broker refused 3 results (Not authorized)" in caplog.text
        # The device may still write its status: it says why, in words.
        status = _payloads(seen, "blastscope/scanner-01/status")
        refused = [w for s in status for w in s["warnings"] if w["code"] == "broker_refused"]
        assert refused and "Not authorized" in refused[-1]["message"], status
        for s in status:
            validate_payload("status", s)
        assert not _payloads(seen, "blastscope/scanner-01/result")
        db = sqlite3.connect(tmp_path / "outbox.sqlite3")
        kept = db.execute("SELECT message_id, refused FROM outbox ORDER BY seq").fetchall()
        db.close()
        assert [r[1] for r in kept] == ["Not authorized"] * 3
        # The lab fixes its ACL (mosquitto re-reads it on SIGHUP); the next start delivers the
        # very same results, under the same message ids.
        acl.write_text(ACL.read_text())
        assert lab.broker._proc is not None
        lab.broker._proc.send_signal(signal.SIGHUP)
        probe, state = _client(lab.port, lab.ca, "scanner-01", PASSWORDS["scanner-01"])
        topic = "blastscope/scanner-01/health"  # not a result: the dashboard counts those
        assert _eventually(lambda: not publish_acked(probe, state, topic, b"{}").is_failure)
        close(probe, state)
        assert run(cfg, once=True) == 0
        assert seen.wait(lambda: len(_payloads(seen, "blastscope/scanner-01/result")) >= 3, 10), (
            lab.log()[-2000:]
        )
        got = [r["message_id"] for r in _payloads(seen, "blastscope/scanner-01/result")]
        assert got == [r[0] for r in kept]
        close(dash, seen)
    finally:
        lab.broker.stop()


def test_mqtt_311_chosen_explicitly_is_warned_about(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    frames = frame_folder(tmp_path / "frames", field_paths, 1)
    cfg = daemon_config(bundle, frames, mosquitto, tmp_path)
    cfg["mqtt"]["protocol"] = "3.1.1"
    conf = write_config(tmp_path / "d.toml", cfg)
    code, _, err = finish(start_daemon(conf, "--once"))
    assert code == 0, err
    assert 'mqtt.protocol = "3.1.1": a broker acknowledges a publish its ACL refused' in err


def test_check_finds_an_acl_that_refuses_the_devices_topics(
    lab_broker: LabBroker,
    tmp_path: Path,
    tiny_tflite: bytes,
    field_paths: list[Path],
    monkeypatch,
    capsys,
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BLASTSCOPE_MQTT_PASSWORD", PASSWORDS["scanner-01"])
    frames = frame_folder(tmp_path / "frames", field_paths, 1)
    good = _device_config(lab_broker, tmp_path, tiny_tflite, frames)
    conf = write_config(tmp_path / "good.toml", good)
    dash, seen = _dashboard(lab_broker)
    assert main(["check", "--config", str(conf), "--skip-source"]) == 0
    out = capsys.readouterr().out
    assert "test publish to blastscope/scanner-01/health accepted" in out
    assert seen.wait(lambda: bool(_payloads(seen, "blastscope/scanner-01/health")), 10)
    probe = _payloads(seen, "blastscope/scanner-01/health")[-1]
    assert probe["check"] is True
    validate_payload("health", probe)
    # The device id does not match the user name the ACL's %u pattern expects.
    bad = {**good, "device": "scanner-02"}
    conf = write_config(tmp_path / "bad.toml", bad)
    assert main(["check", "--config", str(conf), "--skip-source"]) == 1
    out = capsys.readouterr().out
    assert "FAIL broker " in out and "the broker refuses this device's topics" in out
    assert "Not authorized" in out and "user scanner-01" in out
    close(dash, seen)


def test_check_writes_nothing(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto, capsys
) -> None:  # type: ignore[no-untyped-def]
    frames = frame_folder(tmp_path / "frames", field_paths, 1)
    cfg = daemon_config(bundle, frames, mosquitto, tmp_path)
    cfg["outbox"]["path"] = str(tmp_path / "state" / "deep" / "outbox.sqlite3")
    conf = write_config(tmp_path / "d.toml", cfg)
    assert main(["check", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "not created yet (the daemon creates it)" in out
    assert not (tmp_path / "state").exists()
    # An outbox left by a daemon: read, not touched (no -wal/-shm, same bytes).
    assert main(["run", "--config", str(conf), "--once"]) == 0
    folder = tmp_path / "state" / "deep"
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    assert main(["check", "--config", str(conf)]) == 0
    assert "0 results pending" in capsys.readouterr().out
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    assert after == before


def test_check_does_not_take_a_running_daemons_session(
    tmp_path: Path, bundle: Path, field_paths: list[Path], mosquitto: Mosquitto
) -> None:
    """With the client id bound to the user name, a second login would displace the daemon."""
    from tests.edge.daemon_helpers import Collector

    frames = frame_folder(tmp_path / "frames", field_paths, 2)
    cfg = daemon_config(bundle, frames, mosquitto, tmp_path, source={"watch": True})
    conf = write_config(tmp_path / "d.toml", cfg)
    sub = Collector(mosquitto)
    proc = start_daemon(conf)
    try:
        assert sub.wait_results(2, 20)
        check = subprocess.run(
            ["edge", "check", "--config", str(conf), "--skip-source"],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        assert f"the daemon using this outbox (pid {proc.pid}) is running" in check.stdout
        assert "warn broker" in check.stdout
        # A second daemon on the same outbox is refused rather than publishing twice.
        second = start_daemon(conf)
        code, _, err = finish(second, 30)
        assert code == 1 and f"in use by another edge daemon (pid {proc.pid})" in err
    finally:
        proc.terminate()
        finish(proc, 30)
    assert sub.states("scope-t").count("online") == 1 and sub.states("scope-t")[-1] == "stopped"
    sub.close()


def _other_ca(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem",
         "-out", "ca.crt", "-subj", "/CN=not-the-lab-ca", "-days", "2"],
        cwd=d, check=True, capture_output=True,
    )  # fmt: skip
    return d / "ca.crt"


@pytest.mark.parametrize("fault", ["unknown CA", "hostname mismatch"])
def test_tls_failures_name_their_cause(
    tmp_path: Path, tiny_tflite: bytes, field_paths: list[Path], fault: str
) -> None:
    host = "127.0.0.2" if fault == "hostname mismatch" else "127.0.0.1"
    # Listening on `host`; its certificate names 127.0.0.1 and localhost only.
    lab = start_lab_broker(tmp_path / "broker", host=host)
    try:
        frames = frame_folder(tmp_path / "frames", field_paths, 1)
        cfg = _device_config(
            lab, tmp_path, tiny_tflite, frames, broker=f"mqtts://{host}:{lab.port}"
        )
        if fault == "unknown CA":
            cfg["mqtt"]["tls"] = {"ca_file": str(_other_ca(tmp_path / "other"))}
        conf = write_config(tmp_path / "d.toml", cfg)
        env = {"BLASTSCOPE_MQTT_PASSWORD": PASSWORDS["scanner-01"]}
        proc = start_daemon(conf, env=env)
        assert proc.stderr is not None
        lines: list[str] = []
        for line in proc.stderr:
            lines.append(line)
            if "connection failed:" in line:
                break
        proc.terminate()
        finish(proc, 30)
        said = "".join(lines)
        expected = {
            "unknown CA": "TLS: the broker's certificate is not trusted",
            "hostname mismatch": f"TLS: the broker's certificate does not name '{host}'",
        }[fault]
        assert expected in said, said[-2000:]
    finally:
        lab.broker.stop()


@pytest.mark.parametrize("command", ["run", "check", "watch"])
def test_a_password_in_a_broker_url_is_refused_and_never_echoed(
    tmp_path: Path, bundle: Path, command: str, capsys
) -> None:  # type: ignore[no-untyped-def]
    url = "mqtt://scope-01:hunter2-secret@127.0.0.1:1883"
    args = {
        "run": ["run", "--bundle", str(bundle), "--source", f"folder:{tmp_path}", "--broker", url],
        "check": ["check", "--bundle", str(bundle), "--source", f"folder:{tmp_path}",
                  "--broker", url],
        "watch": ["watch", "--broker", url, "--timeout", "1"],
    }[command]  # fmt: skip
    assert main(args) == 1
    captured = capsys.readouterr()
    both = captured.out + captured.err
    assert "credentials do not belong in the URL" in both
    assert "hunter2" not in both
