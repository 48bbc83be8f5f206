"""Each preprocessing step does what the seeds say, on real smear images, deterministically.

The spec's own validation is tested in tests/edge/contracts/test_preprocess_spec.py.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.contracts.preprocess_spec import PreprocessError, PreprocessSpec
from edge.vision.preprocessing import (
    artefact_mask,
    channel_mean_filter,
    normalise_contrast,
    preprocess,
    preprocess_uint8,
    resize,
)


def test_artefact_mask_zeroes_flat_background_and_keeps_cell_edges(field_image: np.ndarray) -> None:
    window = 15
    masked = artefact_mask(field_image, window)
    local_min = cv2.erode(
        field_image, np.ones((window, window), np.uint8), borderType=cv2.BORDER_REFLECT
    )
    # Equation 2 pixel by pixel: i - min where i > min, 0 otherwise.
    expected = np.where(field_image > local_min, field_image.astype(int) - local_min, 0)
    assert np.array_equal(masked, expected.astype(np.uint8))
    assert np.all(masked[field_image <= local_min] == 0)
    # A real field has structure, so the mask keeps some and removes most of the intensity.
    assert masked.mean() < 0.5 * field_image.mean()
    assert masked.max() > 50


def test_artefact_mask_removes_a_flat_plateau_like_a_text_label() -> None:
    img = np.full((64, 64, 3), 40, np.uint8)
    img[10:50, 10:50] = 230  # a bright plateau much wider than the window
    masked = artefact_mask(img, 5)
    assert masked[30, 30].tolist() == [0, 0, 0]  # plateau interior: at its local minimum
    assert masked[0, 0].tolist() == [0, 0, 0]  # flat background
    assert masked[10, 30].tolist() == [190, 190, 190]  # the plateau's edge survives


def test_histogram_equalisation_spreads_luminance(field_image: np.ndarray) -> None:
    y_before = cv2.cvtColor(field_image, cv2.COLOR_RGB2YCrCb)[:, :, 0]
    eq = normalise_contrast(field_image, "hist_eq", 2.0, 8)
    y_after = cv2.cvtColor(eq, cv2.COLOR_RGB2YCrCb)[:, :, 0]
    assert np.percentile(y_after, 95) - np.percentile(y_after, 5) > 1.5 * (
        np.percentile(y_before, 95) - np.percentile(y_before, 5)
    )
    assert y_after.std() > y_before.std()


def test_clahe_raises_local_contrast_less_than_global_equalisation(field_image: np.ndarray) -> None:
    clahe = normalise_contrast(field_image, "clahe", 2.0, 8)
    eq = normalise_contrast(field_image, "hist_eq", 2.0, 8)
    std = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2YCrCb)[:, :, 0].std()  # noqa: E731
    assert std(field_image) < std(clahe) < std(eq)
    assert normalise_contrast(field_image, "none", 2.0, 8) is field_image


def test_contrast_keeps_stain_hue(field_image: np.ndarray) -> None:
    eq = normalise_contrast(field_image, "hist_eq", 2.0, 8)
    chroma = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2YCrCb)[:, :, 1:].astype(int)  # noqa: E731
    # Only luminance is equalised; chroma changes by rounding and gamut clipping alone.
    assert np.median(np.abs(chroma(eq) - chroma(field_image))) <= 2


def test_channel_mean_filter_removes_grey_component() -> None:
    grey = np.full((8, 8, 3), 200, np.uint8)
    assert np.all(channel_mean_filter(grey) == 0)
    img = grey.copy()
    img[2:4, 2:4] = (200, 100, 100)  # reddish pixels stand out from a grey background
    out = channel_mean_filter(img)
    assert out[2, 2, 0] == 255 and out[2, 2, 1] == 0
    assert len(np.unique(out[0, 0])) == 1  # a grey pixel stays grey


@pytest.mark.parametrize("policy", ["pad", "center_crop"])
def test_resize_keeps_aspect_by_declared_policy(field_image: np.ndarray, policy: str) -> None:
    h, w = field_image.shape[:2]  # 480 x 640
    out = resize(field_image, (96, 96), policy, "area", pad_value=7)  # type: ignore[arg-type]
    assert out.shape == (96, 96, 3)
    if policy == "pad":
        band = round((96 - 96 * h / w) / 2)  # 12 rows of letterbox above and below
        assert np.all(out[: band - 1] == 7) and np.all(out[-(band - 1) :] == 7)
        assert not np.all(out[band + 1] == 7)
        inner = out[band : 96 - band]
        ref = cv2.resize(field_image, (96, 96 - 2 * band), interpolation=cv2.INTER_AREA)
        assert np.abs(inner.astype(int) - ref).mean() < 2
    else:
        assert not np.any(np.all(out == 7, axis=(1, 2)))  # no padding anywhere
        crop = field_image[:, (w - h) // 2 : (w - h) // 2 + h]
        ref = cv2.resize(crop, (96, 96), interpolation=cv2.INTER_AREA)
        assert np.array_equal(out, ref)


def test_stretch_only_when_named(field_image: np.ndarray) -> None:
    assert PreprocessSpec().resize_policy == "pad"
    out = resize(field_image, (32, 32), "stretch", "linear")
    assert np.array_equal(out, cv2.resize(field_image, (32, 32), interpolation=cv2.INTER_LINEAR))


def test_scaling_happens_exactly_once(field_image: np.ndarray) -> None:
    spec = PreprocessSpec(height=64, width=64)
    x = preprocess(field_image, spec)
    assert x.dtype == np.float32 and x.shape == (64, 64, 3)
    # Default: 0..255 floats for a model that rescales inside its graph (Keras EfficientNet).
    assert np.array_equal(x, preprocess_uint8(field_image, spec).astype(np.float32))
    assert x.max() > 200 and spec.output_range == (0.0, 255.0)
    unit = preprocess(field_image, PreprocessSpec(height=64, width=64, scaling="unit"))
    np.testing.assert_allclose(unit * 255.0, x, atol=1e-4)
    sym = preprocess(field_image, PreprocessSpec(height=64, width=64, scaling="symmetric"))
    assert sym.min() >= -1.0 and sym.max() <= 1.0
    mm = preprocess(field_image, PreprocessSpec(height=64, width=64, scaling="minmax"))
    assert mm.min() == 0.0 and mm.max() == 1.0


def test_full_pipeline_is_bit_identical_across_calls(field_paths) -> None:  # type: ignore[no-untyped-def]
    from edge.vision.image_io import read_image

    spec = PreprocessSpec(
        height=48, width=64, artefact_mask=True, contrast="clahe", channel_mean_filter=True
    )
    for path in field_paths:
        img = read_image(path)
        a, b = preprocess(img, spec), preprocess(img.copy(), spec)
        assert a.tobytes() == b.tobytes()
        assert a.shape == (48, 64, 3)


def test_each_step_refuses_a_method_it_does_not_implement(field_image: np.ndarray) -> None:
    """Called directly, past the spec's check, no step falls back to another method."""
    from edge.vision.preprocessing import normalise_colour, scale_values

    with pytest.raises(PreprocessError, match="colour normalisation 'macenko' is not implemented"):
        normalise_colour(field_image, "macenko")  # type: ignore[arg-type]
    with pytest.raises(PreprocessError, match=r"contrast 'equalize' .* none, hist_eq, clahe"):
        normalise_contrast(field_image, "equalize", 2.0, 8)  # type: ignore[arg-type]
    with pytest.raises(PreprocessError, match="resize policy 'squash' is not implemented"):
        resize(field_image, (32, 32), "squash", "area")  # type: ignore[arg-type]
    with pytest.raises(PreprocessError, match="scaling 'div255' is not implemented"):
        scale_values(field_image, "div255")  # type: ignore[arg-type]


