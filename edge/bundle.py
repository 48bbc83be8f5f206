"""The model bundle: what a model is on disk; any bundle that disagrees with itself is refused.

A bundle is a directory::

    manifest.json   schema version, labels, tensors, quantisation, preprocessing, provenance
    model.tflite    the LiteRT model (a classifier, or a backbone emitting embeddings)
    head.npz        form "backbone_head" only: dense head ``kernel`` (D, N) and ``bias`` (N,)
    golden.npz      optional: raw images, their preprocessed form, the float model's outputs and
                    the bundle's own outputs at export, for the device's start-up parity check
                    (edge.golden)

Loading checks every claim the manifest makes against the files and refuses a mismatch with
one line naming what differs. The manifest is sealed: ``digest`` is a sha256 over every field
but ``name``, checked at load, so a hand edit (two labels swapped, a failed verification made
"passed") is refused. The verification record holds the digest of the answer-changing fields
it was made for (labels, tensors and their quantisation, preprocessing, temperature, head,
golden set), and the golden set holds its labels, so neither carries over to a changed bundle.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge.errors import BlastscopeError
from edge.preprocessing import PreprocessError, PreprocessSpec, preprocess, preprocess_uint8
from edge.runtime import LiteRTModel, TensorInfo
from edge.softmax_regression import softmax

SCHEMA_VERSION = 2  # 2: the manifest digest, labels in the golden set
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.tflite"
HEAD_FILE = "head.npz"
GOLDEN_FILE = "golden.npz"

Quantization = Literal["float32", "float16", "dynamic", "int8"]
Form = Literal["classifier", "backbone_head"]


class BundleError(BlastscopeError):
    """A bundle that is missing, malformed, or whose manifest disagrees with its files."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorSpecModel(_Strict):
    shape: list[int]
    dtype: Literal["float32", "float16", "uint8", "int8"]
    scale: float | None = None
    zero_point: int | None = None


class HeadInfo(_Strict):
    """The dense head of a fine-tunable bundle, versioned so a device can roll back."""

    file: str = HEAD_FILE
    sha256: str
    version: int = Field(1, ge=1)
    embedding_dim: int = Field(ge=1)
    parent_sha256: str | None = None  # the head this one was fine-tuned from


# Device vs the exporter's own LiteRT outputs on the same golden inputs: only kernel
# differences between CPUs remain (for int8 about one output quantum, 1/256).
PARITY_ATOL: dict[str, float] = {"float32": 1e-3, "float16": 1e-3, "dynamic": 0.02, "int8": 0.02}


class GoldenInfo(_Strict):
    file: str = GOLDEN_FILE
    sha256: str
    count: int = Field(ge=1)
    atol: float = Field(0.05, gt=0, le=1)  # max |dp| allowed between device and float reference
    parity_atol: float | None = Field(None, gt=0, le=1)  # max |dp| vs the bundle's own outputs


class Verification(_Strict):
    status: Literal["unverified", "passed", "failed"] = "unverified"
    digest: str | None = None  # Manifest.answer_digest() of the bundle that was verified
    at: str | None = None
    data: str | None = None
    reference: str | None = None
    n_images: int | None = None
    agreement: float | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)


class Provenance(_Strict):
    created: str = Field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )
    tool: str = "blastscope"
    source_model: str | None = None
    source_model_sha256: str | None = None
    data_fingerprint: str | None = None
    split: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    conversion: dict[str, Any] | None = None  # quantisation, calibration set, converter version


# The seal covers every field but these (a field added later is covered unless listed).
_NOT_SEALED = frozenset({"digest", "name"})
# Fields that describe a bundle without changing any answer it gives: the verdict of
# `converters verify` is tied to everything else.
_NOT_ANSWER = frozenset({"digest", "name", "provenance", "verification"})


