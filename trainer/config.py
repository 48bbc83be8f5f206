"""`trainer fit`'s options as one serialisable object (run_config.json, for --resume)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from edge.errors import BlastscopeError
from trainer.dwell import DwellConfig
from trainer.pipeline import AugmentConfig
from trainer.prepare import GroupingOptions

RUN_CONFIG = "run_config.json"
CHECKPOINT_DIR = "checkpoint"
LR_SCHEDULES = ("dwell", "fixed")
BALANCING = ("class-weights", "none")
CACHE_MODES = ("auto", "memory", "disk", "none")
DEFAULT_HEAD_EPOCHS = 5


class FitError(BlastscopeError):
    """A training run that cannot start or continue as asked."""


@dataclass
class FitConfig:
    """Everything `trainer fit` was asked; saved as run_config.json so --resume can reuse it."""

    data: str
    out: str
    layout: str = "auto"
    task: str = "auto"
    model: str = "efficientnet-b3"
    image_size: int | None = None  # None: the model's native size
    weights: str = "imagenet"
    dropout: float = 0.2
    batch_size: int = 32
    head_epochs: int | None = None  # None: 5 with pretrained weights, 0 from scratch
    fine_tune_epochs: int = 45
    lr: float = 1e-3  # seed 000's Adam LR, for the first phase that runs
    fine_tune_lr: float = 1e-4  # for the fine-tuning phase after a head phase
    fine_tune_fraction: float = 0.3  # top share of the base's layers trained in fine-tuning
    lr_schedule: str = "dwell"
    dwell: DwellConfig = field(default_factory=DwellConfig)
    split: str = "group"
    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)
    split_file: str | None = None
    seed: int = 0
    grouping: GroupingOptions = field(default_factory=GroupingOptions)
    balance: str = "class-weights"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    preprocess: dict[str, Any] = field(default_factory=dict)  # PreprocessSpec fields but size
    cache: str = "auto"
    strategy: str = "default"
    n_boot: int = 1000
    deterministic: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitConfig:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        kw["dwell"] = DwellConfig(**kw.get("dwell", {}))
        kw["grouping"] = GroupingOptions(**kw.get("grouping", {}))
        kw["augment"] = AugmentConfig(**kw.get("augment", {}))
        kw["fractions"] = tuple(kw.get("fractions", (0.9, 0.05, 0.05)))
        return cls(**kw)

    def check(self) -> None:
        def bad(flag: str, value: Any, expected: str) -> FitError:
            return FitError(f"{flag} {value!r} is invalid: expected {expected}")

        if self.lr_schedule not in LR_SCHEDULES:
            raise bad("--lr-schedule", self.lr_schedule, "dwell or fixed")
        if self.balance not in BALANCING:
            raise bad("--balance", self.balance, "class-weights or none")
        if self.cache not in CACHE_MODES:
            raise bad("--cache", self.cache, " | ".join(CACHE_MODES))
        if self.batch_size < 1:
            raise bad("--batch-size", self.batch_size, "an integer >= 1")
        if not 0 <= self.fine_tune_fraction <= 1:
            raise bad("--fine-tune-fraction", self.fine_tune_fraction, "a number from 0 to 1")
        if self.preprocess.get("scaling", "none") != "none":
            raise bad(
                "scaling",
                self.preprocess["scaling"],
                '"none": every registry model scales 0..255 input inside its own graph',
            )
        if (self.head_epochs is not None and self.head_epochs < 0) or self.fine_tune_epochs < 0:
            raise FitError("--head-epochs and --fine-tune-epochs must be >= 0")

    def phases(self) -> list[tuple[str, int, float]]:
        """(name, epochs, learning rate) of each phase that runs."""
        pretrained = self.weights != "none"
        head = self.head_epochs
        if head is None:
            head = DEFAULT_HEAD_EPOCHS if pretrained else 0
        out = []
        if head > 0:
            out.append(("head", head, self.lr))
        if self.fine_tune_epochs > 0:
            out.append(("fine_tune", self.fine_tune_epochs, self.fine_tune_lr if head else self.lr))
        if not out:
            raise FitError("--head-epochs and --fine-tune-epochs are both 0: nothing to train")
        return out
