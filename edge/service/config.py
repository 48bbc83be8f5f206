"""The daemon's configuration: a TOML file validated by pydantic, with command-line overrides.

Unknown keys are rejected, every number is bounded, and an error names the file, the key path
and the bad value (``device.toml: mqtt.keepalive_s: must be <= 3600; got 7200``). Secrets never
live in the file itself: ``password_env`` names an environment variable, ``password_file`` a
file (systemd credentials, Docker secrets).
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator

from edge.errors import BlastscopeError
from edge.service.config_types import FilePath, SourceBase, StrictConfig
from edge.service.outbox import MIN_RESERVE_BYTES
from edge.service.sources import KINDS, SourceSpecError, config_union
from edge.service.sources import parse_source_spec as _parse_source_spec

DEVICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# MQTT topic levels: no wildcards, no leading/trailing slash, no empty level.
PREFIX_PATTERN = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class ConfigError(BlastscopeError):
    """A configuration file or flag that cannot be used."""


if TYPE_CHECKING:
    SourceConfig = SourceBase  # what the code may rely on; each kind narrows it
else:
    SourceConfig = config_union()  # every kind in edge.service.sources, by its `kind` key


class TlsConfig(StrictConfig):
    ca_file: FilePath | None = None  # None: the system's trust store
    cert_file: FilePath | None = None  # client certificate (mutual TLS)
    key_file: FilePath | None = None
    insecure: bool = False  # skip hostname verification: only for a lab's self-signed test broker

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        return self


class BrokerAddress(StrictConfig):
    scheme: Literal["mqtt", "mqtts", "embedded"]
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)  # 0 with "embedded": a free port

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    @property
    def url(self) -> str:
        if self.scheme == "embedded":
            return "embedded" if self.port == 0 else f"embedded:{self.port}"
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_broker_url(text: str) -> BrokerAddress:
    """``mqtt://HOST[:PORT]``, ``mqtts://HOST[:PORT]``, ``embedded`` or ``embedded:PORT``."""
    text = text.strip()
    if text == "embedded" or text.startswith("embedded:"):
        port_text = text.partition(":")[2]
        if port_text and not port_text.isdigit():
            raise ValueError(f"embedded broker port {port_text!r} is not a number")
        port = int(port_text or 0)
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is out of range 1-65535")
        return BrokerAddress(scheme="embedded", port=port)
    parts = urlsplit(text)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError("expected mqtt://HOST:PORT, mqtts://HOST:PORT or embedded")
    port_text = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    if port_text and not port_text.isdigit():
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text) if port_text else DEFAULT_PORTS[parts.scheme]
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1-65535")
    if not parts.hostname:
        raise ValueError("no host name")
    if parts.username or parts.password:
        raise ValueError("credentials do not belong in the URL: use username and password_env")
    if parts.path not in ("", "/"):
        raise ValueError(f"unexpected path {parts.path!r}")
    return BrokerAddress(
        scheme=parts.scheme,  # type: ignore[arg-type]
        host=parts.hostname,
        port=port,
    )


