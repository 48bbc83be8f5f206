"""``edge check``: validate config, bundle, outbox, source and broker; say what is wrong.

Each check prints one ``ok``, ``warn`` or ``FAIL`` line; the exit code is 1 if any failed. A
check writes nothing: the outbox is read, never created. The broker check connects with
``<client id>-check`` so that it never kicks a running daemon off the broker (two clients with
one id make availability flap: Frigate #3575), and with MQTT 5 it publishes one test message
to the device's own health topic and reads the PUBACK's reason code: an ACL that refuses the
device's topics fails the check instead of losing every result later.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from edge.contracts.messages import encode, topic
from edge.errors import BlastscopeError
from edge.service.config import DaemonConfig, config_warnings, load_config
from edge.service.embedded_broker import mosquitto_binary
from edge.service.health import Stats, health_payload
from edge.service.mqtt_link import describe_connect_error, make_client
from edge.service.outbox_lock import outbox_owner
from edge.service.sources import open_source


def _check_bundle(cfg: DaemonConfig) -> str:
    from edge.service.startup import open_checked_bundle

    bundle, golden = open_checked_bundle(cfg)
    m = bundle.manifest
    note = "golden self-test passed" if golden else "no golden set (self-test skipped)"
    return (
        f"{m.name} ({m.quantization}, labels {', '.join(m.labels)}), verification "
        f"{m.verification.status}, {note}"
    )


def _check_outbox(cfg: DaemonConfig) -> str:
    """Read the outbox if it exists (creating nothing), else say whether it can be created."""
    path = cfg.outbox_path()
    policy = f"policy {cfg.outbox.when_full}"
    if not path.exists():
        parent = next(p for p in [path.parent, *path.parent.parents] if p.exists())
        if not os.access(parent, os.W_OK | os.X_OK):
            raise BlastscopeError(
                f"{path}: does not exist and {parent} is not writable by this user: create "
                "the directory for the daemon's user (systemd: StateDirectory=)"
            )
        return f"{path}: not created yet (the daemon creates it), {policy}"
    # A cleanly closed WAL database is complete in its main file: read it as immutable, which
    # creates no -wal/-shm files. With a -wal (a running or crashed daemon) read it as is.
    wal = path.with_name(path.name + "-wal").exists()
    uri = f"{path.resolve().as_uri()}?{'mode=ro' if wal else 'immutable=1'}"
    try:
        db = sqlite3.connect(uri, uri=True)
        try:
            pending, refused = db.execute(
                "SELECT COUNT(*), COUNT(refused) FROM outbox"
                if _has_column(db, "outbox", "refused")
                else "SELECT COUNT(*), 0 FROM outbox"
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise BlastscopeError(
            f"{path}: cannot be read as an outbox ({exc}); move a damaged file aside"
        ) from None
    note = f", {refused} of them refused by the broker" if refused else ""
    return f"{path}: {pending} results pending{note}, {policy}"


def _has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in db.execute(f"PRAGMA table_info({table})"))


def _check_source(cfg: DaemonConfig) -> str:
    source = open_source(cfg.source, once=True)
    stop = threading.Event()
    source.open()
    try:
        for frame in source.frames(stop):
            if frame.image is None:
                return f"{source.name}: opened; first frame unreadable: {frame.error}"
            h, w = frame.image.shape[:2]
            return f"{source.name}: first frame {w}x{h} ({frame.origin})"
        return f"{source.name}: opened, but it holds no frames yet"
    finally:
        stop.set()
        source.close()


def _check_broker(cfg: DaemonConfig, timeout: float = 5.0) -> str:
    address = cfg.mqtt.address
    if address.scheme == "embedded":
        binary = mosquitto_binary()
        if binary is None:
            raise BlastscopeError(
                "embedded broker: mosquitto not found (apt-get install mosquitto)"
            )
        return f"embedded: will start {binary} on 127.0.0.1"
    owner = outbox_owner(cfg.outbox_path())
    if owner is not None:
        # A broker that binds client ids to user names (firmware_config/mosquitto) would give
        # this connection the daemon's session and fire its last will: do not connect.
        raise CheckSkipped(
            f"{address.url}: not connected: the daemon using this outbox (pid {owner}) is "
            "running, and a second login with the device's credentials would take over its "
            "session; its status topic shows its connection (stop it to check the broker)"
        )
    client_id = f"{cfg.client_id}-check"
    client, connect_kw = make_client(cfg.mqtt, client_id, address.host, address.port)
    result: dict[str, Any] = {}
    connected, acked = threading.Event(), threading.Event()

    def on_connect(c, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        connected.set()

    def on_publish(c, userdata, mid, reason_code, properties):
        result["puback"] = reason_code
        acked.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    try:
        client.connect(**connect_kw)
    except OSError as exc:
        cause = describe_connect_error(exc, address.host, address.port)
        raise BlastscopeError(f"{address.url}: cannot connect: {cause}") from None
    client.loop_start()
    try:
        if not connected.wait(timeout):
            raise BlastscopeError(f"{address.url}: no CONNACK within {timeout}s")
        rc = result["rc"]
        if rc.is_failure:
            raise BlastscopeError(f"{address.url}: the broker refused the connection: {rc}")
        if cfg.mqtt.protocol != "5":
            return (
                f"{address.url}: connected as {client_id}; MQTT 3.1.1 cannot show whether the "
                'broker\'s ACL lets this device publish (use protocol = "5")'
            )
        health_topic = topic(cfg.mqtt.topic_prefix, cfg.device, "health")
        client.publish(health_topic, _check_payload(cfg), qos=1)
        if not acked.wait(timeout):
            raise BlastscopeError(f"{address.url}: no PUBACK for a test publish within {timeout}s")
        puback = result["puback"]
        if puback.is_failure:
            user = cfg.mqtt.username or "(anonymous)"
            raise BlastscopeError(
                f"{address.url}: the broker refuses this device's topics ({puback} for "
                f"{health_topic}): its ACL must let user {user} write "
                f"{cfg.mqtt.topic_prefix}/{cfg.device}/result, /status and /health"
            )
        return f"{address.url}: connected as {client_id}; test publish to {health_topic} accepted"
    finally:
        client.disconnect()
        client.loop_stop()


class CheckSkipped(BlastscopeError):
    """A check that cannot be made now without disturbing the device: a warning, not a fail."""


def _check_payload(cfg: DaemonConfig) -> bytes:
    """A valid health message, marked as the check's own (not a running daemon's)."""
    outbox = {
        "pending": 0,
        "inflight": 0,
        "max_messages": cfg.outbox.max_messages,
        "when_full": cfg.outbox.when_full,
        "dropped_oldest": 0,
        "rejected_new": 0,
        "refused_by_broker": 0,
        "blocked_s": 0.0,
        "published": 0,
    }
    mqtt = {"connected": True, "connects": 1, "disconnects": 0}
    payload = health_payload(cfg.device, Stats(10), 0, outbox, mqtt)
    payload["check"] = True
    return encode(payload)


def run_checks(
    config: str | Path | None, overrides: dict[str, Any], out: TextIO, skip_source: bool = False
) -> int:
    try:
        cfg = load_config(config, overrides)
    except BlastscopeError as exc:
        print(f"FAIL config  {exc}", file=out)
        return 1
    print(
        f"ok   config  {config or 'command line'}: device {cfg.device}, "
        f"source {cfg.source.kind}, broker {cfg.mqtt.broker}",
        file=out,
    )
    for warning in config_warnings(cfg, Path(config) if config else None):
        print(f"warn config  {warning}", file=out)
    checks: list[tuple[str, Callable[[DaemonConfig], str]]] = [
        ("bundle", _check_bundle),
        ("outbox", _check_outbox),
        ("source", _check_source),
        ("broker", _check_broker),
    ]
    failed = 0
    for name, check in checks:
        if name == "source" and skip_source:
            continue
        try:
            detail = check(cfg)
        except CheckSkipped as exc:
            print(f"warn {name:<7}{exc}", file=out)
        except BlastscopeError as exc:
            failed += 1
            print(f"FAIL {name:<7}{exc}", file=out)
        else:
            print(f"ok   {name:<7}{detail}", file=out)
    return 1 if failed else 0
