"""`edge`: the device-side command line (run, check, watch, inspect, ...)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from edge.cli_support import add_command, new_parser, run_cli


def _inspect(args: argparse.Namespace) -> int:
    from edge.bundle import load_bundle
    from edge.golden import check_golden

    bundle = load_bundle(args.bundle)
    m = bundle.manifest
    if args.json:
        print(json.dumps(m.model_dump(mode="json"), indent=2))
        return 0
    print(f"bundle     {bundle.path}  ({m.name}, form {m.form}, {m.quantization})")
    print(f"labels     {', '.join(m.labels)}")
    print(f"input      {m.input.shape} {m.input.dtype}  range {m.input_range}")
    print(f"output     {m.output.shape} {m.output.dtype}")
    print(f"preprocess {bundle.spec.to_json()}  sha256 {bundle.spec.sha256()[:12]}")
    print(f"model      sha256 {m.model_sha256[:12]}  verification {m.verification.status}")
    report = check_golden(bundle)
    if report is not None:
        print(report.summary())
        return 0 if report.passed else 1
    return 0


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
