"""int8 preparation on real models and real images: exact input folding, bias correction."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converters.int8_prep import correct_biases, fold_input_scaling, snap_weights
from converters.tf_env import keras, keras_predict, load_keras_model
from trainer.graph import copy_model, leaf_layers

ROOT = Path(__file__).resolve().parents[2]


def test_importing_int8_prep_loads_no_trainer_module_but_the_graph_helpers() -> None:
    """int8_prep edits a saved model: the trainer's config, callbacks and pipeline stay out."""
    code = (
        "import json, sys\n"
        "import converters.int8_prep\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'trainer')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["trainer", "trainer.graph"]


@pytest.fixture()
def tiny(trained_run: Path):  # type: ignore[no-untyped-def]
    return load_keras_model(trained_run / "model.keras")


def _weights(model) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    return [np.array(w) for w in model.get_weights()]


def test_folding_the_input_scaling_keeps_the_float_model(tiny, real_images) -> None:  # type: ignore[no-untyped-def]
    before = _weights(tiny)
    folded, what = fold_input_scaling(tiny)
    assert what == "rescaling -> conv1"
    rescale = next(layer for layer in leaf_layers(folded) if layer.name == "rescaling")
    assert float(rescale.scale) == 1.0 and float(rescale.offset) == 0.0
    # 1/255 is not a power of two, so float rounding differs slightly; the function is the same.
    x = real_images[0]
    np.testing.assert_allclose(keras_predict(folded, x), keras_predict(tiny, x), atol=1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(tiny), strict=True))


def test_folding_efficientnet_lite_is_bit_exact(real_images) -> None:  # type: ignore[no-untyped-def]
    """(x - 127) / 128 -> pad -> stem: the power-of-two scale moves into the kernel exactly."""
    from trainer.models import create_model

    keras().utils.set_random_seed(0)
    model = create_model("efficientnet-lite0", 2, image_size=32).model
    folded, what = fold_input_scaling(model)
    assert what == "normalize -> stem_conv"
    x = real_images[0][:8].astype(np.float32)
    assert np.array_equal(keras_predict(folded, x), keras_predict(model, x))


def test_nothing_to_fold_leaves_the_model(tiny) -> None:  # type: ignore[no-untyped-def]
    folded, _ = fold_input_scaling(tiny)
    again, what = fold_input_scaling(folded)  # now Rescaling(1, 0): nothing left to fold
    assert what is None and again is folded


def test_snapped_kernels_sit_on_the_per_channel_int8_grid(tiny) -> None:  # type: ignore[no-untyped-def]
    model = copy_model(tiny)
    assert snap_weights(model) == 2
    for name in ("conv1", "conv2"):
        kernel = model.get_layer("tiny_base").get_layer(name).get_weights()[0]
        scale = np.abs(kernel).max(axis=(0, 1, 2)) / 127
        steps = kernel / scale
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
        assert np.abs(np.round(steps)).max() == 127
    first = _weights(model)
    snap_weights(model)  # on the grid already: nothing moves
    assert all(np.allclose(a, b, atol=1e-7) for a, b in zip(first, _weights(model), strict=True))


def _bn_output_means(model, x: np.ndarray) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    base = model.get_layer("tiny_base")
    probe = keras().Model(base.input, [base.get_layer(n).output for n in ("bn1", "bn2")])
    return [np.asarray(o, np.float64).mean(axis=(0, 1, 2)) for o in probe(x, training=False)]


def test_bias_correction_recentres_each_batchnorm_on_the_float_model(tiny, real_images) -> None:  # type: ignore[no-untyped-def]
    x = real_images[0].astype(np.float32)
    before = _weights(tiny)
    corrected, layers = correct_biases(tiny, x)
    assert layers == 2
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(tiny), strict=True))
    rounded = copy_model(tiny)
    snap_weights(rounded)
    reference = _bn_output_means(tiny, x)
    shifted = _bn_output_means(rounded, x)
    fixed = _bn_output_means(corrected, x)
    for ref, off, good in zip(reference, shifted, fixed, strict=True):
        # Rounding the kernels moved the channel means; the correction puts them back.
        assert np.abs(off - ref).max() > 1e-4
        np.testing.assert_allclose(good, ref, atol=1e-5)


def test_export_without_preparation_converts_the_model_as_trained(
    trained_run: Path, tmp_path: Path, real_images, keras_probs
) -> None:  # type: ignore[no-untyped-def]
    from converters.cli import main
    from edge.model.bundle import load_bundle

    out = tmp_path / "plain"
    args = ["export", str(trained_run / "model.keras"), "--out", str(out), "--no-bias-correction"]
    assert main(args) == 0
    bundle = load_bundle(out)
    conversion = bundle.manifest.provenance.conversion
    assert conversion is not None and conversion["int8_prep"] is None
    probs = np.stack([bundle.probabilities(xi) for xi in real_images[0]])
    assert float(np.abs(probs - keras_probs).max()) <= 3e-2
