"""The lab broker for tests: a real mosquitto running firmware_config's shipped blastscope.conf
and ACL (TLS certificates made with openssl, passwords with mosquitto_passwd).

The `lab_broker` fixture (exposed by tests/edge/conftest.py) yields a `LabBroker`; it still
unpacks as `port, ca = lab_broker`. `_client` connects a real paho client to it and records
what it sees (CONNACK, PUBACKs, messages, disconnects) for tests to wait on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.edge.daemon_helpers import ROOT
from tests.mosquitto import Mosquitto, mosquitto_binary

BROKER_CONF = ROOT / "firmware_config" / "mosquitto" / "blastscope.conf"
ACL = ROOT / "firmware_config" / "mosquitto" / "blastscope.acl"
PASSWORDS = {
    "scanner-01": "pw-scanner",
    "scope-01": "pw-scope",
    "dashboard": "pw-dash",
    "watch": "pw-watch",
}


def _certs(d: Path) -> None:
    """A test CA and a server certificate for 127.0.0.1/localhost in `d`."""

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-subj", "/CN=blastscope-test-ca", "-days", "2")  # fmt: skip
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")  # fmt: skip


def require_tools() -> None:
    """Fail (never skip): without these, CI would go green with no ACL, TLS or ack check.
    scripts/check installs them (scripts/ensure-mosquitto.sh)."""
    missing = [
        name
        for name, found in [
            ("mosquitto", mosquitto_binary()),
            ("mosquitto_passwd", shutil.which("mosquitto_passwd")),
            ("openssl", shutil.which("openssl")),
        ]
        if found is None
    ]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed: scripts/check installs them "
            "(apt-get install mosquitto mosquitto-clients openssl)"
        )


@dataclass
class LabBroker:
    """The running lab broker: `broker` can be stopped, killed and started again (same port,
    config and persistence folder `dir`); `ca` is the CA certificate clients trust."""

    broker: Mosquitto
    ca: Path
    dir: Path

    @property
    def port(self) -> int:
        return self.broker.port

    def __iter__(self) -> Iterator[Any]:  # `port, ca = lab_broker`
        return iter((self.port, self.ca))

    def log(self) -> str:
        return self.broker.log_file.read_text()

    def listening_ports(self) -> set[int]:
        assert self.broker._proc is not None, "the broker is not running"
        return listening_ports(self.broker._proc.pid)


# Debian's /etc/mosquitto/mosquitto.conf (package mosquitto 2.0), which the README's install
# puts blastscope.conf under: test_the_lab_broker_mirrors_debians_main_config checks the copy.
DEBIAN_MAIN_CONF = """\
pid_file /run/mosquitto/mosquitto.pid
persistence true
persistence_location /var/lib/mosquitto/
log_dest file /var/log/mosquitto/mosquitto.log
include_dir /etc/mosquitto/conf.d
"""


def main_config(broker: Mosquitto, d: Path) -> str:
    """Debian's main mosquitto.conf with its paths moved to `d` (no pid file)."""
    text = DEBIAN_MAIN_CONF.replace("pid_file /run/mosquitto/mosquitto.pid\n", "")
    text = text.replace("/var/lib/mosquitto/", f"{d}/")
    text = text.replace("/var/log/mosquitto/mosquitto.log", str(broker.log_file))
    text = text.replace("/etc/mosquitto/conf.d", str(d / "conf.d"))
    if os.geteuid() == 0:
        text += "user root\n"  # keep access to the tmp files (mosquitto drops root otherwise)
    return text


def shipped_config(broker: Mosquitto, d: Path, pwfile: Path) -> str:
    """blastscope.conf with its paths moved to `d` and its listener to the broker's port."""
    text = BROKER_CONF.read_text()
    moves = {
        "password_file": pwfile,
        "acl_file": ACL,  # the real ACL, unchanged
        "cafile": d / "ca.crt",
        "certfile": d / "server.crt",
        "keyfile": d / "server.key",
        "listener": f"{broker.port} {broker.host}",
    }
    for key, value in moves.items():
        text, n = re.subn(rf"^{key} .*$", f"{key} {value}", text, flags=re.M)
        assert n == 1, f"{BROKER_CONF.name} has no single {key!r} line"
    return text


def start_lab_broker(
    d: Path, edit: Callable[[str], str] = lambda text: text, host: str = "127.0.0.1"
) -> LabBroker:
    """Certificates, passwords and a started mosquitto in `d`, installed as the README says:
    Debian's main config including conf.d/blastscope.conf (`edit` may change the latter, for
    measurements against variants). host: the loopback address it listens on (its
    certificate names 127.0.0.1 and localhost)."""
    require_tools()
    d.mkdir(parents=True, exist_ok=True)
    _certs(d)
    pwfile = d / "passwd"
    for user, pw in PASSWORDS.items():
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if not pwfile.exists() else []),
                        str(pwfile), user, pw], check=True, capture_output=True)  # fmt: skip
    broker = Mosquitto(d)
    broker.host = host
    (d / "conf.d").mkdir()
    (d / "conf.d" / BROKER_CONF.name).write_text(edit(shipped_config(broker, d, pwfile)))
    broker.conf.write_text(main_config(broker, d))
    broker.start()
    return LabBroker(broker, d / "ca.crt", d)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (from /proc: its socket inodes in LISTEN)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.fixture
