"""The preprocessing contract: a small declarative spec a model was trained with.

JSON-serialisable and hashed (its sha256 travels in every result); the implementation that
follows it is edge.vision.preprocessing, the one the trainer and the device both call. An
unknown key or value is an error naming the key and the allowed values: a spec the device
cannot run exactly (``"macenko"``, ``"no"`` for a switch, ``true`` for a size) is refused, never
approximated.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

from edge.errors import BlastscopeError

Contrast = Literal["none", "hist_eq", "clahe"]
ResizePolicy = Literal["pad", "center_crop", "stretch"]
Interpolation = Literal["area", "linear", "cubic", "nearest"]
Scaling = Literal["none", "unit", "symmetric", "minmax"]
ColourNormalisation = Literal["none", "reinhard"]
INTERPOLATIONS: tuple[str, ...] = get_args(Interpolation)

# The value range each scaling emits; the bundle checks it against the model's declared range.
SCALING_RANGES: dict[str, tuple[float, float]] = {
    "none": (0.0, 255.0),
    "unit": (0.0, 1.0),
    "symmetric": (-1.0, 1.0),
    "minmax": (0.0, 1.0),
}


class PreprocessError(BlastscopeError):
    """A preprocessing spec or input image that cannot be used."""


def _integer(lo: int, hi: int) -> Callable[[Any], bool]:
    # bool is an int subclass, but `true` for a size is a mistake, not 1.
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _number(lo: float, hi: float) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and lo <= v <= hi


def _boolean(v: Any) -> bool:
    # Only a real boolean: the string "no" is truthy and would switch the step on.
    return isinstance(v, bool)


def _odd_window(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 3 and v % 2 == 1


def _choice(alias: Any) -> tuple[Callable[[Any], bool], str]:
    allowed = get_args(alias)
    return (lambda v: isinstance(v, str) and v in allowed), "one of " + ", ".join(allowed)


# One rule per field: (test, what is expected). A field without a rule makes every spec fail
# to build (KeyError), so no new field slips in unchecked.
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "height": (_integer(8, 4096), "an integer from 8 to 4096"),
    "width": (_integer(8, 4096), "an integer from 8 to 4096"),
    "colour_normalisation": _choice(ColourNormalisation),
    "artefact_mask": (_boolean, "true or false"),
    "mask_window": (_odd_window, "an odd integer >= 3"),
    "contrast": _choice(Contrast),
    "clahe_clip": (_number(0.1, 40.0), "a number from 0.1 to 40"),
    "clahe_tile": (_integer(1, 64), "an integer from 1 to 64"),
    "channel_mean_filter": (_boolean, "true or false"),
    "resize_policy": _choice(ResizePolicy),
    "interpolation": _choice(Interpolation),
    "pad_value": (_integer(0, 255), "an integer from 0 to 255"),
    "scaling": _choice(Scaling),
}


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
        for f in fields(self):
            value = getattr(self, f.name)
            valid, expected = _RULES[f.name]
            if not valid(value):
                raise PreprocessError(
                    f"preprocessing.{f.name}={value!r} is invalid: expected {expected}"
                )
        # 2 and 2.0 are the same clip limit: one canonical JSON form, so one sha256.
        object.__setattr__(self, "clahe_clip", float(self.clahe_clip))

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