def test_bad_image_input_is_a_clear_error() -> None:
    spec = PreprocessSpec(height=32, width=32)
    with pytest.raises(PreprocessError, match="uint8"):
        preprocess(np.zeros((10, 10, 3), np.float32), spec)
    with pytest.raises(PreprocessError, match="HxWx3"):
        preprocess(np.zeros((10, 10, 2), np.uint8), spec)
    grey = preprocess(np.full((10, 10), 9, np.uint8), PreprocessSpec(height=8, width=8))
    assert grey.shape == (8, 8, 3) and np.all(grey == 9)


def test_reinhard_maps_differently_tinted_copies_to_the_same_colour(
    field_image: np.ndarray,
) -> None:
    from edge.vision.preprocessing import normalise_colour

    # The same field under a bluish and a yellowish cast (stain or lamp drift).
    blue = np.clip(field_image.astype(int) * [0.85, 0.9, 1.0] + [0, 0, 20], 0, 255).astype(np.uint8)
    yellow = np.clip(field_image.astype(int) * [1.0, 1.0, 0.8] + [15, 10, 0], 0, 255).astype(
        np.uint8
    )
    before = np.abs(blue.astype(int).mean((0, 1)) - yellow.astype(int).mean((0, 1))).max()
    nb, ny = normalise_colour(blue, "reinhard"), normalise_colour(yellow, "reinhard")
    after = np.abs(nb.astype(int).mean((0, 1)) - ny.astype(int).mean((0, 1))).max()
    assert before > 20 and after < 3
    lab = cv2.cvtColor(nb, cv2.COLOR_RGB2Lab).reshape(-1, 3).mean(0)
    np.testing.assert_allclose(lab, [180, 136, 120], atol=4)
    assert normalise_colour(field_image, "none") is field_image
