"""The statistics the device reports and the acceptance gate it applies (numpy only).

- ``edge.stats.intervals`` — Wilson intervals for proportions, the stratified bootstrap.
- ``edge.stats.confusion`` — confusion matrices and the per-class metrics read from them.
- ``edge.stats.auroc`` — one-vs-rest ROC AUC from scores.
- ``edge.stats.gate`` — the acceptance gate for an int8 export or a new head.

The trainer's reports and ``converters verify`` use these same functions.
"""

from edge.stats.auroc import auroc_ovr
from edge.stats.confusion import (
    PER_CLASS,
    class_counts,
    class_recalls,
    confusion_matrix,
    per_class_from_cm,
    summary_from_cm,
)
from edge.stats.gate import (
    ClassRecall,
    GateCheck,
    GateError,
    GateFailure,
    GateThresholds,
    GateVerdict,
    acceptance_gate,
)
from edge.stats.intervals import Z95, bootstrap_cms, percentile_interval, wilson_interval

__all__ = [
    "PER_CLASS",
    "Z95",
    "ClassRecall",
    "GateCheck",
    "GateError",
    "GateFailure",
    "GateThresholds",
    "GateVerdict",
    "acceptance_gate",
    "auroc_ovr",
    "bootstrap_cms",
    "class_counts",
    "class_recalls",
    "confusion_matrix",
    "per_class_from_cm",
    "percentile_interval",
    "summary_from_cm",
    "wilson_interval",
]
