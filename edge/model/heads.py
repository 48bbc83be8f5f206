"""Heads: the versioned float post-processing after the LiteRT graph.

The int8 graph ends at logits (kind ``logits``) or at embeddings (``dense``: a float kernel and
bias in a head file); the head turns that raw output into probabilities, softmax(z / T), in
float numpy, so a temperature acts on real logits rather than on a softmax rounded to 1/256.
A legacy graph ends in a quantised softmax (``softmax_in_graph``): its head is the identity
and its temperature stays 1.

A change of temperature, thresholds or dense weights is a new head version, written by
`write_head_version` (`set_temperature` for T): the head file under a new name
(``heads/vN.npz``, the old ones kept for a roll-back), then the manifest re-sealed and
replaced atomically, so a crash in between leaves the old head in force. No re-export: the
graph, its golden outputs and its verification are untouched.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.contracts.manifest import (
    BundleError,
    DecisionThresholds,
    HeadInfo,
    HeadKind,
    Manifest,
    Verification,
    head_file,
    parse_manifest,
    read_manifest,
    utc_now,
    verified_file,
    write_manifest,
)
from edge.model.softmax_regression import softmax

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Head:
    """Raw graph output -> class probabilities, in float numpy."""

    kind: HeadKind
    temperature: float = 1.0
    kernel: np.ndarray | None = None  # dense: (D, C)
    bias: np.ndarray | None = None  # dense: (C,)

    def logits(self, raw: np.ndarray) -> np.ndarray:
        """(..., D) raw output -> (..., C) logits before the temperature, float64."""
        z = np.asarray(raw, np.float64)
        if self.kind == "dense":
            assert self.kernel is not None and self.bias is not None
            z = z @ self.kernel.astype(np.float64) + self.bias.astype(np.float64)
        return z

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """(..., D) raw output -> (..., C) probabilities, float32."""
        if self.kind == "softmax_in_graph":
            return np.asarray(raw, np.float32)  # already probabilities; T is 1 by contract
        return softmax(self.logits(raw) / self.temperature).astype(np.float32)

    def problem(self, width: int, classes: int) -> str | None:
        """Why this head cannot follow a graph emitting `width` values for `classes` labels."""
        if self.kind != "dense":
            return (
                None
                if width == classes
                else (f"{classes} labels but the model outputs {width} classes")
            )
        assert self.kernel is not None and self.bias is not None
        d, c = self.kernel.shape
        if d != width:
            return f"the graph emits {width} features but the head takes {d}"
        if c != classes or self.bias.shape != (c,):
            return f"{classes} labels but the head outputs {c} classes (bias {self.bias.shape})"
        return None


def read_head(path: Path) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """A head file's (kernel (D, C), bias (C,), labels or None for a schema-2 head.npz)."""
    try:
        with np.load(path) as data:
            kernel = np.asarray(data["kernel"], dtype=np.float32)
            bias = np.asarray(data["bias"], dtype=np.float32)
            labels = [str(x) for x in data["labels"]] if "labels" in data.files else None
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(
            f"{path}: not a head file with 'kernel' and 'bias' arrays ({exc})"
        ) from None
    if kernel.ndim != 2:
        raise BundleError(f"{path}: head kernel has shape {kernel.shape}; expected (D, C)")
    return kernel, bias, labels


def load_head(root: Path, info: HeadInfo, labels: Sequence[str]) -> Head:
    """The head a manifest record describes; a dense head's file checked (sha256, labels)."""
    if info.kind != "dense":
        return Head(info.kind, info.temperature)
    assert info.file is not None and info.sha256 is not None
    path = verified_file(root, info.file, info.sha256, f"head (version {info.version})")
    kernel, bias, file_labels = read_head(path)
    # The labels travel in the sealed head file too: a manifest whose labels were swapped and
    # re-sealed no longer matches the head it names.
    if file_labels is not None and file_labels != list(labels):
        raise BundleError(
            f"{path}: the head was trained for labels {file_labels} but the manifest says "
            f"{list(labels)}; write a new head version with its labels"
        )
    return Head("dense", info.temperature, kernel, bias)


