"""report.json and report.md: the seeds' metric tables for one evaluation, with its context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.stats import PER_CLASS
from trainer.run_files import REPORT_JSON, REPORT_MD, write_json

REPORT_SCHEMA = 1
_TITLES = {
    "precision": "Precision",
    "recall": "Recall (sensitivity)",
    "specificity": "Specificity",
    "accuracy": "Accuracy",
    "dsc": "DSC (F1)",
}


def build_report(metrics: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Metrics (trainer.metrics.classification_report) plus what was evaluated and how split."""
    return {"schema": REPORT_SCHEMA, **context, **metrics}


def _pct(entry: dict[str, Any]) -> str:
    lo, hi = entry["ci95"]
    return f"{100 * entry['value']:.2f} ({100 * lo:.1f}–{100 * hi:.1f})"


def render_markdown(report: dict[str, Any]) -> str:
    labels = report["labels"]
    lines = [f"# Evaluation of {report.get('model_name', 'a model')}", ""]
    lines += [
        f"- Evaluated on: {report.get('evaluated_on', '?')} of `{report.get('data', '?')}`, "
        f"n = {report['n']}",
        f"- Split strategy: {report.get('split_strategy', '?')}",
    ]
    for warning in report.get("warnings", []):
        lines.append(f"- **Warning:** {warning}")
    lines += ["", "Percentages with 95 % confidence intervals in brackets.", ""]
    header = "| Class | n | " + " | ".join(_TITLES[m] for m in PER_CLASS) + " |"
    lines += [header, "|" + "---|" * (len(PER_CLASS) + 2)]
    for label in labels:
        entry = report["per_class"][label]
        cells = " | ".join(_pct(entry[m]) for m in PER_CLASS)
        lines.append(f"| {label} | {entry['support']} | {cells} |")
    avg = " | ".join(_pct(report["average"][m]) for m in PER_CLASS)
    lines.append(f"| **Average** | {report['n']} | {avg} |")
    lines += [
        "",
        f"- Overall accuracy: {_pct(report['accuracy'])}",
        f"- Balanced accuracy: {_pct(report['balanced_accuracy'])}",
        f"- Weighted F1: {_pct(report['weighted_f1'])}",
    ]
    if report.get("auroc"):
        aucs = ", ".join(
            f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in report["auroc"].items()
        )
        lines.append(f"- AUROC (one-vs-rest): {aucs}")
    lines += ["", "## Confusion matrix (rows: true, columns: predicted)", ""]
    lines.append("| true \\ predicted | " + " | ".join(labels) + " |")
    lines.append("|" + "---|" * (len(labels) + 1))
    for label, row in zip(labels, report["confusion_matrix"], strict=True):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    split = report.get("split_counts")
    if split:
        lines += ["", "## Split (images per class; groups)", ""]
        lines.append("| split | " + " | ".join(labels) + " | groups |")
        lines.append("|" + "---|" * (len(labels) + 2))
        for name, c in split.items():
            counts = " | ".join(str(c["images"].get(lab, 0)) for lab in labels)
            lines.append(f"| {name} | {counts} | {c['groups']} |")
    lines += ["", f"_{report['ci_method']}._", ""]
    return "\n".join(lines)


def write_report(folder: Path, report: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / REPORT_JSON, report)
    (folder / REPORT_MD).write_text(render_markdown(report))


def split_description(meta: dict[str, Any]) -> str:
    """One line: how the data was split, and whether groups leak."""
    strategy = meta.get("strategy", "?")
    source = meta.get("group_source", "?")
    leaks = meta.get("groups_crossing_splits", 0)
    if strategy == "random":
        return (
            f"random by image (reproduces the papers; {leaks} groups of {source} cross "
            "splits, so test metrics are inflated)"
        )
    return f"by group ({source}), stratified, seed {meta.get('seed')}; {leaks} groups cross splits"
