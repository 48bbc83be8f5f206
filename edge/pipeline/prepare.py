"""Stage 2, prepare: a captured frame -> the model inputs it yields, or why it yields none.

Frame mode yields one input, the whole frame through the bundle's preprocessing. Cells mode
(a later stage of the project) will yield one input per white cell found, each with its place
in the frame; everything after this stage already takes a list.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edge.contracts.preprocess_spec import PreprocessError
from edge.contracts.results import ErrorStage, FrameRef, Note
from edge.model.bundle import Bundle
from edge.pipeline.frames import Frame


@dataclass(frozen=True)
class Region:
    """Where a model input sits in its frame (cells mode): index, [x, y, w, h], cut by edge."""

    index: int
    bbox: tuple[int, int, int, int]
    cut_by_edge: bool = False


@dataclass(frozen=True)
class ModelInput:
    x: np.ndarray  # what the bundle's model takes (bundle.prepare)
    region: Region | None = None  # None: the whole frame


@dataclass(frozen=True)
class Prepared:
    """A frame ready for inference: its inputs, or the stage and reason it failed."""

    frame: Frame
    ref: FrameRef
    inputs: tuple[ModelInput, ...] = ()
    preprocess_ms: float = 0.0
    failed: tuple[ErrorStage, str] | None = None

    @property
    def notes(self) -> tuple[Note, ...]:
        return tuple(Note(w["code"], w["message"]) for w in self.frame.warnings)


def frame_ref(frame: Frame) -> FrameRef:
    h, w = (None, None) if frame.image is None else frame.image.shape[:2]
    return FrameRef(frame.frame_id, frame.origin, frame.captured_at, w, h)


def prepare_frame(frame: Frame, bundle: Bundle) -> Prepared:
    """Frame mode: the whole frame is the one input."""
    ref = frame_ref(frame)
    if frame.image is None:
        return Prepared(frame, ref, failed=("read", frame.error or "no image"))
    t0 = time.perf_counter()
    try:
        x = bundle.prepare(frame.image)
    except PreprocessError as exc:
        return Prepared(frame, ref, failed=("preprocess", str(exc)))
    ms = (time.perf_counter() - t0) * 1e3
    return Prepared(frame, ref, (ModelInput(x),), preprocess_ms=ms)
