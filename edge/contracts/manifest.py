"""The bundle manifest: what a model is on disk, as a schema, sealed by a digest.

A bundle is a directory::

    manifest.json   schema version, labels, tensors, quantisation, preprocessing, head, provenance
    model.tflite    the LiteRT graph: a classifier ending at logits, or a backbone emitting
                    embeddings (legacy bundles: a classifier ending in a quantised softmax)
    heads/vN.npz    dense heads only: version N's float ``kernel`` (D, C), ``bias`` (C,), ``labels``
    golden.npz      optional: raw images, their preprocessed form, the export's raw graph outputs,
                    the float model's probabilities and the head they were computed with

A model is a frozen graph plus versioned float post-processing: the ``head`` record (kind,
version, temperature, decision thresholds, head file) changes without a re-export
(edge.model.heads writes new versions); everything else describes the graph.

The manifest is sealed: ``digest`` is a sha256 over every field but ``name``, checked when it
is read, so a hand edit (two labels swapped, a temperature, a failed verification made
"passed") is refused. The verification record (int8 vs float) holds ``graph_digest()``: the
graph-side fields only, so a new head or temperature keeps a passed verdict while a changed
graph or label list voids it. Schema-2 manifests are read and upgraded in memory (see
`_upgrade_v2`). Reading a manifest needs neither the model nor OpenCV.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.contracts.preprocess_spec import PreprocessError, PreprocessSpec
from edge.errors import BlastscopeError

SCHEMA_VERSION = 3  # 3: the head record (versioned float post-processing), the graph digest
LEGACY_SCHEMA_VERSION = 2  # read and upgraded in memory; written back as 3 on the next change
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.tflite"
HEADS_DIR = "heads"
GOLDEN_FILE = "golden.npz"

Quantization = Literal["float32", "float16", "dynamic", "int8"]
Form = Literal["classifier", "backbone_head"]
# logits: the graph ends at logits, the head is softmax(z / T). dense: the graph ends at
# embeddings, the head is softmax((e @ kernel + bias) / T). softmax_in_graph: a legacy graph
# ending in a quantised softmax; its head is the identity and T stays 1 (a temperature on
# probabilities rounded to 1/256, with exact zeros, is not a calibration).
HeadKind = Literal["logits", "dense", "softmax_in_graph"]
HEAD_KINDS: dict[str, tuple[str, ...]] = {
    "classifier": ("logits", "softmax_in_graph"),
    "backbone_head": ("dense",),
}
# A fitted temperature lands near 1 (0.5-3 in the literature); outside this range the fit
# diverged and the output is a bare argmax (T -> 0) or flat (T -> inf).
TEMPERATURE_MIN, TEMPERATURE_MAX = 0.05, 20.0
_SHA256 = r"^[0-9a-f]{64}$"


def head_file(version: int) -> str:
    """Where version `version` of a dense head lives in the bundle (old versions are kept)."""
    return f"{HEADS_DIR}/v{version}.npz"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class BundleError(BlastscopeError):
    """A bundle that is missing, malformed, or whose manifest disagrees with its files."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorSpecModel(_Strict):
    shape: list[int]
    dtype: Literal["float32", "float16", "uint8", "int8"]
    scale: float | None = None
    zero_point: int | None = None


class DecisionThresholds(_Strict):
    """Thresholds the decide stage reads (label / needs_review / rejected); None: not set.

    Part of the head: they are tuned on the head's probabilities and change with it.
    """

    # A top-1 probability below it: the result needs review.
    min_confidence: float | None = Field(default=None, ge=0, le=1)


