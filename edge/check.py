"""``edge check``: validate config, bundle, outbox, source and broker; say what is wrong.

Each check prints one ``ok`` or ``FAIL`` line; the exit code is 1 if any failed. The broker
check connects with ``<client id>-check`` so that it never kicks a running daemon off the
broker (two clients with one id make availability flap: Frigate #3575).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from edge.config import DaemonConfig, load_config
from edge.embedded_broker import mosquitto_binary
from edge.errors import BlastscopeError
from edge.mqtt_link import make_client
from edge.outbox import Outbox
from edge.sources import open_source


def _check_bundle(cfg: DaemonConfig) -> str:
    from edge.startup import open_checked_bundle

    bundle, golden = open_checked_bundle(cfg)
    m = bundle.manifest
    note = "golden self-test passed" if golden else "no golden set (self-test skipped)"
    return (
        f"{m.name} ({m.quantization}, labels {', '.join(m.labels)}), verification "
        f"{m.verification.status}, {note}"
    )


def _check_outbox(cfg: DaemonConfig) -> str:
    path = cfg.outbox_path()
    outbox = Outbox(path, cfg.outbox.max_messages, cfg.outbox.when_full)
    try:
        return f"{path}: {outbox.pending} results pending, policy {cfg.outbox.when_full}"
    finally:
        outbox.close()


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
    client, connect_kw = make_client(cfg.mqtt, f"{cfg.client_id}-check", address.host, address.port)
    result: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(c, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(**connect_kw)
    except OSError as exc:
        raise BlastscopeError(f"{address.url}: cannot connect ({exc})") from None
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise BlastscopeError(f"{address.url}: no CONNACK within {timeout}s")
        rc = result["rc"]
        if rc.is_failure:
            raise BlastscopeError(f"{address.url}: the broker refused the connection: {rc}")
        return f"{address.url}: connected as {cfg.client_id}-check"
    finally:
        client.disconnect()
        client.loop_stop()


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
        except BlastscopeError as exc:
            failed += 1
            print(f"FAIL {name:<7}{exc}", file=out)
        else:
            print(f"ok   {name:<7}{detail}", file=out)
    return 1 if failed else 0
