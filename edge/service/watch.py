"""``edge watch``: the reference lab-dashboard subscriber.

Subscribes to every device's status, result and health topics (QoS 1) and shows a live table
of devices (online / offline / stopped), their latest results and per-label counts, with a
line for every status change. Results are de-duplicated on ``message_id`` (a replay after an
outage may deliver one twice) and gaps in ``seq`` are counted. Not a terminal: one line per
event; ``--json``: one JSON object per message, plus ``{"event": ...}`` objects for the
connection and for stale device views.

The connection to the broker is shown too (connecting, connected, refused, lost): after a
disconnect every device view is marked stale, because a device may have gone offline while
nobody was listening; the retained status the broker resends after the reconnect clears it.
Memory stays bounded on a dashboard left running for months: recent messages and recent
message ids are kept, older ones forgotten.

``--session NAME`` makes the broker keep a session (fixed client id, MQTT 5 clean start off,
a session expiry) so QoS 1 results published while watch was away are delivered when it
returns.

Exit codes: 0 after ``--count`` results, or at ``--timeout`` / Ctrl-C once connected; 1 when
it never connected, when the broker refused the credentials, or when ``--timeout`` came
before ``--count`` results.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import ssl
import sys
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.contracts.messages import utc_iso
from edge.errors import BlastscopeError
from edge.service.config import MqttConfig
from edge.service.mqtt_link import make_client

log = logging.getLogger(__name__)

# Duplicates come from the daemon resending what it sent but had no PUBACK for: at most its
# in-flight window (mqtt.inflight, <= 1000) per device, so 4096 recent ids per device is ample.
MAX_IDS_PER_DEVICE = 4096
RECENT_MESSAGES = 1000  # Watcher.messages: the latest parsed messages, for callers that look
DEFAULT_SESSION_EXPIRY_S = 7 * 24 * 3600
_MAX_SESSION_EXPIRY_S = 0xFFFFFFFF  # MQTT 5: the largest value, "never expires"
_SESSION_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CREDENTIALS_HINT = "check --username/--password-env"
# CONNACK reason codes that retrying with the same settings cannot fix: the end, not a retry.
_FINAL_REFUSALS = {
    133: "check --session",  # client identifier not valid
    134: _CREDENTIALS_HINT,  # bad user name or password
    135: _CREDENTIALS_HINT,  # not authorized (mosquitto's answer to a wrong password)
    140: _CREDENTIALS_HINT,  # bad authentication method
}
_LOST_REASONS = {
    128: "connection closed",  # paho's "Unspecified error" for a socket the peer closed
    142: "session taken over (another edge watch runs with the same --session)",
}


class WatchError(BlastscopeError):
    """`edge watch` ends without what it was asked for (no connection, refused, too few)."""


def _clock(iso: str | None = None) -> str:
    if iso:
        try:
            when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
            return when.strftime("%H:%M:%S")
        except ValueError:
            pass
    return time.strftime("%H:%M:%S")


def format_result_line(p: dict[str, Any]) -> str:
    """One human line for a result payload (shared by `edge run --print`)."""
    frame = p.get("frame", {})
    where = str(frame.get("origin", "?")).rsplit("/", 1)[-1]
    head = f"{_clock(p.get('classified_at'))} {p.get('device')} #{p.get('seq')}"
    if p.get("kind") == "error":
        err = p.get("error", {})
        reason = str(err.get("reason", "")).rsplit(": ", 1)[-1]
        return f"{head} ERROR {err.get('stage')} {where}: {reason}"
    probs = " ".join(f"{k} {v:.3f}" for k, v in p.get("probabilities", {}).items())
    total = p.get("timing_ms", {}).get("total")
    ms = f"  {total:.1f} ms" if isinstance(total, int | float) else ""
    return (
        f"{head} {p.get('kind')} {where}  {p.get('label')} {p.get('score', 0):.3f}  [{probs}]{ms}"
    )


class RecentIds:
    """The last `size` message ids, least recently seen forgotten first (an LRU set)."""

    def __init__(self, size: int = MAX_IDS_PER_DEVICE) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, mid: object) -> bool:
        return mid in self._ids

    def add(self, mid: str) -> bool:
        """Remember `mid`; False if it was already remembered (a duplicate)."""
        if mid in self._ids:
            self._ids.move_to_end(mid)
            return False
        self._ids[mid] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


@dataclass(frozen=True)
class Session:
    """A persistent broker session: fixed client id, clean start off, an expiry."""

    name: str
    expiry_s: int = DEFAULT_SESSION_EXPIRY_S

    @property
    def client_id(self) -> str:
        return f"blastscope-watch-{self.name}"

    def connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.expiry_s
        return props


def session_from_flags(name: str | None, expiry_s: int | None) -> Session | None:
    """The Session for `--session NAME [--session-expiry S]`, or None without --session."""
    if name is None:
        if expiry_s is not None:
            raise WatchError(f"--session-expiry {expiry_s}: it needs --session NAME")
        return None
    if not _SESSION_NAME.match(name):
        raise WatchError(f"--session {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    expiry = DEFAULT_SESSION_EXPIRY_S if expiry_s is None else expiry_s
    if not 1 <= expiry <= _MAX_SESSION_EXPIRY_S:
        raise WatchError(
            f"--session-expiry {expiry}: give 1 to {_MAX_SESSION_EXPIRY_S} seconds "
            f"(default {DEFAULT_SESSION_EXPIRY_S}, 7 days)"
        )
    return Session(name, expiry)


@dataclass
class DeviceView:
    state: str = "?"
    since: str = ""
    reason: str = ""
    stale_since: str = ""  # set when the broker connection was lost; cleared by a new status
    warnings: list[dict[str, Any]] = field(default_factory=list)
    results: int = 0
    errors: int = 0
    duplicates: int = 0
    gaps: int = 0
    last_seq: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    latest: deque[str] = field(default_factory=lambda: deque(maxlen=3))
    ids: RecentIds = field(default_factory=RecentIds)
    health: dict[str, Any] = field(default_factory=dict)

    @property
    def shown_state(self) -> str:
        return f"{self.state} (stale since {self.stale_since})" if self.stale_since else self.state


@dataclass(frozen=True)
class Connection:
    """The watcher's link to the broker, as last reported by paho's callbacks."""

    state: str = "idle"  # idle | connecting | connected | refused | lost
    reason: str = ""
    hint: str = ""
    since: str = ""
    final: bool = False  # refused for good: retrying with the same settings cannot help
    ever_connected: bool = False


class Watcher:
    """Collects what devices publish; prints lines or a table; thread-safe."""

    def __init__(
        self,
        prefix: str,
        device: str | None,
        mode: str = "lines",  # lines | json | table | quiet
        out: TextIO | None = None,
    ) -> None:
        self.prefix = prefix
        self.device = device
        self.mode = mode
        self.out = out if out is not None else sys.stdout  # looked up now: it may be redirected
        self.broker = ""  # set by connect_watcher, for the connection lines
        self.devices: dict[str, DeviceView] = {}
        self.events: deque[str] = deque(maxlen=12)
        self.distinct_results = 0
        self.messages: deque[tuple[str, dict[str, Any]]] = deque(maxlen=RECENT_MESSAGES)
        self.link = Connection()
        self.version = 0  # bumped on every change, so a waiter can tell something happened
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)

    @property
    def topics(self) -> list[str]:
        who = self.device or "+"
        return [f"{self.prefix}/{who}/{kind}" for kind in ("status", "result", "health")]

    def handle(self, topic: str, raw: bytes) -> None:
        parts = topic.split("/")
        device, kind = parts[-2], parts[-1]
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = {"unparsed": raw.decode("utf-8", "replace")}
        with self.changed:
            self.messages.append((topic, payload))
            view = self.devices.setdefault(device, DeviceView())
            if self.mode == "json":
                self._emit(json.dumps({"topic": topic, "payload": payload}))
            if kind == "status":
                self._status(device, view, payload)
            elif kind == "result":
                self._result(view, payload)
            elif kind == "health":
                view.health = payload
            self._notify()

    def connection(
        self, state: str, reason: str = "", *, hint: str = "", final: bool = False
    ) -> None:
        """Record a connection change (from paho's callbacks) and show it once."""
        with self.changed:
            old = self.link
            if state == "lost" and old.state != "connected":
                return  # paho also reports the socket closing after a refused CONNACK
            if (state, reason) == (old.state, old.reason):
                return  # the same failure on every retry: said once is enough
            self.link = Connection(
                state, reason, hint, _clock(), final, old.ever_connected or state == "connected"
            )
            record: dict[str, Any] = {
                "event": "connection",
                "state": state,
                "reason": reason or None,
            }
            if hint:
                record["hint"] = hint
            if state == "refused":
                record["final"] = final
            line = self.describe_link()
            log.debug("watch: %s", line)
            self._event(f"{_clock()} {line}", {**record, "broker": self.broker})
            if state == "lost":
                self._mark_stale()
            self._notify()

    def subscription_refused(self, topics: list[str]) -> None:
        with self.changed:
            self._event(
                f"{_clock()} subscription refused for {', '.join(topics)} (check the broker ACL)",
                {"event": "subscription", "refused": topics},
            )
            self._notify()

    def describe_link(self) -> str:
        """The connection as one line (lines mode, and the table's header)."""
        c, broker = self.link, self.broker or "the broker"
        if c.state == "connecting":
            if c.reason:
                return f"connecting to {broker} failed: {c.reason}; retrying"
            return f"connecting to {broker}"
        if c.state == "connected":
            return f"connected to {broker}" + (f" ({c.reason})" if c.reason else "")
        if c.state == "refused":
            hint = f" ({c.hint})" if c.hint else ""
            return f"refused: {c.reason}{hint}" + ("" if c.final else "; retrying")
        if c.state == "lost":
            return f"connection lost: {c.reason}; reconnecting"
        return "not connected"

    def _mark_stale(self) -> None:
        since = _clock()
        for name, view in sorted(self.devices.items()):
            if view.stale_since:
                continue
            view.stale_since = since
            self._event(
                f"{since} {name} status: {view.shown_state} (not connected to the broker)",
                {"event": "stale", "device": name, "state": view.state, "since": utc_iso()},
            )

    def _status(self, device: str, view: DeviceView, p: dict[str, Any]) -> None:
        state = str(p.get("state", "?"))
        reason = str(p.get("reason", ""))
        codes = sorted(w.get("code", "?") for w in p.get("warnings", []))
        before = (view.state, view.reason, sorted(w.get("code", "?") for w in view.warnings))
        was_stale, view.stale_since = view.stale_since, ""
        view.state, view.since, view.reason = state, _clock(p.get("at")), reason
        view.warnings = list(p.get("warnings", []))
        if before != (state, reason, codes):
            change = state if before[0] == "?" else f"{before[0]} -> {state}"
            line = f"{_clock()} {device} status: {change}"
            if reason:
                line += f" ({reason})"
            if codes:
                line += " warnings: " + ", ".join(codes)
            self._event(line)
        elif was_stale:
            self._event(
                f"{_clock()} {device} status: {state} (current again; stale since {was_stale})",
                {"event": "fresh", "device": device, "state": state},
            )

    def _result(self, view: DeviceView, p: dict[str, Any]) -> None:
        if not view.ids.add(str(p.get("message_id"))):
            view.duplicates += 1
            return
        seq = p.get("seq")
        if isinstance(seq, int):
            if view.last_seq and seq > view.last_seq + 1:
                view.gaps += seq - view.last_seq - 1
            view.last_seq = max(view.last_seq, seq)
        self.distinct_results += 1
        if p.get("kind") == "error":
            view.errors += 1
        else:
            view.results += 1
            view.labels[str(p.get("label"))] += 1
        line = format_result_line(p)
        view.latest.append(line)
        if self.mode == "lines":
            self._emit(line)

    def _event(self, line: str, record: dict[str, Any] | None = None) -> None:
        """A line for lines mode and the table; in JSON mode `record`, if there is one."""
        self.events.append(line)
        if self.mode == "lines":
            self._emit(line)
        elif self.mode == "json" and record is not None:
            self._emit(json.dumps(record))

    def _emit(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _notify(self) -> None:
        self.version += 1
        self.changed.notify_all()

    def table(self) -> str:
        with self._lock:
            rows = [
                f"{'DEVICE':<16} {'STATE':<8} {'SINCE':<8} {'RESULTS':>7} {'ERRORS':>6} "
                f"{'DUPS':>5} {'GAPS':>5}  COUNTS / LATEST"
            ]
            for name, v in sorted(self.devices.items()):
                counts = "  ".join(f"{k} {n}" for k, n in v.labels.most_common())
                rows.append(
                    f"{name:<16} {v.shown_state:<8} {v.since:<8} {v.results:>7} {v.errors:>6} "
                    f"{v.duplicates:>5} {v.gaps:>5}  {counts}"
                )
                for w in v.warnings:
                    rows.append(f"{'':<16} ! {w.get('code')}: {w.get('message')}")
                for line in v.latest:
                    rows.append(f"{'':<16}   {line}")
            rows.append("")
            rows.extend(self.events)
        return "\n".join(rows)

    def wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Block until `predicate()` holds (True) or timeout (False). It runs with the lock
        held: it may read attributes, not call table()."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def wait_for(self, results: int, timeout: float | None) -> bool:
        """Block until `results` distinct results have arrived (True) or timeout (False)."""
        return self.wait(lambda: self.distinct_results >= results, timeout)


def _exception_reason(exc: BaseException | None) -> tuple[str, str]:
    """(reason, hint) for the OSError paho caught while connecting."""
    if exc is None:
        return "unknown error", ""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLError):
        return reason, "check --ca-file and the broker's certificate"
    return reason, ""


def _bind(client: mqtt.Client, watcher: Watcher, subscribed: threading.Event, note: str) -> None:
    """paho callbacks that feed `watcher` messages and connection changes."""

    def on_connect(c, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            hint = _FINAL_REFUSALS.get(reason_code.value, "")
            watcher.connection("refused", str(reason_code), hint=hint, final=bool(hint))
            if hint:
                c.disconnect()  # stops paho's retries: the same credentials fail the same way
            return
        age = "resumed" if flags.session_present else "new"
        watcher.connection("connected", f"{age} {note}" if note else "")
        # Even a resumed session re-subscribes: the broker then resends the retained
        # statuses, which is what clears the views marked stale while disconnected.
        c.subscribe([(t, 1) for t in watcher.topics])

    def on_connect_fail(c, userdata):
        reason, hint = _exception_reason(sys.exc_info()[1])  # paho calls us inside its except
        watcher.connection("connecting", reason, hint=hint)

    def on_disconnect(c, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            return  # our own disconnect(): the end of the watch, or a final refusal
        reason = _LOST_REASONS.get(reason_code.value, str(reason_code))
        watcher.connection("lost", reason)

    def on_subscribe(c, userdata, mid, reason_codes, properties):
        refused = [t for t, rc in zip(watcher.topics, reason_codes, strict=False) if rc.is_failure]
        if refused:
            watcher.subscription_refused(refused)
        subscribed.set()

    def on_message(c, userdata, message):
        watcher.handle(message.topic, message.payload)

    client.on_connect = on_connect
    client.on_connect_fail = on_connect_fail
    client.on_disconnect = on_disconnect
    client.on_subscribe = on_subscribe
    client.on_message = on_message


def connect_watcher(
    cfg: MqttConfig, watcher: Watcher, session: Session | None = None
) -> tuple[mqtt.Client, threading.Event]:
    """A client feeding `watcher` (re-subscribing after every reconnect); the event is set
    once the first subscription is confirmed. With `session`, the broker keeps the session
    and queues QoS 1 messages while the client is away."""
    address = cfg.address
    if session is not None:
        cfg = cfg.model_copy(update={"protocol": "5"})  # clean start and session expiry: MQTT 5
        client_id = session.client_id
    else:
        client_id = f"blastscope-watch-{uuid.uuid4().hex[:8]}"
    client, connect_kw = make_client(cfg, client_id, address.host, address.port)
    if session is not None:
        connect_kw.update(clean_start=False, properties=session.connect_properties())
    subscribed = threading.Event()
    _bind(client, watcher, subscribed, f"session {client_id}" if session else "")
    watcher.broker = cfg.broker
    watcher.connection("connecting")
    client.connect_async(**connect_kw)
    client.loop_start()  # retries the first connection too (on_connect_fail says why not)
    return client, subscribed


def _never_connected(watcher: Watcher, waited: str) -> WatchError:
    c = watcher.link
    last = f"{c.reason} ({c.hint})" if c.hint else c.reason
    return WatchError(
        f"never connected to {watcher.broker} {waited} (last error: {last or 'no answer yet'}); "
        "check --broker and that the broker is running"
    )


def _refused(watcher: Watcher) -> WatchError:
    c = watcher.link
    return WatchError(f"{watcher.broker} refused the connection: {c.reason} ({c.hint})")


def _at_timeout(watcher: Watcher, count: int | None, timeout: float) -> int:
    if not watcher.link.ever_connected:
        raise _never_connected(watcher, f"in {timeout:g} s")
    if count is not None:
        raise WatchError(
            f"--count {count}: only {watcher.distinct_results} distinct results arrived "
            f"in --timeout {timeout:g} s"
        )
    return 0


def _draw_table(watcher: Watcher, cfg: MqttConfig, out: TextIO) -> None:
    who = f"{cfg.topic_prefix}/{watcher.device or '+'}"
    out.write(f"\x1b[H\x1b[2Jblastscope watch {cfg.broker} ({who}) - Ctrl-C quits\n")
    out.write(f"{watcher.link.since} {watcher.describe_link()}\n\n")
    out.write(watcher.table() + "\n")
    out.flush()


def watch(
    cfg: MqttConfig,
    device: str | None,
    mode: str,
    count: int | None,
    timeout: float | None,
    out: TextIO | None = None,
    session: Session | None = None,
) -> int:
    """Run the subscriber until Ctrl-C, `count` results, or `timeout` seconds.

    Returns 0 (see the module docstring); raises WatchError for the exit-1 cases.
    """
    watcher = Watcher(cfg.topic_prefix, device, mode, out)
    out = watcher.out
    client, _ = connect_watcher(cfg, watcher, session)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            seen = watcher.version
            if watcher.link.final:
                raise _refused(watcher)
            if count is not None and watcher.distinct_results >= count:
                return 0
            if deadline is not None and timeout is not None and time.monotonic() >= deadline:
                return _at_timeout(watcher, count, timeout)
            if mode == "table":
                _draw_table(watcher, cfg, out)
            left = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            watcher.wait(lambda: watcher.version != seen, left)  # noqa: B023 (read right here)
    except KeyboardInterrupt:
        if not watcher.link.ever_connected:
            raise _never_connected(watcher, "before Ctrl-C") from None
        return 0
    finally:
        client.disconnect()
        client.loop_stop()


__all__ = [
    "DEFAULT_SESSION_EXPIRY_S",
    "MAX_IDS_PER_DEVICE",
    "RECENT_MESSAGES",
    "Connection",
    "DeviceView",
    "RecentIds",
    "Session",
    "WatchError",
    "Watcher",
    "connect_watcher",
    "format_result_line",
    "session_from_flags",
    "watch",
]
