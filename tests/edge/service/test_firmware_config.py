"""CI validation of every file in firmware_config/, each by what actually consumes it.

- the device TOMLs: the edge's own config loader (and what the broker's ACL expects of them);
- the systemd unit: its hardening, `systemd-analyze verify` and `security --offline`;
- the Mosquitto config and ACL: a real mosquitto started with them (TLS, passwords, ACL),
  a real daemon publishing through it, a device refused another device's topics and client
  id, and an offline dashboard's queued results surviving a SIGKILL of the broker.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from edge.service.config import DaemonConfig, load_config
from edge.service.startup import run
from tests.edge.daemon_helpers import ROOT, frame_folder, make_bundle
from tests.edge.lab_broker import (
    ACL,
    BROKER_CONF,
    DEBIAN_MAIN_CONF,
    PASSWORDS,
    ClientState,
    LabBroker,
    _client,
    close,
    publish_acked,
    subscribe,
)

FIRMWARE = ROOT / "firmware_config"
UNIT = FIRMWARE / "blastscope-edge.service"
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


def test_systemd_analyze_verifies_the_unit_and_rates_it_safe(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:  # fail, never skip: CI would not check the unit
        pytest.fail("systemd-analyze not installed: scripts/check installs it (package systemd)")
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


def _directives(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def test_the_lab_broker_mirrors_debians_main_config() -> None:
    """The README installs blastscope.conf into Debian's conf.d: the tests run it under a copy
    of Debian's main mosquitto.conf, which sets persistence_location itself."""
    system = Path("/etc/mosquitto/mosquitto.conf")
    if not system.is_file():
        pytest.fail(f"{system} missing: install Debian's mosquitto (scripts/ensure-mosquitto.sh)")
    assert _directives(system.read_text()) == _directives(DEBIAN_MAIN_CONF)


def test_broker_config_enforces_tls_passwords_and_per_device_acl(lab_broker: LabBroker) -> None:
    port, ca = lab_broker
    # Its one listener only: a listener option above the first `listener` line makes mosquitto
    # open a default plain-text listener on 1883.
    assert lab_broker.listening_ports() == {port}
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
    subscribe(dashboard, state, "blastscope/#")
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
    assert state.wait(lambda: state["messages"].count("blastscope/scanner-01/result") >= 3, 10), (
        state["messages"]
    )
    assert "blastscope/scanner-01/status" in state["messages"]
    close(dashboard, state)


class _LogCount(logging.Handler):
    """Counts log records containing `text`; `wait(n, timeout)` waits for n of them."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text, self.count, self.cond = text, 0, threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            with self.cond:
                self.count += 1
                self.cond.notify_all()

    def wait(self, n: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.count >= n, timeout)


def test_refused_credentials_are_not_a_connection_and_nothing_leaves_the_outbox(  # type: ignore[no-untyped-def]
    lab_broker, tmp_path: Path, monkeypatch
) -> None:
    """Frigate's bug: it marks itself connected after a refused CONNACK and drops results."""
    from edge.service.mqtt_link import MqttLink
    from edge.service.outbox import Outbox

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
    refusals = _LogCount("refused the connection")
    logger = logging.getLogger("edge.service.mqtt_link")
    logger.addHandler(refusals)
    try:
        link.start()
        assert refusals.wait(3, 10), f"{refusals.count} refused attempts in 10 s"  # it retried
    finally:
        logger.removeHandler(refusals)
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
    refused = db.execute("SELECT refused FROM outbox ORDER BY seq").fetchall()
    db.close()
    # Not delivered, so still in the outbox (offered again at the next start), never lost.
    assert [r[0] for r in refused] == ["Not authorized"] * 3


# -- persistence: what an offline dashboard has queued survives a broker crash ---------------


def _result_ids(state: ClientState, device: str = "scope-01") -> list[str]:
    with state.cond:
        return [
            json.loads(m.payload)["message_id"]
            for m in state["received"]
            if m.topic == f"blastscope/{device}/result"
        ]


def _lab_dashboard(port: int, ca: Path) -> tuple[Any, ClientState]:
    """The lab's dashboard: a fixed client id and a persistent session (MQTT 5, clean start
    off, session expiry 1 h), so the broker queues QoS 1 results while it is away."""
    return _client(
        port, ca, "dashboard", PASSWORDS["dashboard"], client_id="lab-dashboard", persistent=True
    )


