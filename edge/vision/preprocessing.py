"""The one implementation of the seeds' preprocessing, shared by the trainer and the device.

Pipeline (seed 000, section 3.2), each step switched by `PreprocessSpec`:

0. optional colour normalisation (ours, not the seeds'): ``reinhard`` moves each image's
   Lab mean and spread to fixed targets, so stain colour and illumination cast stop being a
   shortcut (Taleqani's classes differ in stain colour; see ../shared/data/README.md);
1. artefact mask (equation 2): per RGB channel, ``i - min_local(i)`` where ``i`` is above the
   minimum of its ``mask_window`` x ``mask_window`` neighbourhood, 0 elsewhere, so flat
   background, text and dust plateaus go to 0 and cell structure stays;
2. contrast normalisation on luminance only (so stain hue is kept): global histogram
   equalisation (``hist_eq``, what the seed's Algorithm 1 calls HistEq) or CLAHE;
3. channel-mean background filter: subtract each pixel's mean over R, G, B (removes the
   grey background component), then min-max the result back to 0..255;
4. resize to the model's input with a declared interpolation and aspect policy
   (``pad`` letterboxes, ``center_crop`` crops to the target aspect; ``stretch`` must be asked
   for by name: it distorts cell shape);
5. value scaling to what the model graph expects. Our models take 0..255 RGB (Keras
   EfficientNet rescales inside its graph), so the default ``none`` passes 0..255 through
   and scaling happens exactly once, inside the model.

Steps 0-4 work on uint8 and step 5 emits float32, so the same uint8 image gives bit-identical
output on every call.
"""

from __future__ import annotations

from typing import Any, get_args

import cv2
import numpy as np

from edge.contracts.preprocess_spec import (
    ColourNormalisation,
    Contrast,
    Interpolation,
    PreprocessError,
    PreprocessSpec,
    ResizePolicy,
    Scaling,
)

# Reinhard targets in OpenCV's 8-bit Lab (L 0..255, a/b offset by 128): a neutral, mid-light
# smear. Any fixed values work; what matters is that every image is mapped to the same ones.
_LAB_TARGET_MEAN = np.array([180.0, 136.0, 120.0])
_LAB_TARGET_STD = np.array([40.0, 8.0, 10.0])

_INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}


def _refuse(step: str, value: object, alias: Any) -> PreprocessError:
    """Each step's last branch is one named method, never "anything else" (macenko != reinhard)."""
    return PreprocessError(
        f"{step} {value!r} is not implemented: expected one of {', '.join(get_args(alias))}"
    )


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        dtype = getattr(image, "dtype", type(image).__name__)
        raise PreprocessError(f"preprocess expects a uint8 RGB image, got dtype {dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise PreprocessError(f"preprocess expects an HxWx3 RGB image, got shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise PreprocessError(f"image of shape {image.shape} is too small to preprocess")
    return np.ascontiguousarray(image[:, :, :3])


def normalise_colour(image: np.ndarray, method: ColourNormalisation) -> np.ndarray:
    """Reinhard colour transfer: per Lab channel, (x - mean) / std * target_std + target_mean."""
    if method == "none":
        return image
    if method != "reinhard":
        raise _refuse("colour normalisation", method, ColourNormalisation)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2Lab).astype(np.float64)
    mean = lab.mean(axis=(0, 1))
    std = np.maximum(lab.std(axis=(0, 1)), 1.0)  # a flat channel is not stretched into noise
    out = (lab - mean) / std * _LAB_TARGET_STD + _LAB_TARGET_MEAN
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return cv2.cvtColor(out, cv2.COLOR_Lab2RGB)


def artefact_mask(image: np.ndarray, window: int) -> np.ndarray:
    """Equation 2: per channel, i - min over the window where i > that minimum, else 0."""
    kernel = np.ones((window, window), np.uint8)
    local_min = cv2.erode(image, kernel, borderType=cv2.BORDER_REFLECT)
    # i >= local_min everywhere (the window contains the pixel), so i - min is >= 0 and is 0
    # exactly where i is not above the minimum: the "otherwise 0" branch of equation 2.
    return cv2.subtract(image, local_min)


