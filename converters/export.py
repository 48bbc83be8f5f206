"""`converters export`: a trained Keras classifier -> a LiteRT model bundle edge can load.

The graph ends at logits (--form classifier) or embeddings (--form backbone_head); the
bundle's head (the softmax, and the latter's dense layer) is float post-processing: version 1,
temperature 1, changed later without a re-export (edge.model.heads). Labels and preprocessing
come from the trainer's training.json beside the model (or flags); int8 calibration images from
the run's TRAIN split (or --calibration DIR). The bundle carries a golden set with the float
model's outputs and full provenance, and starts out unverified: `converters verify` is the gate
that marks it passed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from converters import calibration, golden_set
from converters.calibration import DEFAULT_COUNT, DEFAULT_SEED, CalibrationSet
from converters.conversion import (
    QUANTIZATIONS,
    IoType,
    convert,
    logits_model,
    split_backbone_head,
)
from converters.errors import CalibrationError, ConverterError, ModelFileError, RunFilesError
from converters.image_sets import LabelledFile, class_mixed, scan_folder
from converters.int8_prep import Int8Prep, prepare_for_int8
from converters.progress import stage
from converters.run_files import TrainingRun, read_training_run
from converters.tf_env import load_keras_model, tensorflow
from edge.contracts import MANIFEST_FILE, PreprocessError, PreprocessSpec, Provenance, sha256_file
from edge.model import (
    Bundle,
    GoldenReport,
    check_golden,
    input_shape_problem,
    load_bundle,
    write_bundle,
)

log = logging.getLogger(__name__)

Form = Literal["classifier", "backbone_head"]
# Bias correction measures per-channel means: a few hundred images pin them down and its cost
# grows with images x layers, so it takes the first 300 (class-mixed) calibration images while
# range calibration still sees all of them.
BIAS_CORRECTION_IMAGES = 300


@dataclass
class ExportOptions:
    model: Path
    out: Path
    quantization: str = "int8"
    form: Form = "classifier"
    calibration: Path | None = None
    calibration_count: int = DEFAULT_COUNT
    seed: int = DEFAULT_SEED
    labels: list[str] | None = None
    preprocessing: Path | None = None
    name: str | None = None
    io_type: IoType = "uint8"
    golden_count: int = golden_set.DEFAULT_COUNT
    golden_atol: float | None = None
    golden: Path | None = None  # images for the golden set; default: the run's test/val split
    bias_correction: bool = True  # int8 only: input folding + bias correction (int8_prep)
    overwrite: bool = False


@dataclass
class ExportResult:
    bundle: Bundle
    golden: GoldenReport | None
    warnings: list[str] = field(default_factory=list)


def _read_spec_file(path: Path) -> PreprocessSpec:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise RunFilesError(f"--preprocessing {path}: cannot be read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise RunFilesError(f"--preprocessing {path}: not valid JSON ({exc.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("preprocessing"), dict):
        data = data["preprocessing"]  # a training.json or manifest.json works too
    try:
        return PreprocessSpec.from_dict(data)
    except PreprocessError as exc:
        raise RunFilesError(f"--preprocessing {path}: {exc}") from None


def resolve_labels_and_spec(
    run: TrainingRun | None, model_path: Path, labels: list[str] | None, spec_file: Path | None
) -> tuple[list[str], PreprocessSpec]:
    """Labels and preprocessing from training.json, or flags; flags may not contradict the run."""
    run_labels = run.labels if run else None
    if labels and run_labels and labels != run_labels:
        raise RunFilesError(
            f"--labels {','.join(labels)} contradicts {run.training_file if run else ''}'s "
            f"{run_labels} (the model's output order); drop --labels"
        )
    final_labels = labels or run_labels
    if not final_labels:
        raise RunFilesError(
            f"no labels for {model_path}: no training.json beside it; pass --labels A,B,... in "
            "the model's output order"
        )
    repeated = sorted({x for x in final_labels if final_labels.count(x) > 1})
    if repeated:
        raise RunFilesError(f"labels {final_labels}: {repeated} repeated; labels must be unique")
    if spec_file is not None:
        spec = _read_spec_file(spec_file)
        if run and run.preprocessing and spec.to_dict() != _spec(run).to_dict():
            raise RunFilesError(
                f"--preprocessing {spec_file} differs from {run.training_file}'s preprocessing, "
                "which the model was trained with; drop --preprocessing"
            )
        return final_labels, spec
    if run is None or run.preprocessing is None:
        raise RunFilesError(
            f"no preprocessing spec for {model_path}: no training.json beside it; pass "
            "--preprocessing SPEC.json (a PreprocessSpec as JSON)"
        )
    return final_labels, _spec(run)


def _spec(run: TrainingRun) -> PreprocessSpec:
    try:
        return PreprocessSpec.from_dict(run.preprocessing or {})
    except PreprocessError as exc:
        raise RunFilesError(f"{run.training_file}: {exc}") from None


def check_model_fits(model: Any, labels: list[str], spec: PreprocessSpec, path: Path) -> None:
    """The model's input size and class count must match the preprocessing and the labels."""
    problem = input_shape_problem(tuple(model.input_shape), spec)
    if problem:
        raise ModelFileError(f"{path}: {problem}")
    classes = model.output_shape[-1]
    if classes != len(labels):
        raise ModelFileError(
            f"{path}: model outputs {classes} classes but {len(labels)} labels were given "
            f"({', '.join(labels)})"
        )


