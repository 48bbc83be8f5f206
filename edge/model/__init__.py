"""The model: the LiteRT runtime, bundles (loaded, checked, written), heads, the golden set."""

from edge.model.bundle import Bundle, input_shape_problem, load_bundle
from edge.model.bundle_writer import write_bundle
from edge.model.golden import GoldenReport, check_golden
from edge.model.heads import Head, read_head, set_temperature, write_head, write_head_version
from edge.model.runtime import LiteRTModel, TensorInfo, interpreter_class
from edge.model.softmax_regression import LinearHead, balanced_class_weights, fit_softmax_regression

__all__ = [
    "Bundle",
    "GoldenReport",
    "Head",
    "LinearHead",
    "LiteRTModel",
    "TensorInfo",
    "balanced_class_weights",
    "check_golden",
    "fit_softmax_regression",
    "input_shape_problem",
    "interpreter_class",
    "load_bundle",
    "read_head",
    "set_temperature",
    "write_bundle",
    "write_head",
    "write_head_version",
]
