"""The MQTT side: one paho-mqtt 2 client, the retained status, and the outbox publisher.

Status follows Frigate's availability pattern (retained last will ``offline``, ``online`` after
every successful CONNACK, ``stopped`` on a clean exit) without its bug: "connected" is set
only by a CONNACK that succeeded, and nothing is published from memory alone. Results go
outbox -> broker in seq order, at most ``inflight`` un-acked at a time, and a row is deleted
only when its PUBACK arrives. paho keeps un-acked QoS>0 messages across a reconnect and resends
them (same mid, DUP set) before anything newer; a daemon crash loses only paho's copy, and the
next start replays the outbox from its oldest row.

A PUBACK with a failure reason code (MQTT 5, >= 0x80: the broker's ACL refused the topic) is
not a delivery: the row stays in the outbox, marked refused, is offered again after the next
connect, and the status topic says why. (MQTT 3.1.1 has no such code: a broker acknowledges a
refused publish like a delivered one, which is why 5 is the default.)

A PUBACK is not quite durability: mosquitto acknowledges first and saves its database at the
end of the same loop pass, so a broker killed in between loses the message (measured: 3 of 50
SIGKILLs right at the PUBACK lost the last result). A row is therefore deleted only after the
connection has stayed up for SETTLE_S past its PUBACK; if the connection drops first, the row
is sent again after the reconnect (a duplicate at worst, which consumers drop by message_id).
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from edge.contracts.messages import status_payload, topic
from edge.pipeline.priority import yield_to_inference
from edge.service.config import ConfigError, MqttConfig
from edge.service.outbox import Outbox, StoredMessage

log = logging.getLogger(__name__)

State = Literal["online", "offline", "stopped", "failed"]
_STATUS_MIN_INTERVAL_S = 1.0  # warnings can change every frame; the retained status need not
_REPEAT_LOG_S = 300.0  # the same connection or refusal error is logged again after this long
SETTLE_S = 1.0  # a PUBACK counts once the connection outlived it by this long (see above)


def describe_connect_error(exc: BaseException | None, host: str, port: int) -> str:
    """Why a connection attempt failed, in words a lab technician can act on."""
    where = f"{host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        if "hostname" in str(detail).lower() or "ip address mismatch" in str(detail).lower():
            return (
                f"TLS: the broker's certificate does not name {host!r} ({detail}); use the host "
                "name in its certificate, or fix the certificate"
            )
        return (
            f"TLS: the broker's certificate is not trusted ({detail}); set mqtt.tls.ca_file to "
            "the CA that signed it"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {where} failed ({exc.reason or exc}); is it a TLS listener?"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where} refused the connection (no broker listening there?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the broker host {host!r} ({exc.strerror})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"{where} did not answer (timeout)"
    if isinstance(exc, OSError):
        return f"cannot reach {where} ({exc.strerror or exc})"
    return f"cannot reach {where}"


class _RateLimitedLog:
    """Log a message at `level` the first time and then at most every _REPEAT_LOG_S; the
    repeats in between go to DEBUG (a broker away for a day must not fill the journal)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def __call__(self, level: int, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(message, -_REPEAT_LOG_S) >= _REPEAT_LOG_S:
            self._last[message] = now
            log.log(level, "%s", message)
        else:
            log.debug("%s", message)


def make_client(
    cfg: MqttConfig, client_id: str, host: str, port: int
) -> tuple[mqtt.Client, dict[str, Any]]:
    """A configured (not yet connected) paho client and the keyword args for connect."""
    v5 = cfg.protocol == "5"
    if v5:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
    else:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=True,  # the outbox, not the broker session, is what keeps results
        )
    if cfg.address.tls:
        tls = cfg.tls
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(tls, key)
            if path is not None and not path.is_file():
                raise ConfigError(f"mqtt.tls.{key}: {path}: no such file")
        try:
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"mqtt.tls: cannot load the certificates ({exc})") from None
        client.tls_insecure_set(tls.insecure)
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password())
    # paho types these as int; fractions of a second work and keep tests fast.
    client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
    client.max_inflight_messages_set(cfg.inflight)
    connect_kw: dict[str, Any] = {"host": host, "port": port, "keepalive": cfg.keepalive_s}
    if v5:
        connect_kw["clean_start"] = True
    return client, connect_kw