def test_results_queued_for_an_offline_dashboard_survive_a_broker_crash(
    lab_broker: LabBroker,
) -> None:
    """With `autosave_interval 60`, 0 of 100 acknowledged results survived a SIGKILL of the
    broker while the dashboard was offline: the queue lived in memory only. The shipped config
    saves after every change (autosave_on_changes, count 1).

    Mosquitto writes a PUBACK and then, at the end of the same pass of its main loop, saves:
    a kill in those microseconds can still lose the last result (measured: 3 runs in 50 lost
    it when killed the instant the last PUBACK arrived; no mosquitto 2.0 setting saves
    before acknowledging). So the device makes one more round trip (a QoS 1 health sample,
    which no dashboard here queues) before the kill: the broker has then finished that pass.
    """
    port, ca = lab_broker
    dash, ds = _lab_dashboard(port, ca)
    subscribe(dash, ds, "blastscope/+/result")
    close(dash, ds)  # offline: the broker keeps the session and queues for it

    device, st = _client(
        port, ca, "scope-01", PASSWORDS["scope-01"], client_id="blastscope-scope-01"
    )
    ids = [f"scope-01-{i:03d}" for i in range(100)]
    mids = [
        device.publish(
            "blastscope/scope-01/result", json.dumps({"message_id": m}).encode(), qos=1
        ).mid
        for m in ids
    ]
    assert st.wait(lambda: all(mid in st["acks"] for mid in mids), 30), "PUBACKs missing"
    assert not any(st["acks"][mid].is_failure for mid in mids)
    assert not publish_acked(device, st, "blastscope/scope-01/health", b"{}").is_failure
    lab_broker.broker.kill()  # SIGKILL: no chance to save on the way out
    device.loop_stop()

    lab_broker.broker.start()  # the same config and persistence folder
    dash, ds = _lab_dashboard(port, ca)
    try:
        assert ds["session_present"], "the dashboard's session did not survive the crash"
        survived = ds.wait(lambda: len(set(_result_ids(ds))) >= len(ids), 30)
        assert survived, f"{len(set(_result_ids(ds)))} of {len(ids)} results survived"
        with ds.cond:
            assert {m.qos for m in ds["received"]} == {1}
        assert sorted(set(_result_ids(ds))) == ids  # all of them, nothing else
    finally:
        close(dash, ds)


# -- the client id is bound to the user name ---------------------------------------------------


def _status(state: str, **extra: Any) -> bytes:
    return json.dumps({"state": state, **extra}).encode()


def _payloads(state: ClientState, topic: str) -> list[dict[str, Any]]:
    with state.cond:
        return [json.loads(m.payload) for m in state["received"] if m.topic == topic]


def test_another_devices_credentials_cannot_take_over_a_devices_client_id(
    lab_broker: LabBroker,
) -> None:
    """Client-id takeover: scanner-01's credentials with scope-01's client id used to kick
    scope-01 off (3 of 3) and fire its last will, flapping its status to offline. The broker
    now makes the user name the client id, so the intruder is only ever scanner-01."""
    port, ca = lab_broker
    status = "blastscope/scope-01/status"
    watcher, ws = _client(port, ca, "dashboard", PASSWORDS["dashboard"])
    subscribe(watcher, ws, status)
    device, ds = _client(
        port, ca, "scope-01", PASSWORDS["scope-01"], client_id="blastscope-scope-01",
        will=(status, _status("offline")),
    )  # fmt: skip
    assert not publish_acked(device, ds, status, _status("online"), retain=True).is_failure
    for attempt in range(3):
        intruder, its = _client(
            port, ca, "scanner-01", PASSWORDS["scanner-01"], client_id="blastscope-scope-01"
        )
        assert not its["connack"].is_failure  # a valid login, as scanner-01
        for kind in ("status", "result", "health"):  # and it cannot write scope-01's topics
            rc = publish_acked(
                intruder, its, f"blastscope/scope-01/{kind}", _status("offline"), retain=True
            )
            assert str(rc) == "Not authorized", (kind, rc)
        close(intruder, its)
        # A takeover happens before the intruder's CONNACK. The device still gets a PUBACK on
        # its own connection (paho does not reconnect here), and the watcher receives this
        # status after anything the broker published before it (a last will included).
        mark = {"state": "online", "attempt": attempt}
        assert not publish_acked(
            device, ds, status, json.dumps(mark).encode(), retain=True
        ).is_failure
        assert ws.wait(lambda m=mark: m in _payloads(ws, status), 10)  # type: ignore[misc]
    assert ds["disconnects"] == [] and device.is_connected()
    assert [p["state"] for p in _payloads(ws, status)] == ["online"] * 4  # never offline
    close(watcher, ws)
    # The retained status a newcomer reads is the device's own, not an intruder's.
    reader, rs = _client(port, ca, "watch", PASSWORDS["watch"])
    subscribe(reader, rs, status)
    assert rs.wait(lambda: len(_payloads(rs, status)) == 1, 10)
    assert _payloads(rs, status) == [{"state": "online", "attempt": 2}]
    close(reader, rs)
    close(device, ds)