def normalise_contrast(image: np.ndarray, method: Contrast, clip: float, tile: int) -> np.ndarray:
    """Equalise the luminance (Y of YCrCb) histogram; chroma, and so stain hue, is untouched."""
    if method == "none":
        return image
    if method not in ("hist_eq", "clahe"):
        raise _refuse("contrast", method, Contrast)
    ycrcb = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)
    y = np.ascontiguousarray(ycrcb[:, :, 0])
    if method == "hist_eq":
        y = cv2.equalizeHist(y)
    else:
        y = cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(tile, tile)).apply(y)
    ycrcb[:, :, 0] = y
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)


def channel_mean_filter(image: np.ndarray) -> np.ndarray:
    """Subtract each pixel's R,G,B mean, then min-max the signed result back to 0..255."""
    # Integer arithmetic (sum of 3 channels, x3 scale) keeps this exact and deterministic.
    wide = image.astype(np.int32)
    diff = wide * 3 - wide.sum(axis=2, keepdims=True)
    lo, hi = int(diff.min()), int(diff.max())
    if hi == lo:
        return np.zeros_like(image)
    return ((diff - lo) * 255 // (hi - lo)).astype(np.uint8)


def resize(
    image: np.ndarray,
    size: tuple[int, int],
    policy: ResizePolicy,
    interpolation: Interpolation,
    pad_value: int = 0,
) -> np.ndarray:
    """Resize to (height, width) keeping the aspect ratio by the declared policy."""
    th, tw = size
    h, w = image.shape[:2]
    interp = _INTERPOLATIONS[interpolation]
    if policy == "stretch":
        return cv2.resize(image, (tw, th), interpolation=interp)
    if policy == "center_crop":
        # Largest window of the target aspect ratio, centred; then a plain resize.
        if w * th > h * tw:
            cw, ch = max(1, round(h * tw / th)), h
        else:
            cw, ch = w, max(1, round(w * th / tw))
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        crop = image[y0 : y0 + ch, x0 : x0 + cw]
        return cv2.resize(crop, (tw, th), interpolation=interp)
    if policy != "pad":
        raise _refuse("resize policy", policy, ResizePolicy)
    # pad: scale the longer side to fit, letterbox the rest with pad_value, centred.
    scale = min(th / h, tw / w)
    nh, nw = max(1, min(th, round(h * scale))), max(1, min(tw, round(w * scale)))
    scaled = cv2.resize(image, (nw, nh), interpolation=interp)
    out = np.full((th, tw, image.shape[2]), pad_value, dtype=image.dtype)
    y0, x0 = (th - nh) // 2, (tw - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = scaled
    return out


def scale_values(image: np.ndarray, scaling: Scaling) -> np.ndarray:
    """uint8 -> float32 in the range the model expects (see SCALING_RANGES)."""
    x = image.astype(np.float32)
    if scaling == "none":
        return x
    if scaling == "unit":
        return x / np.float32(255.0)
    if scaling == "symmetric":
        return x / np.float32(127.5) - np.float32(1.0)
    if scaling != "minmax":
        raise _refuse("scaling", scaling, Scaling)
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        return np.zeros_like(x)
    return (x - np.float32(lo)) / np.float32(hi - lo)


def preprocess_uint8(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Steps 0-4 (colour, mask, contrast, channel-mean filter, resize): uint8 at the model size."""
    x = normalise_colour(_as_rgb_uint8(image), spec.colour_normalisation)
    if spec.artefact_mask:
        x = artefact_mask(x, spec.mask_window)
    x = normalise_contrast(x, spec.contrast, spec.clahe_clip, spec.clahe_tile)
    if spec.channel_mean_filter:
        x = channel_mean_filter(x)
    return resize(x, spec.size, spec.resize_policy, spec.interpolation, spec.pad_value)


def preprocess(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The whole pipeline: HxWx3 RGB uint8 in, (height, width, 3) float32 model input out."""
    return scale_values(preprocess_uint8(image, spec), spec.scaling)
