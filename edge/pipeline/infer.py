"""Stage 3, infer: model inputs -> scores (the bundle's graph, then its float head)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from edge.contracts.results import Scores
from edge.model.bundle import Bundle
from edge.pipeline.prepare import Prepared


@dataclass(frozen=True)
class Inferred:
    """Scores for each input of a prepared frame, or why inference failed."""

    prepared: Prepared
    scores: tuple[Scores, ...] = ()
    inference_ms: float = 0.0
    error: str | None = None


def infer(prepared: Prepared, bundle: Bundle) -> Inferred:
    if prepared.failed is not None:
        return Inferred(prepared)
    t0 = time.perf_counter()
    try:
        scores = tuple(
            Scores.of(bundle.labels, bundle.probabilities(item.x)) for item in prepared.inputs
        )
    except Exception as exc:  # the interpreter's errors are RuntimeError/ValueError
        return Inferred(prepared, error=f"{type(exc).__name__}: {exc}")
    for s in scores:
        if not all(0.0 <= p <= 1.0 for p in s.probabilities):  # NaN fails both
            return Inferred(prepared, error=f"the model produced invalid scores {s.probabilities}")
    return Inferred(prepared, scores, inference_ms=(time.perf_counter() - t0) * 1e3)