def test_a_second_client_with_a_devices_credentials_takes_its_session_over(
    lab_broker: LabBroker,
) -> None:
    """The price of the binding, for `edge check`: it logs in with the device's credentials
    (as `<client id>-check`), and the broker turns that id into the device's user name, so
    while the daemon runs the check takes the daemon's session over and its last will fires."""
    port, ca = lab_broker
    status = "blastscope/scope-01/status"
    watcher, ws = _client(port, ca, "dashboard", PASSWORDS["dashboard"])
    subscribe(watcher, ws, status)
    daemon, ds = _client(
        port, ca, "scope-01", PASSWORDS["scope-01"], client_id="blastscope-scope-01",
        will=(status, _status("offline")),
    )  # fmt: skip
    assert not publish_acked(daemon, ds, status, _status("online"), retain=True).is_failure
    check, cs = _client(
        port, ca, "scope-01", PASSWORDS["scope-01"], client_id="blastscope-scope-01-check"
    )
    assert not cs["connack"].is_failure
    assert ds.wait(lambda: len(ds["disconnects"]) == 1, 10), "the daemon was not taken over"
    assert ws.wait(lambda: {"state": "offline"} in _payloads(ws, status), 10)
    close(check, cs)
    close(daemon, ds)
    close(watcher, ws)


def test_each_dashboard_needs_its_own_user(lab_broker: LabBroker) -> None:
    """The price of the binding, for dashboards: one user holds one session, whatever client
    id it sends. `edge watch` under its own user leaves the dashboard's queue alone; a second
    client logging in as `dashboard` kicks the dashboard off and, with a clean start, discards
    the results queued for it."""
    port, ca = lab_broker
    device, st = _client(
        port, ca, "scope-01", PASSWORDS["scope-01"], client_id="blastscope-scope-01"
    )

    def result(message_id: str) -> None:
        payload = json.dumps({"message_id": message_id}).encode()
        assert not publish_acked(device, st, "blastscope/scope-01/result", payload).is_failure

    dash, ds = _lab_dashboard(port, ca)
    subscribe(dash, ds, "blastscope/+/result")
    close(dash, ds)
    result("r-1")
    watch, ws = _client(port, ca, "watch", PASSWORDS["watch"], client_id="blastscope-watch-x")
    subscribe(watch, ws, "blastscope/+/result")  # a clean start under its own user
    close(watch, ws)
    dash, ds = _lab_dashboard(port, ca)
    assert ds["session_present"]
    assert ds.wait(lambda: _result_ids(ds) == ["r-1"], 10)  # queued while away, delivered

    other, os_ = _client(
        port, ca, "dashboard", PASSWORDS["dashboard"], client_id="another-dashboard",
        persistent=True,
    )  # fmt: skip
    assert ds.wait(lambda: len(ds["disconnects"]) == 1, 10), "one user, one connection"
    close(other, os_)
    result("r-2")  # queued for the dashboard user's session
    wiper, wst = _client(port, ca, "dashboard", PASSWORDS["dashboard"], client_id="edge-watch")
    close(wiper, wst)  # a clean start as `dashboard`: that session and its queue are gone
    dash.loop_stop()
    dash, ds = _lab_dashboard(port, ca)
    assert ds["session_present"] is False
    close(dash, ds)
    close(device, st)
