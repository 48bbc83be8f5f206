"""`converters verify`: the acceptance gate between a (quantised) bundle and its float original.

Both run on the same labelled images through the same edge preprocessing. The gate is
edge.stats.gate, the one the device applies to a new head: it passes when top-1 agreement is
at least `min_agreement` and no class's recall drops by more than `max_recall_drop`. Here two
checks are added: max |dp| within `max_abs_dp` if one is set, and the bundle's own golden
self-test (else the device would refuse it anyway). The result is written into the bundle's
manifest; a bundle that never passed stays "unverified".

|dp| per image is the largest absolute difference over classes between the two probability
vectors; the report gives its max and mean over images.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from converters.errors import ConverterError, GateFailedError
from converters.image_sets import LabelledFile, per_class, scan_folder
from converters.progress import progress, stage
from edge.contracts import BundleError, Verification, read_manifest, sha256_file, write_manifest
from edge.model import Bundle, GoldenReport, check_golden, load_bundle
from edge.stats import ClassRecall, GateThresholds, acceptance_gate
from edge.vision import preprocess, read_image

BATCH = 32


@dataclass(frozen=True)
class Thresholds:
    min_agreement: float = 0.99  # fraction of images with the same top-1 class
    max_recall_drop: float = 0.01  # largest allowed fall in any class's recall (0.01 = 1 point)
    max_abs_dp: float | None = None  # optional bound on max |dp|

    def __post_init__(self) -> None:
        self.gate()  # a bad threshold fails here, before any image is read

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def gate(self) -> GateThresholds:
        """The checks edge.stats.gate makes; max_abs_dp is this module's own."""
        return GateThresholds(
            min_agreement=self.min_agreement,
            max_recall_drop=self.max_recall_drop,
            max_accuracy_drop=None,
        )


class Reference(Protocol):
    description: str
    kind: str

    def probabilities(self, batch: np.ndarray) -> np.ndarray: ...


class KerasReference:
    kind = "keras"

    def __init__(self, path: Path, bundle: Bundle) -> None:
        from converters.tf_env import load_keras_model

        self.description = str(path)
        self.model = load_keras_model(path)
        classes = self.model.output_shape[-1]
        size = tuple(self.model.input_shape[1:3])
        if classes != len(bundle.labels) or size != bundle.spec.size:
            raise ConverterError(
                f"--reference {path}: takes {size[0]}x{size[1]} and outputs {classes} classes, "
                f"the bundle {bundle.spec.height}x{bundle.spec.width} and {len(bundle.labels)}: "
                "not the model this bundle was exported from"
            )

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        from converters.tf_env import keras_predict

        return keras_predict(self.model, batch)


class BundleReference:
    kind = "bundle"

    def __init__(self, path: Path, bundle: Bundle) -> None:
        self.description = str(path)
        self.bundle = load_bundle(path)
        m = self.bundle.manifest
        if m.quantization not in ("float32", "float16"):
            raise ConverterError(
                f"--reference {path}: is a {m.quantization} bundle; the reference must be float "
                "(a .keras model or a float32 bundle)"
            )
        if m.labels != bundle.labels:
            raise ConverterError(
                f"--reference {path}: labels {m.labels} differ from the bundle's {bundle.labels}"
            )
        if self.bundle.spec != bundle.spec:
            raise ConverterError(
                f"--reference {path}: its preprocessing differs from the bundle's; both must see "
                "the same inputs"
            )

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self.bundle.probabilities(x) for x in batch])


def resolve_reference(bundle: Bundle, reference: Path | None) -> Reference:
    """--reference (a .keras model or a float bundle), else the model the bundle came from."""
    if reference is None:
        prov = bundle.manifest.provenance
        source = Path(prov.source_model) if prov.source_model else None
        if source is None or not source.is_file():
            raise ConverterError(
                f"{bundle.path}: its source model {prov.source_model or '(not recorded)'} is not "
                "on this machine; pass --reference MODEL.keras or a float32 bundle"
            )
        if prov.source_model_sha256 and sha256_file(source) != prov.source_model_sha256:
            raise ConverterError(
                f"{source}: changed since this bundle was exported (sha256 differs); pass "
                "--reference explicitly or re-export"
            )
        reference = source
    if reference.is_dir():
        return BundleReference(reference, bundle)
    return KerasReference(reference, bundle)


