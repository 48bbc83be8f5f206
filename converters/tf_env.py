"""TensorFlow and Keras, imported lazily and quietly; Keras model files loaded with clear errors.

TensorFlow's C++ side writes to file descriptor 2 (CUDA probes at import, quantiser statistics
during conversion) and the Keras exporter prints to stdout. None of it helps a user, so those
steps run inside `silenced()`, which keeps the captured text for the debug log (`-v -v` shows
it live instead).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from converters import progress
from converters.errors import ConverterError, ModelFileError
from edge.optional_dependencies import MissingDependencyError

log = logging.getLogger(__name__)

KERAS_SUFFIXES = (".keras", ".h5")


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Redirect native stdout/stderr and Python warnings for the block; progress still shows."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    # The progress console writes to the real stderr while fd 2 points at the capture file.
    terminal = open(saved_err, "w", closefd=False)  # noqa: SIM115  (closed in finally)
    previous = progress.set_console(terminal)
    py_out = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        try:
            with contextlib.redirect_stdout(py_out), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            progress.set_console(previous)
            terminal.close()
            capture.seek(0)
            native = capture.read().decode(errors="replace")
            if native.strip() or py_out.getvalue().strip():
                log.debug("TensorFlow output:\n%s%s", py_out.getvalue(), native)


def tensorflow() -> Any:
    """The tensorflow module, imported once with its logging turned down."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules:
        with silenced():
            try:
                import tensorflow  # noqa: F401  (the import itself is what is silenced)
            except ModuleNotFoundError as exc:  # tensorflow, or one of its own dependencies
                raise MissingDependencyError(exc.name or "tensorflow", "converters") from None
            except ImportError as exc:  # installed but broken (a native library, a wheel mismatch)
                raise ConverterError(
                    f"TensorFlow is installed but cannot be imported ({exc}); reinstall the "
                    "'train' extra, e.g. pip install -e '.[train]' from a checkout"
                ) from None
    import absl.logging
    import tensorflow as tf

    # Also when someone else imported TensorFlow first (the trainer, a test): retracing and
    # deprecation warnings say nothing a converters user can act on.
    absl.logging.set_verbosity(absl.logging.ERROR)
    tf.get_logger().setLevel(logging.ERROR)
    return tf


def keras() -> Any:
    tensorflow()
    import keras

    return keras


def load_keras_model(path: str | Path) -> Any:
    """Load a .keras (or legacy .h5) classifier for inference; ModelFileError names the problem."""
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"{p}: no such file; expected a .keras model saved by the trainer")
    if p.is_dir():
        raise ModelFileError(
            f"{p}: is a directory; expected a .keras file (SavedModel folders are not supported "
            "by Keras 3: re-save with model.save('model.keras'))"
        )
    if p.suffix.lower() not in KERAS_SUFFIXES:
        raise ModelFileError(
            f"{p}: not a Keras model file (suffix {p.suffix or 'none'!r}); "
            "expected a .keras file saved by model.save(...)"
        )
    if p.suffix.lower() == ".keras" and not zipfile.is_zipfile(p):
        raise ModelFileError(
            f"{p}: not a Keras model (a .keras file is a zip archive; this one is not)"
        )
    k = keras()
    try:
        with silenced():
            model = k.models.load_model(p, compile=False)
    except Exception as exc:  # Keras raises ValueError, TypeError, OSError... for bad archives
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{p}: Keras cannot load this model ({first[:200]})") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelFileError(
            f"{p}: model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "expected one image input and one probability output"
        )
    return model


def keras_predict(model: Any, batch: np.ndarray) -> np.ndarray:
    """Float Keras outputs for a batch of preprocessed images, as float32."""
    with silenced():
        out = model.predict_on_batch(np.asarray(batch, np.float32))
    return np.asarray(out, np.float32)