class MqttLink:
    """Connection, retained status and the ordered, acknowledged publishing of the outbox."""

    def __init__(
        self,
        cfg: MqttConfig,
        *,
        device: str,
        client_id: str,
        host: str,
        port: int,
        outbox: Outbox,
        model: dict[str, Any] | None = None,
        software: str = "",
        on_published: Callable[[StoredMessage], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.client_id = client_id
        self.outbox = outbox
        self.model = model
        self.software = software
        self.on_published = on_published
        self.status_topic = topic(cfg.topic_prefix, device, "status")
        self.health_topic = topic(cfg.topic_prefix, device, "health")
        self.connected = False
        self.connects = 0
        self.disconnects = 0
        self.published = 0
        self.last_error: str | None = None
        self._warnings: dict[str, dict[str, Any]] = {}
        self._status_dirty = False
        self._status_sent_at = 0.0
        self._lock = threading.Lock()
        self._acks: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: dict[int, StoredMessage] = {}
        self._last_handed = 0
        # Refused rows are offered again once per connection: those with seq in
        # (_refused_cursor, _refused_up_to] are still to be re-sent.
        self._refused_cursor = 0
        self._refused_up_to = 0
        # Acknowledged rows not yet deleted: (ack time, connection number, row); and rows to
        # send again because the connection dropped before they settled.
        self._settling: list[tuple[float, int, StoredMessage]] = []
        self._resend: list[StoredMessage] = []
        self._reported: set[int] = set()  # seqs already given to on_published
        self._refused_here: set[int] = set()  # seqs the broker refused in this process
        self._log = _RateLimitedLog()
        self._client, self._connect_kw = make_client(cfg, client_id, host, port)
        self._client.will_set(
            self.status_topic,
            self._status("offline", "connection lost (last will)"),
            qos=1,
            retain=True,
        )
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._thread = threading.Thread(
            target=self._publish_loop, name="mqtt-publisher", daemon=True
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        host, port = self._connect_kw["host"], self._connect_kw["port"]
        log.info("connecting to %s:%s as %s", host, port, self.client_id)
        self._client.connect_async(**self._connect_kw)
        self._client.loop_start()  # retries the first connection too, with the backoff
        self._thread.start()

    def flush(self, timeout: float | None, stop: threading.Event | None = None) -> bool:
        """Wait until the outbox is empty; with a timeout, give up early while disconnected."""
        if timeout is None:
            return self.outbox.wait_empty(None, stop)
        deadline = time.monotonic() + timeout
        while self.outbox.pending and time.monotonic() < deadline:
            if not self.connected or (stop is not None and stop.is_set()):
                return False
            self.outbox.wait_empty(min(0.2, max(0.0, deadline - time.monotonic())))
        return self.outbox.pending == 0

    def close(
        self, state: State = "stopped", reason: str | None = None, timeout: float = 5.0
    ) -> None:
        """Stop publishing, leave a retained final status if the broker is there, disconnect."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self.connected:
            info = self._client.publish(
                self.status_topic, self._status(state, reason), qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("final status %r not confirmed: %s", state, exc)
        else:
            log.warning("not connected at exit: status %r not published", state)
        self._client.disconnect()
        self._client.loop_stop()

    # -- status and health ---------------------------------------------------------------------

    def set_warnings(self, warnings: dict[str, dict[str, Any]]) -> None:
        """Replace the current warnings; the retained status is republished when they change."""
        with self._lock:
            if warnings != self._warnings:
                self._warnings = dict(warnings)
                self._status_dirty = True
        self._wake.set()

    @property
    def warnings(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"code": code, **w} for code, w in sorted(self._warnings.items())]

    def _status(self, state: State, reason: str | None = None) -> bytes:
        return status_payload(
            device=self.device,
            state=state,
            client_id=self.client_id,
            reason=reason,
            warnings=self.warnings,
            model=self.model,
            software=self.software,
        )

    def publish_health(self, payload: bytes) -> None:
        """Health is a sample, not a record: QoS 0, not retained, skipped while disconnected."""
        if self.connected:
            self._client.publish(self.health_topic, payload, qos=0, retain=False)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def wake(self) -> None:
        """A new row is in the outbox."""
        self._wake.set()

    # -- paho callbacks (network thread) -------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            # Frigate marks itself connected here regardless; a refused CONNACK is not a link.
            self.connected = False
            self.last_error = f"broker refused the connection: {reason_code}"
            log.error("%s (client id %s)", self.last_error, self.client_id)
            return
        self.connected = True
        self.connects += 1
        self.last_error = None
        if self.connects > 1:  # the first connection sends every row, refused ones included
            self._refused_cursor, self._refused_up_to = 0, self._last_handed
        log.info(
            "connected (connection %d); %d results pending", self.connects, self.outbox.pending
        )
        client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        with self._lock:
            self._status_dirty = False
            self._status_sent_at = time.monotonic()
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError:`: the exception is the cause.
        self.last_error = describe_connect_error(sys.exc_info()[1], *self._address())
        self._log(logging.WARNING, f"connection failed: {self.last_error}; retrying")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        was = self.connected
        self.connected = False
        if was:
            self.disconnects += 1
            if self._stop.is_set():
                log.info("disconnected")
                return
            log.warning(
                "disconnected (%s); %d results wait in the outbox", reason_code, self.outbox.pending
            )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        # Called with paho's internal lock held: hand over, do no work (and take no lock) here.
        self._acks.put((mid, reason_code))
        self._wake.set()

    def _address(self) -> tuple[str, int]:
        return self._connect_kw["host"], self._connect_kw["port"]

    # -- the publisher thread ------------------------------------------------------------------

    def _publish_loop(self) -> None:
        yield_to_inference()
        while not self._stop.is_set():
            try:
                self._handle_acks()
                self._settle()
                self._maybe_status()
                self._send_more()
            except Exception:  # a bug here must not silently stop publishing: log and go on
                log.exception("publisher loop error")
                time.sleep(0.5)
            self._wake.wait(0.2 if self._settling else 0.5)
            self._wake.clear()
        self._handle_acks()
        self._settle()

    def _handle_acks(self) -> None:
        done: list[StoredMessage] = []
        while True:
            try:
                mid, reason_code = self._acks.get_nowait()
            except queue.Empty:
                break
            message = self._inflight.pop(mid, None)
            if message is None:
                continue  # a status message's ack
            if getattr(reason_code, "is_failure", False):
                self._log(
                    logging.ERROR,
                    f"the broker refused results ({reason_code}): they stay in the outbox; "
                    f"its ACL must let user {self.cfg.username or '(anonymous)'} write "
                    f"{message.topic}",
                )
                self.outbox.refuse(message.seq, str(reason_code))
                self._refused_here.add(message.seq)
                continue
            done.append(message)
        now = time.monotonic()
        for m in done:
            self._settling.append((now, self.connects, m))
            if m.seq not in self._reported:  # not again for a row sent again
                self._reported.add(m.seq)
                self.published += 1
                if self.on_published is not None:
                    self.on_published(m)

    def _settle(self) -> None:
        """Delete acknowledged rows whose connection outlived their PUBACK by SETTLE_S; queue
        the rows of a connection that dropped sooner to be sent again."""
        if not self._settling:
            return
        now = time.monotonic()
        ready, waiting = [], []
        for entry in self._settling:
            at, connection, message = entry
            if connection != self.connects or not self.connected:
                self._resend.append(message)
            elif now - at >= SETTLE_S:
                ready.append(message)
            else:
                waiting.append(entry)
        self._settling = waiting
        if ready:
            self.outbox.ack(m.seq for m in ready)
            self._reported.difference_update(m.seq for m in ready)
            self._refused_here.difference_update(m.seq for m in ready)

    @property
    def settled(self) -> bool:
        """Every row in the outbox was offered to the broker by this process and answered:
        acknowledged and deleted, or refused (rows refused by an earlier run are offered
        again first)."""
        busy = self._inflight or self._settling or self._resend
        return not busy and self.outbox.pending == len(self._refused_here)

    def _maybe_status(self) -> None:
        with self._lock:
            due = self._status_dirty and (
                time.monotonic() - self._status_sent_at >= _STATUS_MIN_INTERVAL_S
            )
        if due and self.connected:
            self._client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
            with self._lock:
                self._status_dirty = False
                self._status_sent_at = time.monotonic()

    def _send_more(self) -> None:
        room = self.cfg.inflight - len(self._inflight)
        if not self.connected or room <= 0:
            return
        while self._resend and room > 0:
            if not self._hand(self._resend[0]):
                return
            self._resend.pop(0)
            room -= 1
        if self._refused_cursor < self._refused_up_to:
            flying = {m.seq for m in self._inflight.values()}
            again = self.outbox.peek_refused(self._refused_cursor, self._refused_up_to, room)
            if not again:
                self._refused_cursor = self._refused_up_to
            for message in again:
                if message.seq not in flying and not self._hand(message):
                    return
                self._refused_cursor = message.seq
                room -= 1
        for message in self.outbox.peek(self._last_handed, room):
            if not self._hand(message):
                return
            self._last_handed = message.seq

    def _hand(self, message: StoredMessage) -> bool:
        """Give one row to paho; False if paho cannot take it now."""
        info = self._client.publish(message.topic, message.payload, qos=self.cfg.qos)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("publish of seq %d deferred: %s", message.seq, mqtt.error_string(info.rc))
            return False
        # NO_CONN: paho queued it and sends it, in order, after the reconnect.
        self._inflight[info.mid] = message
        return True