@dataclass
class VerifyReport:
    bundle: str
    quantization: str
    form: str
    reference: str
    reference_kind: str
    data: str
    n_images: int
    agreement: float
    accuracy: float
    accuracy_ci: tuple[float, float]
    reference_accuracy: float
    reference_accuracy_ci: tuple[float, float]
    per_class: list[ClassRecall]
    max_abs_dp: float
    mean_abs_dp: float
    thresholds: Thresholds
    golden: GoldenReport | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failures": self.failures,
            "bundle": self.bundle,
            "quantization": self.quantization,
            "form": self.form,
            "reference": self.reference,
            "reference_kind": self.reference_kind,
            "data": self.data,
            "n_images": self.n_images,
            "agreement": self.agreement,
            "accuracy": self.accuracy,
            "accuracy_ci95": list(self.accuracy_ci),
            "reference_accuracy": self.reference_accuracy,
            "reference_accuracy_ci95": list(self.reference_accuracy_ci),
            "per_class": [
                {
                    "label": c.label,
                    "n": c.n,
                    "recall": c.recall,
                    "reference_recall": c.reference_recall,
                    "recall_delta": c.delta,
                }
                for c in self.per_class
            ],
            "max_abs_dp": self.max_abs_dp,
            "mean_abs_dp": self.mean_abs_dp,
            "thresholds": self.thresholds.to_dict(),
            "golden": None
            if self.golden is None
            else {"passed": self.golden.passed, "summary": self.golden.summary()},
        }

    def table(self) -> str:
        def pct(x: float | None) -> str:
            return "   n/a" if x is None else f"{100 * x:5.1f}%"

        def ci(lo_hi: tuple[float, float]) -> str:
            return f"[{100 * lo_hi[0]:.1f}, {100 * lo_hi[1]:.1f}]"

        differ = round((1 - self.agreement) * self.n_images)
        t = self.thresholds
        lines = [
            f"bundle     {self.bundle}  ({self.quantization}, {self.form})",
            f"reference  {self.reference}  ({self.reference_kind}, float)",
            f"data       {self.data}: {self.n_images} images",
            f"accuracy   bundle {pct(self.accuracy)} {ci(self.accuracy_ci)}   reference "
            f"{pct(self.reference_accuracy)} {ci(self.reference_accuracy_ci)}  (95% Wilson CI)",
            f"agreement  {pct(self.agreement)} top-1 ({differ} of {self.n_images} differ; "
            f"gate >= {100 * t.min_agreement:.1f}%)",
            f"|dp|       max {self.max_abs_dp:.4f}  mean {self.mean_abs_dp:.4f}"
            + (f"  (gate <= {t.max_abs_dp})" if t.max_abs_dp is not None else ""),
            f"{'class':<16}{'n':>6}{'recall':>9}{'reference':>11}{'delta':>9}",
        ]
        for c in self.per_class:
            delta = "    n/a" if c.delta is None else f"{100 * c.delta:+7.1f}"
            lines.append(
                f"{c.label:<16}{c.n:>6}{pct(c.recall):>9}{pct(c.reference_recall):>11}{delta:>9}"
            )
        lines.append(
            f"{'':<16}(gate: no class down more than {100 * t.max_recall_drop:.1f} points)"
        )
        if self.golden is not None:
            lines.append(self.golden.summary())
        if self.n_images and self.n_images < 100:
            lines.append(
                f"note       {self.n_images} images: one disagreement moves agreement by "
                f"{100 / self.n_images:.1f} points; verify on a few hundred for a meaningful gate"
            )
        verdict = "PASSED" if self.passed else "FAILED: " + "; ".join(self.failures)
        lines.append(f"result     {verdict}")
        return "\n".join(lines)


def summarise(
    labels: Sequence[str],
    y: np.ndarray,
    p_bundle: np.ndarray,
    p_reference: np.ndarray,
    thresholds: Thresholds,
) -> dict[str, Any]:
    """The gate's numbers and its failures, from true labels and both models' probabilities."""
    verdict = acceptance_gate(
        p_reference.argmax(1), p_bundle.argmax(1), labels, thresholds.gate(), y_true=y
    )
    dp = np.abs(p_bundle - p_reference).max(axis=1)
    failures = verdict.messages()
    max_dp = float(dp.max())
    if thresholds.max_abs_dp is not None and max_dp > thresholds.max_abs_dp:
        failures.append(f"max |dp| {max_dp:.4f} > {thresholds.max_abs_dp}")
    return {
        "n_images": verdict.n,
        "agreement": verdict.agreement,
        "accuracy": verdict.accuracy,
        "accuracy_ci": verdict.accuracy_ci,
        "reference_accuracy": verdict.reference_accuracy,
        "reference_accuracy_ci": verdict.reference_accuracy_ci,
        "per_class": list(verdict.per_class),
        "max_abs_dp": max_dp,
        "mean_abs_dp": float(dp.mean()),
        "failures": failures,
    }