def _sha256_json(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


class Manifest(_Strict):
    """The manifest.json of a bundle."""

    schema_version: int
    digest: str = ""  # the seal: sha256 over every field but name; set by write_manifest
    name: str = Field(min_length=1)
    labels: list[str] = Field(min_length=2)
    form: Form = "classifier"
    model_file: str = MODEL_FILE
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    quantization: Quantization
    input: TensorSpecModel
    output: TensorSpecModel
    input_range: tuple[float, float] = (0.0, 255.0)
    preprocessing: dict[str, Any]
    temperature: float = Field(1.0, gt=0, le=100)
    head: HeadInfo | None = None
    golden: GoldenInfo | None = None
    provenance: Provenance = Field(default_factory=Provenance)
    verification: Verification = Field(default_factory=Verification)

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: list[str]) -> list[str]:
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"labels must be unique; repeated: {dupes}")
        if any(not x.strip() for x in labels):
            raise ValueError("labels must be non-empty strings")
        return labels

    def spec(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.preprocessing)

    def compute_digest(self) -> str:
        """The seal: sha256 of the canonical JSON of every field but name and digest."""
        return _sha256_json(self.model_dump(mode="json", exclude=set(_NOT_SEALED)))

    def answer_digest(self) -> str:
        """sha256 of every field that changes a published answer (what a verdict is for)."""
        return _sha256_json(self.model_dump(mode="json", exclude=set(_NOT_ANSWER)))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Bundle:
    """A validated bundle, with its interpreter open and ready to classify."""

    path: Path
    manifest: Manifest
    spec: PreprocessSpec
    model: LiteRTModel
    head_kernel: np.ndarray | None = None
    head_bias: np.ndarray | None = None

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def verified(self) -> bool:
        return self.manifest.verification.status == "passed"

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """A raw RGB uint8 frame -> the model's input: the bundle's preprocessing, kept in uint8
        when the model takes raw pixels (identical values, one float pass less per frame)."""
        if self.spec.scaling == "none" and self.model.input.takes_raw_pixels:
            return preprocess_uint8(image, self.spec)
        return preprocess(image, self.spec)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """A preprocessed HxWx3 float image -> class probabilities (temperature applied)."""
        out = self.model.run_one(x)
        t = np.float32(self.manifest.temperature)
        if self.manifest.form == "backbone_head":
            assert self.head_kernel is not None and self.head_bias is not None
            return softmax((out @ self.head_kernel + self.head_bias) / t)
        if t == 1.0:
            return out.astype(np.float32)
        # Temperature on a softmax output: p ∝ exp(log p / T).
        return softmax(np.log(np.clip(out, 1e-12, 1.0)) / t).astype(np.float32)

    def embeddings(self, x: np.ndarray) -> np.ndarray:
        """The backbone's embedding of a preprocessed image (fine-tunable bundles only)."""
        if self.manifest.form != "backbone_head":
            raise BundleError(
                f"{self.path}: form {self.manifest.form!r} has no separate embeddings"
            )
        return self.model.run_one(x)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: missing; a bundle directory needs {MANIFEST_FILE}") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return data


def read_manifest(bundle_dir: str | Path) -> Manifest:
    """Parse and schema-check manifest.json without opening the model."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(
            f"{root}: not a bundle directory (expected a folder with {MANIFEST_FILE})"
        )
    data = _load_json(root / MANIFEST_FILE)
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{root}: manifest schema_version {version!r} is unknown; this blastscope reads "
            f"version {SCHEMA_VERSION} (upgrade blastscope or re-export the bundle)"
        )
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise BundleError(f"{root}/{MANIFEST_FILE}: {where}: {err['msg']}") from None
    try:
        manifest.spec()
    except PreprocessError as exc:
        raise BundleError(f"{root}/{MANIFEST_FILE}: {exc}") from None
    expected = manifest.compute_digest()
    if manifest.digest != expected:
        raise BundleError(
            f"{root}/{MANIFEST_FILE}: digest {manifest.digest[:12] or '(none)'}… does not match "
            f"its contents ({expected[:12]}…): the manifest was edited by hand (only 'name' may "
            "be); re-export the bundle"
        )
    v = manifest.verification
    if v.status != "unverified" and v.digest != manifest.answer_digest():
        raise BundleError(
            f"{root}/{MANIFEST_FILE}: the verification record ({v.status}) was made for another "
            f"bundle (digest {str(v.digest)[:12]}…); run converters verify on this one"
        )
    return manifest


def _check_tensor(root: Path, which: str, declared: TensorSpecModel, actual: TensorInfo) -> None:
    if list(actual.shape) != declared.shape:
        raise BundleError(
            f"{root}: model {which} shape {list(actual.shape)} differs from the manifest's "
            f"{declared.shape}"
        )
    if actual.dtype != declared.dtype:
        raise BundleError(
            f"{root}: model {which} dtype {actual.dtype} differs from the manifest's "
            f"{declared.dtype}"
        )


def _verify_file(root: Path, name: str, expected_sha: str, what: str) -> Path:
    path = root / name
    if not path.is_file():
        raise BundleError(f"{path}: missing; the manifest names it as the {what}")
    actual = sha256_file(path)
    if actual != expected_sha:
        raise BundleError(
            f"{path}: sha256 {actual[:12]}… differs from the manifest's {expected_sha[:12]}…; "
            "the file was changed or replaced: re-export the bundle"
        )
    return path


def input_shape_problem(shape: Sequence[int | None], spec: PreprocessSpec) -> str | None:
    """Why a model with this input shape cannot take `spec`'s images; None if it can.

    The batch dimension is not checked: a Keras model has None there, a LiteRT model 1.
    """
    if len(shape) != 4 or shape[3] != 3:
        return f"model input shape {list(shape)} is not [batch, H, W, 3]"
    if (shape[1], shape[2]) != spec.size:
        return (
            f"model input {shape[1]}x{shape[2]} differs from the preprocessing "
            f"{spec.height}x{spec.width}; use the spec the model was trained with"
        )
    return None


def load_bundle(bundle_dir: str | Path, num_threads: int = 2) -> Bundle:
    """Load and validate a bundle; raise BundleError naming the first disagreement."""
    root = Path(bundle_dir)
    manifest = read_manifest(root)
    model_path = _verify_file(root, manifest.model_file, manifest.model_sha256, "model")
    model = LiteRTModel(model_path, num_threads=num_threads)
    _check_tensor(root, "input", manifest.input, model.input)
    _check_tensor(root, "output", manifest.output, model.output)
    spec = manifest.spec()
    problem = input_shape_problem(model.input.shape, spec)
    if problem:
        raise BundleError(f"{root}: {problem}")
    if tuple(spec.output_range) != tuple(manifest.input_range):
        raise BundleError(
            f"{root}: preprocessing scaling {spec.scaling!r} emits {spec.output_range} but the "
            f"model expects {tuple(manifest.input_range)}: values would be scaled twice or never"
        )
    out_size = model.output.shape[-1]
    bundle = Bundle(path=root, manifest=manifest, spec=spec, model=model)
    if manifest.form == "classifier":
        if out_size != len(manifest.labels):
            raise BundleError(
                f"{root}: {len(manifest.labels)} labels but the model outputs {out_size} classes"
            )
    else:
        if manifest.head is None:
            raise BundleError(f"{root}: form 'backbone_head' needs a 'head' entry in the manifest")
        head_path = _verify_file(root, manifest.head.file, manifest.head.sha256, "head")
        kernel, bias = read_head(head_path)
        if out_size != manifest.head.embedding_dim or kernel.shape[0] != out_size:
            raise BundleError(
                f"{root}: backbone emits {out_size} features but the head takes {kernel.shape[0]} "
                f"(manifest embedding_dim {manifest.head.embedding_dim})"
            )
        if kernel.shape[1] != len(manifest.labels) or bias.shape != (kernel.shape[1],):
            raise BundleError(
                f"{root}: {len(manifest.labels)} labels but the head outputs {kernel.shape[1]} "
                "classes"
            )
        bundle.head_kernel, bundle.head_bias = kernel, bias
    if manifest.golden is not None:
        _verify_file(root, manifest.golden.file, manifest.golden.sha256, "golden set")
    return bundle


def read_head(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A head file's (kernel (D, N), bias (N,)) as float32."""
    try:
        with np.load(path) as data:
            kernel = np.asarray(data["kernel"], dtype=np.float32)
            bias = np.asarray(data["bias"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(
            f"{path}: not a head file with 'kernel' and 'bias' arrays ({exc})"
        ) from None
    if kernel.ndim != 2:
        raise BundleError(f"{path}: head kernel has shape {kernel.shape}; expected (D, N)")
    return kernel, bias


def write_head(path: Path, kernel: np.ndarray, bias: np.ndarray) -> str:
    """Write a head file; return its sha256."""
    with path.open("wb") as f:
        np.savez(f, kernel=np.asarray(kernel, np.float32), bias=np.asarray(bias, np.float32))
    return sha256_file(path)


def write_manifest(bundle_dir: str | Path, manifest: Manifest) -> None:
    """Seal (set the digest) and write manifest.json atomically (never half a manifest)."""
    root = Path(bundle_dir)
    manifest.digest = manifest.compute_digest()
    tmp = root / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=False) + "\n")
    tmp.replace(root / MANIFEST_FILE)


