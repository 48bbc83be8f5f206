"""Stage 4, decide: scores -> typed results, each with its decision and reasons.

The decision is apart from the scores: ``label`` by default; ``needs_review`` when the top
probability is below the bundle's (or the config's) ``min_confidence``. Calibration,
out-of-distribution and optical quality checks add their reasons here, without touching
inference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from edge.contracts.results import (
    CellResult,
    Decision,
    ErrorResult,
    FrameResult,
    Result,
    Scores,
)
from edge.pipeline.infer import Inferred


@dataclass(frozen=True)
class Decider:
    min_confidence: float | None = None  # below it: needs_review

    def decide(self, scores: Scores) -> Decision:
        reasons = []
        if self.min_confidence is not None and scores.score < self.min_confidence:
            reasons.append(
                f"low confidence: {scores.label} {scores.score:.2f} < {self.min_confidence:.2f}"
            )
        return Decision("needs_review", tuple(reasons)) if reasons else Decision()

    def results(self, inferred: Inferred) -> list[Result]:
        """The results of one frame: one per input, or one error."""
        prepared = inferred.prepared
        frame, ref, notes = prepared.frame, prepared.ref, prepared.notes
        if prepared.failed is not None:
            stage, reason = prepared.failed
            return [ErrorResult(ref, stage, reason, notes)]
        if inferred.error is not None:
            return [ErrorResult(ref, "inference", inferred.error, notes)]
        timing = {
            "read": frame.read_ms,
            "preprocess": prepared.preprocess_ms,
            "inference": inferred.inference_ms,
            "total": (time.time() - frame.captured_at) * 1e3 + frame.read_ms,
        }
        out: list[Result] = []
        for item, scores in zip(prepared.inputs, inferred.scores, strict=True):
            decision = self.decide(scores)
            region = item.region
            if region is None:
                out.append(FrameResult(ref, scores, decision, timing, notes))
            else:
                out.append(
                    CellResult(
                        ref,
                        region.index,
                        region.bbox,
                        scores,
                        decision,
                        region.cut_by_edge,
                        timing,
                        notes,
                    )
                )
        return out