def _labelled_files(data: Path, labels: Sequence[str]) -> list[LabelledFile]:
    files = scan_folder(data, require_labels=True)
    unknown = sorted(set(per_class(files)) - set(labels))
    if unknown:
        raise ConverterError(
            f"{data}: class folder(s) {unknown} are not labels of the bundle "
            f"({', '.join(labels)}); rename or remove them"
        )
    return files


def evaluate(
    bundle: Bundle, reference: Reference, files: Sequence[LabelledFile]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true class index, bundle probabilities, reference probabilities) for every file."""
    index = {label: i for i, label in enumerate(bundle.labels)}
    y = np.array([index[f.label] for f in files], np.int64)
    ours: list[np.ndarray] = []
    theirs: list[np.ndarray] = []
    chunk: list[np.ndarray] = []

    def flush() -> None:
        # The reference runs in batches (Keras is slow per image); the bundle as the device does.
        x = np.stack(chunk)
        ours.append(np.stack([bundle.probabilities(xi) for xi in x]))
        theirs.append(reference.probabilities(x))
        chunk.clear()

    for f in progress(files, len(files), "verifying"):
        chunk.append(preprocess(read_image(f.path), bundle.spec))
        if len(chunk) == BATCH:
            flush()
    if chunk:
        flush()
    return y, np.concatenate(ours), np.concatenate(theirs)


def _split_files(split_file: Path, subset: str, labels: Sequence[str]) -> list[LabelledFile]:
    from trainer.run_files import read_split_file

    split = read_split_file(split_file)
    if list(split.labels) != list(labels):
        raise ConverterError(
            f"{split_file}: labels {split.labels} differ from the bundle's {list(labels)}"
        )
    files = [LabelledFile(path, label) for path, label in split.paths(subset)]
    if not files:
        raise ConverterError(f"{split_file}: the {subset} split is empty")
    return files


def verify(
    bundle_dir: Path,
    data: Path | None,
    reference: Path | None = None,
    thresholds: Thresholds | None = None,
    record: bool = True,
    split_file: Path | None = None,
    subset: str = "test",
) -> VerifyReport:
    """Run the gate on `data` (class folders) or a split.json subset; record the verdict."""
    thresholds = thresholds or Thresholds()
    bundle = load_bundle(bundle_dir)
    if split_file is not None:
        files = _split_files(split_file, subset, bundle.labels)
        data_desc = f"{split_file} ({subset} split)"
    elif data is not None:
        files = _labelled_files(data, bundle.labels)
        data_desc = str(data)
    else:
        raise ConverterError("verify needs labelled images: --data DIR or --split-file")
    stage(f"loading reference for {bundle_dir}")
    ref = resolve_reference(bundle, reference)
    y, p_bundle, p_ref = evaluate(bundle, ref, files)
    numbers = summarise(bundle.labels, y, p_bundle, p_ref, thresholds)
    golden = check_golden(bundle)
    if golden is not None and not golden.passed:
        numbers["failures"].append("the bundle fails its own golden self-test")
    m = bundle.manifest
    report = VerifyReport(
        bundle=str(bundle_dir),
        quantization=m.quantization,
        form=m.form,
        reference=ref.description,
        reference_kind=ref.kind,
        data=data_desc,
        thresholds=thresholds,
        golden=golden,
        **numbers,
    )
    if record:
        record_verification(bundle_dir, m.model_sha256, report)
    return report


def record_verification(bundle_dir: Path, model_sha256: str, report: VerifyReport) -> None:
    """Write the verdict into manifest.json (atomically), tied to the model bytes it was run on."""
    manifest = read_manifest(bundle_dir)
    if manifest.model_sha256 != model_sha256:
        raise BundleError(f"{bundle_dir}: the model changed while it was being verified")
    details = report.to_dict()
    details["model_sha256"] = model_sha256
    manifest.verification = Verification(
        status="passed" if report.passed else "failed",
        # The verdict is about the graph (int8 vs float): it survives a new head version or
        # temperature, not a changed model, tensors, preprocessing, labels or golden set.
        digest=manifest.graph_digest(),
        at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        data=report.data,
        reference=report.reference,
        n_images=report.n_images,
        agreement=report.agreement,
        thresholds=report.thresholds.to_dict(),
        details=details,
    )
    write_manifest(bundle_dir, manifest)


def require_passed(report: VerifyReport) -> None:
    if not report.passed:
        raise GateFailedError(
            f"{report.bundle}: verification FAILED ({'; '.join(report.failures)}); "
            "the bundle is marked failed and must not go to a device"
        )