class MqttConfig(StrictConfig):
    broker: str = "embedded"
    topic_prefix: str = Field(default="blastscope", pattern=PREFIX_PATTERN, max_length=128)
    # Default blastscope-<device>: unique per device (a shared id makes status flap).
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    qos: Literal[0, 1, 2] = 1
    # MQTT 5: a broker that refuses a publish (its ACL) says so in the PUBACK's reason code.
    # Under 3.1.1 the broker acknowledges a refused publish like a delivered one.
    protocol: Literal["3.1.1", "5"] = "5"
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    username: str | None = Field(default=None, min_length=1)
    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    password_file: FilePath | None = None
    tls: TlsConfig = TlsConfig()
    reconnect_min_s: float = Field(default=1.0, ge=0.05, le=600)
    reconnect_max_s: float = Field(default=60.0, ge=0.05, le=3600)
    inflight: int = Field(default=20, ge=1, le=1000)  # results sent and awaiting PUBACK
    shutdown_flush_s: float = Field(default=10.0, ge=0, le=600)  # on SIGTERM: time to drain

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str) -> str:
        return parse_broker_url(value).url

    @field_validator("qos", mode="before")
    @classmethod
    def _qos_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # True == 1 in Python: a Literal[0, 1, 2] would take it
            raise ValueError("should be 0, 1 or 2, not a boolean")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if self.password_env and self.password_file:
            raise ValueError("set password_env or password_file, not both")
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("a password needs a username")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s {self.reconnect_max_s} is below reconnect_min_s "
                f"{self.reconnect_min_s}"
            )
        if self.tls != TlsConfig() and not self.address.tls:
            raise ValueError(f"tls settings need an mqtts:// broker; broker is {self.broker!r}")
        return self

    @property
    def address(self) -> BrokerAddress:
        return parse_broker_url(self.broker)

    def password(self) -> str | None:
        """The broker password from the environment or a file (never from the config text)."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(
                    f"mqtt.password_env: environment variable {self.password_env} is not set"
                )
            return value
        if self.password_file:
            try:
                return self.password_file.read_text().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(
                    f"mqtt.password_file: {self.password_file} cannot be read ({exc.strerror})"
                ) from None
        return None


class OutboxConfig(StrictConfig):
    path: FilePath | None = None  # default: $STATE_DIRECTORY or ~/.local/state/blastscope
    max_messages: int = Field(default=100_000, ge=10, le=10_000_000)
    # block: stop classifying until the broker drains it (nothing lost, capture pauses);
    # drop_oldest / reject_new: keep classifying, losing results, always reported on status.
    when_full: Literal["block", "drop_oldest", "reject_new"] = "block"
    # Disk space held back next to the database and given up when the disk is full, so that
    # acknowledged results can still be deleted (SQLite needs room to delete) and the outbox
    # drains once the broker is back.
    # 0 turns it off; otherwise at least 1 MiB, the most a checkpoint can add to the database.
    reserve_bytes: int = Field(default=4 << 20, ge=0, le=1 << 30)
    # Records of processed files older than this are pruned.
    retention_days: float = Field(default=30.0, gt=0, le=3650)

    @field_validator("reserve_bytes")
    @classmethod
    def _reserve_big_enough(cls, value: int) -> int:
        if 0 < value < MIN_RESERVE_BYTES:
            raise ValueError(
                f"must be 0 (no reserve) or at least {MIN_RESERVE_BYTES} bytes, the most a "
                "checkpoint can add to the database on a full disk"
            )
        return value


class HealthConfig(StrictConfig):
    interval_s: float = Field(default=30.0, ge=0, le=86400)  # 0: no health messages
    http_port: int = Field(default=0, ge=0, le=65535)  # 0: no /healthz and /metrics server
    http_host: str = "127.0.0.1"
    latency_window: int = Field(default=1000, ge=10, le=100_000)
    # No pipeline progress for this long (a hung camera read, a stuck model): stop feeding the
    # systemd watchdog and report not alive, so systemd restarts the service.
    stall_s: float = Field(default=60.0, ge=0.5, le=3600)


def default_device_id() -> str:
    """The host name, cleaned to a valid device id (unique per device by construction)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()).strip("-.") or "device"
    return name[:64]


class DaemonConfig(StrictConfig):
    device: str = Field(default_factory=default_device_id, pattern=DEVICE_PATTERN)
    bundle: FilePath
    threads: int = Field(default=2, ge=1, le=64)
    queue_size: int = Field(default=4, ge=1, le=1000)
    source: SourceConfig
    mqtt: MqttConfig = MqttConfig()
    outbox: OutboxConfig = OutboxConfig()
    health: HealthConfig = HealthConfig()

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"blastscope-{self.device}"

    def outbox_path(self) -> Path:
        if self.outbox.path is not None:
            return self.outbox.path
        state = os.environ.get("STATE_DIRECTORY")  # set by systemd's StateDirectory=
        if state:
            root = Path(state.split(":")[0])
        else:
            xdg = os.environ.get("XDG_STATE_HOME")
            root = (Path(xdg) if xdg else Path.home() / ".local" / "state") / "blastscope"
        return root / f"outbox-{self.device}.sqlite3"


