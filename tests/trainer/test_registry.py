"""The model registry: native sizes, `--weights imagenet|none|PATH`, the classifier's shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.errors import BlastscopeError
from trainer.models import check_weights, create_model, list_models, model_info


def test_registry_lists_every_backbone_at_its_native_size() -> None:
    # Tan & Le 2019, Table 1; InceptionResNetV2 299; DenseNet121 224; Lite from the TF reference.
    sizes = {0: 224, 1: 240, 2: 260, 3: 300, 4: 380, 5: 456, 6: 528, 7: 600}
    expected = {f"efficientnet-b{v}": s for v, s in sizes.items()}
    expected |= {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}
    expected |= {"inceptionresnetv2": 299, "densenet121": 224, "tiny": 32}
    assert set(list_models()) == set(expected)
    assert {name: model_info(name).native_size for name in expected} == expected


def test_unknown_model_names_the_choices() -> None:
    with pytest.raises(BlastscopeError, match=r"unknown model 'efficientnet-b9'.*efficientnet-b3"):
        model_info("efficientnet-b9")


def test_weights_choices_are_checked_before_any_model_is_built(tmp_path: Path) -> None:
    check_weights("efficientnet-b3", "imagenet")  # Keras downloads it (on a networked machine)
    check_weights("tiny", "none")
    with pytest.raises(BlastscopeError, match=r"--weights .*missing\.h5: no such file"):
        check_weights("tiny", str(tmp_path / "missing.h5"))
    # Lite weights come from `trainer import-weights`; other models without a download say so.
    with pytest.raises(BlastscopeError, match="trainer import-weights efficientnet-lite0"):
        check_weights("efficientnet-lite0", "imagenet")
    with pytest.raises(BlastscopeError, match="tiny has no ImageNet weights; pass --weights none"):
        check_weights("tiny", "imagenet")


def test_classifier_is_base_pool_dropout_softmax_head_at_any_size() -> None:
    built = create_model("tiny", 3, image_size=48, dropout=0.4)
    model = built.model
    assert built.image_size == 48 and tuple(model.input_shape) == (None, 48, 48, 3)
    assert tuple(model.output_shape) == (None, 3)
    names = [layer.name for layer in model.layers]
    assert names[-3:] == ["embedding", "head_dropout", "head"]
    assert model.get_layer("head_dropout").rate == 0.4
    assert model.get_layer("head").activation.__name__ == "softmax"
    assert built.backbone.output_shape == (None, 16) and built.base.name == "tiny_base"
    x = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 3)).astype(np.float32)
    p = np.asarray(model(x, training=False))
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")
def test_weights_path_loads_into_the_base_and_a_wrong_file_is_named(tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(1)
    source = create_model("tiny", 2)
    path = tmp_path / "tiny.weights.h5"
    source.base.save_weights(str(path))
    keras.utils.set_random_seed(2)
    loaded = create_model("tiny", 5, weights=str(path))  # the head may differ; the base may not
    for a, b in zip(source.base.get_weights(), loaded.base.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    other = tmp_path / "other.weights.h5"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save_weights(str(other))
    with pytest.raises(
        BlastscopeError, match=r"other\.weights\.h5: does not fit tiny's base"
    ) as exc:
        create_model("tiny", 2, weights=str(other))
    assert "\n" not in str(exc.value)  # Keras' many-line message cut to one line for the CLI


def test_imagenet_is_asked_of_keras_and_a_failed_download_names_the_way_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dataclasses import replace
    from urllib.error import URLError

    from trainer.models import registry

    asked: list[str | None] = []

    def offline(shape: tuple[int, int, int], weights: str | None) -> None:
        asked.append(weights)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    info = replace(model_info("efficientnet-b3"), builder=offline)
    monkeypatch.setitem(registry._REGISTRY, "efficientnet-b3", info)
    with pytest.raises(
        BlastscopeError,
        match=r"ImageNet weights for efficientnet-b3 .*--weights PATH or --weights none",
    ):
        create_model("efficientnet-b3", 2, weights="imagenet")
    assert asked == ["imagenet"]
    with pytest.raises(URLError):  # not a weights problem: not disguised as one
        create_model("efficientnet-b3", 2, weights="none")
    assert asked == ["imagenet", None]
