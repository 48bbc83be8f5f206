"""Multinomial logistic regression in numpy: a dense softmax head trained without TensorFlow.

Used for the colour-histogram baseline of the evaluation report and for head-only fine-tuning
on the device (Coral's answer too: softmax regression on frozen embeddings). Features are
standardised while fitting and the standardisation is folded back into the weights, so the
result is a plain ``softmax(x @ kernel + bias)`` on raw features: the same form as a bundle head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.errors import BlastscopeError


@dataclass(frozen=True)
class LinearHead:
    kernel: np.ndarray  # (D, N)
    bias: np.ndarray  # (N,)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return softmax(np.asarray(x, np.float64) @ self.kernel + self.bias)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis; the max is subtracted first so exp cannot overflow."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def balanced_class_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """n / (k * n_c) per class, so every class carries equal total weight."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    if np.any(counts == 0):
        missing = [int(c) for c in np.flatnonzero(counts == 0)]
        raise BlastscopeError(f"class index(es) {missing} have no training examples")
    return counts.sum() / (num_classes * counts)


def fit_softmax_regression(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    l2: float = 1e-3,
    iterations: int = 500,
    learning_rate: float = 0.5,
    class_weight: np.ndarray | None = None,
    init: LinearHead | None = None,
) -> LinearHead:
    """Fit by full-batch Nesterov gradient descent (deterministic: no sampling).

    `init` warm-starts from an existing head (fine-tuning); `l2` is on standardised weights.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise BlastscopeError(f"features {x.shape} and labels {y.shape} do not match")
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std < 1e-12] = 1.0
    xs = (x - mean) / std
    onehot = np.eye(num_classes)[y]
    w_sample = (class_weight if class_weight is not None else np.ones(num_classes))[y]
    w_sample = w_sample / w_sample.sum()
    if init is not None:
        # Unfold the raw-feature head into standardised space: x@K+b = xs@(K*std) + (mean@K + b).
        w = init.kernel * std[:, None]
        b = init.bias + mean @ init.kernel
    else:
        w = np.zeros((x.shape[1], num_classes))
        b = np.zeros(num_classes)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    momentum = 0.9
    for _ in range(iterations):
        lw, lb = w + momentum * vw, b + momentum * vb
        grad_logits = (softmax(xs @ lw + lb) - onehot) * w_sample[:, None]
        gw = xs.T @ grad_logits + l2 * lw
        gb = grad_logits.sum(axis=0)
        vw = momentum * vw - learning_rate * gw
        vb = momentum * vb - learning_rate * gb
        w, b = w + vw, b + vb
    kernel = w / std[:, None]
    bias = b - mean @ kernel
    return LinearHead(kernel.astype(np.float32), bias.astype(np.float32))
