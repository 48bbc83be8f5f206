"""What one frame produces, as typed objects: scores, a decision, and the frame they belong to.

Scores (what the model says) are kept apart from the decision (what the device does with it:
``label``, ``needs_review`` or ``rejected``, with reasons), so calibration, thresholds and
out-of-distribution checks change the decision without touching inference. A frame yields a
`FrameResult` (whole-field mode), or `CellResult`s (one per white cell found), or an
`ErrorResult` when it could not be classified. edge.contracts.messages turns each into the
JSON a dashboard receives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["label", "needs_review", "rejected"]
OUTCOMES: tuple[Outcome, ...] = ("label", "needs_review", "rejected")
ErrorStage = Literal["read", "preprocess", "inference"]


@dataclass(frozen=True)
class Note:
    """A condition of a frame a reviewer should know about (codes: result.schema.json)."""

    code: str
    message: str


@dataclass(frozen=True)
class FrameRef:
    """Which frame a result belongs to: its id (ties the cells of a frame together), where it
    came from (folder:FILE, video:FILE#N, camera:N, picamera:N), when, and its size."""

    id: str
    origin: str
    captured_at: float  # unix time
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Scores:
    """The model's class probabilities, in the bundle's label order."""

    labels: tuple[str, ...]
    probabilities: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.probabilities) or not self.labels:
            raise ValueError(
                f"{len(self.labels)} labels for {len(self.probabilities)} probabilities"
            )

    @classmethod
    def of(cls, labels: Sequence[str], probabilities: Iterable[float]) -> Scores:
        return cls(tuple(labels), tuple(float(p) for p in probabilities))

    @property
    def top(self) -> int:
        """Index of the most probable class (the first on a tie)."""
        return max(range(len(self.probabilities)), key=self.probabilities.__getitem__)

    @property
    def label(self) -> str:
        return self.labels[self.top]

    @property
    def score(self) -> float:
        return self.probabilities[self.top]


@dataclass(frozen=True)
class Decision:
    """What the device makes of the scores. ``label``: publish the label as the answer;
    ``needs_review``: publish it, but a technologist must look (low confidence, unlike the
    training images, a quality warning); ``rejected``: not classified (failed a quality gate)."""

    outcome: Outcome = "label"
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"decision outcome {self.outcome!r}: expected one of {OUTCOMES}")


@dataclass(frozen=True)
class FrameResult:
    """A whole frame classified (frame mode)."""

    frame: FrameRef
    scores: Scores
    decision: Decision
    timing_ms: dict[str, float] = field(default_factory=dict)
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True)
class CellResult:
    """One white cell of a frame classified (cells mode); bbox is [x, y, w, h] in frame
    pixels, cut_by_edge when the frame's border cuts the cell."""

    frame: FrameRef
    index: int
    bbox: tuple[int, int, int, int]
    scores: Scores
    decision: Decision
    cut_by_edge: bool = False
    timing_ms: dict[str, float] = field(default_factory=dict)
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True)
class ErrorResult:
    """A frame that could not be classified: reported, never dropped."""

    frame: FrameRef
    stage: ErrorStage
    reason: str
    notes: tuple[Note, ...] = ()


Result = FrameResult | CellResult | ErrorResult
