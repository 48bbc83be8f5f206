"""`trainer compare`: runs side by side, per class and averaged, like seed 000's Tables 2 and 3."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.errors import RunFileError
from trainer.metrics import PER_CLASS
from trainer.run_files import REPORT_JSON, TRAINING_FILE, read_json

COLUMNS = (
    "Run",
    "Model",
    "LR",
    "Split",
    "Class",
    "n",
    *(m.capitalize() for m in PER_CLASS[:4]),
    "DSC",
)


def load_run(path: str | Path) -> dict[str, Any]:
    """A run's report.json (required) and training.json (if present) as one dict."""
    run = Path(path)
    if not (run / REPORT_JSON).is_file():
        raise RunFileError(f"{run}: no {REPORT_JSON}; pass a `trainer fit` or `evaluate` --out")
    report = read_json(run / REPORT_JSON, "report")
    # An evaluation's report names its model; that model's training.json says how it trained.
    source = run if (run / TRAINING_FILE).is_file() else Path(report.get("model_file", run)).parent
    training = (
        read_json(source / TRAINING_FILE, "training") if (source / TRAINING_FILE).is_file() else {}
    )
    return {"name": run.name, "report": report, "training": training}


def table_rows(runs: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Per run: one row per class, then its Average row; percentages with two decimals."""
    rows = []
    for run in runs:
        rep, tr = run["report"], run["training"]
        schedule = (tr.get("training") or {}).get("lr_schedule", "")
        lr = {"dwell": "dynamic (DWELL)", "fixed": "fixed"}.get(schedule, schedule or "?")
        split = (rep.get("split") or {}).get("strategy") or "folder"
        head = [run["name"], rep.get("model_name", "?"), lr, split]
        for label in rep["labels"]:
            entry = rep["per_class"][label]
            values = [f"{100 * entry[m]['value']:.2f}" for m in PER_CLASS]
            rows.append([*head, label, str(entry["support"]), *values])
            head = ["", "", "", ""]
        avg = [f"{100 * rep['average'][m]['value']:.2f}" for m in PER_CLASS]
        rows.append(["", "", "", "", "Average", str(rep["n"]), *avg])
    return rows


def render(runs: Sequence[dict[str, Any]], fmt: str = "md") -> str:
    rows = table_rows(runs)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
        return buf.getvalue()
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "| Run | Accuracy (95% CI) | Weighted F1 | Balanced accuracy | Split |"]
    lines.append("|---|---|---|---|---|")
    for run in runs:
        rep = run["report"]
        lo, hi = rep["accuracy"]["ci95"]
        lines.append(
            f"| {run['name']} | {100 * rep['accuracy']['value']:.2f} ({100 * lo:.1f}–"
            f"{100 * hi:.1f}) | {100 * rep['weighted_f1']['value']:.2f} | "
            f"{100 * rep['balanced_accuracy']['value']:.2f} | {rep.get('split_strategy', '?')} |"
        )
    return "\n".join(lines) + "\n"