def lab_broker(tmp_path: Path) -> Iterator[LabBroker]:
    """mosquitto running firmware_config's blastscope.conf + ACL, paths moved to tmp."""
    lab = start_lab_broker(tmp_path / "broker")
    try:
        yield lab
    finally:
        lab.broker.stop()


class ClientState(dict[str, Any]):
    """What a test client saw; `wait(predicate, timeout)` waits on it without sleeping.

    Keys: connack (reason code of the last CONNACK), session_present (its flag), acks {mid:
    PUBACK reason code}, subacks {mid: granted reason codes}, messages (topics, in arrival
    order), received (the MQTTMessage objects), disconnects (reason codes)."""

    def __init__(self) -> None:
        super().__init__(
            connack=None, session_present=None, acks={}, subacks={}, messages=[], received=[],
            disconnects=[],
        )  # fmt: skip
        self.cond = threading.Condition()

    def record(self, update: Callable[[], None]) -> None:
        with self.cond:
            update()
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


def _client(
    port: int,
    ca: Path,
    user: str | None,
    pw: str | None,
    v5: bool = True,
    *,
    client_id: str | None = None,
    persistent: bool = False,
    will: tuple[str, bytes] | None = None,
    reconnect: bool = False,
) -> tuple[mqtt.Client, ClientState]:
    """A connected paho client (the CONNACK has arrived, accepted or refused).

    persistent: keep the session (MQTT 5 clean_start False + a session expiry of an hour,
    3.1.1 clean_session False). will: (topic, payload), QoS 1 and retained, as the daemon's.
    reconnect: let paho reconnect after a drop (off by default: a drop stays a drop)."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"t-{user}-{time.monotonic_ns()}",
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else not persistent,  # MQTT 5: clean_start, at connect
        reconnect_on_failure=reconnect,
    )
    c.tls_set(ca_certs=str(ca))
    if user:
        c.username_pw_set(user, pw)
    if will:
        c.will_set(will[0], will[1], qos=1, retain=True)
    c.reconnect_delay_set(1, 2)
    state = ClientState()
    up = threading.Event()

    def on_connect(cl, ud, flags, rc, props):
        def add() -> None:
            state["connack"], state["session_present"] = rc, flags.session_present

        state.record(add)
        up.set()

    def on_subscribe(cl, ud, mid, rcs, props):
        state.record(lambda: state["subacks"].__setitem__(mid, rcs))

    def on_disconnect(cl, ud, flags, rc, props):
        state.record(lambda: state["disconnects"].append(rc))

    def on_publish(cl, ud, mid, rc, props):
        state.record(lambda: state["acks"].__setitem__(mid, rc))

    def on_message(cl, ud, msg):
        def add() -> None:
            state["messages"].append(msg.topic)
            state["received"].append(msg)

        state.record(add)

    c.on_connect, c.on_disconnect = on_connect, on_disconnect
    c.on_publish, c.on_message, c.on_subscribe = on_publish, on_message, on_subscribe
    kw: dict[str, Any] = {}
    if v5:
        kw["clean_start"] = not persistent
        if persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            kw["properties"] = props
    c.connect("127.0.0.1", port, **kw)
    c.loop_start()
    assert up.wait(10), "no CONNACK in 10 s"
    return c, state


def subscribe(c: mqtt.Client, state: ClientState, topic: str, timeout: float = 10) -> None:
    """Subscribe at QoS 1 and wait for the SUBACK granting it."""
    _, mid = c.subscribe(topic, qos=1)
    assert state.wait(lambda: mid in state["subacks"], timeout), f"no SUBACK for {topic}"
    granted = state["subacks"][mid]
    assert [int(rc.value) for rc in granted] == [1], f"{topic}: {granted}"


def publish_acked(
    c: mqtt.Client,
    state: ClientState,
    topic: str,
    payload: bytes,
    retain: bool = False,
    timeout: float = 10,
) -> Any:
    """Publish at QoS 1 and return the PUBACK's reason code (MQTT 5: the ACL's answer)."""
    mid = c.publish(topic, payload, qos=1, retain=retain).mid
    assert state.wait(lambda: mid in state["acks"], timeout), f"no PUBACK for {topic}"
    return state["acks"][mid]


def close(c: mqtt.Client, state: ClientState, timeout: float = 10) -> None:
    """A clean DISCONNECT (no last will; a persistent session stays), then stop the loop."""
    if c.is_connected():
        n = len(state["disconnects"])
        c.disconnect()
        assert state.wait(lambda: len(state["disconnects"]) > n, timeout), "no disconnect"
    c.loop_stop()
