"""CI validation of every file in firmware_config/, each by what actually consumes it.

- the device TOMLs: the edge's own config loader (and what the broker's ACL expects of them);
- the systemd unit: its hardening, `systemd-analyze verify` and `security --offline`;
- the Mosquitto config and ACL: a real mosquitto started with them (TLS, passwords, ACL),
  a real daemon publishing through it, and a device refused another device's topics.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge.config import DaemonConfig, load_config
from edge.startup import run
from tests.edge.daemon_helpers import ROOT, frame_folder, make_bundle
from tests.mosquitto import Mosquitto, mosquitto_binary

FIRMWARE = ROOT / "firmware_config"
UNIT = FIRMWARE / "blastscope-edge.service"
BROKER_CONF = FIRMWARE / "mosquitto" / "blastscope.conf"
ACL = FIRMWARE / "mosquitto" / "blastscope.acl"
DEVICE_CONFIGS = sorted(FIRMWARE.glob("*.toml"))


def test_every_file_is_validated_by_something() -> None:
    files = {p.relative_to(FIRMWARE).as_posix() for p in FIRMWARE.rglob("*") if p.is_file()}
    validated = {
        p.relative_to(FIRMWARE).as_posix() for p in [*DEVICE_CONFIGS, UNIT, BROKER_CONF, ACL]
    }
    docs = {f for f in files if f.endswith(".md")}
    assert files - validated - docs == set(), "a new firmware file needs a validating test"
    assert len(DEVICE_CONFIGS) >= 2


@pytest.mark.parametrize("path", DEVICE_CONFIGS, ids=lambda p: p.name)
def test_device_config_loads_and_matches_the_broker_acl(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.mqtt.address.tls and cfg.mqtt.qos == 1
    # MQTT 5: an ACL refusal comes back in the PUBACK instead of a silent success.
    assert cfg.mqtt.protocol == "5"
    # The ACL's pattern is blastscope/%u/...: the user name must be the device id.
    assert cfg.mqtt.username == cfg.device and cfg.mqtt.topic_prefix == "blastscope"
    assert cfg.mqtt.password_env or cfg.mqtt.password_file  # never inline
    assert cfg.outbox.when_full == "block"
    if cfg.source.kind == "picamera":
        assert len(cfg.source.colour_gains) == 2  # fixed white balance


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_is_hardened_and_restarts_on_failure() -> None:
    s = _unit_settings()
    expect = {
        "Type": "notify",
        "Restart": "on-failure",
        "User": "blastscope",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "StateDirectory": "blastscope",
        "CapabilityBoundingSet": "",
    }
    for key, value in expect.items():
        assert s.get(key) == [value], f"{key}={s.get(key)}"
    assert int(s["WatchdogSec"][0]) > 0
    exec_start = s["ExecStart"][0].split()
    assert exec_start[1:] == ["run", "--config", "/etc/blastscope/device.toml"]
    # The credential the unit loads is the file device.toml reads the password from.
    name = s["LoadCredential"][0].split(":")[0]
    cfg = load_config(FIRMWARE / "device.toml")
    assert str(cfg.mqtt.password_file) == f"/run/credentials/{UNIT.name}/{name}"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verifies_the_unit_and_rates_it_safe(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this machine's `edge`.
    edge = shutil.which("edge") or "/bin/true"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/blastscope/venv/bin/edge", edge))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=25", str(unit)],
        capture_output=True,
        text=True,
    )
    assert security.returncode == 0, security.stdout[-2000:]  # exposure <= 2.5 ("OK")


# -- the broker config, for real ------------------------------------------------------------


def _certs(d: Path) -> None:
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-subj", "/CN=blastscope-test-ca", "-days", "2")  # fmt: skip
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")  # fmt: skip


PASSWORDS = {"scanner-01": "pw-scanner", "scope-01": "pw-scope", "dashboard": "pw-dash"}


@pytest.fixture
def lab_broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """mosquitto running firmware_config's blastscope.conf + ACL, paths moved to tmp."""
    if not all((mosquitto_binary(), shutil.which("openssl"), shutil.which("mosquitto_passwd"))):
        pytest.skip("needs mosquitto, mosquitto_passwd and openssl")
    d = tmp_path / "broker"
    d.mkdir()
    _certs(d)
    pwfile = d / "passwd"
    for user, pw in PASSWORDS.items():
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if not pwfile.exists() else []),
                        str(pwfile), user, pw], check=True, capture_output=True)  # fmt: skip
    broker = Mosquitto(d)
    text = BROKER_CONF.read_text()
    moves = {
        "password_file": pwfile,
        "acl_file": ACL,  # the real ACL, unchanged
        "persistence_location": f"{d}/",
        "cafile": d / "ca.crt",
        "certfile": d / "server.crt",
        "keyfile": d / "server.key",
        "listener": f"{broker.port} {broker.host}",
    }
    for key, value in moves.items():
        text, n = re.subn(rf"^{key} .*$", f"{key} {value}", text, flags=re.M)
        assert n == 1, f"{BROKER_CONF.name} has no single {key!r} line"
    if os.geteuid() == 0:
        text += "\nuser root\n"  # keep access to the tmp files (mosquitto drops root otherwise)
    broker.conf.write_text(text + f"\nlog_dest file {broker.log_file}\n")
    broker.start()
    try:
        yield broker.port, d / "ca.crt"
    finally:
        broker.stop()


