"""The preprocessing contract: a small declarative spec a model was trained with.

JSON-serialisable and hashed (its sha256 travels in every result); the implementation that
follows it is edge.vision.preprocessing, the one the trainer and the device both call. An
unknown key or value is an error naming the key and the allowed values.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from edge.errors import BlastscopeError

Contrast = Literal["none", "hist_eq", "clahe"]
ResizePolicy = Literal["pad", "center_crop", "stretch"]
Interpolation = Literal["area", "linear", "cubic", "nearest"]
Scaling = Literal["none", "unit", "symmetric", "minmax"]
ColourNormalisation = Literal["none", "reinhard"]
INTERPOLATIONS = ("area", "linear", "cubic", "nearest")

# The value range each scaling emits; the bundle checks it against the model's declared range.
SCALING_RANGES: dict[str, tuple[float, float]] = {
    "none": (0.0, 255.0),
    "unit": (0.0, 1.0),
    "symmetric": (-1.0, 1.0),
    "minmax": (0.0, 1.0),
}


class PreprocessError(BlastscopeError):
    """A preprocessing spec or input image that cannot be used."""


@dataclass(frozen=True)
class PreprocessSpec:
    """Declarative, JSON-serialisable description of the preprocessing a model was trained with."""

    height: int = 224
    width: int = 224
    colour_normalisation: ColourNormalisation = "none"
    artefact_mask: bool = False
    mask_window: int = 15
    contrast: Contrast = "none"
    clahe_clip: float = 2.0
    clahe_tile: int = 8
    channel_mean_filter: bool = False
    resize_policy: ResizePolicy = "pad"
    interpolation: Interpolation = "area"
    pad_value: int = 0
    scaling: Scaling = "none"

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        def bad(field: str, value: Any, expected: str) -> PreprocessError:
            return PreprocessError(
                f"preprocessing.{field}={value!r} is invalid: expected {expected}"
            )

        for name in ("height", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 8 <= v <= 4096:
                raise bad(name, v, "an integer from 8 to 4096")
        if (
            not isinstance(self.mask_window, int)
            or self.mask_window < 3
            or self.mask_window % 2 == 0
        ):
            raise bad("mask_window", self.mask_window, "an odd integer >= 3")
        if self.contrast not in ("none", "hist_eq", "clahe"):
            raise bad("contrast", self.contrast, "one of none, hist_eq, clahe")
        if not 0.1 <= float(self.clahe_clip) <= 40.0:
            raise bad("clahe_clip", self.clahe_clip, "a number from 0.1 to 40")
        if not isinstance(self.clahe_tile, int) or not 1 <= self.clahe_tile <= 64:
            raise bad("clahe_tile", self.clahe_tile, "an integer from 1 to 64")
        if self.resize_policy not in ("pad", "center_crop", "stretch"):
            raise bad("resize_policy", self.resize_policy, "one of pad, center_crop, stretch")
        if self.interpolation not in INTERPOLATIONS:
            raise bad("interpolation", self.interpolation, "one of " + ", ".join(INTERPOLATIONS))
        if not isinstance(self.pad_value, int) or not 0 <= self.pad_value <= 255:
            raise bad("pad_value", self.pad_value, "an integer from 0 to 255")
        if self.scaling not in SCALING_RANGES:
            raise bad("scaling", self.scaling, "one of " + ", ".join(SCALING_RANGES))

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return (self.height, self.width)

    @property
    def output_range(self) -> tuple[float, float]:
        """The value range `preprocess` emits, which must equal what the model expects."""
        return SCALING_RANGES[self.scaling]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        """Build a spec from JSON data; unknown keys are an error naming the key."""
        if not isinstance(data, dict):
            raise PreprocessError(
                f"preprocessing spec must be a JSON object, got {type(data).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PreprocessError(
                f"preprocessing spec has unknown key(s) {unknown}; known keys: {sorted(known)}"
            )
        return cls(**data)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the form that is hashed."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()
