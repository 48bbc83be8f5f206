"""edge.stats runs on a device: numpy only, with TensorFlow (and scipy, sklearn...) missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

CODE = """
import json, sys
import tests.without_tensorflow as w
w.block("scipy", "sklearn", "cv2", "pydantic", "ai_edge_litert", "trainer", "converters")
from edge.stats import GateThresholds, acceptance_gate, wilson_interval
t = GateThresholds(min_agreement=0.5, max_recall_drop=0.5, max_accuracy_drop=0.5)
v = acceptance_gate([0, 1, 1, 0], [0, 1, 0, 0], ["HEM", "ALL"], t, y_true=[0, 1, 1, 0])
heavy = {"tensorflow", "keras", "scipy", "sklearn", "cv2", "pydantic", "trainer", "converters"}
print(json.dumps({
    "passed": v.passed,
    "agreement": v.agreement,
    "blast_fraction_ci": wilson_interval(12, 200),
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in heavy),
}))
"""


def test_edge_stats_imports_and_works_with_tensorflow_blocked() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["passed"] is True and out["agreement"] == 0.75
    lo, hi = out["blast_fraction_ci"]  # 12 blasts in 200 cells (see test_intervals)
    assert abs(lo - 0.034652) < 1e-6 and abs(hi - 0.101932) < 1e-6
    assert out["loaded"] == []