def _head_bytes(kernel: np.ndarray, bias: np.ndarray, labels: Sequence[str]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, kernel=kernel, bias=bias, labels=np.asarray(list(labels), np.str_))
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_head(path: Path, kernel: np.ndarray, bias: np.ndarray, labels: Sequence[str]) -> str:
    """Write a head file atomically; return its sha256."""
    data = _head_bytes(np.asarray(kernel, np.float32), np.asarray(bias, np.float32), labels)
    _write_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def _refuse_request(
    root: Path,
    manifest: Manifest,
    temperature: float | None,
    thresholds: object,
    dense: tuple[np.ndarray, np.ndarray] | None,
    labels: Sequence[str] | None,
) -> None:
    """Raise BundleError for a head change that cannot be made to this bundle."""
    old = manifest.head
    if temperature is None and thresholds is None and dense is None:
        raise BundleError(f"{root}: nothing to change; give a temperature, thresholds or weights")
    if labels is not None and dense is None:
        raise BundleError(
            f"{root}: labels change only with new dense weights (they are the head's outputs)"
        )
    if dense is not None and old.kind != "dense":
        raise BundleError(
            f"{root}: a {old.kind!r} head has no weights to replace; new head weights need a "
            "bundle exported with --form backbone_head"
        )
    golden = manifest.golden
    # A schema-2 golden set compares probabilities, which only a softmax_in_graph head (the
    # identity, T fixed at 1) leaves as they were at export.
    if (
        golden is not None
        and golden.parity_on == "probabilities"
        and old.kind != "softmax_in_graph"
    ):
        raise BundleError(
            f"{root}: its schema-2 golden set holds the export head's probabilities, so a new "
            "head would fail the start-up self-test; re-export the bundle first"
        )


def write_head_version(
    bundle_dir: str | Path,
    *,
    temperature: float | None = None,
    thresholds: DecisionThresholds | dict[str, float | None] | None = None,
    dense: tuple[np.ndarray, np.ndarray] | None = None,
    labels: Sequence[str] | None = None,
) -> HeadInfo:
    """Write the next version of the bundle's head and re-seal its manifest; return the record.

    What is not given is carried over; `thresholds` are merged into the current ones (a key set
    to None clears it). `dense` = (kernel, bias) replaces a dense head's weights (fine-tuning on
    embeddings); `labels` come with it when its classes differ. A passed `converters verify`
    (about the graph) is kept, except when the labels change: its per-class results are then
    about other classes, so it is reset to unverified (a failed one stays failed).
    """
    root = Path(bundle_dir)
    manifest = read_manifest(root)
    old = manifest.head
    load_head(root, old, manifest.labels)  # never derive from a head that was tampered with
    _refuse_request(root, manifest, temperature, thresholds, dense, labels)
    version = old.version + 1
    record = old.model_dump()
    record.update(
        version=version,
        parent_sha256=old.record_digest(),
        parent_version=old.version,
        created=utc_now(),
    )
    if temperature is not None:
        record["temperature"] = float(temperature)
    if thresholds is not None:
        given = thresholds if isinstance(thresholds, dict) else thresholds.model_dump()
        record["thresholds"] = {**record["thresholds"], **given}
    new_labels = list(labels) if labels is not None else list(manifest.labels)
    data = b""
    if dense is not None:
        kernel, bias = (np.asarray(a, np.float32) for a in dense)
        problem = Head("dense", 1.0, kernel, bias).problem(
            manifest.output.shape[-1], len(new_labels)
        )
        if problem:
            raise BundleError(f"{root}: new head v{version}: {problem}")
        data = _head_bytes(kernel, bias, new_labels)
        record.update(file=head_file(version), sha256=hashlib.sha256(data).hexdigest())
    update = manifest.model_dump()
    update.update(head=record, labels=new_labels)
    new = parse_manifest(update, f"{root}: new head v{version}")
    if data:
        _write_atomic(root / head_file(version), data)  # a new name: the old head still holds
    if new.labels != manifest.labels:
        # The verdict's digest covers the labels. A pass (per-class results) is about other
        # classes now: void. A failure stays: it is the graph that failed, not its labels.
        if new.verification.status == "passed":
            log.warning("%s: labels changed; verification reset to unverified", root)
            new.verification = Verification()
        elif new.verification.status == "failed":
            new.verification.digest = new.graph_digest()
    write_manifest(root, new)
    log.info("%s: head v%d written (%s)", root, version, new.head.kind)
    return new.head


def set_temperature(bundle_dir: str | Path, temperature: float) -> HeadInfo:
    """The one way to change a bundle's temperature: a new head version with T = `temperature`.

    T is fitted after export (minimise the NLL of softmax(logits / T) on held-out images);
    the golden self-test and a passed verification are about the graph and stay valid.
    """
    return write_head_version(bundle_dir, temperature=temperature)