def write_bundle(
    out_dir: str | Path,
    model_bytes: bytes,
    *,
    name: str,
    labels: Iterable[str],
    spec: PreprocessSpec,
    quantization: Quantization,
    input_range: tuple[float, float] = (0.0, 255.0),
    head: tuple[np.ndarray, np.ndarray] | None = None,
    golden: dict[str, np.ndarray] | None = None,
    golden_atol: float = 0.05,
    provenance: Provenance | None = None,
    temperature: float = 1.0,
) -> Bundle:
    """Write a bundle whose tensors are read from the model itself, then load it back."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / MODEL_FILE).write_bytes(model_bytes)
    probe = LiteRTModel(model_bytes, num_threads=1)
    head_info = None
    if head is not None:
        kernel, bias = head
        head_info = HeadInfo(
            sha256=write_head(root / HEAD_FILE, kernel, bias),
            version=1,
            embedding_dim=int(kernel.shape[0]),
        )
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name=name,
        labels=list(labels),
        form="backbone_head" if head is not None else "classifier",
        model_sha256=sha256_file(root / MODEL_FILE),
        quantization=quantization,
        input=TensorSpecModel(**probe.input.to_dict()),
        output=TensorSpecModel(**probe.output.to_dict()),
        input_range=input_range,
        preprocessing=spec.to_dict(),
        temperature=temperature,
        head=head_info,
        provenance=provenance or Provenance(),
    )
    write_manifest(root, manifest)
    bundle = load_bundle(root)
    if golden is None:
        return bundle
    from edge.golden import write_golden

    # The bundle's own outputs on the golden inputs, so the device can check it reproduces
    # this export exactly (preprocessing and runtime), not just roughly the float model.
    own = np.stack([bundle.probabilities(x) for x in golden["preprocessed"]])
    sha, count = write_golden(
        root / GOLDEN_FILE, **golden, bundle_expected=own, labels=manifest.labels
    )
    manifest.golden = GoldenInfo(
        sha256=sha, count=count, atol=golden_atol, parity_atol=PARITY_ATOL[quantization]
    )
    write_manifest(root, manifest)
    return load_bundle(root)
