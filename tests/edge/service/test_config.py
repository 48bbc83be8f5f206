"""The daemon's config: strict TOML, bounds, key-path errors, secrets, flag overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.cli import main
from edge.service.config import (
    ConfigError,
    load_config,
    parse_broker_url,
    parse_source_spec,
    validate,
)
from tests.edge.daemon_helpers import write_config

BASE = {"bundle": "b", "source": {"kind": "folder", "path": "frames"}}


def _error(data: dict) -> str:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as info:
        validate(data, "device.toml")
    return str(info.value)


def test_minimal_config_gets_safe_defaults() -> None:
    cfg = validate(BASE)
    assert cfg.mqtt.qos == 1 and cfg.mqtt.broker == "embedded"
    assert cfg.outbox.when_full == "block"
    assert cfg.client_id == f"blastscope-{cfg.device}"


def test_unknown_key_is_rejected_with_its_path() -> None:
    msg = _error({**BASE, "mqtt": {"brokr": "mqtt://h"}})
    assert msg.startswith("device.toml: mqtt.brokr: unknown key")


def test_out_of_bounds_numbers_name_key_and_value() -> None:
    msg = _error({**BASE, "threads": 100, "mqtt": {"keepalive_s": 7200}})
    assert "threads: should be less than or equal to 64; got 100" in msg
    assert "mqtt.keepalive_s: should be less than or equal to 3600; got 7200" in msg


def test_bad_broker_url_names_the_problem() -> None:
    msg = _error({**BASE, "mqtt": {"broker": "mqtt://broker:70000"}})
    assert "mqtt.broker: port 70000 is out of range 1-65535; got 'mqtt://broker:70000'" in msg
    assert "expected mqtt://HOST:PORT" in _error({**BASE, "mqtt": {"broker": "http://x"}})
    assert "credentials do not belong" in _error({**BASE, "mqtt": {"broker": "mqtt://u:p@h"}})


def test_source_kind_and_source_keys_are_checked() -> None:
    assert "source: kind must be one of camera, folder, picamera, video; got 'usb'" in _error(
        {**BASE, "source": {"kind": "usb"}}
    )
    msg = _error({**BASE, "source": {"kind": "picamera", "colour_gains": [0, 1.5]}})
    assert "source.colour_gains.0: should be greater than 0; got 0" in msg
    msg = _error({**BASE, "source": {"kind": "picamera", "lores_size": [4000, 3000]}})
    assert "lores_size [4000, 3000] must not exceed main_size [2028, 1520]" in msg


def test_missing_bundle_and_source_say_how_to_give_them() -> None:
    msg = _error({})
    assert "bundle: missing (give --bundle DIR" in msg and "source: missing (give --source" in msg


def test_secrets_come_from_environment_or_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = validate({**BASE, "mqtt": {"username": "scope-01", "password_env": "BS_TEST_PW"}})
    monkeypatch.delenv("BS_TEST_PW", raising=False)
    with pytest.raises(ConfigError, match="environment variable BS_TEST_PW is not set"):
        cfg.mqtt.password()
    monkeypatch.setenv("BS_TEST_PW", "s3cret")
    assert cfg.mqtt.password() == "s3cret"
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    cfg = validate({**BASE, "mqtt": {"username": "u", "password_file": str(secret)}})
    assert cfg.mqtt.password() == "from-file"
    assert "not both" in _error(
        {**BASE, "mqtt": {"username": "u", "password_env": "X", "password_file": "f"}}
    )
    assert "a password needs a username" in _error({**BASE, "mqtt": {"password_env": "X"}})
    assert "tls settings need an mqtts:// broker" in _error(
        {**BASE, "mqtt": {"broker": "mqtt://h", "tls": {"ca_file": "ca.crt"}}}
    )


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    cfg = load_config(write_config(tmp_path / "conf" / "device.toml", BASE))
    assert cfg.bundle == tmp_path / "conf" / "b"
    assert cfg.source.path == tmp_path / "conf" / "frames"  # type: ignore[union-attr]


def test_flags_override_the_file_and_a_new_source_kind_replaces_the_table(tmp_path: Path) -> None:
    conf = write_config(
        tmp_path / "device.toml",
        {**BASE, "source": {"kind": "folder", "path": "frames", "watch": True}},
    )
    cfg = load_config(conf, {"device": "scope-9", "source": {"kind": "camera", "index": 1}})
    assert cfg.device == "scope-9" and cfg.source.kind == "camera"
    cfg = load_config(conf, {"source": {"kind": "folder", "path": "/data"}})
    assert cfg.source.watch is True  # type: ignore[union-attr]


def test_url_and_source_spec_parsing() -> None:
    assert parse_broker_url("mqtts://lab").port == 8883
    assert parse_broker_url("mqtt://lab").port == 1883
    assert parse_broker_url("embedded:1999").port == 1999
    assert parse_source_spec("camera:2") == {"kind": "camera", "index": 2}
    assert parse_source_spec("picamera") == {"kind": "picamera"}
    with pytest.raises(
        ConfigError, match=r"expected camera:N, folder:PATH, picamera\[:N\] or video:PATH"
    ):
        parse_source_spec("usb:0")


def test_cli_reports_a_bad_config_in_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    conf = write_config(tmp_path / "device.toml", {**BASE, "mqtt": {"qos": 3}})
    assert main(["run", "--config", str(conf)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "mqtt.qos: should be 0, 1 or 2; got 3" in err
    bad = tmp_path / "broken.toml"
    bad.write_text("device = \n")
    assert main(["run", "--config", str(bad)]) == 1
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["run"]) == 1
    assert "edge run --demo" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("threads", True, "threads: should be a valid integer; got True"),
        ("threads", "2", "threads: should be a valid integer; got '2'"),
        ("threads", 2.0, "threads: should be a valid integer; got 2.0"),
        ("queue_size", "4", "queue_size: should be a valid integer; got '4'"),
    ],
)
def test_values_of_the_wrong_type_are_refused_not_coerced(key, value, expected) -> None:  # type: ignore[no-untyped-def]
    assert expected in _error({**BASE, key: value})


def test_booleans_and_qos_take_only_their_own_type() -> None:
    msg = _error({**BASE, "source": {"kind": "folder", "path": "f", "watch": "yes"}})
    assert "source.watch: should be a valid boolean; got 'yes'" in msg
    assert "mqtt.qos: should be 0, 1 or 2, not a boolean" in _error({**BASE, "mqtt": {"qos": True}})
    assert "mqtt.qos: should be 0, 1 or 2; got '1'" in _error({**BASE, "mqtt": {"qos": "1"}})
    assert "mqtt.protocol: should be '3.1.1' or '5'; got 5" in _error(
        {**BASE, "mqtt": {"protocol": 5}}
    )
    # What TOML cannot express otherwise still works: paths from strings, pairs from arrays,
    # an integer where a float is asked for.
    cfg = validate({**BASE, "source": {"kind": "picamera", "main_size": [1280, 960]},
                    "health": {"interval_s": 5}})  # fmt: skip
    assert cfg.source.main_size == (1280, 960) and cfg.health.interval_s == 5.0


def test_mqtt5_is_the_default_protocol() -> None:
    assert validate(BASE).mqtt.protocol == "5"


def test_a_too_small_disk_reserve_is_refused() -> None:
    msg = _error({**BASE, "outbox": {"reserve_bytes": 4096}})
    assert "outbox.reserve_bytes: must be 0 (no reserve) or at least 1048576 bytes" in msg


def test_settings_that_invite_silent_loss_are_warned_about(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from edge.service.config import config_warnings

    base = {**BASE, "device": "scope-01", "mqtt": {"broker": "mqtt://lab:1883"}}
    assert config_warnings(validate(base)) == []
    risky = {**base, "mqtt": {"broker": "mqtt://lab:1883", "qos": 0, "protocol": "3.1.1"}}
    said = " | ".join(config_warnings(validate(risky)))
    assert "mqtt.qos = 0" in said and 'mqtt.protocol = "3.1.1"' in said
    # Two device configs in one folder with the same client id: one kicks the other off.
    a = write_config(tmp_path / "scope-01.toml", base)
    b = write_config(tmp_path / "scope-01-copy.toml", base)
    write_config(tmp_path / "scope-02.toml", {**base, "device": "scope-02"})
    (tmp_path / "notes.toml").write_text("not = [a device config")
    said = " | ".join(config_warnings(load_config(a), a))
    assert "client id 'blastscope-scope-01' is also used by" in said and str(b) in said
    assert "scope-02.toml" not in said
    assert main(["check", "--config", str(a), "--skip-source"]) == 1  # the bundle is missing
    out = capsys.readouterr().out
    assert "warn config  mqtt client id 'blastscope-scope-01' is also used by" in out
