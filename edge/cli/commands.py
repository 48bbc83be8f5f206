"""`edge`: the device-side command line (run, check, watch, inspect, ...)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.cli.support import add_command, new_parser, run_cli


def _inspect(args: argparse.Namespace) -> int:
    from edge.model.bundle import load_bundle
    from edge.model.golden import check_golden

    bundle = load_bundle(args.bundle)
    m = bundle.manifest
    if args.json:
        print(json.dumps(m.model_dump(mode="json"), indent=2))
        return 0
    print(f"bundle     {bundle.path}  ({m.name}, form {m.form}, {m.quantization})")
    print(f"labels     {', '.join(m.labels)}")
    print(f"input      {m.input.shape} {m.input.dtype}  range {m.input_range}")
    print(f"output     {m.output.shape} {m.output.dtype}")
    print(f"head       {m.head.describe(m.output.shape[-1], len(m.labels))}")
    print(f"preprocess {bundle.spec.to_json()}  sha256 {bundle.spec.sha256()[:12]}")
    print(f"model      sha256 {m.model_sha256[:12]}  verification {m.verification.status}")
    report = check_golden(bundle)
    if report is not None:
        print(report.summary())
        return 0 if report.passed else 1
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line flags as a config fragment that overrides the file."""
    from edge.service.config import parse_source_spec

    ov: dict[str, Any] = {}
    a = {k: v for k, v in vars(args).items() if v is not None}
    if "bundle" in a:
        ov["bundle"] = str(Path(a["bundle"]).resolve())
    if "source" in a:
        ov["source"] = parse_source_spec(a["source"])
        if "path" in ov["source"]:
            ov["source"]["path"] = str(Path(ov["source"]["path"]).resolve())
    if a.get("watch"):
        ov.setdefault("source", {})["watch"] = True
    if a.get("reprocess"):
        ov.setdefault("source", {})["reprocess"] = True
    if "broker" in a:
        ov.setdefault("mqtt", {})["broker"] = a["broker"]
    if "device" in a:
        ov["device"] = a["device"]
    if "outbox" in a:
        ov.setdefault("outbox", {})["path"] = str(Path(a["outbox"]).resolve())
    if "threads" in a:
        ov["threads"] = a["threads"]
    return ov


def _load(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Any:
    from edge.service.config import load_config, merge

    return load_config(getattr(args, "config", None), merge(extra or {}, _overrides(args)))


def _demo_overrides(args: argparse.Namespace, state: Path) -> dict[str, Any]:
    from edge.demo import DEMO_BUNDLE, DEMO_DEVICE, DEMO_FRAMES, DEMO_INTERVAL_S
    from edge.errors import BlastscopeError

    if "bundle" not in vars(args) and not (DEMO_BUNDLE / "manifest.json").is_file():
        raise BlastscopeError(
            f"the demo bundle is not installed at {DEMO_BUNDLE}; give one with --bundle DIR"
        )
    return {
        "device": DEMO_DEVICE,
        "bundle": str(DEMO_BUNDLE),
        "source": {"kind": "folder", "path": str(DEMO_FRAMES), "interval_s": DEMO_INTERVAL_S},
        "mqtt": {"broker": "embedded", "reconnect_min_s": 0.2, "reconnect_max_s": 2},
        "outbox": {"path": str(state / "outbox.sqlite3")},
        "health": {"interval_s": 0},
    }


def _run(args: argparse.Namespace) -> int:
    from edge.errors import BlastscopeError

    if not ({"config", "bundle"} & set(vars(args)) or args.demo):
        raise BlastscopeError(
            "nothing to run: give --config FILE, or --bundle DIR --source SPEC, "
            "or try `edge run --demo`"
        )
    if args.demo:
        with tempfile.TemporaryDirectory(prefix="blastscope-demo-") as state:
            return _run_demo(_load(args, _demo_overrides(args, Path(state))))
    cfg = _load(args)
    from edge.service.startup import broker_for, run

    with broker_for(cfg) as live:
        _announce(cfg, live)
        config = getattr(args, "config", None)
        return run(
            live,
            once=args.once,
            on_published=_printer() if args.print else None,
            origin=Path(config) if config else None,
        )


def _announce(cfg: Any, live: Any) -> None:
    if live is not cfg:
        print(
            f"embedded broker on {live.mqtt.broker} (in another terminal: "
            f"edge watch --broker {live.mqtt.broker})",
            file=sys.stderr,
        )


def _printer() -> Any:
    from edge.service.watch import format_result_line

    def show(message: Any) -> None:
        print(format_result_line(json.loads(message.payload)), flush=True)

    return show


def _run_demo(cfg: Any) -> int:
    """The daemon, --once, with a real subscriber printing results as a dashboard gets them."""
    from edge.service.startup import broker_for, run
    from edge.service.watch import Watcher, connect_watcher

    delivered = 0

    def count(_message: Any) -> None:
        nonlocal delivered
        delivered += 1

    with broker_for(cfg) as live:
        _announce(cfg, live)
        watcher = Watcher(live.mqtt.topic_prefix, live.device, "lines")
        client, subscribed = connect_watcher(live.mqtt, watcher)
        subscribed.wait(5)
        try:
            code = run(live, once=True, on_published=count)
            watcher.wait_for(delivered, timeout=3)  # the broker forwards after its PUBACK
        finally:
            client.disconnect()
            client.loop_stop()
    print(f"demo: {delivered} results published and acknowledged by the broker", file=sys.stderr)
    return code


def _check(args: argparse.Namespace) -> int:
    from edge.service.check import run_checks

    config = getattr(args, "config", None)
    return run_checks(config, _overrides(args), sys.stdout, skip_source=args.skip_source)


def _watch(args: argparse.Namespace) -> int:
    from edge.service.config import ConfigError, MqttConfig, TlsConfig
    from edge.service.watch import session_from_flags, watch

    tls = TlsConfig(ca_file=Path(args.ca_file)) if args.ca_file else TlsConfig()
    try:
        cfg = MqttConfig(
            broker=args.broker,
            topic_prefix=args.prefix,
            username=args.username,
            password_env=args.password_env,
            tls=tls,
            reconnect_min_s=0.5,
            reconnect_max_s=10,
        )
    except ValueError as exc:
        first = exc.errors()[0] if hasattr(exc, "errors") else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"--{where or 'broker'}: {first['msg']}") from None
    session = session_from_flags(args.session, getattr(args, "session_expiry", None))
    mode = "json" if args.json else ("table" if sys.stdout.isatty() and not args.lines else "lines")
    return watch(cfg, args.device, mode, args.count, args.timeout, session=session)


