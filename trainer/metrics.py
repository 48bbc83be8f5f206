"""The seeds' metric tables for one evaluation, with 95 % confidence intervals, as JSON.

The arithmetic is edge.stats (the device reports the same numbers): the per-class metrics and
averages of edge.stats.confusion, Wilson intervals for the proportions (precision, recall,
specificity, accuracy), and a seeded percentile bootstrap over the test images, stratified by
true class, for DSC, weighted F1, balanced accuracy and the averages, which are not simple
proportions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.stats import (
    PER_CLASS,
    auroc_ovr,
    bootstrap_cms,
    class_counts,
    confusion_matrix,
    per_class_from_cm,
    percentile_interval,
    summary_from_cm,
    wilson_interval,
)

__all__ = ["PER_CLASS", "classification_report", "headline"]


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
    tp, fp, fn, tn = class_counts(cm)
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
                ci = (
                    list(percentile_interval(boot_pc[m][:, c]))
                    if boot_pc is not None
                    else [0.0, 1.0]
                )
            entry[m] = {"value": float(pc[m][c]), "ci95": ci}
        per_class[label] = entry

    def with_ci(key: str) -> dict[str, Any]:
        ci = list(percentile_interval(boot_sum[key])) if boot_sum is not None else [0.0, 1.0]
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
