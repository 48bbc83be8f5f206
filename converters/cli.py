"""`converters`: LiteRT export, the int8-vs-float gate, bundle inspection and benchmarks."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from converters import calibration, golden_set
from converters.benchmark import DEFAULT_RUNS, DEFAULT_WARMUP, default_threads
from converters.conversion import QUANTIZATIONS
from converters.errors import ConverterError
from edge.cli import add_command, new_parser, run_cli


def _labels(text: str) -> list[str]:
    labels = [x.strip() for x in text.split(",")]
    if len(labels) < 2 or any(not x for x in labels):
        raise argparse.ArgumentTypeError(f"{text!r}: expected two or more comma-separated labels")
    return labels


def _percent(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"{text}: expected a percentage from 0 to 100")
    return value


def _warn(message: str) -> None:
    print(f"converters: warning: {message}", file=sys.stderr)


def _export(args: argparse.Namespace) -> int:
    from converters.export import ExportOptions, export

    result = export(
        ExportOptions(
            model=args.model,
            out=args.out,
            quantization=args.quantize,
            form=args.form,
            calibration=args.calibration,
            calibration_count=args.calibration_count,
            seed=args.seed,
            labels=args.labels,
            preprocessing=args.preprocessing,
            name=args.name,
            io_type=args.io_type,
            golden_count=args.golden_count,
            golden_atol=args.golden_atol,
            golden=args.golden,
            bias_correction=args.bias_correction,
            overwrite=args.overwrite,
        )
    )
    b = result.bundle
    m = b.manifest
    size = (b.path / m.model_file).stat().st_size
    inp = b.model.input
    quant = f" scale {inp.scale:.4g} zero_point {inp.zero_point}" if inp.quantized else ""
    print(f"wrote {b.path}  ({m.name}: {m.quantization}, form {m.form}, {size / 1024:.1f} KiB)")
    print(f"input {list(inp.shape)} {inp.dtype}{quant}; labels {', '.join(m.labels)}")
    cal = (m.provenance.conversion or {}).get("calibration")
    if cal:
        print(f"calibrated on {cal['count']} images {cal['per_class']} from {cal['source']}")
    if result.golden is not None:
        print(result.golden.summary())
    for w in result.warnings:
        _warn(w)
    print(f"verification: unverified; next: converters verify {b.path} --data DIR")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from converters.verify import Thresholds, require_passed, verify

    if (args.data is None) == (args.split_file is None):
        raise ConverterError("pass exactly one of --data DIR and --split-file SPLIT_JSON")
    report = verify(
        args.bundle,
        args.data,
        split_file=args.split_file,
        subset=args.subset,
        reference=args.reference,
        thresholds=Thresholds(
            min_agreement=args.min_agreement / 100.0,
            max_recall_drop=args.max_recall_drop / 100.0,
            max_abs_dp=args.max_abs_dp,
        ),
        record=not args.no_record,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    require_passed(report)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from converters.inspection import describe, render

    info = describe(args.bundle)
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from converters.benchmark import benchmark, table

    results = benchmark(
        args.bundles,
        keras_model=args.keras,
        max_threads=args.max_threads,
        runs=args.runs,
        warmup=args.warmup,
    )
    if args.json:
        print(json.dumps([t.to_dict() for t in results], indent=2))
    else:
        print(table(results))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, sub = new_parser(
        "converters",
        "Convert Keras models to LiteRT bundles, verify quantised models against float, benchmark.",
    )

    p = add_command(sub, "export", "convert a trained Keras model into a LiteRT bundle", _export)
    p.add_argument("model", type=Path, help="MODEL.keras (training.json beside it is read)")
    p.add_argument(
        "--out", type=Path, required=True, metavar="BUNDLE_DIR", help="bundle directory to write"
    )
    p.add_argument("--quantize", choices=QUANTIZATIONS, default="int8", help="quantisation")
    p.add_argument(
        "--form",
        choices=("classifier", "backbone_head"),
        default="classifier",
        help="classifier: one model; backbone_head: quantised embedding backbone + float dense "
        "head, fine-tunable on the device",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        metavar="DIR",
        help="folder of real images (class folders or flat) for int8 calibration; if absent, "
        "the TRAIN split of split.json beside the model",
    )
    p.add_argument(
        "--calibration-count",
        type=int,
        default=calibration.DEFAULT_COUNT,
        help="most calibration images to use (class-mixed)",
    )
    p.add_argument("--seed", type=int, default=calibration.DEFAULT_SEED, help="shuffle seed")
    p.add_argument("--io-type", choices=("uint8", "int8"), default="uint8", help="int8 I/O dtype")
    p.add_argument(
        "--no-bias-correction",
        dest="bias_correction",
        action="store_false",
        help="int8: convert the model as trained; by default the input scaling is folded into "
        "the first convolution and each BatchNorm is bias-corrected for int8 weight rounding "
        "on the calibration images (Lite0 demo model, 649 test images: agreement with float "
        "98.5 -> 98.9 %% with 300 calibration images, 99.1 -> 99.5 %% with 2,272)",
    )
    p.add_argument(
        "--labels",
        type=_labels,
        metavar="A,B,...",
        help="labels in output order, if there is no training.json",
    )
    p.add_argument(
        "--preprocessing",
        type=Path,
        metavar="JSON_FILE",
        help="PreprocessSpec as JSON, if there is no training.json",
    )
    p.add_argument("--name", help="bundle name; if absent, model name and quantisation")
    p.add_argument(
        "--golden-count", type=int, default=golden_set.DEFAULT_COUNT, help="golden images"
    )
    p.add_argument(
        "--golden",
        type=Path,
        metavar="DIR",
        help="images for the golden set (class folders or flat); if absent, the run's "
        "test/val split",
    )
    p.add_argument(
        "--golden-atol",
        type=float,
        metavar="ATOL",
        help="max |dp| the device may differ from float on golden images; if absent, per "
        "quantisation: " + ", ".join(f"{k} {v}" for k, v in golden_set.DEFAULT_ATOL.items()),
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")

    p = add_command(
        sub,
        "verify",
        "the acceptance gate: compare a bundle with its float model on labelled images and "
        "record the verdict in the bundle (exit 1 on failure)",
        _verify,
    )
    p.add_argument("bundle", type=Path, help="bundle directory")
    p.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="held-out labelled images: DIR/<label>/*.png",
    )
    p.add_argument(
        "--split-file",
        type=Path,
        metavar="SPLIT_JSON",
        help="instead of --data: the images of one subset of a trainer split.json",
    )
    p.add_argument(
        "--subset", choices=("train", "val", "test"), default="test", help="with --split-file"
    )
    p.add_argument(
        "--reference",
        type=Path,
        metavar="MODEL_OR_BUNDLE",
        help="float reference: MODEL.keras or a float32 bundle; if absent, the source model "
        "recorded in the bundle at export",
    )
    p.add_argument(
        "--min-agreement", type=_percent, default=99.0, help="minimum top-1 agreement, percent"
    )
    p.add_argument(
        "--max-recall-drop",
        type=_percent,
        default=1.0,
        help="largest allowed drop of any class's recall, percentage points",
    )
    p.add_argument(
        "--max-abs-dp", type=float, metavar="DP", help="optional bound on max |dp| (0..1)"
    )
    p.add_argument("--no-record", action="store_true", help="do not write the verdict")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = add_command(
        sub, "inspect", "show a bundle: manifest, tensors, quantisation, ops, size", _inspect
    )
    p.add_argument("bundle", type=Path, help="bundle directory")
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = add_command(
        sub, "benchmark", "latency and throughput of bundles at 1..N threads vs Keras", _benchmark
    )
    p.add_argument("bundles", type=Path, nargs="+", help="bundle directories")
    p.add_argument(
        "--keras", type=Path, metavar="MODEL.keras", help="Keras model to time as the baseline"
    )
    p.add_argument("--max-threads", type=int, default=default_threads(), help="time 1..N threads")
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="timed runs per setting")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed runs first")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