class HeadInfo(_Strict):
    """The float post-processing after the graph: one version of it, with its lineage."""

    kind: HeadKind
    # +1 on every change (temperature, thresholds, weights).
    version: int = Field(default=1, ge=1)
    temperature: float = Field(default=1.0, ge=TEMPERATURE_MIN, le=TEMPERATURE_MAX)
    thresholds: DecisionThresholds = Field(default_factory=DecisionThresholds)
    file: str | None = None  # dense only: head_file(version) or the version it kept
    sha256: str | None = Field(default=None, pattern=_SHA256)
    # The record_digest() of the head this one was derived from, and its version.
    parent_sha256: str | None = Field(default=None, pattern=_SHA256)
    parent_version: int | None = Field(default=None, ge=1)
    created: str = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _consistent(self) -> HeadInfo:
        if self.kind == "dense":
            if not self.file or not self.sha256:
                raise ValueError("a dense head needs 'file' and 'sha256' (its kernel and bias)")
            path = PurePosixPath(self.file)
            if path.is_absolute() or ".." in path.parts:
                raise ValueError(f"head file {self.file!r} must be a relative path in the bundle")
        elif self.file is not None or self.sha256 is not None:
            raise ValueError(f"a {self.kind!r} head has no weights; drop 'file' and 'sha256'")
        if self.kind == "softmax_in_graph" and self.temperature != 1.0:
            raise ValueError(
                f"temperature {self.temperature} on a softmax_in_graph head: its graph ends in "
                "a quantised softmax, which a temperature cannot calibrate; keep 1, or re-export "
                "with converters export --form classifier (the graph then ends at logits)"
            )
        if (self.parent_sha256 is None) != (self.parent_version is None):
            raise ValueError("parent_sha256 and parent_version go together")
        if self.parent_version is not None and self.parent_version >= self.version:
            raise ValueError(
                f"parent_version {self.parent_version} must be below version {self.version}"
            )
        return self

    def record_digest(self) -> str:
        """sha256 of this record (file sha included): what a child's parent_sha256 names."""
        return _sha256_json(self.model_dump(mode="json"))

    def describe(self, width: int, classes: int) -> str:
        """One line for `inspect`: kind, version, mapping, temperature, thresholds, lineage."""
        what = {
            "logits": f"softmax over {classes} logits",
            "dense": f"{self.file}: {width} -> {classes} (sha256 {str(self.sha256)[:12]})",
            "softmax_in_graph": "softmax inside the graph (legacy)",
        }[self.kind]
        set_thresholds = self.thresholds.model_dump(exclude_none=True)
        parent = f", from v{self.parent_version}" if self.parent_version else ""
        return (
            f"{self.kind} v{self.version}: {what}, temperature {self.temperature:g}, "
            f"thresholds {set_thresholds or 'none'}{parent}"
        )


class GoldenInfo(_Strict):
    file: str = GOLDEN_FILE
    sha256: str
    count: int = Field(ge=1)
    atol: float = Field(
        default=0.05, gt=0, le=1
    )  # max |dp| vs the float model, with the export's head
    # Max |d| vs the export's own outputs: of the raw graph output ("raw", in its units: see
    # edge.model.golden.parity_atol) or, for schema-2 golden sets, of the probabilities.
    parity_atol: float | None = Field(default=None, gt=0)
    parity_on: Literal["raw", "probabilities"] = "raw"


class Verification(_Strict):
    status: Literal["unverified", "passed", "failed"] = "unverified"
    digest: str | None = None  # Manifest.graph_digest() of the bundle that was verified
    at: str | None = None
    data: str | None = None
    reference: str | None = None
    n_images: int | None = None
    agreement: float | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)


class Provenance(_Strict):
    created: str = Field(default_factory=utc_now)
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
# The verdict of `converters verify` (int8 graph vs float) is tied to everything but these; of
# the head only its kind counts, which the graph fixes (what its output is).
_NOT_GRAPH = frozenset({"digest", "name", "provenance", "verification", "head"})
_V2_NOT_ANSWER = frozenset({"digest", "name", "provenance", "verification"})  # schema 2's


