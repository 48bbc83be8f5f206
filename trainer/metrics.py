"""Classification metrics of the seeds' tables, with 95 % confidence intervals (numpy only).

Per class (one-vs-rest): precision, recall (= sensitivity), specificity, accuracy
``(TP+TN)/N`` and DSC ``2TP/(2TP+FP+FN)`` (= F1), as in seed 000 equations 4-8; for two classes
the per-class accuracy equals the overall accuracy, as in its Tables 2 and 3. Averages are
unweighted means over classes (the seeds' "Average" rows); weighted F1 weighs DSC by support
(the C-NMC challenge's score). A ratio with a zero denominator is 0, as sklearn's default.

Intervals: Wilson score intervals for the proportions (precision, recall, specificity,
accuracy), which stay inside [0, 1] and behave at small n; a seeded percentile bootstrap over
the test images, stratified by true class, for DSC, weighted F1 and the averages, which are
not simple proportions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Z95 = 1.959963984540054
PER_CLASS = ("precision", "recall", "specificity", "accuracy", "dsc")


def confusion_matrix(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n_classes: int
) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} items but y_pred has {p.size}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"class indices must be in 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, float), np.asarray(den, float)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _counts(cm: np.ndarray) -> tuple[np.ndarray, ...]:
    """TP, FP, FN, TN per class; ``cm`` may be stacked (..., K, K)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    fp = cm.sum(axis=-2) - tp
    fn = cm.sum(axis=-1) - tp
    n = cm.sum(axis=(-2, -1))[..., None]
    return tp, fp, fn, n - tp - fp - fn


def per_class_from_cm(cm: np.ndarray) -> dict[str, np.ndarray]:
    """The five per-class metrics (arrays over the last class axis; cm may be stacked)."""
    tp, fp, fn, tn = _counts(cm)
    return {
        "precision": _div(tp, tp + fp),
        "recall": _div(tp, tp + fn),
        "specificity": _div(tn, tn + fp),
        "accuracy": _div(tp + tn, tp + tn + fp + fn),
        "dsc": _div(2 * tp, 2 * tp + fp + fn),
    }


def summary_from_cm(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Overall accuracy, balanced accuracy, weighted F1 and the per-metric class averages."""
    pc = per_class_from_cm(cm)
    support = cm.sum(axis=-1).astype(float)
    total = support.sum(axis=-1)
    out = {f"average_{k}": v.mean(axis=-1) for k, v in pc.items()}
    out["accuracy"] = _div(np.diagonal(cm, axis1=-2, axis2=-1).sum(axis=-1), total)
    out["balanced_accuracy"] = pc["recall"].mean(axis=-1)
    out["weighted_f1"] = _div((pc["dsc"] * support).sum(axis=-1), total)
    return out


def wilson_interval(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when n is 0."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At k = 0 or k = n the exact bound is 0 or 1; pin it so rounding cannot exclude the estimate.
    lo = 0.0 if k <= 0 else max(0.0, centre - half)
    hi = 1.0 if k >= n else min(1.0, centre + half)
    return (lo, hi)


def bootstrap_cms(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, n_boot: int, seed: int
) -> np.ndarray:
    """Confusion matrices of ``n_boot`` resamples of the test images, stratified by true class.

    Resampling within each true class keeps every class's support fixed, so no resample loses
    a class and turns its recall into 0/0.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for c in range(n_classes):
        members = np.flatnonzero(y_true == c)
        if members.size:
            parts.append(members[rng.integers(0, members.size, size=(n_boot, members.size))])
    idx = np.concatenate(parts, axis=1)
    cells = y_true[idx] * n_classes + y_pred[idx]
    offsets = np.arange(n_boot)[:, None] * n_classes * n_classes
    flat = np.bincount((cells + offsets).ravel(), minlength=n_boot * n_classes * n_classes)
    return flat.reshape(n_boot, n_classes, n_classes)


def _ci(samples: np.ndarray) -> list[float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


def auroc_ovr(y_true: np.ndarray, proba: np.ndarray) -> list[float | None]:
    """One-vs-rest ROC AUC per class (Mann-Whitney, ties averaged); None without both classes."""
    out: list[float | None] = []
    for c in range(proba.shape[1]):
        pos = y_true == c
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos == 0 or n_neg == 0:
            out.append(None)
            continue
        # Average ranks (1-based) of tied scores: each distinct value gets its run's mean rank.
        _, inverse, counts = np.unique(proba[:, c], return_inverse=True, return_counts=True)
        ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
        out.append(float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)))
    return out


def classification_report(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    labels: Sequence[str],
    proba: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric of the seeds' tables, with 95 % intervals, as a JSON-ready dict."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    k = len(labels)
    cm = confusion_matrix(t, p, k)
    tp, fp, fn, tn = _counts(cm)
    pc = per_class_from_cm(cm)
    summary = summary_from_cm(cm)
    boot_cm = bootstrap_cms(t, p, k, n_boot, seed) if t.size else None
    boot_pc = per_class_from_cm(boot_cm) if boot_cm is not None else None
    boot_sum = summary_from_cm(boot_cm) if boot_cm is not None else None
    denominators = {
        "precision": (tp, tp + fp),
        "recall": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "accuracy": (tp + tn, tp + tn + fp + fn),
    }

    per_class: dict[str, Any] = {}
    for c, label in enumerate(labels):
        entry: dict[str, Any] = {"support": int(cm[c].sum())}
        for m in PER_CLASS:
            if m in denominators:
                num, den = denominators[m]
                ci = list(wilson_interval(float(num[c]), float(den[c])))
            else:
                ci = _ci(boot_pc[m][:, c]) if boot_pc is not None else [0.0, 1.0]
            entry[m] = {"value": float(pc[m][c]), "ci95": ci}
        per_class[label] = entry

    def with_ci(key: str) -> dict[str, Any]:
        ci = _ci(boot_sum[key]) if boot_sum is not None else [0.0, 1.0]
        return {"value": float(summary[key]), "ci95": ci}

    n = int(cm.sum())
    acc_ci = list(wilson_interval(float(np.trace(cm)), float(n)))
    report: dict[str, Any] = {
        "labels": list(labels),
        "n": n,
        "n_per_class": {label: int(cm[c].sum()) for c, label in enumerate(labels)},
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_axes": "rows = true class, columns = predicted class, in label order",
        "per_class": per_class,
        "average": {m: with_ci(f"average_{m}") for m in PER_CLASS},
        "accuracy": {"value": float(summary["accuracy"]), "ci95": acc_ci},
        "balanced_accuracy": with_ci("balanced_accuracy"),
        "weighted_f1": with_ci("weighted_f1"),
        "ci_method": (
            "Wilson score 95% for precision, recall, specificity and accuracy; percentile "
            f"bootstrap 95% ({n_boot} resamples of the test images within each true class, "
            f"seed {seed}) for DSC, weighted F1, balanced accuracy and the class averages"
        ),
    }
    if proba is not None:
        aucs = auroc_ovr(t, np.asarray(proba, float))
        report["auroc"] = dict(zip(labels, aucs, strict=True))
    return report


def headline(report: dict[str, Any]) -> dict[str, float | int]:
    """The few numbers training.json carries: overall and averaged metrics, and n."""
    out: dict[str, float | int] = {
        "accuracy": report["accuracy"]["value"],
        "balanced_accuracy": report["balanced_accuracy"]["value"],
        "weighted_f1": report["weighted_f1"]["value"],
    }
    for m in PER_CLASS:
        out[f"average_{m}"] = report["average"][m]["value"]
    out["n_test"] = report["n"]
    return out
