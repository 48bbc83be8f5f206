"""PNG plots of a run: training curves with LR and DWELL events, and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # no display on a workstation job or in CI
    import matplotlib.pyplot as plt

    return plt


def _floats(rows: Sequence[dict[str, str]], key: str) -> np.ndarray:
    return np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])


def plot_history(rows: Sequence[dict[str, str]], path: Path, title: str = "") -> None:
    """Loss, accuracy and LR per epoch; cuts, rollbacks, stops and phase changes marked."""
    plt = _pyplot()
    epochs = np.array([int(r["epoch"]) for r in rows])
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    for ax, metric in zip(axes[:2], ("loss", "accuracy"), strict=True):
        ax.plot(epochs, _floats(rows, metric), "o-", ms=3, label=f"train {metric}")
        ax.plot(epochs, _floats(rows, f"val_{metric}"), "s-", ms=3, label=f"validation {metric}")
        ax.set_ylabel(metric)
    lr = axes[2]
    lr.step(epochs, _floats(rows, "lr"), where="mid", color="black", label="learning rate")
    lr.set_yscale("log")
    lr.set_ylabel("learning rate")
    lr.set_xlabel("epoch")
    cuts = [r for r in rows if r.get("action") == "cut"]
    if cuts:
        # A cut at the end of epoch e sets the LR of epoch e + 1: drawn between the two.
        lr.plot(
            [int(r["epoch"]) + 0.5 for r in cuts],
            [float(r["lr_next"]) for r in cuts],
            "v",
            color="tab:orange",
            label="LR cut (DWELL)",
        )
    marks = (
        ("restored", "tab:red", "--", "weights restored"),
        ("stop", "black", "-", "early stop"),
    )
    for key, colour, style, name in marks:
        hits = [int(r["epoch"]) for r in rows if r.get(key) == "1"]
        for i, e in enumerate(hits):
            for ax in axes:
                ax.axvline(e, color=colour, ls=style, lw=1, label=name if i == 0 else None)
    phases = [r["phase"] for r in rows]
    for i in range(1, len(rows)):
        if phases[i] != phases[i - 1]:
            for ax in axes:
                ax.axvline(epochs[i] - 0.5, color="grey", lw=2, alpha=0.5)
            axes[0].annotate(phases[i], (epochs[i] - 0.4, 0.95), xycoords=("data", "axes fraction"))
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: Path, title: str = "") -> None:
    """Counts in each cell, colour = the row's fraction (recall per true class)."""
    plt = _pyplot()
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    size = 1.2 + 0.9 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            colour = "white" if frac[i, j] > 0.5 else "black"
            ax.text(j, i, f"{cm[i, j]}\n{frac[i, j]:.0%}", ha="center", va="center", color=colour)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (test)")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