def _sha256_json(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


class Manifest(_Strict):
    """The manifest.json of a bundle."""

    schema_version: int
    digest: str = ""  # the seal: sha256 over every field but name; set by write_manifest
    name: str = Field(min_length=1)
    labels: list[str] = Field(min_length=2)  # the head's outputs, in order
    form: Form = "classifier"
    model_file: str = MODEL_FILE
    model_sha256: str = Field(pattern=_SHA256)
    quantization: Quantization
    input: TensorSpecModel
    output: TensorSpecModel
    input_range: tuple[float, float] = (0.0, 255.0)
    preprocessing: dict[str, Any]
    head: HeadInfo
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

    @model_validator(mode="after")
    def _head_fits_form(self) -> Manifest:
        kinds = HEAD_KINDS[self.form]
        if self.head.kind not in kinds:
            raise ValueError(
                f"form {self.form!r} takes a head of kind {' or '.join(kinds)}, not "
                f"{self.head.kind!r}"
            )
        return self

    def spec(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.preprocessing)

    def compute_digest(self) -> str:
        """The seal: sha256 of the canonical JSON of every field but name and digest."""
        return _sha256_json(self.model_dump(mode="json", exclude=set(_NOT_SEALED)))

    def graph_digest(self) -> str:
        """sha256 of the graph-side fields (model, tensors, preprocessing, labels, golden set):
        what an int8-vs-float verdict is about. A new head version leaves it unchanged."""
        data = self.model_dump(mode="json", exclude=set(_NOT_GRAPH))
        data["head_kind"] = self.head.kind
        return _sha256_json(data)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified_file(root: Path, name: str, expected_sha: str, what: str) -> Path:
    """root/name, refused (BundleError) if missing or its sha256 is not the manifest's."""
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


def parse_manifest(data: dict[str, Any], where: str) -> Manifest:
    """Schema-check manifest data (seal not checked); BundleError names the first bad field."""
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise BundleError(f"{where}: {loc + ': ' if loc else ''}{err['msg']}") from None
    try:
        manifest.spec()
    except PreprocessError as exc:
        raise BundleError(f"{where}: {exc}") from None
    return manifest


def _edited_by_hand(where: str, found: str, expected: str) -> BundleError:
    return BundleError(
        f"{where}: digest {found[:12] or '(none)'}… does not match its contents "
        f"({expected[:12]}…): the manifest was edited by hand (only 'name' may be); re-export "
        "the bundle, or change the head with edge.model.heads"
    )


def _other_bundle(where: str, status: object, digest: object) -> BundleError:
    return BundleError(
        f"{where}: the verification record ({status}) was made for another bundle (digest "
        f"{str(digest)[:12]}…); run converters verify on this one"
    )


def _upgrade_v2(where: str, data: dict[str, Any]) -> Manifest:
    """A schema-2 manifest, its seal and verdict checked as schema 2 did, as schema 3.

    Read in memory rather than migrated on disk: bundles in the field (the shipped demo among
    them) keep working unchanged, and the next head change writes them back as schema 3.
    Schema 2 had a top-level temperature and a head only for the dense form: a classifier's
    graph ends in a softmax (kind softmax_in_graph), a dense head keeps its file (head.npz).
    """
    found = str(data.get("digest", ""))
    expected = _sha256_json({k: v for k, v in data.items() if k not in _NOT_SEALED})
    if found != expected:
        raise _edited_by_hand(where, found, expected)
    answer = {k: v for k, v in data.items() if k not in _V2_NOT_ANSWER}
    found_v2 = data.get("verification")
    v2: dict[str, Any] = found_v2 if isinstance(found_v2, dict) else {}
    status = v2.get("status", "unverified")
    if status != "unverified" and v2.get("digest") != _sha256_json(answer):
        raise _other_bundle(where, status, v2.get("digest"))
    upgraded = dict(data, schema_version=SCHEMA_VERSION)
    temperature = upgraded.pop("temperature", 1.0)
    old = upgraded.pop("head", None) or {}
    created = (data.get("provenance") or {}).get("created") or utc_now()
    if data.get("form", "classifier") == "classifier":
        head: dict[str, Any] = {"kind": "softmax_in_graph", "temperature": temperature}
    else:  # schema 2 never wrote parent_sha256 (fine-tuning came with schema 3): not carried
        head = {"kind": "dense", "file": old.get("file"), "sha256": old.get("sha256")}
        head.update(version=old.get("version", 1), temperature=temperature)
    upgraded["head"] = {**head, "created": created}
    if upgraded.get("golden"):
        upgraded["golden"] = {**upgraded["golden"], "parity_on": "probabilities"}
    manifest = parse_manifest(upgraded, f"{where} (schema 2)")
    if manifest.verification.status != "unverified":
        manifest.verification.digest = manifest.graph_digest()  # checked above, as schema 2
    manifest.digest = manifest.compute_digest()
    return manifest


def read_manifest(bundle_dir: str | Path) -> Manifest:
    """Parse, schema-check and unseal manifest.json without opening the model."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(
            f"{root}: not a bundle directory (expected a folder with {MANIFEST_FILE})"
        )
    data = _load_json(root / MANIFEST_FILE)
    where = f"{root}/{MANIFEST_FILE}"
    version = data.get("schema_version")
    if version == LEGACY_SCHEMA_VERSION:
        return _upgrade_v2(where, data)
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{root}: manifest schema_version {version!r} is unknown; this blastscope reads "
            f"versions {LEGACY_SCHEMA_VERSION} and {SCHEMA_VERSION} (upgrade blastscope or "
            "re-export the bundle)"
        )
    manifest = parse_manifest(data, where)
    expected = manifest.compute_digest()
    if manifest.digest != expected:
        raise _edited_by_hand(where, manifest.digest, expected)
    v = manifest.verification
    if v.status != "unverified" and v.digest != manifest.graph_digest():
        raise _other_bundle(where, v.status, v.digest)
    return manifest


def write_manifest(bundle_dir: str | Path, manifest: Manifest) -> None:
    """Seal (set the digest) and write manifest.json atomically (never half a manifest)."""
    root = Path(bundle_dir)
    manifest.schema_version = SCHEMA_VERSION
    manifest.digest = manifest.compute_digest()
    tmp = root / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=False) + "\n")
    tmp.replace(root / MANIFEST_FILE)