def _source_help() -> str:
    from edge.service.sources import spec_help  # every kind in edge/service/sources/

    return spec_help()


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """Flags that override the config file; unset flags leave the file's values (no default)."""
    keep = argparse.SUPPRESS
    p.add_argument("--config", metavar="FILE", default=keep, help="device config (TOML)")
    p.add_argument("--bundle", metavar="DIR", default=keep, help="model bundle directory")
    p.add_argument(
        "--source",
        metavar="SPEC",
        default=keep,
        help=_source_help(),
    )
    p.add_argument("--watch", action="store_true", default=keep, help="keep watching a folder")
    p.add_argument(
        "--reprocess",
        action="store_true",
        default=keep,
        help="forget which files of the folder were processed and classify them all again",
    )
    p.add_argument(
        "--broker", metavar="URL", default=keep, help="mqtt://HOST:PORT, mqtts://... or embedded"
    )
    p.add_argument("--device", metavar="ID", default=keep, help="device id (else the host name)")
    p.add_argument("--outbox", metavar="FILE", default=keep, help="outbox database (SQLite)")
    p.add_argument("--threads", type=int, metavar="N", default=keep, help="LiteRT threads")


def build_parser() -> argparse.ArgumentParser:
    parser, sub = new_parser(
        "edge",
        "blastscope on the microscope: capture frames, classify white cells with a LiteRT "
        "bundle, publish every result over MQTT.",
    )
    p = add_command(
        sub, "inspect", "validate a model bundle and run its golden-image self-test", _inspect
    )
    p.add_argument("bundle", help="bundle directory (manifest.json + model.tflite)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")

    p = add_command(
        sub,
        "run",
        "the microscope-side daemon: capture, classify, publish every result over MQTT",
        _run,
        log_level=logging.INFO,
    )
    _add_config_flags(p)
    p.add_argument(
        "--once",
        action="store_true",
        help="process what the source holds, deliver every result (waiting for the broker), exit",
    )
    p.add_argument("--print", action="store_true", help="print each result once the broker has it")
    p.add_argument(
        "--demo",
        action="store_true",
        help="the bundled demo: sample frames, demo bundle, embedded broker, --once",
    )

    p = add_command(
        sub,
        "check",
        "validate config, bundle, outbox, source and broker; say what is wrong",
        _check,
    )
    _add_config_flags(p)
    p.add_argument("--skip-source", action="store_true", help="do not open the source")

    p = add_command(sub, "watch", "the reference lab-dashboard subscriber", _watch)
    p.epilog = (
        "Exit status: 0 after --count results, or at --timeout or Ctrl-C once connected; "
        "1 if it never connected (at --timeout or Ctrl-C), if the broker refused the "
        "credentials (at once: retrying cannot help), or if --timeout came before --count "
        "results; 2 for a usage error."
    )
    p.add_argument("--broker", required=True, metavar="URL", help="mqtt://HOST:PORT or mqtts://...")
    p.add_argument("--device", metavar="ID", help="only this device; if absent, all devices")
    p.add_argument("--prefix", default="blastscope", help="topic prefix")
    p.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per message, and {"event": "connection"|"stale"|"fresh", ...}',
    )
    p.add_argument("--lines", action="store_true", help="one line per event even on a terminal")
    p.add_argument("--count", type=int, metavar="N", help="exit after N distinct results")
    p.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds")
    p.add_argument("--username", help="broker user name")
    p.add_argument("--password-env", metavar="VAR", help="environment variable with the password")
    p.add_argument("--ca-file", metavar="FILE", help="CA certificate for mqtts://")
    p.add_argument(
        "--session",
        metavar="NAME",
        help="persistent session: client id blastscope-watch-NAME, MQTT 5 clean start off, "
        "so QoS 1 results published while watch was away arrive when it returns (up to the "
        "broker's max_queued_messages); if absent, a random client id and a clean session",
    )
    p.add_argument(
        "--session-expiry",
        type=int,
        metavar="S",
        default=argparse.SUPPRESS,
        help="with --session: seconds the broker keeps the session while watch is away "
        "(default: 604800, 7 days)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)
