"""Errors of the converters: each names the bad value and the fix (one line on the command line)."""

from __future__ import annotations

from edge.errors import BlastscopeError


class ConverterError(BlastscopeError):
    """Base class of every converters error."""


class ModelFileError(ConverterError):
    """A model file that is missing, not a Keras model, or not a blastscope-shaped classifier."""


class CalibrationError(ConverterError):
    """Calibration or verification images that are missing, empty or unlabelled."""


class RunFilesError(ConverterError):
    """Labels or a preprocessing spec (from training.json or flags) that export cannot use."""


class GateFailedError(ConverterError):
    """A quantised bundle that fails the float-vs-quantised acceptance gate."""