def _client(
    port: int, ca: Path, user: str | None, pw: str | None, v5: bool = True
) -> tuple[mqtt.Client, dict]:  # type: ignore[type-arg]
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"t-{user}-{time.monotonic_ns()}",
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
    )
    c.tls_set(ca_certs=str(ca))
    if user:
        c.username_pw_set(user, pw)
    state: dict = {"acks": {}, "messages": [], "connack": None}  # type: ignore[type-arg]
    up = threading.Event()

    def on_connect(cl, ud, flags, rc, props):  # type: ignore[no-untyped-def]
        state["connack"] = rc
        up.set()

    def on_publish(cl, ud, mid, rc, props):  # type: ignore[no-untyped-def]
        state["acks"][mid] = rc

    def on_message(cl, ud, msg):  # type: ignore[no-untyped-def]
        state["messages"].append(msg.topic)

    c.on_connect, c.on_publish, c.on_message = on_connect, on_publish, on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert up.wait(10)
    return c, state


def test_broker_config_enforces_tls_passwords_and_per_device_acl(lab_broker) -> None:  # type: ignore[no-untyped-def]
    port, ca = lab_broker
    c, state = _client(port, ca, None, None)
    assert state["connack"].is_failure  # anonymous: refused
    c.loop_stop()
    c, state = _client(port, ca, "scope-01", "wrong")
    assert state["connack"].is_failure
    c.loop_stop()
    c, state = _client(port, ca, "scope-01", PASSWORDS["scope-01"])
    assert not state["connack"].is_failure
    own = c.publish("blastscope/scope-01/result", b"{}", qos=1)
    other = c.publish("blastscope/scope-02/result", b"{}", qos=1)
    own.wait_for_publish(5)
    other.wait_for_publish(5)
    assert not state["acks"][own.mid].is_failure
    assert state["acks"][other.mid].is_failure  # "Not authorized": another device's topic
    c.disconnect()
    c.loop_stop()
    # TLS only: a plain-text CONNECT on the listener never gets a CONNACK.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(bytes([0x10, 12, 0, 4, *b"MQTT", 4, 2, 0, 30, 0, 0]))
        try:
            answer = raw.recv(4)
        except (TimeoutError, ConnectionResetError):
            answer = b""
    assert not answer.startswith(b"\x20")


