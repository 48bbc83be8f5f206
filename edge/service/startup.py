"""Start-up: open and self-test the bundle, open the outbox and the link, run the daemon.

A device that refuses to start (bundle invalid, verification failed, golden parity check
failed) says why on its retained status topic (``failed``) before exiting, so the lab sees the
reason instead of a device that silently restart-loops under systemd.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edge.contracts.manifest import BundleError
from edge.contracts.messages import model_info, status_payload, topic
from edge.errors import BlastscopeError
from edge.model.bundle import Bundle, load_bundle
from edge.model.golden import require_golden
from edge.service.config import DaemonConfig, config_warnings
from edge.service.daemon import Daemon, bundle_warnings, software_version
from edge.service.embedded_broker import EmbeddedBroker
from edge.service.mqtt_link import MqttLink, make_client
from edge.service.outbox import Outbox, StoredMessage
from edge.service.outbox_lock import OutboxInUseError
from edge.service.sources import open_source

log = logging.getLogger(__name__)


@contextmanager
def broker_for(cfg: DaemonConfig) -> Iterator[DaemonConfig]:
    """Start the embedded broker if the config asks for one; yield the config pointing at it."""
    address = cfg.mqtt.address
    if address.scheme != "embedded":
        yield cfg
        return
    broker = EmbeddedBroker(address.port)
    try:
        broker.start()
        mqtt = cfg.mqtt.model_copy(update={"broker": broker.url})
        yield cfg.model_copy(update={"mqtt": mqtt})
    finally:
        broker.close()


def open_checked_bundle(cfg: DaemonConfig) -> tuple[Bundle, bool]:
    """Load the bundle, refuse a failed verification, run the golden parity self-test."""
    bundle = load_bundle(cfg.bundle, num_threads=cfg.threads)
    if bundle.manifest.verification.status == "failed":
        raise BundleError(
            f"{cfg.bundle}: the bundle failed its verification (int8 vs float acceptance "
            "gate); re-export or re-calibrate it before deploying"
        )
    report = require_golden(bundle)
    if report is not None:
        log.info("%s", report.summary())
    return bundle, report is not None


def report_startup_failure(cfg: DaemonConfig, reason: str, timeout: float = 5.0) -> bool:
    """Best effort: leave a retained ``failed`` status with the reason. True if delivered."""
    address = cfg.mqtt.address
    if address.scheme == "embedded":
        return False
    try:
        client, connect_kw = make_client(cfg.mqtt, cfg.client_id, address.host, address.port)
    except BlastscopeError:
        return False
    up = threading.Event()

    def on_connect(c, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            up.set()

    client.on_connect = on_connect
    try:
        client.connect(**connect_kw)
    except OSError:
        return False
    client.loop_start()
    try:
        if not up.wait(timeout):
            return False
        payload = status_payload(
            device=cfg.device,
            state="failed",
            client_id=cfg.client_id,
            reason=reason,
            software=software_version(),
        )
        info = client.publish(
            topic(cfg.mqtt.topic_prefix, cfg.device, "status"), payload, qos=1, retain=True
        )
        info.wait_for_publish(timeout)
        return info.is_published()
    except (RuntimeError, ValueError):
        return False
    finally:
        client.disconnect()
        client.loop_stop()


def open_outbox(cfg: DaemonConfig) -> Outbox:
    return Outbox(
        cfg.outbox_path(),
        cfg.outbox.max_messages,
        cfg.outbox.when_full,
        reserve_bytes=cfg.outbox.reserve_bytes,
    )


def run(
    cfg: DaemonConfig,
    *,
    once: bool,
    on_published: Callable[[StoredMessage], None] | None = None,
    origin: Path | None = None,
) -> int:
    """Run the daemon on a config whose broker is a real address; the exit code.

    origin: the config file, whose sibling configs are checked for a shared client id.
    """
    for warning in config_warnings(cfg, origin):
        log.warning("config: %s", warning)
    try:
        # First: a second daemon on this outbox stops here, and stays off the broker (its
        # login would take over the running daemon's session and status).
        outbox = open_outbox(cfg)
    except OutboxInUseError:
        raise
    except BlastscopeError as exc:
        report_startup_failure(cfg, f"refused to start: {exc}")
        raise
    try:
        bundle, golden_checked = open_checked_bundle(cfg)
    except BlastscopeError as exc:
        outbox.close()
        report_startup_failure(cfg, f"refused to start: {exc}")
        raise
    if outbox.pending:
        log.info("%d results from an earlier run wait in %s", outbox.pending, outbox.path)
    address = cfg.mqtt.address
    model = model_info(bundle.manifest, bundle.spec.sha256())
    try:
        link = MqttLink(
            cfg.mqtt,
            device=cfg.device,
            client_id=cfg.client_id,
            host=address.host,
            port=address.port,
            outbox=outbox,
            model=model,
            software=software_version(),
            on_published=on_published,
        )
        retention_s = cfg.outbox.retention_days * 86400
        source = open_source(cfg.source, once, outbox, retention_s)
        daemon = Daemon(
            cfg,
            bundle,
            source,
            outbox,
            link,
            once=once,
            static_warnings=bundle_warnings(bundle, golden_checked),
        )
        return daemon.run()
    finally:
        outbox.close()
