"""The acceptance gate: may a candidate model replace the reference, judged on the same images?

One gate for two questions: an int8 bundle against its float original (``converters verify``)
and, on the device, a new head against the current head on the guard set before a swap. Both
models classify the same images; the gate compares their top-1 classes:

- agreement: the fraction of images given the same class by both, at least ``min_agreement``;
- recall (needs true labels): no class's recall falls by more than ``max_recall_drop``;
- accuracy (needs true labels): it falls by no more than ``max_accuracy_drop``.

A threshold of None switches its check off. A check that needs labels and gets none is an
error, not a pass: a gate that cannot look must not say yes. A class with no image in the set
has no recall, so it is not gated. Margins are fractions (0.01 = 1 point); a drop of exactly the
margin passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from edge.errors import BlastscopeError
from edge.stats.confusion import class_recalls, confusion_matrix
from edge.stats.intervals import wilson_interval

GateCheck = Literal["agreement", "recall", "accuracy"]

# Float slack so a drop of exactly the margin (1 of 100 images at 0.01) is not a failure.
_EPS = 1e-9


class GateError(BlastscopeError):
    """Gate thresholds or predictions that cannot be judged."""


@dataclass(frozen=True, kw_only=True)
class GateThresholds:
    """What the candidate may lose against the reference; None switches a check off.

    No defaults: an int8 export must agree with its float original almost everywhere, while a
    new head trained on corrections is meant to change some answers, so each caller says which.
    """

    min_agreement: float | None
    max_recall_drop: float | None
    max_accuracy_drop: float | None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            real = isinstance(value, int | float) and not isinstance(value, bool)
            if value is not None and not (real and 0.0 <= value <= 1.0):
                raise GateError(
                    f"gate threshold {name}={value!r} is invalid: expected a fraction from 0 "
                    "to 1 (0.01 = 1 point), or None to switch the check off"
                )

    @property
    def needs_labels(self) -> bool:
        return self.max_recall_drop is not None or self.max_accuracy_drop is not None

    def to_dict(self) -> dict[str, float]:
        """The thresholds that are set (the form a verification record keeps)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class ClassRecall:
    """One class's recall under both models; None for a class with no image in the set."""

    label: str
    n: int
    recall: float | None  # the candidate's
    reference_recall: float | None

    @property
    def delta(self) -> float | None:
        """Candidate minus reference recall (negative: the candidate finds fewer)."""
        if self.recall is None or self.reference_recall is None:
            return None
        return self.recall - self.reference_recall


@dataclass(frozen=True)
class GateFailure:
    """A failed check: which one, for which class (recall only), and the one-line reason."""

    check: GateCheck
    message: str
    label: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class GateVerdict:
    """The gate's numbers and what failed; accuracy fields are None without true labels."""

    n: int
    agreement: float
    accuracy: float | None
    accuracy_ci: tuple[float, float] | None  # 95 % Wilson
    reference_accuracy: float | None
    reference_accuracy_ci: tuple[float, float] | None
    per_class: tuple[ClassRecall, ...]  # empty without true labels
    thresholds: GateThresholds
    failures: tuple[GateFailure, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    def messages(self) -> list[str]:
        return [f.message for f in self.failures]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: for a head's record, a log line or a health payload."""
        return {
            "passed": self.passed,
            "failures": [asdict(f) for f in self.failures],
            "n": self.n,
            "agreement": self.agreement,
            "accuracy": self.accuracy,
            "accuracy_ci95": _list(self.accuracy_ci),
            "reference_accuracy": self.reference_accuracy,
            "reference_accuracy_ci95": _list(self.reference_accuracy_ci),
            "per_class": [{**asdict(c), "recall_delta": c.delta} for c in self.per_class],
            "thresholds": self.thresholds.to_dict(),
        }


def _list(ci: tuple[float, float] | None) -> list[float] | None:
    return None if ci is None else list(ci)


def _classes(name: str, values: Any, n_classes: int, n: int | None) -> np.ndarray:
    """``values`` as a 1-D int64 array of class indices, or a GateError naming the problem."""
    arr = np.asarray(values)
    if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise GateError(
            f"{name}: expected top-1 class indices (1-D integers), got {arr.dtype} of shape "
            f"{arr.shape}; pass probabilities.argmax(axis=1)"
        )
    if n is not None and arr.size != n:
        raise GateError(f"{name} has {arr.size} items but reference has {n}: not the same images")
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise GateError(f"{name}: class indices must be in 0..{n_classes - 1} ({n_classes} labels)")
    return arr.astype(np.int64)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def acceptance_gate(
    reference: Sequence[int] | np.ndarray,
    candidate: Sequence[int] | np.ndarray,
    labels: Sequence[str],
    thresholds: GateThresholds,
    y_true: Sequence[int] | np.ndarray | None = None,
) -> GateVerdict:
    """Judge ``candidate`` against ``reference`` (top-1 class indices on the same images)."""
    k = len(labels)
    ref = _classes("reference", reference, k, None)
    cand = _classes("candidate", candidate, k, ref.size)
    n = int(ref.size)
    if n == 0:
        raise GateError("the gate needs at least one image; the set is empty")
    if y_true is None and thresholds.needs_labels:
        raise GateError(
            f"thresholds {thresholds.to_dict()} check recall or accuracy, which needs the true "
            "labels (y_true); pass them, or set max_recall_drop and max_accuracy_drop to None"
        )
    t = thresholds
    failures: list[GateFailure] = []
    agreement = float(np.mean(cand == ref))
    if t.min_agreement is not None and agreement < t.min_agreement - _EPS:
        failures.append(
            GateFailure(
                "agreement", f"top-1 agreement {_pct(agreement)}% < {_pct(t.min_agreement)}%"
            )
        )
    if y_true is None:
        return GateVerdict(n, agreement, None, None, None, None, (), t, tuple(failures))

    y = _classes("y_true", y_true, k, n)
    recall = class_recalls(confusion_matrix(y, cand, k))
    ref_recall = class_recalls(confusion_matrix(y, ref, k))
    per_class = tuple(
        ClassRecall(label, int((y == c).sum()), recall[c], ref_recall[c])
        for c, label in enumerate(labels)
    )
    if t.max_recall_drop is not None:
        for c in per_class:
            if c.delta is not None and -c.delta > t.max_recall_drop + _EPS:
                failures.append(
                    GateFailure(
                        "recall",
                        f"recall of {c.label} down {_pct(-c.delta)} points "
                        f"(> {_pct(t.max_recall_drop)})",
                        c.label,
                    )
                )
    correct, ref_correct = int((cand == y).sum()), int((ref == y).sum())
    drop = (ref_correct - correct) / n
    if t.max_accuracy_drop is not None and drop > t.max_accuracy_drop + _EPS:
        failures.append(
            GateFailure(
                "accuracy", f"accuracy down {_pct(drop)} points (> {_pct(t.max_accuracy_drop)})"
            )
        )
    return GateVerdict(
        n=n,
        agreement=agreement,
        accuracy=correct / n,
        accuracy_ci=wilson_interval(correct, n),
        reference_accuracy=ref_correct / n,
        reference_accuracy_ci=wilson_interval(ref_correct, n),
        per_class=per_class,
        thresholds=t,
        failures=tuple(failures),
    )
