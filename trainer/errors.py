"""Errors the trainer raises; each becomes one `trainer: error: ...` line and exit code 1."""

from __future__ import annotations

from edge.errors import BlastscopeError


class DataError(BlastscopeError):
    """A data folder that does not fit its layout: missing or empty class, bad file names."""


class SplitError(BlastscopeError):
    """A split that cannot be made or that leaks: too few groups, a class missing from a split."""


class RunFileError(BlastscopeError):
    """A run directory's training.json, split.json or report.json that is missing or malformed."""
