"""The building blocks of the daemon's config: strict models, paths, retry and source bases.

Their own module so that each source kind (edge.service.sources) can declare its config table
next to its code while edge.service.config assembles the whole file from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict


class StrictConfig(BaseModel):
    # strict: TOML has real types, so `threads = true`, `"2"` or `"yes"` are mistakes to
    # report, never values to coerce (an int is still accepted where a float is expected).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# Paths and pairs arrive from TOML as strings and arrays: those two conversions are wanted.
FilePath = Annotated[Path, Strict(False)]


class RetryConfig(StrictConfig):
    """Exponential backoff for a failing source; exhausted -> the daemon exits non-zero."""

    attempts: int = Field(default=5, ge=1, le=1000)
    initial_s: float = Field(default=1.0, ge=0.01, le=600)
    max_s: float = Field(default=30.0, ge=0.01, le=3600)


class SourceBase(StrictConfig):
    """What every source table has; each kind adds `kind` and its own keys."""

    kind: str
    retry: RetryConfig = RetryConfig()
    interval_s: float = Field(default=0.0, ge=0, le=3600)  # minimum time between frames (pacing)
