"""The bundle manifest: what a model is on disk, as a schema, sealed by a digest.

A bundle is a directory::

    manifest.json   schema version, labels, tensors, quantisation, preprocessing, provenance
    model.tflite    the LiteRT model (a classifier, or a backbone emitting embeddings)
    head.npz        form "backbone_head" only: dense head ``kernel`` (D, N) and ``bias`` (N,)
    golden.npz      optional: raw images, their preprocessed form, the float model's outputs and
                    the bundle's own outputs at export, for the device's start-up parity check

The manifest is sealed: ``digest`` is a sha256 over every field but ``name``, checked when it
is read, so a hand edit (two labels swapped, a failed verification made "passed") is refused.
The verification record holds the digest of the answer-changing fields it was made for, so a
verdict does not carry over to a changed bundle. Reading a manifest needs neither the model
nor OpenCV (edge.model.bundle checks the files against it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge.contracts.preprocess_spec import PreprocessError, PreprocessSpec
from edge.errors import BlastscopeError

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


def write_manifest(bundle_dir: str | Path, manifest: Manifest) -> None:
    """Seal (set the digest) and write manifest.json atomically (never half a manifest)."""
    root = Path(bundle_dir)
    manifest.digest = manifest.compute_digest()
    tmp = root / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=False) + "\n")
    tmp.replace(root / MANIFEST_FILE)
