"""LiteRT float32 / float16 / dynamic / int8 against Keras float predict, measured in one run.

    python benchmarks/bench_quantization.py --data ../shared/data/taleqani-all \
        --models efficientnet-b0,efficientnet-b3 --threads 2

For each model (random weights: latency does not depend on their values) at its native size:
build it, export the four bundles with `converters export` (int8 calibrated on real images
from --data through edge's preprocessing), then time every bundle at 1..N threads and Keras
`predict_on_batch` at batch 1 and batch 8 (per image) on the same machine in the same process.
Ratios are throughput ratios: > 1 means faster than the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from converters.benchmark import Timing, benchmark
from converters.export import ExportOptions, export
from edge.contracts.preprocess_spec import PreprocessSpec

VARIANTS = ("float32", "float16", "dynamic", "int8")


def _keras_batch_ms(model_path: Path, x: np.ndarray, batch: int, runs: int) -> float:
    """Median milliseconds per image of Keras predict_on_batch at `batch`."""
    from converters.tf_env import load_keras_model

    model = load_keras_model(model_path)
    xb = np.repeat(x[None], batch, axis=0)
    model.predict_on_batch(xb)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.predict_on_batch(xb)
        times.append((time.perf_counter() - t0) / batch)
    return float(np.median(times) * 1000)


def bench_model(name: str, args: argparse.Namespace, work: Path) -> list[dict]:
    import keras

    from trainer.models import create_model

    keras.utils.set_random_seed(0)
    built = create_model(name, num_classes=4, weights="none")
    size = built.image_size
    model_path = work / f"{name}.keras"
    built.model.save(model_path)
    spec_path = work / f"{name}-spec.json"
    spec_path.write_text(PreprocessSpec(height=size, width=size).to_json())
    bundles = []
    for variant in VARIANTS:
        t0 = time.perf_counter()
        out = work / f"{name}-{variant}"
        export(
            ExportOptions(
                model=model_path,
                out=out,
                quantization=variant,
                calibration=args.data,
                calibration_count=args.calibration_count,
                labels=["Benign", "Early", "Pre", "Pro"],
                preprocessing=spec_path,
                golden_count=2,
                # Random weights: there is no trained function for bias correction to preserve,
                # and it changes no op's cost (the recorded figures were measured without it).
                bias_correction=False,
                overwrite=True,
            )
        )
        print(f"  exported {name} {variant} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        bundles.append(out)
    timings: list[Timing] = benchmark(bundles, model_path, args.threads, args.runs, args.warmup)
    keras_b1 = next(t for t in timings if t.threads is None).median_ms
    with np.load(bundles[0] / "golden.npz") as data:
        x = np.asarray(data["preprocessed"][0], np.float32)
    keras_b8 = _keras_batch_ms(model_path, x, 8, max(5, args.runs // 4))
    float_ms = {t.threads: t.median_ms for t in timings if t.quantization == "float32"}
    rows = []
    for t in timings:
        rows.append(
            {
                "model": name,
                "size": size,
                "variant": t.quantization if t.threads is not None else "keras-b1",
                "threads": t.threads,
                "median_ms": t.median_ms,
                "p90_ms": t.p90_ms,
                "vs_keras_b1": keras_b1 / t.median_ms,
                "vs_keras_b8": keras_b8 / t.median_ms,
                "vs_float32": float_ms[t.threads] / t.median_ms if t.threads else None,
                "bundle_mb": (work / f"{name}-{t.quantization}" / "model.tflite").stat().st_size
                / 1e6
                if t.threads
                else None,
            }
        )
    rows.append(
        {
            "model": name,
            "size": size,
            "variant": "keras-b8",
            "threads": None,
            "median_ms": keras_b8,
            "p90_ms": None,
            "vs_keras_b1": keras_b1 / keras_b8,
            "vs_keras_b8": 1.0,
            "vs_float32": None,
            "bundle_mb": None,
        }
    )
    return rows


def render(rows: list[dict]) -> str:
    head = (
        "| model | variant | threads | median ms | p90 ms | MB | x Keras b1 | x Keras b8/img "
        "| x float32 |\n|---|---|---|---|---|---|---|---|---|"
    )

    def f(v: float | None, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['model']}@{r['size']} | {r['variant']} | {r['threads'] or 'TF'} | "
            f"{r['median_ms']:.2f} | {f(r['p90_ms'], '.2f')} | {f(r['bundle_mb'], '.1f')} | "
            f"{r['vs_keras_b1']:.2f} | {r['vs_keras_b8']:.2f} | {f(r['vs_float32'], '.2f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="real images for calibration")
    parser.add_argument("--models", default="efficientnet-b0,efficientnet-b3")
    parser.add_argument("--threads", type=int, default=2, help="time 1..N threads")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--calibration-count", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument(
        "--keep", type=Path, help="write the models and bundles here instead of a temp folder"
    )
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: not a folder")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            rows += bench_model(name.strip(), args, work)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(render(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
