"""report.json / report.md, the plots, `compare` and `evaluate`'s input checks (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainer.compare import load_run, render
from trainer.errors import DataError, RunFileError
from trainer.evaluate import run_evaluate
from trainer.metrics import classification_report
from trainer.report import build_report, split_description, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _report(split: str = "group") -> dict:
    t = [0] * 6 + [1] * 4
    p = [0, 0, 0, 0, 0, 1, 0, 1, 1, 1]
    proba = np.eye(2)[p] * 0.8 + 0.1
    metrics = classification_report(t, p, ["ALL", "HEM"], proba, n_boot=100, seed=0)
    meta = {"strategy": split, "group_source": "subject", "seed": 0, "groups_crossing_splits": 0}
    return build_report(
        metrics,
        {
            "model_name": "tiny",
            "data": "/data/cnmc",
            "evaluated_on": "the test split",
            "split_strategy": split_description(meta),
            "split": meta,
            "split_counts": {
                s: {"images": {"ALL": 6, "HEM": 4}, "groups": 3} for s in ("train", "val", "test")
            },
            "warnings": ["a warning"] if split == "random" else [],
        },
    )


def test_report_json_has_every_key_the_issue_names(tmp_path: Path) -> None:
    write_report(tmp_path, _report())
    rep = json.loads((tmp_path / "report.json").read_text())
    for key in ("per_class", "average", "accuracy", "weighted_f1", "confusion_matrix"):
        assert key in rep, key
    assert rep["n_per_class"] == {"ALL": 6, "HEM": 4} and rep["n"] == 10
    assert rep["confusion_matrix"] == [[5, 1], [1, 3]]
    assert rep["split_strategy"].startswith("by group (subject), stratified, seed 0")
    for metric in ("precision", "recall", "specificity", "accuracy", "dsc"):
        for entry in (rep["per_class"]["ALL"][metric], rep["average"][metric]):
            lo, hi = entry["ci95"]
            assert 0 <= lo <= entry["value"] <= hi <= 1, metric
    lo, hi = rep["weighted_f1"]["ci95"]
    assert lo <= rep["weighted_f1"]["value"] <= hi and "95%" in rep["ci_method"]


def test_report_md_is_the_seeds_table_for_a_person(tmp_path: Path) -> None:
    write_report(tmp_path, _report("random"))
    md = (tmp_path / "report.md").read_text()
    assert (
        "| Class | n | Precision | Recall (sensitivity) | Specificity | Accuracy | DSC (F1) |" in md
    )
    assert "| ALL | 6 | 83.33 (" in md and "| **Average** | 10 |" in md
    assert "- Weighted F1: " in md and "**Warning:** a warning" in md
    assert "random by image (reproduces the papers" in md
    assert "| ALL | 5 | 1 |" in md  # the confusion matrix row
    assert "| test | 6 | 4 | 3 |" in md  # the split table


def test_plots_are_png_with_dwell_events(tmp_path: Path) -> None:
    from trainer.plots import plot_confusion, plot_history

    def row(epoch: int, phase: str, action: str, restored: str = "0", stop: str = "0") -> dict:
        return {
            "epoch": str(epoch),
            "phase": phase,
            "loss": str(1 / epoch),
            "accuracy": str(1 - 1 / (epoch + 1)),
            "val_loss": str(1.2 / epoch),
            "val_accuracy": "0.5",
            "lr": "0.001",
            "lr_next": "0.0005" if action == "cut" else "0.001",
            "action": action,
            "restored": restored,
            "stop": stop,
        }

    rows = [row(1, "head", "fixed"), row(2, "fine_tune", "improved"), row(3, "fine_tune", "cut")]
    rows += [row(4, "fine_tune", "cut", restored="1", stop="1")]
    plot_history(rows, tmp_path / "curves.png", title="tiny")
    plot_confusion(np.array([[5, 1], [1, 3]]), ["ALL", "HEM"], tmp_path / "confusion.png")
    for name in ("curves.png", "confusion.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG, name


def test_compare_needs_report_json_and_renders_both_formats(tmp_path: Path) -> None:
    with pytest.raises(RunFileError, match=r"no report\.json; pass a `trainer fit` or `evaluate`"):
        load_run(tmp_path)
    write_report(tmp_path / "run-a", _report())
    (tmp_path / "run-a" / "training.json").write_text(
        json.dumps({"training": {"lr_schedule": "fixed"}})
    )
    md = render([load_run(tmp_path / "run-a")])
    assert "| run-a | tiny | fixed | group | ALL | 6 | 83.33 |" in md
    assert "| run-a | 80.00 (" in md  # accuracy with its interval
    csv_text = render([load_run(tmp_path / "run-a")], "csv")
    assert (
        csv_text.splitlines()[0]
        == "Run,Model,LR,Split,Class,n,Precision,Recall,Specificity,Accuracy,DSC"
    )


def test_evaluate_input_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such model; pass a model\.keras or its run directory"):
        run_evaluate(tmp_path / "nope.keras", str(tmp_path), tmp_path / "out")
    (tmp_path / "model.keras").write_bytes(b"")
    (tmp_path / "training.json").write_text(
        json.dumps(
            {
                "labels": ["A", "B"],
                "preprocessing": {"height": 32, "width": 32},
                "model_name": "tiny",
                "image_size": 32,
                "task": "classes",
                "data": "/d",
                "data_fingerprint": "x",
                "split_file": "split.json",
                "weights": "none",
                "metrics": {},
            }
        )
    )
    with pytest.raises(DataError, match=r"pass --data DIR .* or --split-file"):
        run_evaluate(tmp_path, None, tmp_path / "out")
    with pytest.raises(DataError, match="--subset 'holdout'"):
        run_evaluate(
            tmp_path, None, tmp_path / "out", split_file=tmp_path / "s.json", subset="holdout"
        )
