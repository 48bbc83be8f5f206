"""`converters benchmark`: LiteRT latency per bundle and thread count, against Keras float.

Each timing is one `LiteRTModel.run` call at batch 1 (quantise in, invoke, dequantise out: what
the device does per cell). Keras is timed with `predict_on_batch` at batch 1 in the same process,
so the ratio compares like with like on this machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConverterError
from converters.progress import progress
from edge.model import LiteRTModel, load_bundle

DEFAULT_RUNS = 50
DEFAULT_WARMUP = 5


@dataclass(frozen=True)
class Timing:
    name: str
    quantization: str
    form: str
    threads: int | None  # None: Keras, TensorFlow's own thread pool
    runs: int
    median_ms: float
    p90_ms: float
    images_per_s: float
    keras_ratio: float | None = None  # Keras median / this median: > 1 means faster than Keras

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _time(call: Callable[[], object], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


def _summary(name: str, quant: str, form: str, threads: int | None, times: list[float]) -> Timing:
    ms = np.array(times) * 1000.0
    return Timing(
        name=name,
        quantization=quant,
        form=form,
        threads=threads,
        runs=len(times),
        median_ms=float(np.median(ms)),
        p90_ms=float(np.percentile(ms, 90)),
        images_per_s=len(times) / float(sum(times)),
    )


def _input(bundle_dir: Path) -> np.ndarray:
    """A real golden image when the bundle has one; else a fixed mid-grey image."""
    bundle = load_bundle(bundle_dir, num_threads=1)
    if bundle.manifest.golden is not None:
        with np.load(bundle.path / bundle.manifest.golden.file) as data:
            return np.asarray(data["preprocessed"][0], np.float32)
    lo, hi = bundle.manifest.input_range
    return np.full((*bundle.spec.size, 3), (lo + hi) / 2, np.float32)


def benchmark(
    bundles: Sequence[Path],
    keras_model: Path | None = None,
    max_threads: int = 2,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
) -> list[Timing]:
    """Timings for every bundle at 1..max_threads threads, plus Keras if a model is given."""
    if max_threads < 1 or runs < 1 or warmup < 0:
        raise ConverterError(
            f"--max-threads {max_threads}, --runs {runs}, --warmup {warmup}: need >= 1, >= 1, >= 0"
        )
    results: list[Timing] = []
    for path in bundles:
        m = load_bundle(path, num_threads=1).manifest
        x = _input(path)
        for threads in progress(range(1, max_threads + 1), max_threads, f"timing {path.name}"):
            model = LiteRTModel(path / m.model_file, num_threads=threads)
            batch = x[None, ...]
            times = _time(partial(model.run, batch), runs, warmup)
            results.append(_summary(m.name, m.quantization, m.form, threads, times))
    if keras_model is not None:
        from converters.tf_env import load_keras_model, silenced

        model = load_keras_model(keras_model)
        batch = _input(bundles[0])[None, ...]
        if tuple(model.input_shape[1:]) != batch.shape[1:]:
            raise ConverterError(
                f"--keras {keras_model}: input {model.input_shape[1:]} differs from the bundles' "
                f"{batch.shape[1:]}"
            )
        with silenced():
            model.predict_on_batch(batch)  # build and trace outside the timed loop
        times = _time(partial(model.predict_on_batch, batch), runs, warmup)
        keras = _summary(keras_model.name, "float32", "keras", None, times)
        results = [
            Timing(**{**t.to_dict(), "keras_ratio": keras.median_ms / t.median_ms}) for t in results
        ]
        results.append(keras)
    return results


def table(results: Sequence[Timing]) -> str:
    head = f"{'model':<28}{'quant':<9}{'form':<15}{'threads':>8}{'median ms':>11}{'p90 ms':>9}"
    head += f"{'img/s':>9}{'vs keras':>10}"
    lines = [head]
    for t in results:
        threads = "tf" if t.threads is None else str(t.threads)
        ratio = "" if t.keras_ratio is None else f"{t.keras_ratio:.1f}x"
        lines.append(
            f"{t.name[:27]:<28}{t.quantization:<9}{t.form:<15}{threads:>8}{t.median_ms:>11.3f}"
            f"{t.p90_ms:>9.3f}{t.images_per_s:>9.0f}{ratio:>10}"
        )
    return "\n".join(lines)


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))