def test_device_config_publishes_through_the_lab_broker(  # type: ignore[no-untyped-def]
    lab_broker, tmp_path: Path, tiny_tflite: bytes, field_paths: list[Path], monkeypatch
) -> None:
    port, ca = lab_broker
    dashboard, state = _client(port, ca, "dashboard", PASSWORDS["dashboard"], v5=False)
    dashboard.subscribe("blastscope/#", qos=1)
    time.sleep(0.3)
    monkeypatch.setenv("BLASTSCOPE_MQTT_PASSWORD", PASSWORDS["scanner-01"])
    frames = frame_folder(tmp_path / "frames", field_paths, 3)
    cfg: DaemonConfig = load_config(
        FIRMWARE / "slide-scanner.toml",
        {
            "bundle": str(make_bundle(tmp_path / "bundle", tiny_tflite)),
            "source": {"path": str(frames)},
            "mqtt": {"broker": f"mqtts://127.0.0.1:{port}", "tls": {"ca_file": str(ca)},
                     "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
            "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
        },
    )  # fmt: skip
    assert run(cfg, once=True) == 0
    deadline = time.monotonic() + 10
    while state["messages"].count("blastscope/scanner-01/result") < 3:
        assert time.monotonic() < deadline, state["messages"]
        time.sleep(0.1)
    assert "blastscope/scanner-01/status" in state["messages"]
    dashboard.disconnect()
    dashboard.loop_stop()


def test_refused_credentials_are_not_a_connection_and_nothing_leaves_the_outbox(  # type: ignore[no-untyped-def]
    lab_broker, tmp_path: Path, monkeypatch
) -> None:
    """Frigate's bug: it marks itself connected after a refused CONNACK and drops results."""
    from edge.mqtt_link import MqttLink
    from edge.outbox import Outbox

    port, ca = lab_broker
    monkeypatch.setenv("BLASTSCOPE_MQTT_PASSWORD", "wrong")
    cfg = load_config(
        FIRMWARE / "slide-scanner.toml",
        {
            "bundle": "b",
            "mqtt": {"broker": f"mqtts://127.0.0.1:{port}", "tls": {"ca_file": str(ca)},
                     "reconnect_min_s": 0.1, "reconnect_max_s": 0.2},
        },
    )  # fmt: skip
    outbox = Outbox(tmp_path / "o.sqlite3", 100, "block")
    for _ in range(3):
        outbox.put("blastscope/scanner-01/result", lambda seq, mid: b"{}")
    link = MqttLink(
        cfg.mqtt, device=cfg.device, client_id=cfg.client_id, host="127.0.0.1", port=port,
        outbox=outbox,
    )  # fmt: skip
    link.start()
    time.sleep(1.5)  # several refused attempts
    assert not link.connected and link.connects == 0
    assert link.last_error is not None and "refused" in link.last_error
    assert outbox.pending == 3 and link.published == 0
    link.close()
    outbox.close()


def test_a_device_writing_another_devices_topics_is_refused_and_told(  # type: ignore[no-untyped-def]
    lab_broker, tmp_path: Path, tiny_tflite: bytes, field_paths: list[Path], monkeypatch, caplog
) -> None:
    """MQTT 5: the ACL's refusal comes back in the PUBACK; --once then exits 1, nothing lost."""
    port, ca = lab_broker
    monkeypatch.setenv("BLASTSCOPE_MQTT_PASSWORD", PASSWORDS["scanner-01"])
    frames = frame_folder(tmp_path / "frames", field_paths, 3)
    cfg = load_config(
        FIRMWARE / "slide-scanner.toml",
        {
            "device": "scanner-02",  # but logs in as scanner-01: the ACL refuses its topics
            "bundle": str(make_bundle(tmp_path / "bundle", tiny_tflite)),
            "source": {"path": str(frames)},
            "mqtt": {"broker": f"mqtts://127.0.0.1:{port}", "tls": {"ca_file": str(ca)}},
            "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
        },
    )  # fmt: skip
    assert run(cfg, once=True) == 1
    assert "the broker refused 3 results" in caplog.text
    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    refused = db.execute("SELECT reason FROM rejected").fetchall()
    db.close()
    assert [r[0] for r in refused] == ["Not authorized"] * 3  # kept aside, not silently lost