def _image_source(
    opts: ExportOptions, run: TrainingRun | None, warnings: list[str]
) -> CalibrationSet | None:
    """Calibration images: --calibration, else the run's TRAIN split (float exports may lack it)."""
    if opts.calibration is not None:
        return calibration.from_folder(opts.calibration, opts.calibration_count, opts.seed)
    if run is None or run.split_file is None:
        if opts.quantization == "int8":
            raise CalibrationError(
                f"int8 needs calibration images: no split.json beside {opts.model}; pass "
                "--calibration DIR (a folder of real training images, in class folders)"
            )
        return None
    try:
        return calibration.from_training_run(run, opts.calibration_count, opts.seed)
    except CalibrationError as exc:
        if opts.quantization == "int8":
            raise
        # Float exports only take golden images from the split: missing data is not fatal.
        warnings.append(f"training images unavailable ({exc})")
        return None


def _golden_files(
    opts: ExportOptions, run: TrainingRun | None, images: CalibrationSet | None
) -> tuple[list[LabelledFile], str | None]:
    """--golden images if given; else held-out images of the run (test, then val split); else
    calibration images. A bundle that will be shipped publicly can take its golden images
    from a folder whose licence allows redistribution (golden.npz stores the raw pixels)."""
    if opts.golden is not None:
        files = scan_folder(opts.golden, require_labels=False)
        return class_mixed(files, opts.golden_count, opts.seed), str(opts.golden)
    if run is not None and run.split_file is not None:
        picked: list[LabelledFile] = []
        for split in ("test", "val"):
            files = [f for f in run.files(split) if f.path.is_file()]
            picked += class_mixed(files, opts.golden_count - len(picked), opts.seed)
        if picked:
            return picked, f"{run.split_file} (test/val splits)"
    if images is not None:
        return images.files[: opts.golden_count], images.source
    return [], None


def _provenance(
    opts: ExportOptions, run: TrainingRun | None, conversion: dict[str, Any]
) -> Provenance:
    info = run.info if run else {}
    split = None
    if run is not None and run.split_file is not None:
        split = {
            "file": str(run.split_file.resolve()),
            "sha256": sha256_file(run.split_file),
            "counts": run.split_counts(),
        }
    training = None
    if run is not None:
        keys = ("model_name", "image_size", "task", "data", "weights")
        training = {k: info[k] for k in keys if k in info}
        training["training_json"] = str(run.training_file.resolve())
    metrics = info.get("metrics")
    fingerprint = info.get("data_fingerprint")
    return Provenance(
        source_model=str(opts.model.resolve()),
        source_model_sha256=sha256_file(opts.model),
        data_fingerprint=str(fingerprint) if fingerprint is not None else None,
        split=split,
        metrics=metrics if isinstance(metrics, dict) else None,
        training=training,
        conversion=conversion,
    )


