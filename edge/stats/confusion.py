"""Confusion matrices and the metrics read from them (the seeds' tables).

Per class (one-vs-rest): precision, recall (= sensitivity), specificity, accuracy
``(TP+TN)/N`` and DSC ``2TP/(2TP+FP+FN)`` (= F1), as in seed 000 equations 4-8; for two classes
the per-class accuracy equals the overall accuracy, as in its Tables 2 and 3. Averages are
unweighted means over classes (the seeds' "Average" rows); weighted F1 weighs DSC by support
(the C-NMC challenge's score). A ratio with a zero denominator is 0, as sklearn's default.

Every function taking a matrix also takes a stack of them (..., K, K), so the bootstrap's
thousand resamples are one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise; 0 where den is 0."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def class_counts(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(TP, FP, FN, TN) per class, as floats; ``cm`` may be stacked (..., K, K)."""
    cm = np.asarray(cm)
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    fp = cm.sum(axis=-2) - tp
    fn = cm.sum(axis=-1) - tp
    n = cm.sum(axis=(-2, -1))[..., None]
    return tp, fp, fn, n - tp - fp - fn


def per_class_from_cm(cm: np.ndarray) -> dict[str, np.ndarray]:
    """The five per-class metrics of PER_CLASS (arrays over the last, class, axis)."""
    tp, fp, fn, tn = class_counts(cm)
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "dsc": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def summary_from_cm(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Overall accuracy, balanced accuracy, weighted F1 and ``average_<metric>`` per PER_CLASS."""
    cm = np.asarray(cm)
    pc = per_class_from_cm(cm)
    support = cm.sum(axis=-1).astype(float)
    total = support.sum(axis=-1)
    out = {f"average_{k}": v.mean(axis=-1) for k, v in pc.items()}
    out["accuracy"] = _ratio(np.diagonal(cm, axis1=-2, axis2=-1).sum(axis=-1), total)
    out["balanced_accuracy"] = pc["recall"].mean(axis=-1)
    out["weighted_f1"] = _ratio((pc["dsc"] * support).sum(axis=-1), total)
    return out


def class_recalls(cm: np.ndarray) -> list[float | None]:
    """Each class's recall from one matrix; None for a class with no image (not 0: unknown)."""
    recall = per_class_from_cm(cm)["recall"]
    support = np.asarray(cm).sum(axis=-1)
    return [float(r) if n else None for r, n in zip(recall, support, strict=True)]