def parse_source_spec(text: str) -> dict[str, Any]:
    """``folder:PATH``, ``camera:N``, ... (edge.service.sources.spec_help) -> a source table."""
    try:
        return _parse_source_spec(text)
    except SourceSpecError as exc:
        raise ConfigError(str(exc)) from None


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge override into base (tables merge, everything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


_PATH_KEYS = (
    ("bundle",),
    ("source", "path"),
    ("outbox", "path"),
    ("mqtt", "password_file"),
    ("mqtt", "tls", "ca_file"),
    ("mqtt", "tls", "cert_file"),
    ("mqtt", "tls", "key_file"),
)


def _resolve_paths(data: dict[str, Any], root: Path) -> dict[str, Any]:
    """Relative paths in a config file are relative to the file, not the working directory."""
    for keys in _PATH_KEYS:
        table: Any = data
        for key in keys[:-1]:
            table = table.get(key) if isinstance(table, dict) else None
        if isinstance(table, dict) and isinstance(table.get(keys[-1]), str):
            p = Path(table[keys[-1]]).expanduser()
            table[keys[-1]] = str(p if p.is_absolute() else root / p)
    return data


def _describe(err: dict[str, Any], data: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    # A discriminated union puts the tag into the path (source.folder.path): drop it.
    if len(loc) > 1 and loc[0] == "source" and loc[1] in KINDS:
        del loc[1]
    where = ".".join(loc) or "(top level)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown key (check its spelling and the table it is in)"
    if kind == "missing":
        hint = " (give --bundle DIR or set bundle = ...)" if where == "bundle" else ""
        hint = " (give --source or add a [source] table)" if where == "source" else hint
        return f"{where}: missing{hint}"
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        return f"{where}: kind must be one of {', '.join(KINDS)}; got " + repr(
            err.get("input", {}).get("kind") if isinstance(err.get("input"), dict) else None
        )
    msg = msg.replace("Input should be", "should be")
    value = err.get("input")
    if isinstance(value, dict):  # a check across several keys of a table: the message says it
        return f"{where}: {msg}"
    if isinstance(value, str):
        value = redact_url(value)
    return f"{where}: {msg}; got {value!r}"


_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


def redact_url(text: str) -> str:
    """A URL with any user name and password replaced by ``***`` (safe to print or log)."""
    return _URL_USERINFO.sub(r"\g<scheme>***@", text)


def validate(data: dict[str, Any], origin: str = "config") -> DaemonConfig:
    """Validate merged config data; raise ConfigError listing every problem with its key path."""
    try:
        return DaemonConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(dict(e), data) for e in exc.errors()]
        raise ConfigError(f"{origin}: " + "; ".join(problems)) from None


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> DaemonConfig:
    """Read a TOML config (or none), apply command-line overrides, validate."""
    data: dict[str, Any] = {}
    origin = "command line"
    overrides = overrides or {}
    if path is not None:
        p = Path(path)
        data = _resolve_paths(read_toml(p), p.resolve().parent)
        origin = str(path)
    flag_source, file_source = overrides.get("source"), data.get("source")
    if (
        isinstance(flag_source, dict)
        and isinstance(file_source, dict)
        and "kind" in flag_source
        and flag_source["kind"] != file_source.get("kind")
    ):
        # --source camera:0 over a file's folder source: a new source, not a patched one.
        data = {k: v for k, v in data.items() if k != "source"}
    return validate(merge(data, overrides), origin)


def config_warnings(cfg: DaemonConfig, origin: Path | None = None) -> list[str]:
    """Settings that work but invite a silent failure; `origin`'s sibling configs are compared.

    Two configs with one MQTT client id make the broker disconnect one device whenever the
    other connects, and each reconnect flaps the other's status (Frigate #3575).
    """
    out: list[str] = []
    if cfg.mqtt.qos == 0:
        out.append(
            "mqtt.qos = 0: the broker does not acknowledge QoS 0, so a result is deleted from "
            "the outbox once sent and is lost if the connection drops; use qos = 1"
        )
    if cfg.mqtt.protocol == "3.1.1" and cfg.mqtt.address.scheme != "embedded":
        out.append(
            'mqtt.protocol = "3.1.1": a broker acknowledges a publish its ACL refused as if it '
            'were delivered, so refused results are lost without a sign; use protocol = "5"'
        )
    if origin is not None:
        for other in sorted(origin.resolve().parent.glob("*.toml")):
            if other.resolve() == origin.resolve():
                continue
            try:
                sibling = load_config(other)
            except ConfigError:
                continue  # not a device config, or a broken one: `edge check` it on its own
            if sibling.client_id == cfg.client_id:
                out.append(
                    f"mqtt client id {cfg.client_id!r} is also used by {other}: the broker "
                    "disconnects one device whenever the other connects; give each device its "
                    "own device id (or mqtt.client_id)"
                )
    return out