def _prepare_out(out: Path, overwrite: bool) -> Path:
    """A fresh sibling folder to write into; moved over `out` only once complete."""
    if out.exists():
        if not out.is_dir():
            raise ConverterError(f"--out {out}: exists and is not a directory")
        if any(out.iterdir()):
            if not overwrite:
                raise ConverterError(
                    f"--out {out}: not empty; choose a new folder or pass --overwrite"
                )
            if not (out / MANIFEST_FILE).is_file():
                raise ConverterError(
                    f"--out {out}: not empty and not a bundle; refusing to overwrite it"
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    return partial


def export(opts: ExportOptions) -> ExportResult:
    """Convert, write the bundle atomically, and run its own golden self-test."""
    if opts.quantization not in QUANTIZATIONS:
        raise ConverterError(
            f"unknown quantisation {opts.quantization!r}; choose one of {', '.join(QUANTIZATIONS)}"
        )
    if opts.form not in ("classifier", "backbone_head"):
        raise ConverterError(f"unknown form {opts.form!r}; choose classifier or backbone_head")
    if opts.calibration_count < 1:
        raise CalibrationError(f"--calibration-count {opts.calibration_count}: must be >= 1")
    if opts.golden_count < 1:
        raise ConverterError(f"--golden-count {opts.golden_count}: must be >= 1")
    if opts.golden_atol is not None and not 0 < opts.golden_atol <= 1:
        raise ConverterError(f"--golden-atol {opts.golden_atol}: must be in (0, 1]")
    stage(f"loading {opts.model}")
    model = load_keras_model(opts.model)
    run = read_training_run(opts.model)
    labels, spec = resolve_labels_and_spec(run, opts.model, opts.labels, opts.preprocessing)
    check_model_fits(model, labels, spec, opts.model)
    partial = _prepare_out(opts.out, opts.overwrite)
    warnings: list[str] = []
    images = _image_source(opts, run, warnings)

    # The graph ends at logits (classifier) or embeddings (backbone_head); the softmax and
    # the dense layer of the latter are the bundle's float head.
    head = None
    if opts.form == "backbone_head":
        target, kernel, bias = split_backbone_head(model)
        head = (kernel, bias)
    else:
        target = logits_model(model)
    representative = None
    prep: Int8Prep | None = None
    if opts.quantization == "int8":
        assert images is not None
        representative = calibration.representative_dataset(images, spec)
        if opts.bias_correction:
            stage("preparing for int8 (input folding, bias correction)")
            sample = calibration.load_images(images, spec, BIAS_CORRECTION_IMAGES)
            target, prep = prepare_for_int8(target, sample)
    stage(f"converting to {opts.quantization} ({opts.form})")
    model_bytes = convert(target, opts.quantization, representative, opts.io_type)

    golden = None
    golden_source = None
    golden_files, source = _golden_files(opts, run, images)
    if golden_files:
        golden = golden_set.build_golden(golden_files, spec, model)
        golden_source = {"source": source, "files": [str(f.path) for f in golden_files]}
    else:
        warnings.append("no golden set: the device cannot self-test this bundle at start-up")
    atol = opts.golden_atol or golden_set.DEFAULT_ATOL[opts.quantization]
    conversion: dict[str, Any] = {
        "quantization": opts.quantization,
        "form": opts.form,
        "tensorflow": tensorflow().__version__,
        "calibration": images.describe()
        if images is not None and opts.quantization == "int8"
        else None,
        "golden": golden_source,
    }
    if opts.quantization == "int8":
        conversion["io_type"] = opts.io_type
        conversion["int8_prep"] = prep.describe() if prep is not None else None

    stage(f"writing bundle {opts.out}")
    try:
        write_bundle(
            partial,
            model_bytes,
            name=opts.name or _default_name(opts, run),
            labels=labels,
            spec=spec,
            quantization=opts.quantization,  # type: ignore[arg-type]
            input_range=spec.output_range,
            head=head,
            golden=golden,
            golden_atol=atol,
            provenance=_provenance(opts, run, conversion),
        )
        if opts.out.exists():
            shutil.rmtree(opts.out)
        partial.rename(opts.out)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    bundle = load_bundle(opts.out)

    problem = calibration.check_input_quantization(bundle.model.input, spec.output_range)
    if problem:
        warnings.append(problem)
    report = check_golden(bundle)
    if report is not None and not report.passed:
        warnings.append(
            f"the bundle fails its own golden self-test ({report.summary()}); the device will "
            "refuse it: check the calibration images, or pass --golden-atol if this is expected"
        )
    return ExportResult(bundle, report, warnings)


def _default_name(opts: ExportOptions, run: TrainingRun | None) -> str:
    base = str(run.info.get("model_name")) if run and run.info.get("model_name") else None
    suffix = "-finetunable" if opts.form == "backbone_head" else ""
    return f"{base or opts.model.stem}-{opts.quantization}{suffix}"
